//! Checkpoints: safetensors files holding the parameters (f32, PyTorch layout, named like the
//! `state_dict` of the equivalent `nn.Sequential`: `"{i}.weight"`, `"{i}.bias"` with `i` the
//! layer index in the spec), and in the metadata the model spec and the training state.
//!
//! Metadata keys: `format` = [`FORMAT`], `spec` = the [`ModelSpec`] as JSON, and, for
//! checkpoints written by training, `train` = [`TrainInfo`] as JSON.
//!
//! Files are written atomically: to a temporary file in the same directory, flushed to disk,
//! then renamed over the destination, so a crash never leaves a half-written checkpoint.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::data::DataChoice;
use crate::error::{Error, Result};
use crate::io::{f32_le_bytes, le_f32, sha256_hex, write_atomic};
use crate::limits;
use crate::model::{LayerParams, ModelSpec, Params};
use crate::train::{EpochMetrics, TrainConfig, TrainState};

/// The value of the `format` metadata key.
pub const FORMAT: &str = "margincert-checkpoint/1";

/// Training information stored with a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainInfo {
    /// The training configuration.
    pub config: TrainConfig,
    /// The state needed to resume.
    pub state: TrainState,
    /// The data the run trained on: source, subsets, binary task.
    pub data: DataChoice,
    /// The metrics after the last completed epoch.
    #[serde(default)]
    pub metrics: Option<EpochMetrics>,
    /// Rayon threads the run used (resumes reproduce a run exactly only with the same count).
    pub threads: usize,
}

/// A model spec, its parameters and, optionally, training information.
///
/// Invariant: `params` matches `spec` (checked on load and before save).
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The model.
    pub spec: ModelSpec,
    /// Its parameters.
    pub params: Params,
    /// Training information, for checkpoints written by `margincert train`.
    pub train: Option<TrainInfo>,
}

impl Checkpoint {
    /// Serializes to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.params.check(&self.spec)?;
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for l in &self.params.layers {
            owned.push((
                format!("{}.weight", l.index),
                l.weight_shape.clone(),
                f32_le_bytes(&l.weight),
            ));
            if let Some(b) = &l.bias {
                owned.push((format!("{}.bias", l.index), vec![b.len()], f32_le_bytes(b)));
            }
        }
        let views = owned
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::Invalid(format!("tensor {name}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("spec".to_string(), self.spec.to_json());
        if let Some(t) = &self.train {
            meta.insert(
                "train".to_string(),
                serde_json::to_string(t).map_err(|e| Error::Invalid(e.to_string()))?,
            );
        }
        let bytes = safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Invalid(format!("serializing the checkpoint: {e}")))?;
        canonical_header(bytes)
    }

    /// Writes the checkpoint atomically (temporary file in the same directory, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        write_atomic(path, &bytes)
    }

    /// Parses safetensors bytes; `path` is only used in error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Checkpoint {
            path: path.to_path_buf(),
            msg,
        };
        let (_, metadata) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let meta = metadata.metadata().clone().unwrap_or_default();
        let spec_text = meta.get("spec").ok_or_else(|| {
            bad("no model spec in the metadata (key 'spec'); for a PyTorch state_dict give the spec separately".into())
        })?;
        check_format(meta.get("format").map(String::as_str)).map_err(bad)?;
        let spec = ModelSpec::parse(spec_text).map_err(|e| bad(e.to_string()))?;
        let train = meta
            .get("train")
            .map(|t| serde_json::from_str::<TrainInfo>(t))
            .transpose()
            .map_err(|e| bad(format!("invalid training metadata: {e}")))?;
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let params = params_from_tensors(&spec, &tensors).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            spec,
            params,
            train,
        })
    }

    /// Reads a checkpoint and checks it against its spec (shapes, finite values).
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Self::load_with_digest(path)?.0)
    }

    /// Reads a checkpoint ([`read_safetensors_file`]: bounded by its own header and by
    /// [`limits::FILE_BYTES`]) and returns it with the SHA-256 (hex) of the file.
    pub fn load_with_digest(path: &Path) -> Result<(Self, String)> {
        let bytes = read_safetensors_file(path)?;
        let digest = sha256_hex(&bytes);
        Ok((Self::from_bytes(&bytes, path)?, digest))
    }
}

