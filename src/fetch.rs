//! `margincert fetch`: download the official dataset files and verify their SHA-256.
//!
//! Checksums are of the DECOMPRESSED content (robust to recompression, e.g. Debian's
//! Fashion-MNIST `.gz` files): the official uncompressed IDX files and CIFAR-10 `.bin` batches.

use sha2::{Digest, Sha256};

/// SHA-256 (lower-case hex) of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of Fashion-MNIST's decompressed `t10k-labels-idx1-ubyte` (its MD5 is upstream's
/// 15d484375f8d13e6eb1aabb0c3f46965).
pub const FASHION_T10K_LABELS_SHA256: &str =
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34";
