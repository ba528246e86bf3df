//! Value parsers and value enums shared by several commands.
//!
//! The library's types carry no clap derives: each enum a flag takes has a clap wrapper here
//! with the CLI's value names, converting into (and from) the library type.

use std::path::{Path, PathBuf};

use clap::Args;

use margincert::certify::ForwardMode;
use margincert::checkpoint::Checkpoint;
use margincert::error::Result;
use margincert::import::{Format, ImportOptions, TensorMap, from_bytes};
use margincert::io::sha256_hex;
use margincert::loss::LossKind;
use margincert::model::ModelSpec;

/// How to read a model file: a native checkpoint, a PyTorch `state_dict` in safetensors (with
/// `--spec`, and `--prefix`/`--map` when its names are not the `nn.Sequential` ones), or an
/// ONNX graph. The same flags for `certify`, `verify` and `audit`, so a certificate can be
/// checked against the very file it was computed from.
#[derive(Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// Model spec (JSON/TOML) naming the layers of a PyTorch state_dict (safetensors without
    /// margincert metadata); for ONNX, checked against the graph.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// Model file format: safetensors, onnx or auto (by extension, then content).
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Tensor map file: spec layer index -> tensor name stem.
    #[arg(long)]
    pub map: Option<PathBuf>,
    /// Prefix of every tensor name (default: detected).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Round f64 weights that are not f32 (the certificate is then about the rounded net).
    #[arg(long)]
    pub round_f64: bool,
}

/// A model read from a file.
pub struct LoadedModel {
    /// The network (with its training record when the file is a native checkpoint).
    pub checkpoint: Checkpoint,
    /// SHA-256 (hex) of the exact bytes of the file: what a certificate is bound to.
    pub sha256: String,
    /// What an import converted or rounded (empty for a native checkpoint).
    pub notes: Vec<String>,
}

impl ModelArgs {
    /// The files these flags read besides the model (spec, map).
    pub fn input_files(&self) -> Vec<PathBuf> {
        self.spec.iter().chain(&self.map).cloned().collect()
    }

    /// Reads `path` once, hashes its bytes and parses them: a safetensors file with no import
    /// flag as a native checkpoint (keeping its training record), anything else through
    /// [`margincert::import`].
    pub fn load(&self, path: &Path) -> Result<LoadedModel> {
        let bytes = margincert::import::read_model_file(path)?;
        let sha256 = sha256_hex(&bytes);
        let format = match Format::parse_cli(&self.format)? {
            Some(f) => f,
            None => Format::detect(path, &bytes)?,
        };
        let native = format == Format::Safetensors
            && self.spec.is_none()
            && self.map.is_none()
            && self.prefix.is_none()
            && !self.round_f64;
        if native {
            return Ok(LoadedModel {
                checkpoint: Checkpoint::from_bytes(&bytes, path)?,
                sha256,
                notes: Vec::new(),
            });
        }
        let spec = self.spec.as_deref().map(ModelSpec::from_file).transpose()?;
        let opts = ImportOptions {
            prefix: self.prefix.clone(),
            map: self.map.as_deref().map(TensorMap::from_file).transpose()?,
            round_f64: self.round_f64,
        };
        let imp = from_bytes(&bytes, path, Some(format), spec.as_ref(), &opts)?;
        Ok(LoadedModel {
            checkpoint: imp.checkpoint,
            sha256,
            notes: imp.notes,
        })
    }
}

/// `--loss` values: the clap face of [`LossKind`] (same names: `cross-entropy`,
/// `logistic`, `exponential`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LossArg {
    /// Softmax cross-entropy, `log(1 + Σ_{j≠y} e^{-(z_y - z_j)})` (multi-class; for a
    /// one-output model the certifier reads it as the logistic loss).
    #[default]
    CrossEntropy,
    /// Logistic, `log(1 + e^{-q})`, `q = y z` (binary, one output).
    Logistic,
    /// Exponential, `e^{-q}` (binary, one output).
    Exponential,
}

impl From<LossArg> for LossKind {
    fn from(l: LossArg) -> Self {
        match l {
            LossArg::CrossEntropy => LossKind::CrossEntropy,
            LossArg::Logistic => LossKind::Logistic,
            LossArg::Exponential => LossKind::Exponential,
        }
    }
}

impl From<LossKind> for LossArg {
    fn from(l: LossKind) -> Self {
        match l {
            LossKind::CrossEntropy => LossArg::CrossEntropy,
            LossKind::Logistic => LossArg::Logistic,
            LossKind::Exponential => LossArg::Exponential,
        }
    }
}

