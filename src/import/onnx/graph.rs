//! Walking an ONNX graph's node chain into the layers of a [`ModelSpec`].

use std::collections::HashMap;
use std::path::Path;

use onnx_protobuf::{NodeProto, TensorProto};

use super::MAX_VALUES;
use super::proto::{attr, attr_f, attr_i};
use crate::error::{Error, Result};
use crate::import::{Conversions, ImportOptions};
use crate::model::{Layer, LayerParams, ModelSpec, Shape};

/// Weight shape, weights and optional bias of a weight layer being built.
pub(super) type WeightsOf = (Vec<usize>, Vec<f32>, Option<Vec<f32>>);

/// The state of one import: the graph being walked and the layers, parameters and notes
/// read so far.
pub(super) struct GraphReader<'a> {
    /// The graph being read.
    pub(super) graph: &'a onnx_protobuf::GraphProto,
    /// Initializers by name.
    pub(super) inits: HashMap<&'a str, &'a TensorProto>,
    /// Tensors of the `Constant` nodes seen so far, by output name.
    pub(super) consts: HashMap<String, &'a TensorProto>,
    /// The import options (only `round_f64` applies).
    pub(super) opts: &'a ImportOptions,
    /// The file, for messages.
    pub(super) path: &'a Path,
    /// The graph input's shape (batch dimension dropped).
    pub(super) input: Shape,
    /// The graph input's name: the first node's first input.
    pub(super) input_name: String,
    /// The output shape of the layers so far.
    pub(super) shape: Shape,
    /// Whether a `Flatten` or `Dense` layer was pushed (a conv may not follow).
    pub(super) flattened: bool,
    /// The layers so far.
    pub(super) layers: Vec<Layer>,
    /// The parameters of the weight layers so far.
    pub(super) params: Vec<LayerParams>,
    /// Element types converted (for the notes).
    pub(super) conv: Conversions,
    /// Notes on what the import did.
    pub(super) notes: Vec<String>,
}

impl<'a> GraphReader<'a> {
    /// Checks the graph input (exactly one, `[N, C, H, W]` or `[N, F]`) and starts an
    /// empty reader on it.
    pub(super) fn new(
        graph: &'a onnx_protobuf::GraphProto,
        opts: &'a ImportOptions,
        path: &'a Path,
    ) -> Result<Self> {
        crate::limits::ONNX_NODES
            .check(graph.node.len() as u64, "the ONNX graph")
            .map_err(|e| Error::format(path, e.to_string()))?;
        let mut inits: HashMap<&str, &TensorProto> =
            HashMap::with_capacity(graph.initializer.len());
        for t in &graph.initializer {
            if inits.insert(t.name.as_str(), t).is_some() {
                return Err(Error::format(
                    path,
                    format!(
                        "duplicate initializer '{}': two tensors of one name make the graph \
                         ambiguous (onnx.checker refuses it)",
                        t.name
                    ),
                ));
            }
        }
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
        let elem = input
            .type_
            .as_ref()
            .map_or(0, |t| t.tensor_type().elem_type);
        if elem != onnx_protobuf::tensor_proto::DataType::FLOAT as i32 {
            return Err(Error::format(
                path,
                format!(
                    "graph input '{}' has ONNX element type {elem}; only FLOAT (1) inputs are \
                     imported (the certificate is about real-valued inputs p / 255)",
                    input.name
                ),
            ));
        }
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
            flattened: false,
            layers: Vec::new(),
            params: Vec::new(),
            conv: Conversions::default(),
            notes: Vec::new(),
        })
    }

    /// An error at node `k`, naming the node and its operator.
    pub(super) fn err(&self, k: usize, node: &NodeProto, msg: impl std::fmt::Display) -> Error {
        Error::format(
            self.path,
            format!("ONNX node {k} '{}' ({}): {msg}", node.name, node.op_type),
        )
    }

    /// Appends `layer` (with its parameters, for weight layers) and updates the output shape
    /// from the previous one (constant time: the import stays linear in the node count).
    pub(super) fn push(&mut self, layer: Layer, params: Option<WeightsOf>) -> Result<()> {
        let index = self.layers.len();
        // shape of the new layer's output (the spec may not be complete: no flat-output check)
        self.shape = step(&layer, self.shape).map_err(|m| {
            Error::format(
                self.path,
                format!("layer {index} ({}): {m}", layer.describe()),
            )
        })?;
        if matches!(layer, Layer::Flatten | Layer::Dense { .. }) {
            self.flattened = true;
        }
        self.layers.push(layer);
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

    /// Checks what onnx.checker checks of a node before it is read: no attribute twice (the
    /// ONNX reference takes the last, a first-match reader the first: two networks), and
    /// the input count of its operator.
    fn check_node(&self, k: usize, node: &NodeProto) -> Result<()> {
        let mut seen = std::collections::HashSet::with_capacity(node.attribute.len());
        for a in &node.attribute {
            if !seen.insert(a.name.as_str()) {
                return Err(self.err(
                    k,
                    node,
                    format!("duplicate attribute '{}' (onnx.checker refuses it)", a.name),
                ));
            }
        }
        let (lo, hi) = match node.op_type.as_str() {
            "Constant" => (0, 0),
            "Identity" | "Relu" | "LeakyRelu" | "Flatten" | "MaxPool" | "AveragePool" => (1, 1),
            "Reshape" | "MatMul" | "Add" => (2, 2),
            "Gemm" | "Conv" => (2, 3),
            _ => return Ok(()),
        };
        let n = node.input.len();
        if n < lo || n > hi {
            let want = if lo == hi {
                format!("{lo}")
            } else {
                format!("{lo} to {hi}")
            };
            return Err(self.err(
                k,
                node,
                format!("{} takes {want} input(s), this node has {n}", node.op_type),
            ));
        }
        Ok(())
    }

    /// Walks the node chain from the graph input to the graph output, appending a layer per
    /// supported operator.
    pub(super) fn run(&mut self) -> Result<()> {
        let nodes = &self.graph.node;
        let mut cur = self.input_name.clone();
        let mut k = 0;
        while k < nodes.len() {
            let node = &nodes[k];
            let op = node.op_type.as_str();
            self.check_node(k, node)?;
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
                    if let Some(n) = bias {
                        self.check_node(k + 1, n)?;
                    }
                    let bias_name = bias.map(|n| n.input[1].clone());
                    self.dense(k, node, false, bias_name)?;
                    if let Some(n) = bias {
                        out = n.output[0].clone();
                        k += 1;
                    }
                }
                "Conv" => self.conv_node(k, node)?,
                "MaxPool" | "AveragePool" => self.pool_node(k, node)?,
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
