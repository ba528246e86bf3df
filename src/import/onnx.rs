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

use std::collections::HashMap;
use std::path::Path;

use onnx_protobuf::{Message, ModelProto, NodeProto, TensorProto, tensor_proto::DataType};

use super::{Conversions, ImportOptions, Imported, SourceDtype};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model::{Layer, LayerParams, ModelSpec, Padding, Params, Shape, Window};

/// Reads `path` and imports it (see [`from_bytes`]).
pub fn load(path: &Path, opts: &ImportOptions) -> Result<Imported> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
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

/// Weight shape, weights and optional bias of a weight layer being built.
type WeightsOf = (Vec<usize>, Vec<f32>, Option<Vec<f32>>);

struct GraphReader<'a> {
    graph: &'a onnx_protobuf::GraphProto,
    inits: HashMap<&'a str, &'a TensorProto>,
    consts: HashMap<String, &'a TensorProto>,
    opts: &'a ImportOptions,
    path: &'a Path,
    input: Shape,
    input_name: String,
    shape: Shape,
    layers: Vec<Layer>,
    params: Vec<LayerParams>,
    conv: Conversions,
    notes: Vec<String>,
}

fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n onnx_protobuf::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}
fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map_or(default, |a| a.i)
}
fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).map_or(default, |a| a.f)
}
fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}
fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