/// Rewrites the JSON header of safetensors `bytes` with its keys sorted, so that the same
/// checkpoint always gives the same bytes: the safetensors writer emits the metadata map in
/// hash order, which differs between processes. The header keeps its length (same keys and
/// values, compact JSON, padded with spaces as written), so the data offsets are unchanged.
fn canonical_header(mut bytes: Vec<u8>) -> Result<Vec<u8>> {
    let bad = |what: &str| Error::Invalid(format!("canonicalizing the checkpoint header: {what}"));
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| bad("too short"))?;
    let n = usize::try_from(n).map_err(|_| bad("header length"))?;
    let header = bytes.get(8..8 + n).ok_or_else(|| bad("header length"))?;
    // `serde_json::Value` objects are ordered maps (no `preserve_order` feature): sorted keys.
    let value: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
    let text = serde_json::to_string(&value).map_err(|e| bad(&e.to_string()))?;
    if text.len() > n {
        return Err(bad("the sorted header is longer"));
    }
    let slot = &mut bytes[8..8 + n];
    slot[..text.len()].copy_from_slice(text.as_bytes());
    slot[text.len()..].fill(b' ');
    Ok(bytes)
}

/// Checks the `format` metadata value of a checkpoint: it must be [`FORMAT`]. The error
/// says what was found and what is expected.
pub fn check_format(found: Option<&str>) -> std::result::Result<(), String> {
    match found {
        Some(FORMAT) => Ok(()),
        Some(other) => Err(format!(
            "metadata 'format' is {other:?}, expected {FORMAT:?}: written by another program \
             or another version of margincert"
        )),
        None => Err(format!(
            "no 'format' key in the metadata (expected {FORMAT:?}): not a margincert \
             checkpoint; import a PyTorch state_dict with --spec instead"
        )),
    }
}

/// Reads a safetensors file without trusting its size: the 8-byte header length (at most
/// [`limits::SAFETENSORS_HEADER_BYTES`]), then the JSON header, whose tensor offsets declare
/// how many data bytes follow. The whole file must be exactly that long: a regular file of
/// another size (e.g. padded with gigabytes of zeros) is refused from its metadata before its
/// data is read, and any other file (a pipe, `/dev/zero`) is read only up to the declared
/// length plus one byte. The declared size is also checked against [`limits::FILE_BYTES`].
pub fn read_safetensors_file(path: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            msg: "is a directory, not a safetensors file".into(),
        });
    }
    read_safetensors(f, meta.is_file().then_some(meta.len()), path)
}

/// [`read_safetensors_file`] on an open reader; `size` is the file's size when known from
/// its metadata (a regular file), `path` names it in errors.
pub fn read_safetensors(r: impl Read, size: Option<u64>, path: &Path) -> Result<Vec<u8>> {
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let mut r = std::io::BufReader::new(r);
    let mut len8 = [0u8; 8];
    r.read_exact(&mut len8).map_err(|e| {
        bad(format!(
            "not a safetensors file: cannot read the 8-byte header length ({e})"
        ))
    })?;
    let n = u64::from_le_bytes(len8);
    if !(2..=limits::SAFETENSORS_HEADER_BYTES).contains(&n) {
        return Err(bad(format!(
            "not a safetensors file: header length {n} is outside 2..={}",
            limits::SAFETENSORS_HEADER_BYTES
        )));
    }
    let mut bytes = Vec::with_capacity(8 + n as usize);
    bytes.extend_from_slice(&len8);
    (&mut r)
        .take(n)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 != 8 + n {
        return Err(bad(format!(
            "truncated safetensors header: {} of {n} bytes",
            bytes.len() - 8
        )));
    }
    let data_len =
        declared_data_len(&bytes[8..]).map_err(|m| bad(format!("not a safetensors file: {m}")))?;
    let total = (8 + n).checked_add(data_len);
    limits::check_amount(
        &limits::FILE_BYTES,
        total,
        format!("the safetensors file {}", path.display()),
    )
    .map_err(|e| bad(e.to_string()))?;
    let total = total.unwrap_or(u64::MAX);
    if let Some(len) = size
        && len != total
    {
        return Err(bad(format!(
            "the header declares a file of {total} bytes ({data_len} bytes of tensor data), \
             the file has {len} bytes"
        )));
    }
    bytes.reserve_exact(crate::io::clamp(data_len));
    (&mut r)
        .take(data_len)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if (bytes.len() as u64) < total {
        return Err(bad(format!(
            "truncated: the header declares {total} bytes, the file has {}",
            bytes.len()
        )));
    }
    let mut one = [0u8; 1];
    if r.read(&mut one).map_err(|e| Error::io(path, e))? != 0 {
        return Err(bad(format!(
            "data after the {total} bytes the header declares"
        )));
    }
    Ok(bytes)
}

/// The number of data bytes a safetensors JSON header declares: the largest end offset of
/// its tensors (the safetensors crate checks the rest once the file is read).
fn declared_data_len(header: &[u8]) -> std::result::Result<u64, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("invalid JSON header ({e})"))?;
    let mut end = 0u64;
    for (name, v) in &map {
        if name == "__metadata__" {
            continue;
        }
        let e = v
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("tensor '{name}' has no valid data_offsets"))?;
        end = end.max(e);
    }
    Ok(end)
}

