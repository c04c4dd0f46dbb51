//! Access tokens: HS256 JWTs with `sub` (user id), `role`, `iat`, `exp` and a random `jti`.
//!
//! The signing secret comes from config, or is generated on first start and kept in the data
//! directory (`jwt_secret`, mode 0600) so restarts keep sessions valid.

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AuthError;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string (JWT convention).
    pub sub: String,
    /// `user` or `admin` at the time of issue.
    pub role: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
}

impl Claims {
    /// The user id in `sub`.
    pub fn user_id(&self) -> Result<i64, AuthError> {
        self.sub.parse().map_err(|_| AuthError::InvalidToken)
    }
}

/// Signs and checks access tokens.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: i64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Keys from a secret; tokens live `ttl_secs`.
    pub fn new(secret: &[u8], ttl_secs: i64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_secs,
        }
    }

    /// Seconds an access token lives.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// A signed access token for `user_id` with `role`, issued at `now`.
    pub fn issue(&self, user_id: i64, role: &str, now: i64) -> Result<String, AuthError> {
        let claims = Claims {
            sub: user_id.to_string(),
            role: role.to_string(),
            iat: now,
            exp: now + self.ttl_secs,
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Internal(format!("signing a token: {e}")))
    }

    /// The claims of a valid token: right signature and algorithm, not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::TokenExpired,
                _ => AuthError::InvalidToken,
            })
    }
}

/// The signing secret: `configured` if set, else the one kept in `data_dir/jwt_secret`, else a
/// new random one written there with mode 0600.
pub fn load_or_create_secret(
    configured: Option<&str>,
    data_dir: &Path,
) -> std::io::Result<Vec<u8>> {
    if let Some(s) = configured.filter(|s| !s.is_empty()) {
        return Ok(s.as_bytes().to_vec());
    }
    let path = data_dir.join("jwt_secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= crate::config::MIN_JWT_SECRET_BYTES => {
            return Ok(s.trim().as_bytes().to_vec())
        }
        Ok(s) if !s.trim().is_empty() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} holds a secret of {} bytes; at least {} are needed (delete the file to \
                     have a new one generated, which logs everyone out)",
                    path.display(),
                    s.trim().len(),
                    crate::config::MIN_JWT_SECRET_BYTES
                ),
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 48];
    rand::fill(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&path)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let keys = JwtKeys::new(b"secret-one", 900);
        let t = keys.issue(7, "admin", now()).expect("issue");
        let c = keys.verify(&t).expect("verify");
        assert_eq!(c.user_id().expect("id"), 7);
        assert_eq!(c.role, "admin");
        assert_eq!(c.exp - c.iat, 900);
        assert_eq!(c.jti.len(), 32);
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let keys = JwtKeys::new(b"secret-one", 900);
        let old = keys.issue(7, "user", now() - 1000).expect("issue");
        assert!(matches!(keys.verify(&old), Err(AuthError::TokenExpired)));

        let t = keys.issue(7, "user", now()).expect("issue");
        // Swap the payload for one claiming admin, keeping the signature.
        let parts: Vec<&str> = t.split('.').collect();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .expect("b64");
        let forged = String::from_utf8(payload)
            .expect("utf8")
            .replace("\"user\"", "\"admin\"");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged),
            parts[2]
        );
        assert!(matches!(keys.verify(&forged), Err(AuthError::InvalidToken)));

        let other = JwtKeys::new(b"secret-two", 900);
        assert!(matches!(other.verify(&t), Err(AuthError::InvalidToken)));
        assert!(matches!(
            keys.verify("not.a.jwt"),
            Err(AuthError::InvalidToken)
        ));
        // `alg: none` is never accepted.
        let none = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(r#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert!(matches!(keys.verify(&none), Err(AuthError::InvalidToken)));
    }

    #[test]
    fn the_secret_is_generated_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create_secret(None, dir.path()).expect("create");
        let b = load_or_create_secret(None, dir.path()).expect("load");
        assert_eq!(a, b);
        assert!(a.len() >= 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("jwt_secret"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            load_or_create_secret(Some("from-config"), dir.path()).expect("cfg"),
            b"from-config"
        );
    }
}