/// `--precision-mode` values: the clap face of [`ForwardMode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionMode {
    /// Binary64 midpoints (fast; tight on shallow nets).
    F64,
    /// Double-double midpoints for every example (deep nets).
    Dd,
    /// Binary64, then double-double for the examples whose logits are too wide.
    Auto,
}

impl From<PrecisionMode> for ForwardMode {
    fn from(m: PrecisionMode) -> Self {
        match m {
            PrecisionMode::F64 => ForwardMode::F64,
            PrecisionMode::Dd => ForwardMode::DoubleDouble,
            PrecisionMode::Auto => ForwardMode::Auto,
        }
    }
}

impl From<ForwardMode> for PrecisionMode {
    fn from(p: ForwardMode) -> Self {
        match p {
            ForwardMode::F64 => PrecisionMode::F64,
            ForwardMode::DoubleDouble => PrecisionMode::Dd,
            ForwardMode::Auto => PrecisionMode::Auto,
        }
    }
}

/// Parses `POS,NEG` (two different class labels).
pub fn parse_pair(s: &str) -> std::result::Result<(u8, u8), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| "expected POS,NEG, e.g. 3,5".to_string())?;
    let p = |t: &str| t.trim().parse::<u8>().map_err(|e| format!("'{t}': {e}"));
    let (a, b) = (p(a)?, p(b)?);
    if a == b {
        return Err("the two classes must differ".into());
    }
    Ok((a, b))
}

/// Parses a loss level written as a value in scientific notation, `MeN` (`M` > 0, `N` an
/// integer, which may lie far outside f64 range, e.g. `1e-800`), into its `log10`. Plain
/// numbers are refused: `0.001` or `-100` could mean the loss or its exponent. With
/// `power_of_ten`, `M` must be 1 (the level names a file `loss-1eN.safetensors`).
fn parse_level(t: &str, power_of_ten: bool) -> std::result::Result<f64, String> {
    let form = if power_of_ten {
        "a power of ten 1eN with an integer N, e.g. 1e-10"
    } else {
        "a loss value MeN with M > 0 and an integer N, e.g. 1e-100 or 5e-3"
    };
    let Some((m, e)) = t.trim().split_once(['e', 'E']) else {
        return Err(format!(
            "'{t}': write the loss level as {form} (a plain number is ambiguous: the loss or \
             its log10?)"
        ));
    };
    let m: f64 = m
        .parse()
        .map_err(|_| format!("'{t}': write it as {form}"))?;
    let e: i64 = e
        .parse()
        .map_err(|_| format!("'{t}': write it as {form}"))?;
    if !(m.is_finite() && m > 0.0) || (power_of_ten && m != 1.0) {
        return Err(format!("'{t}': write it as {form}"));
    }
    if e.unsigned_abs() > 1 << 40 {
        return Err(format!("'{t}': the exponent is out of range"));
    }
    Ok(m.log10() + e as f64)
}

/// `--stop-loss`: a loss value `MeN`.
pub fn parse_stop_loss(t: &str) -> std::result::Result<f64, String> {
    parse_level(t, false)
}

/// `--save-at`: a power of ten `1eN`.
pub fn parse_save_at(t: &str) -> std::result::Result<f64, String> {
    parse_level(t, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn wrappers_round_trip_and_keep_the_value_names() {
        for l in [
            LossKind::CrossEntropy,
            LossKind::Logistic,
            LossKind::Exponential,
        ] {
            assert_eq!(LossKind::from(LossArg::from(l)), l);
        }
        let names: Vec<String> = LossArg::value_variants()
            .iter()
            .map(|v| v.to_possible_value().unwrap().get_name().to_string())
            .collect();
        assert_eq!(names, ["cross-entropy", "logistic", "exponential"]);
        assert_eq!(LossArg::default(), LossArg::from(LossKind::default()));
        for p in [
            ForwardMode::F64,
            ForwardMode::DoubleDouble,
            ForwardMode::Auto,
        ] {
            assert_eq!(ForwardMode::from(PrecisionMode::from(p)), p);
        }
    }

    #[test]
    fn loss_levels_below_f64_range_parse() {
        assert_eq!(parse_stop_loss("1e-800").unwrap(), -800.0);
        // A plain number is ambiguous (the loss or its log10?): refused.
        assert!(parse_stop_loss("-100").is_err());
        assert!(parse_stop_loss("0e5").is_err());
        assert_eq!(parse_pair("3, 5").unwrap(), (3, 5));
        assert!(parse_pair("3,3").is_err());
    }
}