/// Builds [`Params`] for `spec` from named f32 tensors, with clear errors for missing,
/// extra, mistyped or misshapen tensors and for non-finite values.
pub fn params_from_tensors(spec: &ModelSpec, tensors: &SafeTensors<'_>) -> Result<Params> {
    let plans = spec.plan()?;
    let mut expected = Vec::new();
    let mut layers = Vec::new();
    for p in &plans {
        let Some(wshape) = p.op.weight_shape() else {
            continue;
        };
        let wname = format!("{}.weight", p.index);
        let weight = read_f32(tensors, &wname, &wshape)?;
        expected.push(wname);
        let bias = match p.op.bias_len() {
            Some(n) => {
                let bname = format!("{}.bias", p.index);
                let b = read_f32(tensors, &bname, &[n])?;
                expected.push(bname);
                Some(b)
            }
            None => None,
        };
        layers.push(LayerParams {
            index: p.index,
            weight_shape: wshape,
            weight,
            bias,
        });
    }
    // A set, not a list: the check stays linear in the tensor count.
    let expected: std::collections::HashSet<&str> = expected.iter().map(String::as_str).collect();
    let mut extra: Vec<String> = tensors
        .names()
        .into_iter()
        .filter(|n| !expected.contains(*n))
        .map(|n| n.to_string())
        .collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(Error::Shape(format!(
            "tensors not used by the model spec: {} (does a layer have a bias the spec does not declare?)",
            extra.join(", ")
        )));
    }
    let params = Params { layers };
    params.check(spec)?;
    Ok(params)
}

fn read_f32(tensors: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let t = tensors
        .tensor(name)
        .map_err(|_| Error::Shape(format!("missing tensor '{name}' (shape {shape:?})")))?;
    if t.dtype() != Dtype::F32 {
        return Err(Error::Shape(format!(
            "tensor '{name}' has dtype {:?}, expected F32",
            t.dtype()
        )));
    }
    if t.shape() != shape {
        return Err(Error::Shape(format!(
            "tensor '{name}' has shape {:?}, the spec wants {shape:?}",
            t.shape()
        )));
    }
    Ok(le_f32(t.data()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Shape, presets};

    fn small() -> Checkpoint {
        let spec = presets::by_name("mnist-cnn-first-bias", Shape::new(1, 12, 12), 3).unwrap();
        let params = Params::he_normal(&spec, 3).unwrap();
        Checkpoint {
            spec,
            params,
            train: None,
        }
    }

    #[test]
    fn round_trip_is_exact() {
        let c = small();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        c.save(&p).unwrap();
        assert_eq!(Checkpoint::load(&p).unwrap(), c);
        // Only the checkpoint is left in the directory: no temporary file.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// The same checkpoint always serializes to the same bytes (the safetensors writer's
    /// metadata map is in per-process hash order; the header is rewritten sorted), and the
    /// canonical bytes read back to the same checkpoint.
    #[test]
    fn serialization_is_deterministic() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/expected/tiny-cnn-last.safetensors");
        let c = Checkpoint::load(&path).unwrap();
        assert!(
            c.train.is_some(),
            "three metadata keys: format, spec, train"
        );
        let first = c.to_bytes().unwrap();
        for _ in 0..16 {
            assert_eq!(c.to_bytes().unwrap(), first);
        }
        assert_eq!(Checkpoint::from_bytes(&first, Path::new("x")).unwrap(), c);
        let n = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&first[8..8 + n]).unwrap();
        let (f, s, t) = (
            header.find("\"format\"").unwrap(),
            header.find("\"spec\"").unwrap(),
            header.find("\"train\"").unwrap(),
        );
        assert!(f < s && s < t, "{header}");
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = small().to_bytes().unwrap();
        for cut in (0..bytes.len()).step_by(97) {
            assert!(Checkpoint::from_bytes(&bytes[..cut], Path::new("x")).is_err());
        }
    }

    #[test]
    fn nan_weights_and_wrong_spec_are_refused() {
        let mut c = small();
        c.params.layers[1].weight[5] = f32::NAN;
        assert!(c.to_bytes().is_err());
        let good = small().to_bytes().unwrap();
        // Swap the spec for one with another hidden width: shapes no longer match.
        let other = presets::by_name("mnist-cnn", Shape::new(1, 12, 12), 3).unwrap();
        let tensors = SafeTensors::deserialize(&good).unwrap();
        let err = params_from_tensors(&other, &tensors)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0.bias"), "{err}");
    }
}
