//! Authentication primitives: Argon2id password hashing, JWT access tokens, and the opaque
//! secrets (refresh tokens, API keys) that are stored only as SHA-256 hashes.
//!
//! Pure logic plus blocking-thread offload; it knows nothing about HTTP or SQL. The API layer
//! turns [`AuthError`] into responses; the store keeps the hashes.

pub mod jwt;
pub mod password;
mod principal;
pub mod rules;

pub use principal::Principal;

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong username or password (the same answer for both).
    #[error("invalid username or password")]
    BadCredentials,
    /// The token is malformed, forged, or signed with another key.
    #[error("invalid token")]
    InvalidToken,
    /// The token was valid but has expired.
    #[error("the token has expired")]
    TokenExpired,
    /// Something failed on our side.
    #[error("{0}")]
    Internal(String),
}

/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "hrt_";
/// Prefix of API keys (recognisable in logs and secret scanners).
pub const API_KEY_PREFIX: &str = "sk-hearth-";
/// How many leading characters of an API key are stored and shown in clear.
pub const VISIBLE_KEY_CHARS: usize = 14;

fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A new opaque refresh token (256 random bits).
pub fn new_refresh_token() -> String {
    random_secret(REFRESH_PREFIX)
}

/// A new API key (256 random bits).
pub fn new_api_key() -> String {
    random_secret(API_KEY_PREFIX)
}

/// The visible part of an API key, stored and listed so users can tell keys apart.
pub fn key_prefix(key: &str) -> String {
    key.chars().take(VISIBLE_KEY_CHARS).collect()
}

/// SHA-256 of a secret, hex: what the store keeps. (The secrets carry 256 random bits, so a
/// fast hash is enough; passwords are the ones that need Argon2.)
pub fn secret_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_hash_stably() {
        let a = new_api_key();
        let b = new_api_key();
        assert_ne!(a, b);
        assert!(a.starts_with(API_KEY_PREFIX));
        assert_eq!(a.len(), API_KEY_PREFIX.len() + 43);
        assert!(new_refresh_token().starts_with(REFRESH_PREFIX));
        assert_eq!(secret_hash("abc"), secret_hash("abc"));
        assert_eq!(
            secret_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(key_prefix(&a).len(), VISIBLE_KEY_CHARS);
    }
}
