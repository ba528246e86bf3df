//! Import and audit of networks trained elsewhere: the committed PyTorch / ONNX fixtures
//! (fixtures/import, produced by make_fixtures.py) against the native checkpoints written
//! from the same weights, refusals of unsupported content, truncations, exact dtype
//! conversion.

use std::path::{Path, PathBuf};

use margincert::audit::{AuditOptions, Requirements, audit};
use margincert::certify::certificate::{CertifyOptions, certify};
use margincert::checkpoint::Checkpoint;
use margincert::data::{Dataset, embedded};
use margincert::import::{self, Format, ImportOptions, TensorMap};
use margincert::model::{Layer, ModelSpec, Padding, Params};
use margincert::report::AuditDocument;
use onnx_protobuf::{Message, ModelProto};

use crate::common::cli;
use crate::common::data::fixture;

fn fx(name: &str) -> PathBuf {
    fixture("import").join(name)
}

fn data(n: usize) -> Dataset {
    embedded().unwrap().train.take(n)
}

fn spec(name: &str) -> ModelSpec {
    ModelSpec::from_file(&fx(&format!("{name}.toml"))).unwrap()
}

fn opts_for(name: &str) -> ImportOptions {
    let map = fx(&format!("{name}.map.toml"));
    ImportOptions {
        map: map.exists().then(|| TensorMap::from_file(&map).unwrap()),
        ..Default::default()
    }
}

/// Index, shape, weight bits and bias bits of each layer.
type LayerBits = (usize, Vec<usize>, Vec<u32>, Option<Vec<u32>>);

fn bits(p: &Params) -> Vec<LayerBits> {
    p.layers
        .iter()
        .map(|l| {
            (
                l.index,
                l.weight_shape.clone(),
                l.weight.iter().map(|v| v.to_bits()).collect(),
                l.bias
                    .as_ref()
                    .map(|b| b.iter().map(|v| v.to_bits()).collect()),
            )
        })
        .collect()
}

/// Every committed fixture set; `cnn_leaky_avg.onnx` comes from `torch.onnx.export` itself
/// (opset 20, LeakyReLU and AveragePool), the others from `onnx.helper`.
const FIXTURES: &[&str] = &[
    "mlp",
    "mlp_f16",
    "cnn_bf16",
    "cnn_first_bias",
    "cnn_bias",
    "cnn_leaky_avg",
];

