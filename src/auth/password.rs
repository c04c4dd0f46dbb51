//! Password hashing with Argon2id at OWASP's recommended parameters (19 MiB, 2 passes,
//! 1 lane — the `argon2` crate's defaults), on a few dedicated threads.
//!
//! [`Hasher::verify`] with no stored hash still runs one full verification against a fixed
//! dummy hash, so "unknown user" and "wrong password" take the same time.

use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use super::AuthError;

/// Hashes and verifies passwords on `threads` dedicated threads, each with one reusable
/// [`WorkingMemory`], so at most that many run at once and Argon2 never holds more than
/// `threads` × 19 MiB. (On tokio's blocking pool a burst of 60 registrations took 1.1 GiB;
/// with a semaphore of 4 but a fresh allocation per hash, still +720 MiB, the allocator
/// keeping the freed copies.) Callers beyond the bound wait their turn in a queue.
#[derive(Debug, Clone)]
pub struct Hasher {
    jobs: mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce(&mut WorkingMemory) + Send>;

impl Hasher {
    /// A hasher with `threads` hashing threads (`auth.max_concurrent_hashes`). The threads end
    /// when the last clone of the hasher is dropped.
    pub fn new(threads: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("hearth-argon2-{i}"))
                .spawn(move || {
                    let mut memory = WorkingMemory::default();
                    loop {
                        // Only the receive is under the lock; a poisoned lock still holds a
                        // usable receiver.
                        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Self { jobs }
    }

    async fn on_hashing_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut WorkingMemory) -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |memory: &mut WorkingMemory| {
                let _ = tx.send(work(memory));
            }))
            .map_err(|_| AuthError::Internal("the password hashing threads are gone".into()))?;
        rx.await
            .map_err(|_| AuthError::Internal("a password hashing thread failed".into()))?
    }

    /// Hash `password` into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a random
    /// salt.
    pub async fn hash(&self, password: String) -> Result<String, AuthError> {
        self.on_hashing_thread(move |memory| hash_with(&password, memory))
            .await
    }

    /// Whether `password` matches `stored` (a PHC string). With `stored = None` (no such user)
    /// a dummy hash is verified instead and the answer is false, in the same time.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, AuthError> {
        self.on_hashing_thread(move |memory| verify_with(&password, stored.as_deref(), memory))
            .await
    }
}

/// Argon2's working memory (19 MiB at the default parameters), kept by a hashing thread and
/// reused for every hash it computes. Allocating it afresh each time let the allocator keep
/// each freed copy around, fragmented by small allocations in between.
#[derive(Default)]
pub struct WorkingMemory(Vec<Block>);

impl WorkingMemory {
    /// `count` blocks, wiped of the previous hash's state.
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() < count {
            self.0.resize(count, Block::default());
        }
        let blocks = &mut self.0[..count];
        blocks.fill(Block::default());
        blocks
    }
}

fn argon2_err(e: impl std::fmt::Display) -> AuthError {
    AuthError::Internal(format!("argon2: {e}"))
}

/// [`Hasher::hash`] on the calling thread, for callers outside the async runtime (the CLI).
pub fn hash_blocking(password: &str) -> Result<String, AuthError> {
    hash_with(password, &mut WorkingMemory::default())
}

/// Hash `password` at the default parameters with a random 16-byte salt, in `memory`.
fn hash_with(password: &str, memory: &mut WorkingMemory) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(
            password.as_bytes(),
            &salt,
            &mut out,
            memory.blocks(params.block_count()),
        )
        .map_err(argon2_err)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(argon2_err)?,
        salt: Some(Salt::new(&salt).map_err(argon2_err)?),
        hash: Some(Output::new(&out).map_err(argon2_err)?),
    };
    Ok(phc.to_string())
}

/// [`Hasher::verify`] on the calling thread.
pub fn verify_blocking(password: &str, stored: Option<&str>) -> Result<bool, AuthError> {
    verify_with(password, stored, &mut WorkingMemory::default())
}

/// Verify `password` against `stored` (or the dummy hash), recomputing it with the stored
/// algorithm, version, parameters and salt, in `memory`.
fn verify_with(
    password: &str,
    stored: Option<&str>,
    memory: &mut WorkingMemory,
) -> Result<bool, AuthError> {
    let (hash, real) = match stored {
        Some(h) => (h, true),
        None => (dummy_hash()?, false),
    };
    let bad = |e: &dyn std::fmt::Display| AuthError::Internal(format!("stored hash: {e}"));
    let parsed = PasswordHash::new(hash).map_err(|e| bad(&e))?;
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return Err(bad(&"no salt or no hash"));
    };
    let algorithm = Algorithm::new(parsed.algorithm.as_str()).map_err(|e| bad(&e))?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(|e| bad(&e))?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(|e| bad(&e))?;
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt.as_ref(),
            &mut out,
            memory.blocks(params.block_count()),
        )
        .map_err(argon2_err)?;
    // `Output`'s equality is constant-time.
    let matches = Output::new(&out).map_err(argon2_err)? == *expected;
    Ok(matches && real)
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
    fn hashes_from_the_argon2_crates_own_hasher_still_verify() {
        use argon2::password_hash::PasswordHasher;
        let theirs = Argon2::default()
            .hash_password(b"correct horse")
            .expect("hash")
            .to_string();
        assert!(verify_blocking("correct horse", Some(&theirs)).expect("verify"));
        assert!(!verify_blocking("wrong", Some(&theirs)).expect("verify"));
        // And ours verify with theirs.
        use argon2::password_hash::PasswordVerifier;
        let ours = hash_blocking("battery staple").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("parse");
        assert!(Argon2::default()
            .verify_password(b"battery staple", &parsed)
            .is_ok());
    }

    #[test]
    fn reused_working_memory_gives_the_same_answers() {
        let mut memory = WorkingMemory::default();
        let h = hash_with("one", &mut memory).expect("hash");
        let _ = hash_with("two", &mut memory).expect("hash");
        assert!(verify_with("one", Some(&h), &mut memory).expect("verify"));
        assert!(!verify_with("two", Some(&h), &mut memory).expect("verify"));
    }

    #[test]
    fn a_corrupt_stored_hash_is_an_error_not_a_match() {
        assert!(verify_blocking("x", Some("not a hash")).is_err());
    }
}
