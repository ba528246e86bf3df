//! ONNX models of sequential networks.
//!
//! The protobuf is parsed with the `onnx-protobuf` crate (code pre-generated from
//! `onnx.proto` for `protobuf` 3.4, so no `protoc` is needed at build time). The graph must
//! be a chain: every node takes the previous node's output (or the graph input) as its first
//! input, and the last node's output is the graph's only output. Supported operators and the
//! layers they become:
//!
//! | ONNX | margincert layer | conditions |
//! |------|------------------|------------|
//! | `Gemm` | `Dense` | `alpha = beta = 1`, `transA = 0`, `transB` either (0: the weight is transposed on import) |
//! | `MatMul` (+ `Add` of an initializer) | `Dense` (with bias) | weight `[in, out]` initializer |
//! | `Conv` | `Conv2d` | square kernel, equal strides, `group = 1`, `dilations = 1`; symmetric pads → `Explicit(p)` (`Valid` for 0); asymmetric pads equal to TF SAME, or `auto_pad = SAME_UPPER` → `Same` |
//! | `Relu`, `LeakyRelu(alpha)` | `Relu`, `LeakyRelu { slope: alpha }` | |
//! | `MaxPool`, `AveragePool` | `MaxPool`, `AvgPool` | square kernel, equal strides, no padding (so `count_include_pad` has no effect), `ceil_mode = 0`, dilations 1 |
//! | `Flatten` | `Flatten` | `axis = 1` |
//! | `Reshape` | `Flatten` | to `[N, -1]` (shape `[0 \| 1 \| -1, -1 \| C·H·W]`) |
//! | `Constant`, `Identity` | none | a constant feeding `Reshape`; identity is skipped |
//!
//! Anything else is refused with the operator, node index and node name. Initializers are
//! read from `raw_data` or the typed fields for FLOAT, FLOAT16, BFLOAT16 and DOUBLE (f64
//! only when exact, see [`super`]); external data is refused.
//!
//! The import is split by concern (private submodules): `graph` walks the node chain into
//! a [`ModelSpec`], `proto` reads initializers, constants and attributes out of the
//! protobuf, and `ops` turns the weight and pooling operators into layers.

mod graph;
mod ops;
mod proto;

use std::path::Path;

use onnx_protobuf::{Message, ModelProto};

use super::{ImportOptions, Imported};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params};
use graph::GraphReader;

/// Reads `path` and imports it (see [`from_bytes`]).
pub fn load(path: &Path, opts: &ImportOptions) -> Result<Imported> {
    let bytes = crate::import::read_model_file(path)?;
    from_bytes(&bytes, path, opts)
}

/// Imports an ONNX model from bytes; `path` is only used in messages. Only
/// [`ImportOptions::round_f64`] applies (names come from the graph).
pub fn from_bytes(bytes: &[u8], path: &Path, opts: &ImportOptions) -> Result<Imported> {
    let bad = |msg: String| Error::format(path, msg);
    let model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| bad(format!("not an ONNX model (protobuf: {e})")))?;
    if model.ir_version <= 0 {
        return Err(bad("not an ONNX model: no ir_version".into()));
    }
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| {
            bad("no opset_import for the default ONNX domain (truncated file?)".into())
        })?;
    if opset < 7 {
        return Err(bad(format!(
            "ONNX opset {opset} is older than 7; re-export with a newer opset"
        )));
    }
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| bad("the ONNX model has no graph".into()))?;
    let mut g = GraphReader::new(graph, opts, path)?;
    g.run()?;
    let spec = ModelSpec {
        name: if graph.name.is_empty() {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            graph.name.clone()
        },
        input: g.input,
        layers: g.layers,
    };
    spec.validate().map_err(|e| bad(e.to_string()))?;
    let params = Params { layers: g.params };
    params.check(&spec).map_err(|e| bad(e.to_string()))?;
    let mut notes = vec![format!(
        "ONNX opset {opset}, producer '{}', {} nodes → {} layers",
        model.producer_name,
        graph.node.len(),
        spec.layers.len()
    )];
    notes.extend(g.notes);
    notes.extend(g.conv.notes());
    Ok(Imported {
        checkpoint: Checkpoint {
            spec,
            params,
            train: None,
        },
        notes,
    })
}

/// Largest tensor (values) accepted: 2^32 (16 GiB of f32), so byte counts never overflow.
const MAX_VALUES: usize = 1 << 32;
