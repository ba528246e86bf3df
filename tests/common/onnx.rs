//! A small builder of ONNX models for the limit and fuzz tests: nodes, attributes and
//! initializers by hand, so that a test can state exactly the graph it feeds the importer
//! (including graphs no checked model could produce: huge channel counts, duplicate names).

use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TypeProto, ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType,
    tensor_shape_proto,
};

/// An INTS attribute.
pub fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

/// An INT attribute.
pub fn int_attr(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

/// A graph input or output of element type `elem` (1 = FLOAT) and the given dims.
pub fn value_info(name: &str, elem: i32, dims: &[i64]) -> ValueInfoProto {
    let mut t = TypeProto::new();
    let tt = t.mut_tensor_type();
    tt.elem_type = elem;
    let shape = tt.shape.mut_or_insert_default();
    for &d in dims {
        let mut dim = tensor_shape_proto::Dimension::new();
        dim.set_dim_value(d);
        shape.dim.push(dim);
    }
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    *v.type_.mut_or_insert_default() = t;
    v
}

/// A FLOAT initializer with raw little-endian data.
pub fn initializer(name: &str, dims: &[usize], v: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.data_type = DataType::FLOAT as i32;
    t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    t
}

/// A node `op(inputs) -> output` with attributes.
pub fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    let mut n = NodeProto::new();
    n.name = format!("{op}->{output}");
    n.op_type = op.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output.push(output.into());
    n.attribute = attrs;
    n
}

/// A model (IR 8, opset 13) of one FLOAT input `x` of `input_dims`, the `nodes` in order, the
/// `inits`, and one output: the last node's output, of `output_dims`.
pub fn model(
    input_dims: &[i64],
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    output_dims: &[i64],
) -> ModelProto {
    let mut g = GraphProto::new();
    g.name = "built".into();
    g.input
        .push(value_info("x", DataType::FLOAT as i32, input_dims));
    let out = nodes
        .last()
        .and_then(|n| n.output.first().cloned())
        .unwrap_or_else(|| "x".into());
    g.output
        .push(value_info(&out, DataType::FLOAT as i32, output_dims));
    g.node = nodes;
    g.initializer = inits;
    model_of(g)
}

/// The model (IR 8, opset 13) of graph `g`.
pub fn model_of(g: GraphProto) -> ModelProto {
    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.producer_name = "margincert tests".into();
    let mut opset = OperatorSetIdProto::new();
    opset.version = 13;
    m.opset_import.push(opset);
    *m.graph.mut_or_insert_default() = g;
    m
}

/// The bytes of a model.
pub fn bytes(m: &ModelProto) -> Vec<u8> {
    m.write_to_bytes().expect("a built model serializes")
}

/// `relus` chained Relu nodes on a `[1, 4]` input, then a `Gemm` (transB) to 2 outputs.
pub fn relu_chain(relus: usize) -> ModelProto {
    let mut nodes = Vec::with_capacity(relus + 1);
    let mut prev = "x".to_string();
    for i in 0..relus {
        let out = format!("r{i}");
        nodes.push(node("Relu", &[&prev], &out, vec![]));
        prev = out;
    }
    nodes.push(node(
        "Gemm",
        &[&prev, "w"],
        "y",
        vec![int_attr("transB", 1)],
    ));
    model(
        &[1, 4],
        nodes,
        vec![initializer("w", &[2, 4], &[0.5; 8])],
        &[1, 2],
    )
}
