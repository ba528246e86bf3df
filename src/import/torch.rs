//! PyTorch `state_dict`s saved with safetensors (`safetensors.torch.save_file`).
//!
//! Tensor names, in order of precedence, for the weight layer at spec index `i`:
//! 1. an explicit [`TensorMap`](super::TensorMap) entry `i = "stem"` → `"stem.weight"`,
//!    `"stem.bias"`;
//! 2. the `nn.Sequential` name with a prefix: `"{prefix}{i}.weight"`, `"{prefix}{i}.bias"`,
//!    where the prefix is [`ImportOptions::prefix`](super::ImportOptions::prefix) or, when
//!    not given, detected as the unique `P` (empty, or ending in `.`) such that
//!    `"{P}{i}.weight"` exists for the first weight layer.
//!
//! Every tensor of the file must be used (a bias the spec does not declare is an error, not
//! silently dropped). Dtypes F32, F16, BF16 and F64 are read (see [`super`] for the
//! exactness rules); any other dtype is refused with the tensor's name.

use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};

use super::{Conversions, ImportOptions, Imported, SourceDtype};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::{LayerParams, ModelSpec, Params};

/// Reads `path` and imports it (see [`from_bytes`]).
pub fn load(path: &Path, spec: Option<&ModelSpec>, opts: &ImportOptions) -> Result<Imported> {
    let bytes = crate::import::read_model_file(path)?;
    from_bytes(&bytes, path, spec, opts)
}

/// Imports safetensors bytes. `spec` names the layers; when `None`, the file's own
/// margincert metadata (key `spec`) must hold one. `path` is only used in messages.
pub fn from_bytes(
    bytes: &[u8],
    path: &Path,
    spec: Option<&ModelSpec>,
    opts: &ImportOptions,
) -> Result<Imported> {
    let bad = |msg: String| Error::Checkpoint {
        path: path.to_path_buf(),
        msg,
    };
    let tensors = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let mut notes = Vec::new();
    let spec = match spec {
        Some(s) => s.clone(),
        None => {
            let (_, meta) = SafeTensors::read_metadata(bytes)
                .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
            let text = meta
                .metadata()
                .as_ref()
                .and_then(|m| m.get("spec").cloned())
                .ok_or_else(|| {
                    bad("no model spec: give one (--spec FILE) naming the layers of this state_dict".into())
                })?;
            // A spec in the metadata is margincert's: its format must be the one it wrote.
            crate::checkpoint::check_format(
                meta.metadata()
                    .as_ref()
                    .and_then(|m| m.get("format"))
                    .map(String::as_str),
            )
            .map_err(bad)?;
            notes.push("model spec taken from the file's metadata".into());
            ModelSpec::parse(&text).map_err(|e| bad(e.to_string()))?
        }
    };
    let params = params_from(&spec, &tensors, opts, &mut notes).map_err(|e| match e {
        Error::Io { .. } => e,
        other => bad(other.to_string()),
    })?;
    Ok(Imported {
        checkpoint: Checkpoint {
            spec,
            params,
            train: None,
        },
        notes,
    })
}

