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
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::data::DataChoice;
use crate::error::{Error, Result};
use crate::io::{f32_le_bytes, le_f32, sha256_hex, write_atomic};
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
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Invalid(format!("serializing the checkpoint: {e}")))
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

    /// Reads a checkpoint and returns it with the SHA-256 (hex) of the file.
    pub fn load_with_digest(path: &Path) -> Result<(Self, String)> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let digest = sha256_hex(&bytes);
        Ok((Self::from_bytes(&bytes, path)?, digest))
    }
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
    let mut extra: Vec<String> = tensors
        .names()
        .into_iter()
        .filter(|n| !expected.iter().any(|e| e == *n))
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