/// Torch and ONNX imports equal the native checkpoint bit for bit, and their certificates
/// agree in every margin / norm / loss / homogeneity field.
#[test]
fn imports_match_native_bit_for_bit_with_the_same_certificate() {
    let d = data(60);
    let co = CertifyOptions::default();
    for name in FIXTURES {
        let native = Checkpoint::load(&fx(&format!("{name}.native.safetensors"))).unwrap();
        let s = spec(name);
        assert_eq!(native.spec.layers, s.layers, "{name}");
        let torch = import::load(
            &fx(&format!("{name}.safetensors")),
            None,
            Some(&s),
            &opts_for(name),
        )
        .unwrap();
        let onnx = import::load(
            &fx(&format!("{name}.onnx")),
            None,
            None,
            &Default::default(),
        )
        .unwrap();
        for (what, imp) in [("torch", &torch), ("onnx", &onnx)] {
            assert_eq!(
                bits(&imp.checkpoint.params),
                bits(&native.params),
                "{name} {what}: parameters differ"
            );
            assert_eq!(
                imp.checkpoint.spec.input, native.spec.input,
                "{name} {what}"
            );
            assert_eq!(
                imp.checkpoint.spec.layers, native.spec.layers,
                "{name} {what}"
            );
        }
        // A native checkpoint goes through the importer too (spec from its metadata).
        let again = import::load(
            &fx(&format!("{name}.native.safetensors")),
            None,
            None,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(again.checkpoint.spec, native.spec);
        assert_eq!(bits(&again.checkpoint.params), bits(&native.params));
        let cn = certify(&native.spec, &native.params, &d, &co).unwrap();
        for (what, imp) in [("torch", &torch), ("onnx", &onnx)] {
            let c = certify(&imp.checkpoint.spec, &imp.checkpoint.params, &d, &co).unwrap();
            assert_eq!(c.margin, cn.margin, "{name} {what}");
            assert_eq!(c.norms, cn.norms, "{name} {what}");
            assert_eq!(c.loss, cn.loss, "{name} {what}");
            assert_eq!(c.normalized, cn.normalized, "{name} {what}");
            assert_eq!(c.homogeneity, cn.homogeneity, "{name} {what}");
        }
        // Trained to separate the data: the certified margin is positive.
        assert!(cn.margin.q_min.lo > 0.0, "{name}: {:?}", cn.margin.q_min);
    }
}

#[test]
fn notes_say_what_was_converted() {
    let s = spec("cnn_bf16");
    let t =
        import::torch::load(&fx("cnn_bf16.safetensors"), Some(&s), &Default::default()).unwrap();
    let notes = t.notes.join("\n");
    assert!(
        notes.contains("converted 2 tensors from bf16 exactly"),
        "{notes}"
    );
    assert!(notes.contains("prefix 'net.'"), "{notes}");
    let t = import::torch::load(
        &fx("mlp_f16.safetensors"),
        Some(&spec("mlp_f16")),
        &Default::default(),
    )
    .unwrap();
    assert!(
        t.notes.join("\n").contains("from f16 exactly"),
        "{:?}",
        t.notes
    );
}

#[test]
fn audit_of_non_homogeneous_model_names_the_layer_and_fails_its_gates() {
    let imp = import::load(
        &fx("cnn_bias.onnx"),
        Some(Format::Onnx),
        None,
        &Default::default(),
    )
    .unwrap();
    let opts = AuditOptions {
        require: Requirements {
            margin: Some(0.0),
            homogeneous: true,
            kkt_epsilon: Some(1e9),
            linf: None,
        },
        ..Default::default()
    };
    let r = audit(
        &imp.checkpoint,
        &data(40),
        "cnn_bias.onnx",
        &imp.notes,
        &opts,
    )
    .unwrap();
    assert_eq!(r.certificate.homogeneity.degree, None);
    assert_eq!(r.certificate.homogeneity.offending_layer, Some(4));
    assert!(!r.passed());
    assert_eq!(r.unmet().len(), 3, "{:?}", r.requirements);
    let md = r.markdown();
    assert!(md.contains("not homogeneous"), "{md}");
    assert!(md.contains("layer 4 (dense 10 +bias)"), "{md}");
    assert!(
        r.kkt.is_none()
            && r.kkt_omitted
                .as_deref()
                .unwrap()
                .contains("not homogeneous")
    );
    // Robustness radii need no homogeneity: they are computed for the biased net too, and
    // no certified radius may exceed the radius of a verified adversarial point.
    let rb = r.robust.as_ref().expect("robustness radii");
    assert!(r.robust_omitted.is_none());
    for rep in [&rb.l2, &rb.linf] {
        assert_eq!(rep.examples.len(), 16);
        assert_eq!(rep.violations, 0);
        for x in &rep.examples {
            assert!(x.certified <= x.attack, "{x:?}");
        }
    }
    assert!(md.contains("### L2") && md.contains("### L∞"), "{md}");
}

#[test]
fn audit_gates_follow_the_certified_bounds() {
    let imp = import::load(&fx("mlp.onnx"), None, None, &Default::default()).unwrap();
    let d = data(50);
    let base = audit(
        &imp.checkpoint,
        &d,
        "mlp",
        &imp.notes,
        &AuditOptions::default(),
    )
    .unwrap();
    let gamma = base.certificate.normalized.as_ref().unwrap().by_rho.lo;
    let eps = margincert::audit::best_epsilon(base.kkt.as_ref().unwrap());
    assert!(gamma > 0.0 && eps.is_finite());
    let with = |margin, kkt_epsilon, linf| {
        let o = AuditOptions {
            require: Requirements {
                margin: Some(margin),
                homogeneous: true,
                kkt_epsilon: Some(kkt_epsilon),
                linf: Some(linf),
            },
            ..Default::default()
        };
        audit(&imp.checkpoint, &d, "mlp", &imp.notes, &o).unwrap()
    };
    let rb = base.robust.as_ref().expect("robustness radii");
    let linf = rb.min_certified_linf();
    assert_eq!(
        linf,
        rb.linf
            .examples
            .iter()
            .map(|x| x.crown.unwrap_or(0.0).max(x.certified))
            .fold(f64::INFINITY, f64::min)
    );
    assert!(linf > 0.0, "{:?}", rb.linf.examples);
    let pass = with(gamma, eps, linf);
    assert!(pass.passed(), "{:?}", pass.requirements);
    let fail = with(gamma * 1.001, eps * 0.999, linf * 1.001);
    let unmet: Vec<_> = fail.unmet().iter().map(|r| r.requirement.clone()).collect();
    assert_eq!(unmet.len(), 3, "{unmet:?}");
    assert!(unmet[0].contains("margin") && unmet[1].contains("L∞") && unmet[2].contains("KKT"));
    // Skipping the radii fails the L∞ gate with the reason.
    let skipped = audit(
        &imp.checkpoint,
        &d,
        "mlp",
        &imp.notes,
        &AuditOptions {
            robust: None,
            require: Requirements {
                linf: Some(0.0),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(skipped.unmet().len(), 1);
    assert!(skipped.unmet()[0].detail.contains("not requested"));
    // The report files.
    let dir = tempfile::tempdir().unwrap();
    pass.write(dir.path(), 20).unwrap();
    for f in [
        "audit.json",
        "certificate.json",
        "report.md",
        "margins.svg",
        "robust_l2.svg",
        "robust_linf.svg",
    ] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let svg = std::fs::read_to_string(dir.path().join("margins.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("certified lower bounds of the margins"));
    // The hand-written fallback: one bar per bin, every value counted once.
    let fallback = margincert::report::svg::histogram_svg(&pass.margin_lower_bounds, 20);
    let counts: usize = fallback
        .split("<title>")
        .skip(1)
        .filter_map(|t| t.split('<').next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(counts, pass.margin_lower_bounds.len());
    assert_eq!(fallback.matches("fill=\"steelblue\"").count(), 20);
    let back = margincert::certify::Certificate::from_json(
        &std::fs::read_to_string(dir.path().join("certificate.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(back.margin, pass.certificate.margin);
    // The histogram's data are the certified per-example lower bounds: their minimum is q_min's.
    let min = pass
        .margin_lower_bounds
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    assert_eq!(min, pass.certificate.margin.q_min.lo);
}

#[test]
fn unsupported_onnx_operator_is_named() {
    let e = import::load(
        &fx("cnn_bf16_softmax.onnx"),
        None,
        None,
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("unsupported ONNX operator 'Softmax' at node 5 'sm'"),
        "{e}"
    );
}

fn onnx_model(name: &str) -> ModelProto {
    ModelProto::parse_from_bytes(&std::fs::read(fx(name)).unwrap()).unwrap()
}

fn import_model(m: &ModelProto) -> margincert::Result<import::Imported> {
    import::onnx::from_bytes(
        &m.write_to_bytes().unwrap(),
        Path::new("t.onnx"),
        &Default::default(),
    )
}

fn set_attr(
    m: &mut ModelProto,
    node: usize,
    name: &str,
    f: impl FnOnce(&mut onnx_protobuf::AttributeProto),
) {
    let n = &mut m.graph.as_mut().unwrap().node[node];
    let pos = n.attribute.iter().position(|a| a.name == name);
    let a = match pos {
        Some(p) => &mut n.attribute[p],
        None => {
            let mut a = onnx_protobuf::AttributeProto::new();
            a.name = name.into();
            n.attribute.push(a);
            n.attribute.last_mut().unwrap()
        }
    };
    f(a);
}

#[test]
fn unsupported_onnx_attributes_are_refused_with_the_node() {
    let base = onnx_model("cnn_first_bias.onnx");
    // node 0 Conv, 1 Relu, 2 MaxPool, 3 Flatten, 4 Gemm
    type Edit = Box<dyn Fn(&mut ModelProto)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "alpha or beta",
            Box::new(|m| set_attr(m, 4, "alpha", |a| a.f = 2.0)),
        ),
        ("group", Box::new(|m| set_attr(m, 0, "group", |a| a.i = 2))),
        (
            "dilated",
            Box::new(|m| set_attr(m, 0, "dilations", |a| a.ints = vec![2, 2])),
        ),
        (
            "asymmetric pads",
            Box::new(|m| set_attr(m, 0, "pads", |a| a.ints = vec![1, 1, 0, 2])),
        ),
        (
            "padded pooling",
            Box::new(|m| set_attr(m, 2, "pads", |a| a.ints = vec![1, 1, 1, 1])),
        ),
        (
            "axis = 1",
            Box::new(|m| set_attr(m, 3, "axis", |a| a.i = 2)),
        ),
        (
            "transA",
            Box::new(|m| set_attr(m, 4, "transA", |a| a.i = 1)),
        ),
        (
            "data type 6",
            Box::new(|m| {
                let t = &mut m.graph.as_mut().unwrap().initializer[0];
                t.data_type = 6; // INT32
            }),
        ),
        (
            "not a chain",
            Box::new(|m| m.graph.as_mut().unwrap().node.swap(1, 2)),
        ),
    ];
    for (want, f) in cases {
        let mut m = base.clone();
        f(&mut m);
        let e = import_model(&m).unwrap_err().to_string();
        assert!(e.contains(want), "expected '{want}' in: {e}");
        assert!(e.contains("node"), "{e}");
    }
}

#[test]
fn tf_same_asymmetric_pads_map_to_same() {
    // A 2x2 kernel at stride 1 on 28x28: TF SAME pads 0 top/left, 1 bottom/right.
    let mut m = onnx_model("cnn_first_bias.onnx");
    let g = m.graph.as_mut().unwrap();
    let w = g
        .initializer
        .iter_mut()
        .find(|t| t.name == "0.weight")
        .unwrap();
    let old = w.raw_data.clone();
    w.dims = vec![4, 1, 2, 2];
    w.raw_data = old[..4 * 4 * 4].to_vec();
    w.float_data.clear();
    set_attr(&mut m, 0, "kernel_shape", |a| a.ints = vec![2, 2]);
    set_attr(&mut m, 0, "pads", |a| a.ints = vec![0, 0, 1, 1]);
    let imp = import_model(&m).unwrap();
    assert!(matches!(
        imp.checkpoint.spec.layers[0],
        Layer::Conv2d {
            kernel: 2,
            padding: Padding::Same,
            ..
        }
    ));
    assert!(imp.notes.join(" ").contains("TensorFlow SAME"));
    // The other asymmetric split is not TF SAME: refused.
    set_attr(&mut m, 0, "pads", |a| a.ints = vec![1, 1, 0, 0]);
    assert!(
        import_model(&m)
            .unwrap_err()
            .to_string()
            .contains("asymmetric")
    );
}

#[test]
fn onnx_double_and_half_initializers() {
    let base = onnx_model("mlp.onnx");
    let native = Checkpoint::load(&fx("mlp.native.safetensors")).unwrap();
    // DOUBLE holding f32 values exactly: accepted, same network.
    let mut m = base.clone();
    for t in &mut m.graph.as_mut().unwrap().initializer {
        let v: Vec<f64> = t
            .raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect();
        t.raw_data.clear();
        t.double_data = v;
        t.data_type = 11;
    }
    let imp = import_model(&m).unwrap();
    assert_eq!(bits(&imp.checkpoint.params), bits(&native.params));
    assert!(
        imp.notes.join(" ").contains("from f64 exactly"),
        "{:?}",
        imp.notes
    );
    // One value off the f32 grid: refused, naming the tensor.
    m.graph.as_mut().unwrap().initializer[0].double_data[3] += 1e-12;
    let e = import_model(&m).unwrap_err().to_string();
    assert!(
        e.contains("onnx::MatMul_1") && e.contains("not exactly representable"),
        "{e}"
    );
    // FLOAT16 in int32_data: exact widening.
    let mut m = base.clone();
    for t in &mut m.graph.as_mut().unwrap().initializer {
        let v: Vec<i32> = t
            .raw_data
            .chunks_exact(4)
            .map(|c| {
                half::f16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_bits() as i32
            })
            .collect();
        t.raw_data.clear();
        t.int32_data = v;
        t.data_type = 10;
    }
    let imp = import_model(&m).unwrap();
    for (a, b) in imp.checkpoint.params.values().zip(native.params.values()) {
        assert_eq!(*a, half::f16::from_f32(*b).to_f32());
    }
}

#[test]
fn matmul_add_gives_a_dense_layer_with_bias() {
    // Turn the MLP's second MatMul into MatMul + Add of a bias.
    let mut m = onnx_model("mlp.onnx");
    let g = m.graph.as_mut().unwrap();
    let k = g.node.iter().rposition(|n| n.op_type == "MatMul").unwrap();
    let out = g.node[k].output[0].clone();
    g.node[k].output[0] = "pre".into();
    let mut add = onnx_protobuf::NodeProto::new();
    add.op_type = "Add".into();
    add.name = "bias_add".into();
    add.input = vec!["pre".into(), "b".into()];
    add.output = vec![out];
    g.node.insert(k + 1, add);
    let mut b = onnx_protobuf::TensorProto::new();
    b.name = "b".into();
    b.dims = vec![10];
    b.data_type = 1;
    b.float_data = (0..10).map(|i| i as f32 * 0.25).collect();
    g.initializer.push(b);
    let imp = import_model(&m).unwrap();
    let last = imp.checkpoint.params.layers.last().unwrap();
    assert_eq!(
        last.bias.as_deref(),
        Some(&(0..10).map(|i| i as f32 * 0.25).collect::<Vec<_>>()[..])
    );
    assert_eq!(
        imp.checkpoint.spec.layers.last(),
        Some(&Layer::Dense {
            out: 10,
            bias: true
        })
    );
    assert_eq!(imp.checkpoint.spec.homogeneity().offending_layer, Some(3));
}

#[test]
fn every_truncation_of_a_fixture_is_an_error() {
    for name in ["mlp.onnx", "cnn_bias.onnx"] {
        let bytes = std::fs::read(fx(name)).unwrap();
        let cuts = (0..bytes.len())
            .step_by(7)
            .chain(bytes.len().saturating_sub(300)..bytes.len());
        for cut in cuts {
            assert!(
                import::onnx::from_bytes(&bytes[..cut], Path::new(name), &Default::default())
                    .is_err(),
                "{name} cut at {cut} of {} was accepted",
                bytes.len()
            );
        }
    }
    for name in ["cnn_bf16", "cnn_bias"] {
        let bytes = std::fs::read(fx(&format!("{name}.safetensors"))).unwrap();
        let s = spec(name);
        for cut in (0..bytes.len()).step_by(5) {
            assert!(
                import::torch::from_bytes(
                    &bytes[..cut],
                    Path::new(name),
                    Some(&s),
                    &Default::default()
                )
                .is_err()
            );
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let onnx = std::fs::read(fx("cnn_first_bias.onnx")).unwrap();
    let st = std::fs::read(fx("cnn_first_bias.safetensors")).unwrap();
    let s = spec("cnn_first_bias");
    for _ in 0..400 {
        let mut a = onnx.clone();
        let mut b = st.clone();
        for _ in 0..3 {
            let i = rng.random_range(0..a.len());
            a[i] = rng.random();
            let j = rng.random_range(0..b.len());
            b[j] = rng.random();
        }
        // Either outcome is fine; a panic is not. Accepted params are always finite.
        if let Ok(imp) = import::onnx::from_bytes(&a, Path::new("x"), &Default::default()) {
            imp.checkpoint.params.check(&imp.checkpoint.spec).unwrap();
        }
        if let Ok(imp) =
            import::torch::from_bytes(&b, Path::new("x"), Some(&s), &Default::default())
        {
            imp.checkpoint.params.check(&imp.checkpoint.spec).unwrap();
        }
    }
}

/// Name, dtype, shape, bytes.
pub(crate) type RawTensor<'a> = (&'a str, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// A safetensors file holding `tensors` (no metadata); also used by `layers`.
pub(crate) fn safetensors_with(tensors: Vec<RawTensor<'_>>) -> Vec<u8> {
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn tiny_spec() -> ModelSpec {
    ModelSpec::parse(r#"{"input":{"c":3,"h":1,"w":1},"layers":[{"type":"dense","out":2}]}"#)
        .unwrap()
}

fn import_tiny(bytes: &[u8], opts: &ImportOptions) -> margincert::Result<import::Imported> {
    import::torch::from_bytes(bytes, Path::new("tiny"), Some(&tiny_spec()), opts)
}

#[test]
fn f64_state_dicts_convert_only_when_exact() {
    let exact: Vec<f64> = vec![
        0.1f32 as f64,
        -3.0,
        1.5e-40f32 as f64,
        0.0,
        65504.0,
        -2.5e30f32 as f64,
    ];
    let le = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let b = safetensors_with(vec![(
        "0.weight",
        safetensors::Dtype::F64,
        vec![2, 3],
        le(&exact),
    )]);
    let imp = import_tiny(&b, &Default::default()).unwrap();
    let got: Vec<f64> = imp.checkpoint.params.values().map(|&v| v as f64).collect();
    assert_eq!(got, exact);
    assert!(imp.notes.join(" ").contains("from f64 exactly"));
    // 0.1 (f64) is not an f32.
    let mut inexact = exact.clone();
    inexact[4] = 0.1;
    let b = safetensors_with(vec![(
        "0.weight",
        safetensors::Dtype::F64,
        vec![2, 3],
        le(&inexact),
    )]);
    let e = import_tiny(&b, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'0.weight'")
            && e.contains("position 4")
            && e.contains("not exactly representable"),
        "{e}"
    );
    // With rounding: the nearest f32 and a loud warning.
    let imp = import_tiny(
        &b,
        &ImportOptions {
            round_f64: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(imp.checkpoint.params.layers[0].weight[4], 0.1f32);
    assert!(
        imp.notes
            .iter()
            .any(|n| n.starts_with("WARNING") && n.contains("1 f64 values")),
        "{:?}",
        imp.notes
    );
    // f64 beyond f32 range rounds to infinity: refused even with rounding.
    inexact[4] = 1e300;
    let b = safetensors_with(vec![(
        "0.weight",
        safetensors::Dtype::F64,
        vec![2, 3],
        le(&inexact),
    )]);
    assert!(
        import_tiny(
            &b,
            &ImportOptions {
                round_f64: true,
                ..Default::default()
            }
        )
        .is_err()
    );
}

#[test]
fn f16_and_bf16_widen_exactly_for_every_bit_pattern() {
    let all: Vec<u8> = (0..=u16::MAX).flat_map(|b| b.to_le_bytes()).collect();
    let f16 = import::f16_to_f32(&all);
    let bf16 = import::bf16_to_f32(&all);
    for b in 0..=u16::MAX {
        let (s, e, m) = ((b >> 15) as i32, ((b >> 10) & 31) as i32, (b & 1023) as f64);
        // Independent decoding of binary16 in f64 (exact: at most 11 significant bits).
        let mag = match e {
            0 => m * 2f64.powi(-24),
            31 => {
                if m == 0.0 {
                    f64::INFINITY
                } else {
                    f64::NAN
                }
            }
            _ => (1024.0 + m) * 2f64.powi(e - 25),
        };
        let want = if s == 1 { -mag } else { mag };
        let got = f16[b as usize] as f64;
        assert!(
            got == want || (got.is_nan() && want.is_nan()),
            "f16 {b:#06x}: {got} vs {want}"
        );
        if mag == 0.0 {
            assert_eq!(got.is_sign_negative(), s == 1);
        }
        // bf16 is the top half of an f32.
        // (NaN payloads may be quieted; NaNs are refused as parameters anyway.)
        let top = f32::from_bits((b as u32) << 16);
        if top.is_nan() {
            assert!(bf16[b as usize].is_nan());
        } else {
            assert_eq!(bf16[b as usize].to_bits(), (b as u32) << 16);
        }
    }
    // f16 infinities are refused as parameters, with the tensor's name.
    let b = safetensors_with(vec![(
        "0.weight",
        safetensors::Dtype::F16,
        vec![2, 3],
        [0x3c00u16, 0, 0, 0x7c00, 0, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    )]);
    let e = import_tiny(&b, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("0.weight") && e.contains("value 3"), "{e}");
}

#[test]
fn state_dict_naming_errors_are_clear() {
    let w = vec![0u8; 6 * 4];
    let f32s = safetensors::Dtype::F32;
    let err = |t: Vec<RawTensor<'_>>, o: &ImportOptions| {
        import_tiny(&safetensors_with(t), o)
            .unwrap_err()
            .to_string()
    };
    let d = ImportOptions::default();
    let e = err(vec![("fc.weight", f32s, vec![2, 3], w.clone())], &d);
    assert!(
        e.contains("no tensor named '0.weight'") && e.contains("fc.weight"),
        "{e}"
    );
    let e = err(vec![("0.weight", f32s, vec![3, 2], w.clone())], &d);
    assert!(e.contains("'0.weight' has shape [3, 2]"), "{e}");
    let e = err(
        vec![
            ("0.weight", f32s, vec![2, 3], w.clone()),
            ("0.bias", f32s, vec![2], vec![0; 8]),
        ],
        &d,
    );
    assert!(e.contains("bias '0.bias' the spec does not declare"), "{e}");
    let e = err(
        vec![
            ("0.weight", f32s, vec![2, 3], w.clone()),
            ("1.weight", f32s, vec![2, 3], w.clone()),
        ],
        &d,
    );
    assert!(e.contains("not used by the model spec: 1.weight"), "{e}");
    let e = err(
        vec![("0.weight", safetensors::Dtype::I32, vec![2, 3], w.clone())],
        &d,
    );
    assert!(e.contains("'0.weight' has dtype I32"), "{e}");
    let e = err(
        vec![
            ("a.0.weight", f32s, vec![2, 3], w.clone()),
            ("b.0.weight", f32s, vec![2, 3], w.clone()),
        ],
        &d,
    );
    assert!(e.contains("several tensors"), "{e}");
    // Explicit prefix and map both resolve.
    let t = safetensors_with(vec![
        ("a.0.weight", f32s, vec![2, 3], w.clone()),
        ("b.0.weight", f32s, vec![2, 3], w.clone()),
    ]);
    let o = ImportOptions {
        prefix: Some("a.".into()),
        ..Default::default()
    };
    assert!(
        import_tiny(&t, &o)
            .unwrap_err()
            .to_string()
            .contains("b.0.weight")
    );
    let t = safetensors_with(vec![("enc.lin.weight", f32s, vec![2, 3], w.clone())]);
    let o = ImportOptions {
        map: Some(TensorMap::parse("[layers]\n0 = \"enc.lin\"\n").unwrap()),
        ..Default::default()
    };
    assert_eq!(
        import_tiny(&t, &o).unwrap().checkpoint.params.layers[0].weight,
        vec![0.0; 6]
    );
    // No spec and no metadata: say so.
    let e = import::torch::from_bytes(&t, Path::new("x"), None, &d)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no model spec"), "{e}");
}

#[test]
fn cli_audit_exits_nonzero_listing_unmet_requirements() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        cli::command()
            .args(["--threads", "1", "audit"])
            .arg(fx("cnn_bf16.safetensors"))
            .arg("--spec")
            .arg(fx("cnn_bf16.toml"))
            .args(["--data", "embedded", "--subset", "30", "--no-kkt", "--out"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = run(&["--require-homogeneous", "--require-margin", "1e-6"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("converted 2 tensors from bf16 exactly"));
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(report.contains("### L∞"), "{report}");
    let bad = run(&[
        "--require-margin",
        "10",
        "--require-kkt-epsilon",
        "1",
        "--require-linf",
        "0.5",
        "--robust-examples",
        "4",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("requirements not certified")
            && err.contains("normalized margin")
            && err.contains("KKT")
            && err.contains("L∞ radius"),
        "{err}"
    );
    let skipped = run(&["--no-robust"]);
    assert!(skipped.status.success());
    assert!(String::from_utf8_lossy(&skipped.stdout).contains("Not computed: not requested"));
    let conflict = run(&["--no-robust", "--require-linf", "0.1"]);
    assert!(!conflict.status.success());
}

#[test]
fn reshape_to_n_minus_one_is_a_flatten_and_others_are_refused() {
    // Replace the MLP's Flatten by Constant [0, -1] + Reshape.
    let native = Checkpoint::load(&fx("mlp.native.safetensors")).unwrap();
    let mut m = onnx_model("mlp.onnx");
    let g = m.graph.as_mut().unwrap();
    assert_eq!(g.node[0].op_type, "Flatten");
    let mut shape = onnx_protobuf::TensorProto::new();
    shape.data_type = 7; // INT64
    shape.dims = vec![2];
    shape.int64_data = vec![0, -1];
    let mut c = onnx_protobuf::NodeProto::new();
    c.op_type = "Constant".into();
    c.output = vec!["shape".into()];
    let mut a = onnx_protobuf::AttributeProto::new();
    a.name = "value".into();
    a.t = Some(shape).into();
    c.attribute.push(a);
    g.node[0].op_type = "Reshape".into();
    g.node[0].attribute.clear();
    g.node[0].input.push("shape".into());
    g.node.insert(0, c);
    let imp = import_model(&m).unwrap();
    assert_eq!(imp.checkpoint.spec.layers, native.spec.layers);
    assert_eq!(bits(&imp.checkpoint.params), bits(&native.params));
    // Reshape to [N, 28, 28] is not a flatten.
    let g = m.graph.as_mut().unwrap();
    let t = g.node[0].attribute[0].t.as_mut().unwrap();
    t.dims = vec![3];
    t.int64_data = vec![0, 28, 28];
    let e = import_model(&m).unwrap_err().to_string();
    assert!(
        e.contains("only Reshape to [N, -1]") && e.contains("node 1"),
        "{e}"
    );
}

#[test]
fn spec_file_must_agree_with_the_onnx_graph() {
    let wrong = spec("cnn_bias"); // biases the bias-free graph does not have
    let e = import::load(
        &fx("cnn_bf16.onnx"),
        None,
        Some(&wrong),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("the ONNX graph gives layers"), "{e}");
    assert!(
        import::load(
            &fx("cnn_bf16.onnx"),
            None,
            Some(&spec("cnn_bf16")),
            &Default::default()
        )
        .is_ok()
    );
}
