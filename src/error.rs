//! The crate's error type. Every failure on bad input ends here, with a message that names
//! the problem; nothing in the library panics on user data.

use std::path::{Path, PathBuf};

/// Errors of margincert.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A data file is malformed (magic number, dimensions, length, labels).
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A model specification is invalid.
    #[error("invalid model spec: {0}")]
    Spec(String),
    /// Shapes do not match (parameters vs spec, data vs model).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A NaN or infinite value where finite numbers are required.
    #[error("non-finite value: {0}")]
    NonFinite(String),
    /// A checkpoint is malformed.
    #[error("bad checkpoint {path}: {msg}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A checksum does not match.
    #[error("checksum mismatch for {what}: expected {expected}, got {got}")]
    Checksum {
        /// The file or object.
        what: String,
        /// Expected SHA-256 (hex).
        expected: String,
        /// Computed SHA-256 (hex).
        got: String,
    },
    /// A certificate could not be produced or verified.
    #[error("certification failed: {0}")]
    Certify(String),
    /// Anything else the user asked for that cannot be done.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    /// A format error on `path`.
    pub fn format(path: &Path, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
