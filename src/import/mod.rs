//! Import of networks trained elsewhere: PyTorch `state_dict`s saved with safetensors
//! ([`torch`]) and ONNX graphs of sequential networks ([`onnx`]), into a margincert
//! [`Checkpoint`] that [`crate::certify`] and [`crate::audit`] then treat like a native one.
//!
//! Every imported value is an f32 **exactly equal** to the stored value: f32 tensors are
//! copied, f16 and bf16 tensors are widened (exact: every f16 and bf16 is an f32), f64
//! tensors are accepted only when every value is an f32 — unless
//! [`ImportOptions::round_f64`] is set, in which case each value is rounded to nearest and
//! [`Imported::notes`] says loudly that the certificate is about the rounded network.

pub mod onnx;
pub mod torch;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::limits;

/// An imported network and what the import did to it.
///
/// Invariant: `checkpoint.params` matches `checkpoint.spec` and every value is finite.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    /// The network as a margincert checkpoint (no training record).
    pub checkpoint: Checkpoint,
    /// What the import converted, renamed or rounded, e.g. "converted 3 tensors from bf16
    /// exactly". A note starting with `WARNING` means the imported network is not bit for
    /// bit the stored one.
    pub notes: Vec<String>,
}

/// Spec layer index → tensor name stem: layer `i`'s weight is `"{stem}.weight"` and its
/// bias `"{stem}.bias"`.
///
/// File form (TOML or JSON), e.g. for a module with attributes `fc1`, `head`:
/// ```toml
/// [layers]
/// 1 = "fc1"
/// 3 = "head"
/// ```
/// A stem may also be given as the full weight name (`"fc1.weight"`); the suffix is dropped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TensorMap {
    /// Weight-layer index in the spec → tensor name stem.
    pub layers: BTreeMap<usize, String>,
}

impl TensorMap {
    /// Parses a map from TOML or JSON text (`{` first means JSON).
    pub fn parse(text: &str) -> Result<Self> {
        let m: TensorMap = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| Error::Invalid(format!("invalid JSON tensor map: {e}")))?
        } else {
            toml::from_str(text)
                .map_err(|e| Error::Invalid(format!("invalid TOML tensor map: {e}")))?
        };
        Ok(m)
    }

    /// Reads a map file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::io::read_text_limited(path, &limits::TEXT_BYTES)?;
        Self::parse(&text).map_err(|e| Error::format(path, e.to_string()))
    }

    /// The stem of layer `index`, if mapped.
    pub fn stem(&self, index: usize) -> Option<&str> {
        self.layers
            .get(&index)
            .map(|s| s.strip_suffix(".weight").unwrap_or(s))
    }
}

/// How to import.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportOptions {
    /// A prefix of every tensor name (`"model."`, `"net."`); `None`: detected (the empty
    /// prefix when the `nn.Sequential` names are there as they are).
    pub prefix: Option<String>,
    /// Explicit names per layer (overrides the prefix for the layers it names).
    pub map: Option<TensorMap>,
    /// Round f64 values that are not f32 to nearest instead of refusing. The certificate is
    /// then about the rounded network (a `WARNING` note says so).
    pub round_f64: bool,
}

/// The file format of a model to import.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A safetensors file (a PyTorch `state_dict`, or a native checkpoint).
    Safetensors,
    /// An ONNX model (protobuf).
    Onnx,
}

impl Format {
    /// Detects the format from the extension, else from the first bytes: a safetensors
    /// file starts with an 8-byte little-endian header length followed by `{`.
    pub fn detect(path: &Path, bytes: &[u8]) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("onnx") => return Ok(Format::Onnx),
            Some("safetensors") => return Ok(Format::Safetensors),
            _ => {}
        }
        if bytes.len() > 8 && bytes[8] == b'{' {
            Ok(Format::Safetensors)
        } else if !bytes.is_empty() {
            Ok(Format::Onnx)
        } else {
            Err(Error::format(
                path,
                "empty file: neither safetensors nor ONNX",
            ))
        }
    }
}

/// Reads the bytes of a model file (a checkpoint, a safetensors state_dict or an ONNX model)
/// without trusting its size: a safetensors file (recognised by its first 9 bytes) is read
/// as far as its header declares ([`crate::checkpoint::read_safetensors`], which refuses a
/// file of another size before reading its data); anything else must be a regular file of
/// at most [`limits::FILE_BYTES`], checked from its metadata before reading. A stream that is
/// not safetensors (a pipe, `/dev/zero`) is refused after those 9 bytes.
pub fn read_model_file(path: &Path) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::format(path, "is a directory, not a model file"));
    }
    let onnx_name = path.extension().is_some_and(|e| e == "onnx");
    let mut head = Vec::with_capacity(9);
    (&mut f)
        .take(9)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(path, e))?;
    let size = meta.is_file().then_some(meta.len());
    if !onnx_name && head.len() == 9 && head[8] == b'{' {
        return crate::checkpoint::read_safetensors(
            std::io::Cursor::new(head).chain(f),
            size,
            path,
        );
    }
    if size.is_none() {
        return Err(Error::format(
            path,
            "not a regular file and not a safetensors stream (its first bytes are not a \
             safetensors header): copy the model to a file first",
        ));
    }
    drop(f);
    crate::io::read_file_limited(path, &limits::FILE_BYTES)
}