impl<'a> GraphReader<'a> {
    fn new(
        graph: &'a onnx_protobuf::GraphProto,
        opts: &'a ImportOptions,
        path: &'a Path,
    ) -> Result<Self> {
        let inits: HashMap<&str, &TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !inits.contains_key(i.name.as_str()))
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(Error::format(
                path,
                format!(
                    "the graph must have exactly one (non-initializer) input, it has {}",
                    inputs.len()
                ),
            ));
        };
        let dims: Vec<i64> = input
            .type_
            .as_ref()
            .map(|t| {
                t.tensor_type()
                    .shape
                    .dim
                    .iter()
                    .map(|d| d.dim_value())
                    .collect()
            })
            .unwrap_or_default();
        let pos = |d: i64| -> Result<usize> {
            if d > 0 && d <= 1 << 24 {
                Ok(d as usize)
            } else {
                Err(Error::format(
                    path,
                    format!(
                        "graph input '{}': dims {dims:?} must be known and positive (batch aside)",
                        input.name
                    ),
                ))
            }
        };
        let shape = match dims.len() {
            4 => Shape::new(pos(dims[1])?, pos(dims[2])?, pos(dims[3])?),
            2 => Shape::flat(pos(dims[1])?),
            _ => {
                return Err(Error::format(
                    path,
                    format!(
                        "graph input '{}' has dims {dims:?}; expected [N, C, H, W] or [N, F]",
                        input.name
                    ),
                ));
            }
        };
        if shape
            .c
            .checked_mul(shape.h)
            .and_then(|x| x.checked_mul(shape.w))
            .is_none_or(|n| n > MAX_VALUES)
        {
            return Err(Error::format(
                path,
                format!("graph input '{}': dims {dims:?} are too large", input.name),
            ));
        }
        Ok(Self {
            graph,
            inits,
            consts: HashMap::new(),
            opts,
            path,
            input: shape,
            input_name: input.name.clone(),
            shape,
            layers: Vec::new(),
            params: Vec::new(),
            conv: Conversions::default(),
            notes: Vec::new(),
        })
    }

    fn err(&self, k: usize, node: &NodeProto, msg: impl std::fmt::Display) -> Error {
        Error::format(
            self.path,
            format!("ONNX node {k} '{}' ({}): {msg}", node.name, node.op_type),
        )
    }

    fn tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.inits
            .get(name)
            .copied()
            .or_else(|| self.consts.get(name).copied())
    }

    /// The weight (second input) of node `k`: its name and its initializer.
    fn weight(&self, k: usize, node: &NodeProto) -> Result<(String, &'a TensorProto)> {
        let wname = node
            .input
            .get(1)
            .ok_or_else(|| self.err(k, node, "no weight input"))?
            .clone();
        let t = self
            .tensor(&wname)
            .ok_or_else(|| self.err(k, node, format!("weight '{wname}' is not an initializer")))?;
        Ok((wname, t))
    }

    /// An initializer as f32, checked against `shape`.
    fn floats(
        &mut self,
        k: usize,
        node: &NodeProto,
        name: &str,
        shape: &[usize],
    ) -> Result<Vec<f32>> {
        let t = self.tensor(name).ok_or_else(|| {
            self.err(
                k,
                node,
                format!(
                    "input '{name}' is not an initializer (only constant weights are imported)"
                ),
            )
        })?;
        let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
        if dims != shape {
            return Err(self.err(
                k,
                node,
                format!("tensor '{name}' has shape {:?}, expected {shape:?}", t.dims),
            ));
        }
        let n = shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .filter(|&n| n <= MAX_VALUES)
            .ok_or_else(|| {
                self.err(k, node, format!("tensor '{name}' is too large ({shape:?})"))
            })?;
        if t.data_location.value() != 0 {
            return Err(self.err(
                k,
                node,
                format!("tensor '{name}' uses external data, which is not supported"),
            ));
        }
        let raw = !t.raw_data.is_empty() || n == 0;
        let dt = t.data_type;
        let values = if dt == DataType::FLOAT as i32 {
            self.conv.add(SourceDtype::F32);
            if raw {
                need(t.raw_data.len(), n * 4).map(|_| crate::io::le_f32(&t.raw_data))
            } else {
                need(t.float_data.len(), n).map(|_| t.float_data.clone())
            }
        } else if dt == DataType::FLOAT16 as i32 || dt == DataType::BFLOAT16 as i32 {
            let is16 = dt == DataType::FLOAT16 as i32;
            self.conv.add(if is16 {
                SourceDtype::F16
            } else {
                SourceDtype::Bf16
            });
            let bytes: std::result::Result<Vec<u8>, String> = if raw {
                need(t.raw_data.len(), n * 2).map(|_| t.raw_data.clone())
            } else {
                need(t.int32_data.len(), n).map(|_| {
                    t.int32_data
                        .iter()
                        .flat_map(|&v| (v as u16).to_le_bytes())
                        .collect()
                })
            };
            bytes.map(|b| {
                if is16 {
                    super::f16_to_f32(&b)
                } else {
                    super::bf16_to_f32(&b)
                }
            })
        } else if dt == DataType::DOUBLE as i32 {
            self.conv.add(SourceDtype::F64);
            let vals = if raw {
                need(t.raw_data.len(), n * 8).map(|_| crate::io::le_f64(&t.raw_data))
            } else {
                need(t.double_data.len(), n).map(|_| t.double_data.clone())
            };
            match vals {
                Ok(v) => {
                    let (f, changed) = super::f64_to_f32(&v, name, self.opts.round_f64)
                        .map_err(|e| self.err(k, node, e))?;
                    self.conv.rounded(name, changed);
                    Ok(f)
                }
                Err(e) => Err(e),
            }
        } else {
            return Err(self.err(k, node, format!("tensor '{name}' has ONNX data type {dt}; only FLOAT, FLOAT16, BFLOAT16 and DOUBLE are imported")));
        };
        let values = values.map_err(|m| self.err(k, node, format!("tensor '{name}': {m}")))?;
        if let Some(p) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!(
                "ONNX tensor '{name}' value {p} is {}",
                values[p]
            )));
        }
        Ok(values)
    }

    fn ints(&self, k: usize, node: &NodeProto, name: &str) -> Result<Vec<i64>> {
        let t = self
            .tensor(name)
            .ok_or_else(|| self.err(k, node, format!("shape '{name}' is not a constant")))?;
        if t.data_type != DataType::INT64 as i32 {
            return Err(self.err(k, node, format!("shape '{name}' is not INT64")));
        }
        if !t.raw_data.is_empty() {
            if t.raw_data.len() % 8 != 0 {
                return Err(self.err(k, node, "malformed INT64 raw data"));
            }
            Ok(t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
                .collect())
        } else {
            Ok(t.int64_data.clone())
        }
    }

    fn push(&mut self, layer: Layer, params: Option<WeightsOf>) -> Result<()> {
        let index = self.layers.len();
        self.layers.push(layer);
        let spec = ModelSpec {
            name: String::new(),
            input: self.input,
            layers: self.layers.clone(),
        };
        // shape of the new layer's output (the spec may not be complete: no flat-output check)
        let mut shape = self.input;
        for (i, l) in spec.layers.iter().enumerate() {
            shape = step(l, shape).map_err(|m| {
                Error::format(self.path, format!("layer {i} ({}): {m}", l.describe()))
            })?;
        }
        self.shape = shape;
        if let Some((weight_shape, weight, bias)) = params {
            self.params.push(LayerParams {
                index,
                weight_shape,
                weight,
                bias,
            });
        }
        Ok(())
    }

    fn run(&mut self) -> Result<()> {
        let nodes = &self.graph.node;
        let mut cur = self.input_name.clone();
        let mut k = 0;
        while k < nodes.len() {
            let node = &nodes[k];
            let op = node.op_type.as_str();
            if op == "Constant" {
                if let (Some(out), Some(a)) = (node.output.first(), attr(node, "value"))
                    && let Some(t) = a.t.as_ref()
                {
                    self.consts.insert(out.clone(), t);
                    k += 1;
                    continue;
                }
                return Err(self.err(
                    k,
                    node,
                    "only Constant nodes with a tensor 'value' are supported",
                ));
            }
            if !node.domain.is_empty() && node.domain != "ai.onnx" {
                return Err(self.err(
                    k,
                    node,
                    format!(
                        "unsupported ONNX operator '{op}' of domain '{}' at node {k} '{}'",
                        node.domain, node.name
                    ),
                ));
            }
            if node.input.first() != Some(&cur) {
                return Err(self.err(k, node, format!(
                    "the graph is not a chain: this node's first input is {:?}, the previous output is '{cur}'",
                    node.input.first()
                )));
            }
            if node.output.len() != 1
                && !(op == "MaxPool" && node.output.len() == 2 && node.output[1].is_empty())
            {
                return Err(self.err(k, node, "nodes with several outputs are not supported"));
            }
            let mut out = node.output[0].clone();
            match op {
                "Identity" => {}
                "Relu" => self.push(Layer::Relu, None)?,
                "LeakyRelu" => self.push(
                    Layer::LeakyRelu {
                        slope: attr_f(node, "alpha", 0.01),
                    },
                    None,
                )?,
                "Flatten" => {
                    if attr_i(node, "axis", 1) != 1 {
                        return Err(self.err(k, node, "only Flatten with axis = 1 is supported"));
                    }
                    self.push(Layer::Flatten, None)?;
                }
                "Reshape" => {
                    let target = node
                        .input
                        .get(1)
                        .ok_or_else(|| self.err(k, node, "no shape input"))?;
                    let s = self.ints(k, node, target)?;
                    let len = self.shape.len() as i64;
                    let ok = s.len() == 2
                        && (s[1] == -1 || s[1] == len)
                        && (-1..=1).contains(&s[0])
                        && !(s[0] == -1 && s[1] == -1);
                    if !ok {
                        return Err(self.err(
                            k,
                            node,
                            format!(
                                "only Reshape to [N, -1] (a flatten) is supported, got shape {s:?}"
                            ),
                        ));
                    }
                    self.push(Layer::Flatten, None)?;
                }
                "Gemm" => {
                    if attr_f(node, "alpha", 1.0) != 1.0 || attr_f(node, "beta", 1.0) != 1.0 {
                        return Err(self.err(
                            k,
                            node,
                            "Gemm with alpha or beta other than 1 is not supported",
                        ));
                    }
                    if attr_i(node, "transA", 0) != 0 {
                        return Err(self.err(k, node, "Gemm with transA = 1 is not supported"));
                    }
                    let trans_b = attr_i(node, "transB", 0) != 0;
                    self.dense(
                        k,
                        node,
                        trans_b,
                        node.input.get(2).filter(|s| !s.is_empty()).cloned(),
                    )?;
                }
                "MatMul" => {
                    // A following Add of an initializer to this output is the bias.
                    let bias = nodes.get(k + 1).filter(|n| {
                        n.op_type == "Add"
                            && n.input.len() == 2
                            && n.output.len() == 1
                            && n.input[0] == out
                            && self.tensor(&n.input[1]).is_some()
                    });
                    let bias_name = bias.map(|n| n.input[1].clone());
                    self.dense(k, node, false, bias_name)?;
                    if let Some(n) = bias {
                        out = n.output[0].clone();
                        k += 1;
                    }
                }
                "Conv" => self.conv_node(k, node)?,
                "MaxPool" | "AveragePool" => {
                    let ks = attr_ints(node, "kernel_shape").unwrap_or_default();
                    let st = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
                    let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
                    let dil = attr_ints(node, "dilations").unwrap_or_else(|| vec![1, 1]);
                    let auto = attr_s(node, "auto_pad").unwrap_or_default();
                    if !geometry_ok(&ks) || !geometry_ok(&st) {
                        return Err(self.err(
                            k,
                            node,
                            "kernel or strides out of range (negative or above 65536)",
                        ));
                    }
                    if ks.len() != 2
                        || ks[0] != ks[1]
                        || ks[0] < 1
                        || st.len() != 2
                        || st[0] != st[1]
                        || st[0] < 1
                    {
                        return Err(self.err(k, node, format!("only square 2-D pools with equal strides are supported (kernel {ks:?}, strides {st:?})")));
                    }
                    if pads.iter().any(|&p| p != 0)
                        || !(auto.is_empty() || auto == "NOTSET" || auto == "VALID")
                    {
                        return Err(self.err(
                            k,
                            node,
                            format!(
                                "padded pooling is not supported (pads {pads:?}, auto_pad '{auto}')"
                            ),
                        ));
                    }
                    if attr_i(node, "ceil_mode", 0) != 0
                        || dil.iter().any(|&d| d != 1)
                        || attr_i(node, "storage_order", 0) != 0
                    {
                        return Err(self.err(
                            k,
                            node,
                            "pooling with ceil_mode, dilations or storage_order is not supported",
                        ));
                    }
                    // stride == size is written `None` (the spec's default), as native specs do
                    let size = ks[0] as usize;
                    let stride = Some(st[0] as usize).filter(|&t| t != size);
                    self.push(
                        if op == "MaxPool" {
                            Layer::MaxPool { size, stride }
                        } else {
                            Layer::AvgPool { size, stride }
                        },
                        None,
                    )?;
                }
                other => {
                    return Err(Error::format(
                        self.path,
                        format!(
                            "unsupported ONNX operator '{other}' at node {k} '{}'",
                            node.name
                        ),
                    ));
                }
            }
            cur = out;
            k += 1;
        }
        let outs: Vec<&str> = self.graph.output.iter().map(|o| o.name.as_str()).collect();
        if outs != [cur.as_str()] {
            return Err(Error::format(
                self.path,
                format!("the graph's outputs {outs:?} are not the last node's output '{cur}'"),
            ));
        }
        if self.layers.is_empty() {
            return Err(Error::format(self.path, "the graph has no layer"));
        }
        Ok(())
    }

    fn dense(
        &mut self,
        k: usize,
        node: &NodeProto,
        trans_b: bool,
        bias: Option<String>,
    ) -> Result<()> {
        if !self.shape.is_flat() {
            return Err(self.err(
                k,
                node,
                format!(
                    "a {} on a non-flat input {} (add Flatten first)",
                    node.op_type, self.shape
                ),
            ));
        }
        let (wname, t) = self.weight(k, node)?;
        let n_in = self.shape.len();
        if t.dims.len() != 2 {
            return Err(self.err(
                k,
                node,
                format!("weight '{wname}' has dims {:?}, expected 2-D", t.dims),
            ));
        }
        let out = if trans_b { t.dims[0] } else { t.dims[1] };
        if out <= 0 {
            return Err(self.err(k, node, format!("weight '{wname}' has dims {:?}", t.dims)));
        }
        if out as usize > MAX_VALUES {
            return Err(self.err(
                k,
                node,
                format!("weight '{wname}' has dims {:?}: too large", t.dims),
            ));
        }
        let out = out as usize;
        let weight = if trans_b {
            self.floats(k, node, &wname, &[out, n_in])?
        } else {
            let w = self.floats(k, node, &wname, &[n_in, out])?;
            let mut t = vec![0.0; w.len()];
            for i in 0..n_in {
                for o in 0..out {
                    t[o * n_in + i] = w[i * out + o];
                }
            }
            t
        };
        let b = match bias {
            Some(b) => {
                let dims = &self.tensor(&b).map(|t| t.dims.clone()).unwrap_or_default();
                let shape: Vec<usize> = if dims.len() == 2 {
                    vec![1, out]
                } else {
                    vec![out]
                };
                Some(self.floats(k, node, &b, &shape)?)
            }
            None => None,
        };
        self.push(
            Layer::Dense {
                out,
                bias: b.is_some(),
            },
            Some((vec![out, n_in], weight, b)),
        )
    }

    fn conv_node(&mut self, k: usize, node: &NodeProto) -> Result<()> {
        if self.shape.is_flat()
            && self
                .layers
                .iter()
                .any(|l| matches!(l, Layer::Flatten | Layer::Dense { .. }))
        {
            return Err(self.err(k, node, "Conv after Flatten/Dense is not supported"));
        }
        let (wname, t) = self.weight(k, node)?;
        let d = t.dims.clone();
        if d.len() != 4 || d[2] != d[3] || d.iter().any(|&x| x <= 0) {
            return Err(self.err(k, node, format!("weight '{wname}' has dims {d:?}; only square 2-D kernels [out, in, k, k] are supported")));
        }
        if !geometry_ok(&d[2..]) || d[0] as usize > MAX_VALUES {
            return Err(self.err(
                k,
                node,
                format!("weight '{wname}' has dims {d:?}: too large"),
            ));
        }
        let (out, kern) = (d[0] as usize, d[2] as usize);
        if attr_i(node, "group", 1) != 1 {
            return Err(self.err(
                k,
                node,
                "grouped convolutions (group != 1) are not supported",
            ));
        }
        if attr_ints(node, "dilations").is_some_and(|v| v.iter().any(|&x| x != 1)) {
            return Err(self.err(k, node, "dilated convolutions are not supported"));
        }
        let st = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
        if st.len() != 2 || st[0] != st[1] || st[0] < 1 {
            return Err(self.err(
                k,
                node,
                format!("strides {st:?}: only equal strides are supported"),
            ));
        }
        if !geometry_ok(&st) || !geometry_ok(&attr_ints(node, "pads").unwrap_or_default()) {
            return Err(self.err(
                k,
                node,
                "strides or pads out of range (negative or above 65536)",
            ));
        }
        let stride = st[0] as usize;
        let auto = attr_s(node, "auto_pad").unwrap_or_default();
        let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
        let padding = match auto.as_str() {
            "" | "NOTSET" => {
                if pads.len() != 4 || pads.iter().any(|&p| p < 0) {
                    return Err(self.err(k, node, format!("pads {pads:?}")));
                }
                let p: Vec<usize> = pads.iter().map(|&p| p as usize).collect();
                // ONNX pads: [top, left, bottom, right]
                if p.iter().all(|&x| x == p[0]) {
                    if p[0] == 0 {
                        Padding::Valid
                    } else {
                        Padding::Explicit(p[0])
                    }
                } else {
                    let w = Window::new(kern, stride, Padding::Same, self.shape.h, self.shape.w)
                        .map_err(|e| self.err(k, node, e))?;
                    let bottom =
                        ((w.out_h - 1) * stride + kern).saturating_sub(self.shape.h) - w.pad_top;
                    let right =
                        ((w.out_w - 1) * stride + kern).saturating_sub(self.shape.w) - w.pad_left;
                    if p == [w.pad_top, w.pad_left, bottom, right] {
                        self.notes.push(format!(
                            "node {k} '{}': asymmetric pads {pads:?} are TensorFlow SAME",
                            node.name
                        ));
                        Padding::Same
                    } else {
                        return Err(self.err(k, node, format!("asymmetric pads {pads:?} are neither symmetric nor TensorFlow SAME ({:?})", [w.pad_top, w.pad_left, bottom, right])));
                    }
                }
            }
            "VALID" => Padding::Valid,
            "SAME_UPPER" => Padding::Same,
            other => return Err(self.err(k, node, format!("auto_pad '{other}' is not supported"))),
        };
        let weight = self.floats(k, node, &wname, &[out, self.shape.c, kern, kern])?;
        let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
            Some(b) => Some(self.floats(k, node, &b.clone(), &[out])?),
            None => None,
        };
        self.push(
            Layer::Conv2d {
                out,
                kernel: kern,
                stride,
                padding,
                bias: bias.is_some(),
            },
            Some((vec![out, self.shape.c, kern, kern], weight, bias)),
        )
    }
}

/// Largest tensor (values) accepted: 2^32 (16 GiB of f32), so byte counts never overflow.
const MAX_VALUES: usize = 1 << 32;
/// Largest kernel, stride or padding accepted (window geometry stays far from overflow).
const MAX_GEOMETRY: i64 = 1 << 16;

/// Refuses geometry values outside `0..=MAX_GEOMETRY`.
fn geometry_ok(v: &[i64]) -> bool {
    v.iter().all(|&x| (0..=MAX_GEOMETRY).contains(&x))
}

fn need(have: usize, want: usize) -> std::result::Result<(), String> {
    if have == want {
        Ok(())
    } else {
        Err(format!("holds {have} values/bytes, the shape needs {want}"))
    }
}

/// Output shape of `layer` on `shape` (the geometry of [`ModelSpec::plan`], without the
/// whole-network checks).
fn step(layer: &Layer, shape: Shape) -> std::result::Result<Shape, String> {
    let spec = ModelSpec {
        name: String::new(),
        input: shape,
        layers: vec![layer.clone(), Layer::Flatten],
    };
    spec.plan().map(|p| p[0].output).map_err(|e| e.to_string())
}
