//! Every resource limit of margincert, in one place.
//!
//! Inputs come from files a user may not control (checkpoints, ONNX models, data files,
//! specs). Each size such a file declares is checked against a [`Limit`] BEFORE anything of
//! that size is allocated or read, so that a hostile or broken input ends in an error that
//! names the limit, the amount needed, and how to raise it — never in an abort
//! ("memory allocation failed") or a machine swapping itself to death.
//!
//! Each limit has a default and an environment variable that replaces it for one process,
//! e.g. `MARGINCERT_MAX_PARAM_BYTES=16G margincert certify big.onnx`. Values are a whole
//! number with an optional suffix `K`, `M`, `G`, `T` (powers of 1024, any case; `KB`, `KiB`,
//! `MB`, ... are read the same way). docs/LIMITS.md lists them all.
//!
//! | Limit | Environment variable | Default |
//! |---|---|---|
//! | [`PARAM_BYTES`] | `MARGINCERT_MAX_PARAM_BYTES` | 4 GiB (2^30 f32 parameters) |
//! | [`ACTIVATION_BYTES`] | `MARGINCERT_MAX_ACTIVATION_BYTES` | 16 GiB |
//! | [`FILE_BYTES`] | `MARGINCERT_MAX_FILE_BYTES` | 8 GiB |
//! | [`TEXT_BYTES`] | `MARGINCERT_MAX_TEXT_BYTES` | 64 MiB |
//! | [`DATASET_BYTES`] | `MARGINCERT_MAX_DATASET_BYTES` | 2 GiB |
//! | [`ONNX_NODES`] | `MARGINCERT_MAX_ONNX_NODES` | 100 000 |
//! | [`LAYERS`] | `MARGINCERT_MAX_LAYERS` | 100 000 |
//!
//! Fixed bounds (not configurable, far above any real network): the safetensors header
//! ([`SAFETENSORS_HEADER_BYTES`], the safetensors crate's own cap) and the kernel, stride
//! and padding of an ONNX node ([`MAX_ONNX_WINDOW`]).

use std::fmt;

use crate::error::{Error, Result};

/// One resource limit: a ceiling on a byte or item count, checked before allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// What it bounds, e.g. `"parameters"`.
    pub what: &'static str,
    /// The environment variable that replaces the default for one process.
    pub env: &'static str,
    /// The default value.
    pub default: u64,
    /// Whether the value counts bytes (shown as KB/MB/GB) or items.
    pub bytes: bool,
}

/// Bytes of the f32 parameters of one model (4 per parameter): 4 GiB, about a billion
/// parameters. Checked by [`crate::model::ModelSpec::plan`], so that no spec, checkpoint or
/// ONNX graph that declares more reaches an allocation.
pub const PARAM_BYTES: Limit = Limit {
    what: "parameters",
    env: "MARGINCERT_MAX_PARAM_BYTES",
    default: 4 << 30,
    bytes: true,
};

/// Bytes of the activations a pass holds at once: the input, every layer's output and the
/// im2col scratch of each convolution, for one batch (f32: 4 bytes per value; the
/// certified passes hold balls of two f64: 16 bytes). 16 GiB. Checked for one example by
/// [`crate::model::ModelSpec::plan`], for the certified passes' chunk by
/// [`crate::model::CheckedModel::new`], and for a training batch (activations and their
/// gradients, 8 bytes per value) and the 1000-example evaluation chunk by the trainer
/// ([`crate::model::check_batch`]).
pub const ACTIVATION_BYTES: Limit = Limit {
    what: "activations",
    env: "MARGINCERT_MAX_ACTIVATION_BYTES",
    default: 16 << 30,
    bytes: true,
};

/// Bytes of one binary input file read into memory (checkpoint, safetensors, ONNX model,
/// data file as stored): 8 GiB. Checked from the file's metadata before reading; a file
/// that is not a regular file (a pipe, `/dev/zero`) is read through a reader that stops one
/// byte past the limit.
pub const FILE_BYTES: Limit = Limit {
    what: "file size",
    env: "MARGINCERT_MAX_FILE_BYTES",
    default: 8 << 30,
    bytes: true,
};

/// Bytes of one text input (model spec, tensor map): 64 MiB.
pub const TEXT_BYTES: Limit = Limit {
    what: "text file size",
    env: "MARGINCERT_MAX_TEXT_BYTES",
    default: 64 << 20,
    bytes: true,
};

/// Decompressed bytes of one dataset, all its files together (e.g. the five CIFAR-10
/// training batches, or an IDX images file and its labels): 2 GiB (the largest official
/// dataset, CIFAR-10's training set, is 154 MB). A guard against decompression bombs that
/// holds across files.
pub const DATASET_BYTES: Limit = Limit {
    what: "decompressed dataset size",
    env: "MARGINCERT_MAX_DATASET_BYTES",
    default: 2 << 30,
    bytes: true,
};

/// Nodes of one ONNX graph: 100 000.
pub const ONNX_NODES: Limit = Limit {
    what: "ONNX nodes",
    env: "MARGINCERT_MAX_ONNX_NODES",
    default: 100_000,
    bytes: false,
};

/// Layers of one model spec: 100 000.
pub const LAYERS: Limit = Limit {
    what: "layers",
    env: "MARGINCERT_MAX_LAYERS",
    default: 100_000,
    bytes: false,
};

/// Largest safetensors header (JSON) accepted: 100 MB, the safetensors crate's own cap.
pub const SAFETENSORS_HEADER_BYTES: u64 = 100_000_000;