/// Reads ([`read_model_file`]) and imports the model file at `path` ([`from_bytes`]).
pub fn load(
    path: &Path,
    format: Option<Format>,
    spec: Option<&crate::model::ModelSpec>,
    opts: &ImportOptions,
) -> Result<Imported> {
    let bytes = read_model_file(path)?;
    from_bytes(&bytes, path, format, spec, opts)
}

/// Imports the bytes of a model file in `format` (detected when `None`: [`Format::detect`]).
/// `spec` is needed for safetensors files without margincert metadata (it names the layers
/// of a PyTorch `state_dict`) and, for ONNX, only checked against the graph. `path` is only
/// used in messages.
pub fn from_bytes(
    bytes: &[u8],
    path: &Path,
    format: Option<Format>,
    spec: Option<&crate::model::ModelSpec>,
    opts: &ImportOptions,
) -> Result<Imported> {
    let format = match format {
        Some(f) => f,
        None => Format::detect(path, bytes)?,
    };
    match format {
        Format::Safetensors => torch::from_bytes(bytes, path, spec, opts),
        Format::Onnx => {
            let imp = onnx::from_bytes(bytes, path, opts)?;
            if let Some(s) = spec
                && (s.input != imp.checkpoint.spec.input || s.layers != imp.checkpoint.spec.layers)
            {
                return Err(Error::Spec(format!(
                    "the ONNX graph gives layers {:?}, the spec file {:?}",
                    imp.checkpoint
                        .spec
                        .layers
                        .iter()
                        .map(|l| l.describe())
                        .collect::<Vec<_>>(),
                    s.layers.iter().map(|l| l.describe()).collect::<Vec<_>>()
                )));
            }
            Ok(imp)
        }
    }
}

/// The stored element type of a tensor being converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceDtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    Bf16,
    /// IEEE binary64.
    F64,
}

impl SourceDtype {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            SourceDtype::F32 => "f32",
            SourceDtype::F16 => "f16",
            SourceDtype::Bf16 => "bf16",
            SourceDtype::F64 => "f64",
        }
    }
}

/// Little-endian f16 bytes → f32, exactly (every f16 is an f32; NaN stays NaN and is
/// refused later by [`crate::model::Params::check`]).
pub fn f16_to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

/// Little-endian bf16 bytes → f32, exactly (a bf16 is the top half of an f32).
pub fn bf16_to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

/// f64 values → f32. Without `round`, refuses (naming the tensor, the position and the
/// value) unless every value is exactly an f32 (`(v as f32) as f64 == v`, NaN aside).
/// With `round`, rounds to nearest and returns how many values changed.
pub fn f64_to_f32(values: &[f64], name: &str, round: bool) -> Result<(Vec<f32>, usize)> {
    let mut changed = 0;
    let mut out = Vec::with_capacity(values.len());
    for (i, &v) in values.iter().enumerate() {
        let f = v as f32; // round to nearest, ties to even
        if !v.is_nan() && f as f64 != v {
            if !round {
                return Err(Error::Invalid(format!(
                    "tensor '{name}': f64 value {v:e} at position {i} is not exactly representable \
                     as f32 (nearest f32: {f:e}); refusing to certify a network other than the \
                     stored one (pass --round-f64 to certify the rounded network instead)"
                )));
            }
            changed += 1;
        }
        out.push(f);
    }
    Ok((out, changed))
}

/// Collects per-dtype conversion counts into notes.
#[derive(Debug, Default)]
pub(crate) struct Conversions {
    counts: BTreeMap<SourceDtype, usize>,
    rounded: Vec<(String, usize)>,
}

impl Conversions {
    pub(crate) fn add(&mut self, d: SourceDtype) {
        *self.counts.entry(d).or_default() += 1;
    }
    pub(crate) fn rounded(&mut self, name: &str, n: usize) {
        if n > 0 {
            self.rounded.push((name.to_string(), n));
        }
    }
    pub(crate) fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for (d, n) in &self.counts {
            let s = if *n == 1 { "" } else { "s" };
            notes.push(match d {
                SourceDtype::F32 => format!("read {n} tensor{s} stored as f32 as they are"),
                SourceDtype::F64 if self.rounded.is_empty() => {
                    format!("converted {n} tensor{s} from f64 exactly (every value is an f32)")
                }
                SourceDtype::F64 => format!("converted {n} tensor{s} from f64"),
                other => format!("converted {n} tensor{s} from {} exactly", other.name()),
            });
        }
        for (name, n) in &self.rounded {
            notes.push(format!(
                "WARNING: tensor '{name}': {n} f64 values were not f32 and were ROUNDED to \
                 nearest; the certificate is about the rounded network, not the stored one"
            ));
        }
        notes
    }
}

impl Format {
    /// Parses the CLI's `--format` value: `safetensors`, `onnx`, or `auto` (`None`).
    pub fn parse_cli(s: &str) -> Result<Option<Self>> {
        match s {
            "auto" => Ok(None),
            "safetensors" => Ok(Some(Format::Safetensors)),
            "onnx" => Ok(Some(Format::Onnx)),
            other => Err(Error::Invalid(format!(
                "unknown format '{other}': expected safetensors, onnx or auto"
            ))),
        }
    }
}
