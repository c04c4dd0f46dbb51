//! Password hashing with Argon2id at OWASP's recommended parameters (19 MiB, 2 passes,
//! 1 lane — the `argon2` crate's defaults), on blocking threads, a bounded number at a time.
//!
//! [`Hasher::verify`] with no stored hash still runs one full verification against a fixed
//! dummy hash, so "unknown user" and "wrong password" take the same time.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use tokio::sync::Semaphore;

use super::AuthError;

/// Hashes and verifies passwords on blocking threads, at most `max_concurrent` at a time:
/// each Argon2 run takes ~19 MiB, so an unbounded burst of registrations or logins would
/// take memory without limit (60 at once took 1.1 GiB). Callers beyond the bound wait.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

impl Hasher {
    /// A hasher running at most `max_concurrent` hashes at once (`auth.max_concurrent_hashes`).
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    async fn on_blocking_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Internal("the hashing semaphore is closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| AuthError::Internal(format!("hashing thread: {e}")))?
    }

    /// Hash `password` into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a random
    /// salt.
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        self.on_blocking_thread(move || hash_blocking(&password))
            .await
    }

    /// Whether `password` matches `stored` (a PHC string). With `stored = None` (no such user)
    /// a dummy hash is verified instead and the answer is false, in the same time.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, AuthError> {
        self.on_blocking_thread(move || verify_blocking(&password, stored.as_deref()))
            .await
    }
}

/// [`Hasher::hash`] on the calling thread, for callers outside the async runtime (the CLI).
pub fn hash_blocking(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("argon2: {e}")))
}

/// [`Hasher::verify`] on the calling thread.
pub fn verify_blocking(password: &str, stored: Option<&str>) -> Result<bool, AuthError> {
    let (hash, real) = match stored {
        Some(h) => (h, true),
        None => (dummy_hash()?, false),
    };
    let parsed =
        PasswordHash::new(hash).map_err(|e| AuthError::Internal(format!("stored hash: {e}")))?;
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    Ok(ok && real)
}

fn dummy_hash() -> Result<&'static str, AuthError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(h) = DUMMY.get() {
        return Ok(h);
    }
    let h = hash_blocking("hearth dummy password for timing equality")?;
    Ok(DUMMY.get_or_init(|| h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_use_owasp_argon2id_parameters() {
        let h = hash_blocking("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_blocking("correct horse", Some(&h)).expect("verify"));
        assert!(!verify_blocking("wrong horse", Some(&h)).expect("verify"));
        // Salted: the same password hashes differently.
        assert_ne!(h, hash_blocking("correct horse").expect("hash"));
    }

    #[test]
    fn an_unknown_user_never_verifies() {
        assert!(!verify_blocking("hearth dummy password for timing equality", None).expect("v"));
        assert!(!verify_blocking("anything", None).expect("verify"));
    }

    #[test]
    fn a_corrupt_stored_hash_is_an_error_not_a_match() {
        assert!(verify_blocking("x", Some("not a hash")).is_err());
    }
}
