//! Seeded random streams: one independent ChaCha8 stream per (seed, purpose,
//! index), so noise, generated items, splits and bootstrap draws never share
//! or shift each other's randomness.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// A generator for one example of one purpose: seeded from the first 8 bytes
/// of SHA-256(purpose, 0, seed, index), so streams never collide across purposes.
pub(crate) fn example_rng(seed: u64, purpose: &str, index: usize) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(purpose.as_bytes());
    h.update([0u8]);
    h.update(seed.to_le_bytes());
    h.update((index as u64).to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    ChaCha8Rng::seed_from_u64(u64::from_le_bytes(b))
}