/// Builds [`Params`] for `spec` from the tensors, following the naming rules of this module.
pub fn params_from(
    spec: &ModelSpec,
    tensors: &SafeTensors<'_>,
    opts: &ImportOptions,
    notes: &mut Vec<String>,
) -> Result<Params> {
    let plans = spec.plan()?;
    let weight_plans: Vec<_> = plans.iter().filter(|p| p.layer.has_weights()).collect();
    let mut names: Vec<String> = tensors.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    let prefix = match &opts.prefix {
        Some(p) => p.clone(),
        None => detect_prefix(&weight_plans, &names, opts)?,
    };
    if !prefix.is_empty() {
        notes.push(format!("tensor names carry the prefix '{prefix}'"));
    }
    let mut used = Vec::new();
    let mut conv = Conversions::default();
    let mut layers = Vec::new();
    for p in &weight_plans {
        let stem = match opts.map.as_ref().and_then(|m| m.stem(p.index)) {
            Some(s) => s.to_string(),
            None => format!("{prefix}{}", p.index),
        };
        let wshape = p.weight_shape().expect("weight layer");
        let wname = format!("{stem}.weight");
        let weight = read(tensors, &wname, &wshape, p.index, &names, opts, &mut conv)?;
        used.push(wname);
        let bname = format!("{stem}.bias");
        let bias = match p.bias_len() {
            Some(n) => {
                let b = read(tensors, &bname, &[n], p.index, &names, opts, &mut conv)?;
                used.push(bname);
                Some(b)
            }
            None => {
                if names.binary_search(&bname).is_ok() {
                    return Err(Error::Shape(format!(
                        "layer {} ({}): the file has a bias '{bname}' the spec does not declare \
                         (set bias = true on that layer, or the network is not the spec's)",
                        p.index,
                        p.layer.describe()
                    )));
                }
                None
            }
        };
        layers.push(LayerParams {
            index: p.index,
            weight_shape: wshape,
            weight,
            bias,
        });
    }
    // Sets, not lists: the checks stay linear in the tensor count.
    let used: std::collections::HashSet<&String> = used.iter().collect();
    let extra: Vec<&String> = names.iter().filter(|n| !used.contains(n)).collect();
    if !extra.is_empty() {
        return Err(Error::Shape(format!(
            "tensors not used by the model spec: {} (a layer missing from the spec, or a \
             wrong prefix / map?)",
            extra
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Some(m) = &opts.map {
        let weight_indices: std::collections::HashSet<usize> =
            weight_plans.iter().map(|p| p.index).collect();
        for (i, stem) in &m.layers {
            if !weight_indices.contains(i) {
                return Err(Error::Spec(format!(
                    "the tensor map names layer {i} ('{stem}'), which is not a weight layer of the spec"
                )));
            }
        }
        notes.push(format!(
            "tensor names from the map file for layers {:?}",
            m.layers.keys().collect::<Vec<_>>()
        ));
    }
    notes.extend(conv.notes());
    let params = Params { layers };
    params.check(spec)?;
    Ok(params)
}

fn detect_prefix(
    weight_plans: &[&crate::model::LayerPlan],
    names: &[String],
    opts: &ImportOptions,
) -> Result<String> {
    // The first weight layer not covered by the map decides.
    let Some(first) = weight_plans
        .iter()
        .find(|p| opts.map.as_ref().and_then(|m| m.stem(p.index)).is_none())
    else {
        return Ok(String::new());
    };
    let suffix = format!("{}.weight", first.index);
    let cands: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix(&suffix))
        .filter(|p| p.is_empty() || p.ends_with('.'))
        .collect();
    match cands.as_slice() {
        [p] => Ok(p.to_string()),
        [] => Err(Error::Shape(format!(
            "no tensor named '{suffix}' (with or without a prefix) for layer {} ({}); the file \
             has: {}. If the layer indices differ from the spec's, give a map file (--map)",
            first.index,
            first.layer.describe(),
            names.join(", ")
        ))),
        many => Err(Error::Shape(format!(
            "several tensors could be layer {}'s weight: {}; give the prefix or a map file",
            first.index,
            many.iter()
                .map(|p| format!("'{p}{suffix}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn read(
    tensors: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
    layer: usize,
    names: &[String],
    opts: &ImportOptions,
    conv: &mut Conversions,
) -> Result<Vec<f32>> {
    let t = tensors.tensor(name).map_err(|_| {
        Error::Shape(format!(
            "layer {layer}: missing tensor '{name}' (shape {shape:?}); the file has: {}",
            names.join(", ")
        ))
    })?;
    if t.shape() != shape {
        return Err(Error::Shape(format!(
            "layer {layer}: tensor '{name}' has shape {:?}, the spec wants {shape:?}",
            t.shape()
        )));
    }
    let data = t.data();
    let values = match t.dtype() {
        Dtype::F32 => {
            conv.add(SourceDtype::F32);
            crate::io::le_f32(data)
        }
        Dtype::F16 => {
            conv.add(SourceDtype::F16);
            super::f16_to_f32(data)
        }
        Dtype::BF16 => {
            conv.add(SourceDtype::Bf16);
            super::bf16_to_f32(data)
        }
        Dtype::F64 => {
            conv.add(SourceDtype::F64);
            let (v, changed) = super::f64_to_f32(&crate::io::le_f64(data), name, opts.round_f64)?;
            conv.rounded(name, changed);
            v
        }
        other => {
            return Err(Error::Shape(format!(
                "layer {layer}: tensor '{name}' has dtype {other:?}; only F32, F16, BF16 and F64 \
                 are imported"
            )));
        }
    };
    if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite(format!(
            "layer {layer}: tensor '{name}' value {pos} is {}",
            values[pos]
        )));
    }
    Ok(values)
}
