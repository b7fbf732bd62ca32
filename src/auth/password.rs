//! argon2id password hashing with OWASP's recommended parameters
//! (m = 19 MiB, t = 2, p = 1), with bounded memory.
//!
//! Each hash needs 19 MiB of working memory. Left to the allocator, every blocking
//! thread that ever hashed kept its 19 MiB in a glibc arena: 30 logins left the
//! process at 135–369 MB (docs/benchmarks.md). So here at most [`MAX_CONCURRENT`]
//! hashes run at once (others wait their turn), and each one works in its own
//! anonymous mapping that is unmapped when it ends: the peak is bounded and the memory
//! goes back to the system at once, whatever the allocator does.

use argon2::password_hash::{rand_core::OsRng, Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::{Condvar, Mutex, OnceLock};

/// Hashes that may run at the same time (peak working memory: this × 19 MiB).
pub const MAX_CONCURRENT: usize = 2;

fn params() -> Params {
    // Params::new only fails for out-of-range values; these are constants in range.
    Params::new(19 * 1024, 2, 1, None).unwrap_or_default()
}

/// Hash a password into a PHC string.
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_buf)
        .map_err(|e| format!("cannot hash password: {e}"))?;
    let params = params();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(&argon, &params, password.as_bytes(), salt_bytes, &mut out)
        .map_err(|e| format!("cannot hash password: {e}"))?;
    let output = Output::new(&out).map_err(|e| format!("cannot hash password: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params)
            .try_into()
            .map_err(|e| format!("cannot hash password: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Check a password against a stored PHC string. A malformed hash verifies nothing.
pub fn verify(stored: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    // Params carry the output length of the stored hash.
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    if compute(&argon, &params, password.as_bytes(), salt_bytes, &mut out).is_err() {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&out).is_ok_and(|computed| computed == expected)
}

/// Burn the same work as a real verification, for logins with an unknown user name,
/// so that "no such user" and "wrong password" take similar time.
pub fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let stored = DUMMY.get_or_init(|| hash("dummy password for timing").unwrap_or_default());
    let _ = verify(stored, password);
}

/// One argon2 computation: waits for a slot, works in a fresh anonymous mapping.
fn compute(
    argon: &Argon2<'_>,
    params: &Params,
    pwd: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    let _slot = Slot::take();
    let mut memory = Working::new(params.block_count())?;
    argon
        .hash_password_into_with_memory(pwd, salt, out, memory.blocks())
        .map_err(|e| e.to_string())
}

/// A counting semaphore over the hashes in progress (std only: callers are
/// synchronous, on blocking threads or at start-up).
struct Slot;

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

impl Slot {
    fn take() -> Slot {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= MAX_CONCURRENT {
            running = FREED.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        FREED.notify_one();
    }
}

/// Working memory as its own anonymous mapping, unmapped on drop.
struct Working {
    map: memmap2::MmapMut,
    count: usize,
}

impl Working {
    fn new(count: usize) -> Result<Working, String> {
        let len = count * std::mem::size_of::<Block>();
        let map = memmap2::MmapMut::map_anon(len)
            .map_err(|e| format!("cannot map {len} bytes for password hashing: {e}"))?;
        Ok(Working { map, count })
    }

    fn blocks(&mut self) -> &mut [Block] {
        let ptr = self.map.as_mut_ptr();
        debug_assert_eq!(ptr.align_offset(std::mem::align_of::<Block>()), 0);
        // SAFETY: the mapping is page-aligned (Block needs 64), zero-filled, exactly
        // `count` blocks long and borrowed mutably through `self`; Block is plain u64
        // words, for which every bit pattern (zero included) is valid.
        unsafe { std::slice::from_raw_parts_mut(ptr.cast::<Block>(), self.count) }
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, SaltString};

    #[test]
    fn hash_and_verify() {
        let h = super::hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(super::verify(&h, "correct horse"));
        assert!(!super::verify(&h, "wrong horse"));
        assert!(!super::verify("not a hash", "correct horse"));
    }

    /// Hashes stored by the crate's own hasher (earlier versions) still verify, and
    /// ours verify with the crate's verifier: same algorithm, same encoding.
    #[test]
    fn compatible_with_the_crates_hasher() {
        use argon2::PasswordVerifier;
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let argon = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            super::params(),
        );
        let theirs = argon
            .hash_password(b"old password", &salt)
            .unwrap()
            .to_string();
        assert!(super::verify(&theirs, "old password"));
        assert!(!super::verify(&theirs, "old passwore"));
        let ours = super::hash("new password").unwrap();
        let parsed = argon2::PasswordHash::new(&ours).unwrap();
        assert!(argon.verify_password(b"new password", &parsed).is_ok());
        assert!(argon.verify_password(b"new passwore", &parsed).is_err());
    }

    /// However many threads hash at once, no more than MAX_CONCURRENT run together.
    #[test]
    fn concurrency_is_bounded() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NOW: AtomicUsize = AtomicUsize::new(0);
        static MAX: AtomicUsize = AtomicUsize::new(0);
        let threads: Vec<_> = (0..6)
            .map(|_| {
                std::thread::spawn(|| {
                    let _slot = super::Slot::take();
                    let n = NOW.fetch_add(1, Ordering::SeqCst) + 1;
                    MAX.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    NOW.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(MAX.load(Ordering::SeqCst), super::MAX_CONCURRENT);
    }
}