/// Largest kernel size, stride or padding an ONNX node may declare (2^16).
pub const MAX_ONNX_WINDOW: i64 = 1 << 16;

/// Examples the certified passes hold at once per chunk (see `certify::forward`): the batch
/// [`crate::model::CheckedModel::new`] checks [`ACTIVATION_BYTES`] for.
pub const CERTIFIED_CHUNK: u64 = 128;

/// Bytes per activation value of the certified passes: a ball of two f64.
pub const CERTIFIED_VALUE_BYTES: u64 = 16;

/// Bytes per activation value of the f32 passes.
pub const F32_BYTES: u64 = 4;

/// All the configurable limits, for documentation and `--help` texts.
pub const ALL: [Limit; 7] = [
    PARAM_BYTES,
    ACTIVATION_BYTES,
    FILE_BYTES,
    TEXT_BYTES,
    DATASET_BYTES,
    ONNX_NODES,
    LAYERS,
];

impl Limit {
    /// The value in force: the environment variable when set, else the default. A value that
    /// does not parse is an error naming the variable.
    pub fn value(&self) -> Result<u64> {
        match std::env::var(self.env) {
            Ok(s) => parse_size(&s).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}={s:?} is not a size: expected a whole number with an optional suffix \
                     K, M, G or T (e.g. {}=16G)",
                    self.env, self.env
                ))
            }),
            Err(_) => Ok(self.default),
        }
    }

    /// Checks `need <= ` the value in force; `subject` says what needs it (e.g. "the model").
    pub fn check(&self, need: u64, subject: impl fmt::Display) -> Result<()> {
        self.check_against(need, self.value()?, subject)
    }

    /// Checks `need <= limit` (an explicit limit: tests, or a caller's own budget).
    pub fn check_against(&self, need: u64, limit: u64, subject: impl fmt::Display) -> Result<()> {
        if need <= limit {
            Ok(())
        } else {
            Err(self.exceeded(Amount::Exact(need), limit, subject))
        }
    }

    /// The error for an amount above `limit` ([`Amount::AtLeast`] when it is only known to
    /// exceed it, e.g. a stream cut off one byte past the limit, or an overflowing product).
    pub fn exceeded(&self, need: Amount, limit: u64, subject: impl fmt::Display) -> Error {
        let need = match need {
            Amount::Exact(n) => self.show(n),
            Amount::AtLeast(n) => format!("more than {}", self.show(n)),
            Amount::Overflow => "more than 2^64".to_string(),
        };
        let unit = if self.bytes { " bytes" } else { "" };
        Error::Invalid(format!(
            "{subject} needs {need} of {}; the limit is {} (raise it with {}=N{unit}, \
             e.g. {}={})",
            self.what,
            self.show(limit),
            self.env,
            self.env,
            suggestion(limit, self.bytes)
        ))
    }

    /// A value in this limit's unit: `12.0 GB (12884901888 bytes)` or `20000`.
    pub fn show(&self, v: u64) -> String {
        if self.bytes {
            format!("{} ({v} bytes)", human_bytes(v))
        } else {
            v.to_string()
        }
    }
}

/// An amount compared with a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    /// Known exactly.
    Exact(u64),
    /// Known to exceed this value.
    AtLeast(u64),
    /// Its computation overflows 64 bits.
    Overflow,
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 KB`, `12.0 GB` (1 GB = 2^30 bytes).
pub fn human_bytes(v: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut x = v as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

/// Parses `16G`, `512M`, `100000`, `4GiB`, `2 KB`: a whole number and an optional binary
/// suffix. `None` when it does not parse or overflows.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits);
    let n: u64 = num.parse().ok()?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// A value to suggest for raising a limit: twice the current one, in the largest suffix that
/// divides it.
fn suggestion(limit: u64, bytes: bool) -> String {
    let v = limit.saturating_mul(2).max(1);
    if !bytes {
        return v.to_string();
    }
    for (shift, s) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if v.is_multiple_of(1u64 << shift) {
            return format!("{}{s}", v >> shift);
        }
    }
    v.to_string()
}

/// Checks an amount that may have overflowed (`None`) against the value of `limit` in force.
pub fn check_amount(limit: &Limit, need: Option<u64>, subject: impl fmt::Display) -> Result<()> {
    let max = limit.value()?;
    match need {
        Some(n) => limit.check_against(n, max, subject),
        None => Err(limit.exceeded(Amount::Overflow, max, subject)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("100000"), Some(100_000));
        assert_eq!(parse_size("16G"), Some(16 << 30));
        assert_eq!(parse_size("4 GiB"), Some(4 << 30));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("2KB"), Some(2048));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(parse_size("1.5G"), None);
    }

    #[test]
    fn messages_name_the_limit_the_need_and_the_variable() {
        let e = PARAM_BYTES
            .check_against(12 << 30, 4 << 30, "the model")
            .unwrap_err()
            .to_string();
        assert!(e.contains("the model needs 12.0 GB"), "{e}");
        assert!(e.contains("of parameters; the limit is 4.0 GB"), "{e}");
        assert!(e.contains("MARGINCERT_MAX_PARAM_BYTES=8G"), "{e}");
        assert!(ONNX_NODES.check_against(5, 5, "g").is_ok());
        assert_eq!(human_bytes(1536), "1.5 KB");
        assert_eq!(human_bytes(7), "7 B");
    }
}
