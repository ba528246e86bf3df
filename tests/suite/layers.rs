//! The enforcement test of the "adding a layer kind" checklist (docs/ARCHITECTURE.md).
//!
//! A few tiny specs together contain every [`Op`] variant (dense with and without bias, conv
//! with stride / padding / bias, plain and overlapping max-pool, avg-pool, flatten, ReLU,
//! LeakyReLU); each gets random parameters (bias in the first layer only, so the net stays
//! homogeneous) and a handful of `u8` inputs, and EVERY pass runs on it and is checked against
//! a real property:
//! - f32 (`nn::Network`): the logits lie within the certified enclosures (up to f32 error);
//!   `forward_train` equals `forward` bit for bit; the parameter gradient (`backward`) lies in
//!   the certified backward enclosure and satisfies Euler's identity in θ; the input gradient
//!   satisfies Euler's identity in x on the bias-free copy of the net;
//! - certified forward in binary64 (every layer), double-double (every layer) and `Auto`
//!   (logits): each enclosure contains the exact value of the rational oracle
//!   (`tests/common/exact.rs`);
//! - certified backward: contains the f32 gradient (up to f32 error);
//! - IBP ≤ CROWN ≤ attack radius (L∞), certified L2 radius ≤ attack radius, and every
//!   attack point verified;
//! - the Lipschitz bounds hold between every pair of inputs (exact logits);
//! - a certificate whose `q_min` encloses the exact minimum margin, confirmed by `verify`;
//! - import: the params written as a PyTorch `state_dict` (safetensors) and as an ONNX graph
//!   come back bit for bit, with the same plan and the same certificate / certified logits.
//!
//! [`features`] matches exhaustively on [`Op`] (no wildcard): a new layer kind does not
//! compile here until its features are listed, and [`REQUIRED`] makes the specs cover it.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use onnx_protobuf::{
    AttributeProto, GraphProto, Message, NodeProto, TensorProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rug::Rational;

use margincert::certify::backward::Backward;
use margincert::certify::margin::Task;
use margincert::certify::{
    BallVec, CertifiedNet, CertifyOptions, ForwardMode, PreparedNet, verify,
};
use margincert::data::Dataset;
use margincert::import;
use margincert::model::{CheckedModel, Layer, ModelSpec, Op, Padding, Params, Shape};
use margincert::nn::{Network, Workspace};
use margincert::robust::{self, AttackOptions, Norm, RobustOptions, crown};

use crate::common::exact::{
    ball_contains, dd_contains, rat64, reference_activations_exact, reference_logits_exact,
};
use crate::common::nets::{Biases, Pixels, Weights, random_params, random_pixels};
use crate::import::{RawTensor, safetensors_with};

/// The features a spec must show, as named by [`features`]. A new [`Op`] variant adds its
/// own here.
const REQUIRED: &[&str] = &[
    "dense",
    "dense+bias",
    "conv",
    "conv+bias",
    "conv stride>1",
    "conv padding valid",
    "conv padding same",
    "conv padding explicit",
    "maxpool",
    "maxpool overlapping",
    "avgpool",
    "flatten",
    "relu",
    "leaky_relu",
];

/// The features of one resolved layer. Exhaustive on purpose: NO wildcard arm, so adding an
/// `Op` variant is a compile error here until the checklist of docs/ARCHITECTURE.md is
/// followed (and the new variant's features are added to [`REQUIRED`] and to a spec).
fn features(op: &Op, layer: &Layer) -> Vec<&'static str> {
    match *op {
        Op::Dense { bias, .. } => vec![if bias { "dense+bias" } else { "dense" }],
        Op::Conv { window, bias, .. } => {
            let mut f = vec![if bias { "conv+bias" } else { "conv" }];
            if window.stride > 1 {
                f.push("conv stride>1");
            }
            f.push(match layer {
                Layer::Conv2d { padding, .. } => match padding {
                    Padding::Valid => "conv padding valid",
                    Padding::Same => "conv padding same",
                    Padding::Explicit(_) => "conv padding explicit",
                },
                _ => panic!("a conv op from a {} layer", layer.describe()),
            });
            f
        }
        Op::MaxPool { window, .. } => {
            if window.stride < window.k {
                vec!["maxpool overlapping"]
            } else {
                vec!["maxpool"]
            }
        }
        Op::AvgPool { .. } => vec!["avgpool"],
        Op::Flatten => vec!["flatten"],
        Op::Relu => vec!["relu"],
        Op::LeakyRelu { .. } => vec!["leaky_relu"],
    }
}

/// Three outputs, three classes.
const CLASSES: usize = 3;
/// Examples per spec.
const EXAMPLES: usize = 4;

/// The specs of this test: together they contain every feature of [`REQUIRED`]. Bias only in
/// the first layer.
fn specs() -> Vec<ModelSpec> {
    let dense = Layer::dense;
    let pool = |size, stride| (size, Some(stride));
    let (a_size, a_stride) = pool(2, 1);
    let (b_size, b_stride) = pool(2, 2);
    let (c_size, c_stride) = pool(2, 2);
    let all = vec![
        ModelSpec {
            name: "conv-explicit-stride-bias".into(),
            input: Shape::new(2, 6, 6),
            layers: vec![
                Layer::conv(3, 3, 2, Padding::Explicit(1), true),
                Layer::Relu,
                Layer::MaxPool {
                    size: a_size,
                    stride: a_stride,
                },
                Layer::Flatten,
                dense(CLASSES, false),
            ],
        },
        ModelSpec {
            name: "conv-same-valid-pools".into(),
            input: Shape::new(1, 6, 6),
            layers: vec![
                Layer::conv(2, 3, 1, Padding::Same, true),
                Layer::Relu,
                Layer::AvgPool {
                    size: b_size,
                    stride: b_stride,
                },
                Layer::conv(3, 2, 1, Padding::Valid, false),
                Layer::LeakyRelu { slope: 0.125 },
                Layer::MaxPool {
                    size: c_size,
                    stride: c_stride,
                },
                Layer::Flatten,
                dense(CLASSES, false),
            ],
        },
        ModelSpec {
            name: "mlp-bias-leaky".into(),
            input: Shape::new(1, 3, 3),
            layers: vec![
                Layer::Flatten,
                dense(5, true),
                Layer::Relu,
                dense(4, false),
                Layer::LeakyRelu { slope: -0.5 },
                dense(CLASSES, false),
            ],
        },
    ];
    for s in &all {
        s.validate().expect("valid spec");
    }
    all
}

/// `|a - b| <= tol * (1 + scale)`.
fn close(a: f64, b: f64, scale: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + scale.abs())
}

/// Exact margin `min_{j≠y} z_y − z_j`.
fn exact_margin(z: &[Rational], y: usize) -> Rational {
    (0..z.len())
        .filter(|&j| j != y)
        .map(|j| Rational::from(&z[y] - &z[j]))
        .min()
        .expect("at least two classes")
}

/// The flat parameter vector (weights then bias, layer by layer: [`Params`] order).
fn flat(p: &Params) -> Vec<f32> {
    p.layers
        .iter()
        .flat_map(|l| l.weight.iter().chain(l.bias.iter().flatten()).copied())
        .collect()
}

/// Bit patterns of every parameter, layer by layer.
fn bits(p: &Params) -> Vec<(Vec<u32>, Option<Vec<u32>>)> {
    p.layers
        .iter()
        .map(|l| {
            (
                l.weight.iter().map(|v| v.to_bits()).collect(),
                l.bias
                    .as_ref()
                    .map(|b| b.iter().map(|v| v.to_bits()).collect()),
            )
        })
        .collect()
}

/// The plan's ops of a spec.
fn ops(spec: &ModelSpec) -> Vec<Op> {
    spec.plan().unwrap().into_iter().map(|p| p.op).collect()
}

/// The network written as a PyTorch `nn.Sequential` `state_dict` (keys `"{i}.weight"`,
/// `"{i}.bias"`) in safetensors.
fn state_dict(model: &CheckedModel) -> Vec<u8> {
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let names: Vec<(String, String)> = model
        .weight_layers()
        .map(|(p, _)| (format!("{}.weight", p.index), format!("{}.bias", p.index)))
        .collect();
    let mut tensors: Vec<RawTensor<'_>> = Vec::new();
    for ((p, lp), (wn, bn)) in model.weight_layers().zip(&names) {
        let shape = p.weight_shape().expect("weight layer");
        tensors.push((wn, safetensors::Dtype::F32, shape, le(&lp.weight)));
        if let Some(b) = &lp.bias {
            tensors.push((bn, safetensors::Dtype::F32, vec![b.len()], le(b)));
        }
    }
    safetensors_with(tensors)
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

fn float_attr(name: &str, v: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = v;
    a
}

fn string_attr(name: &str, v: &str) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::STRING.into();
    a.s = v.as_bytes().to_vec();
    a
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    crate::common::onnx::value_info(name, DataType::FLOAT as i32, dims)
}

fn initializer(name: &str, dims: &[usize], v: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.data_type = DataType::FLOAT as i32;
    t.raw_data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    t
}

/// The equivalent ONNX graph of a checked model (one node per layer: `Gemm` with
/// `transB = 1`, `Conv`, `MaxPool`, `AveragePool`, `Flatten`, `Relu`, `LeakyRelu`).
fn onnx_bytes(model: &CheckedModel) -> Vec<u8> {
    let mut g = GraphProto::new();
    g.name = model.spec().name.clone();
    let i = model.spec().input;
    g.input
        .push(value_info("x", &[1, i.c as i64, i.h as i64, i.w as i64]));
    let mut weights = model.params().layers.iter();
    let mut prev = "x".to_string();
    for p in model.plan() {
        let mut n = NodeProto::new();
        n.name = format!("n{}", p.index);
        n.input.push(prev.clone());
        let out = format!("y{}", p.index);
        n.output.push(out.clone());
        let mut add_weights = |n: &mut NodeProto, g: &mut GraphProto| {
            let lp = weights.next().expect("checked");
            let (wn, bn) = (format!("w{}", p.index), format!("b{}", p.index));
            g.initializer.push(initializer(
                &wn,
                &p.weight_shape().expect("weight layer"),
                &lp.weight,
            ));
            n.input.push(wn);
            if let Some(b) = &lp.bias {
                g.initializer.push(initializer(&bn, &[b.len()], b));
                n.input.push(bn);
            }
        };
        match (p.op, &p.layer) {
            (Op::Dense { .. }, _) => {
                n.op_type = "Gemm".into();
                n.attribute.push(int_attr("transB", 1));
                add_weights(&mut n, &mut g);
            }
            (Op::Conv { window, .. }, Layer::Conv2d { padding, .. }) => {
                n.op_type = "Conv".into();
                let k = window.k as i64;
                let s = window.stride as i64;
                n.attribute.push(ints_attr("kernel_shape", &[k, k]));
                n.attribute.push(ints_attr("strides", &[s, s]));
                match padding {
                    Padding::Valid => n.attribute.push(ints_attr("pads", &[0; 4])),
                    Padding::Explicit(q) => n.attribute.push(ints_attr("pads", &[*q as i64; 4])),
                    Padding::Same => n.attribute.push(string_attr("auto_pad", "SAME_UPPER")),
                }
                add_weights(&mut n, &mut g);
            }
            (Op::MaxPool { window, .. } | Op::AvgPool { window, .. }, _) => {
                n.op_type = if matches!(p.op, Op::MaxPool { .. }) {
                    "MaxPool"
                } else {
                    "AveragePool"
                }
                .into();
                let (k, s) = (window.k as i64, window.stride as i64);
                n.attribute.push(ints_attr("kernel_shape", &[k, k]));
                n.attribute.push(ints_attr("strides", &[s, s]));
            }
            (Op::Flatten, _) => {
                n.op_type = "Flatten".into();
                n.attribute.push(int_attr("axis", 1));
            }
            (Op::Relu, _) => n.op_type = "Relu".into(),
            (Op::LeakyRelu { slope }, _) => {
                n.op_type = "LeakyRelu".into();
                n.attribute.push(float_attr("alpha", slope));
            }
            (Op::Conv { .. }, l) => panic!("a conv op from a {} layer", l.describe()),
        }
        g.node.push(n);
        prev = out;
    }
    g.output
        .push(value_info(&prev, &[1, model.outputs() as i64]));
    crate::common::onnx::model_of(g)
        .write_to_bytes()
        .expect("serializes")
}

/// Runs every pass on `spec` and checks each; returns the features of its layers.
fn check_every_pass(spec: &ModelSpec, seed: u64) -> BTreeSet<&'static str> {
    let name = &spec.name;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = random_params(spec, Weights::He, Biases::Uniform { scale: 0.1 }, &mut rng);
    let il = spec.input.len();
    let pixels = random_pixels(il, EXAMPLES, Pixels::Uniform, &mut rng);
    let model = CheckedModel::new(spec.clone(), params.clone()).unwrap();
    let covered: BTreeSet<&'static str> = model
        .plan()
        .iter()
        .flat_map(|p| features(&p.op, &p.layer))
        .collect();

    // The oracle: exact activations of every layer, labels = exact argmax.
    let acts: Vec<Vec<Vec<Rational>>> = (0..EXAMPLES)
        .map(|b| reference_activations_exact(spec, &params, &pixels[b * il..(b + 1) * il]).unwrap())
        .collect();
    let exact: Vec<Vec<Rational>> = (0..EXAMPLES)
        .map(|b| reference_logits_exact(spec, &params, &pixels[b * il..(b + 1) * il]).unwrap())
        .collect();
    for b in 0..EXAMPLES {
        assert_eq!(acts[b].last().unwrap(), &exact[b], "{name}: oracle layers");
    }
    // The labels are the exact argmax; the specs and seeds are chosen so that it is unique
    // (every exact margin positive), which the radii below need to be non-trivial.
    let labels: Vec<u8> = exact
        .iter()
        .map(|z| (0..CLASSES).max_by(|&i, &j| z[i].cmp(&z[j])).unwrap() as u8)
        .collect();
    for (b, z) in exact.iter().enumerate() {
        assert!(
            exact_margin(z, labels[b] as usize) > 0,
            "{name}: example {b} has tied logits (change the seed)"
        );
    }
    let data = Dataset::new(
        name.clone(),
        spec.input,
        pixels.clone(),
        labels.clone(),
        CLASSES,
    )
    .unwrap();
    let task = Task::new(CLASSES, CLASSES).unwrap();

    // One prepared network, shared by every certified pass.
    let prepared = Arc::new(PreparedNet::new(model.clone()).unwrap());
    let net = CertifiedNet::from_prepared(Arc::clone(&prepared));

    // f32 forward.
    let f32net = Network::from_model(&model);
    let x = data.to_f32();
    let z32 = f32net.forward(&params, &x, EXAMPLES).unwrap();
    let mut ws = Workspace::new(&f32net, EXAMPLES);
    let zt = f32net
        .forward_train(&params, &x, EXAMPLES, &mut ws)
        .unwrap()
        .to_vec();
    assert_eq!(
        z32.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        zt.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "{name}: forward_train differs from forward"
    );

    // Certified forward, binary64, every layer.
    let encl = net.forward(&pixels, EXAMPLES).unwrap();
    assert_eq!(encl.len(), spec.layers.len() + 1);
    for (i, e) in encl.iter().enumerate() {
        let len = if i == 0 {
            il
        } else {
            model.plan()[i - 1].output.len()
        };
        for (b, act) in acts.iter().enumerate() {
            assert_eq!(act[i].len(), len);
            for (k, q) in act[i].iter().enumerate() {
                assert!(
                    ball_contains(e, b * len + k, q),
                    "{name}: binary64 enclosure of layer output {i}, example {b}, entry {k}"
                );
            }
        }
    }
    // Certified forward, double-double, every layer.
    let dd_net = net
        .clone()
        .with_forward_mode(ForwardMode::DoubleDouble)
        .unwrap();
    let dd = dd_net.forward_dd(&pixels, EXAMPLES).unwrap();
    for (b, (dd_b, act)) in dd.iter().zip(&acts).enumerate() {
        assert_eq!(dd_b.len(), spec.layers.len() + 1);
        for (i, (e, act_i)) in dd_b.iter().zip(act).enumerate() {
            assert!(e.is_valid() && e.len() == act_i.len());
            for (k, q) in act_i.iter().enumerate() {
                assert!(
                    dd_contains(e, k, q),
                    "{name}: double-double enclosure of layer output {i}, example {b}, entry {k}"
                );
            }
        }
    }
    // Logits in every forward mode: contain the exact logits; the f32 logits lie at the
    // midpoints up to f32 rounding.
    let mut by_mode = Vec::new();
    for mode in [
        ForwardMode::F64,
        ForwardMode::DoubleDouble,
        ForwardMode::Auto,
    ] {
        let m = net.clone().with_forward_mode(mode).unwrap();
        let (logits, stats) = m.logits_with_stats(&pixels, EXAMPLES).unwrap();
        assert_eq!(stats.examples, EXAMPLES);
        if mode == ForwardMode::DoubleDouble {
            assert_eq!(stats.dd_examples, EXAMPLES);
        }
        for (b, z) in exact.iter().enumerate() {
            for (k, q) in z.iter().enumerate() {
                let i = b * CLASSES + k;
                assert!(
                    ball_contains(&logits, i, q),
                    "{name}: {mode:?} logit {k} of example {b}"
                );
                assert!(
                    (z32[i] as f64 - logits.mid[i]).abs()
                        <= logits.rad[i] + 1e-4 * (1.0 + logits.mid[i].abs()),
                    "{name}: {mode:?}: f32 logit {} far from the enclosure {} ± {}",
                    z32[i],
                    logits.mid[i],
                    logits.rad[i]
                );
            }
        }
        by_mode.push((mode, logits));
    }

    // Gradients: the certified backward contains the f32 parameter gradient; Euler's identity
    // <∇θ s, θ> = L s holds for the f32 one (first-layer bias only: degree L).
    let degree = spec.homogeneity().degree.expect("homogeneous spec") as f64;
    let theta = flat(&params);
    let backward = Backward::from_prepared(Arc::clone(&prepared));
    assert_eq!(backward.n_params(), theta.len());
    // The bias-free copy is positively 1-homogeneous in the input: <∇x s, x> = s.
    let mut unbiased = params.clone();
    for l in &mut unbiased.layers {
        if let Some(b) = &mut l.bias {
            b.iter_mut().for_each(|v| *v = 0.0);
        }
    }
    for b in 0..EXAMPLES {
        let y = labels[b] as usize;
        let j = (y + 1) % CLASSES;
        let mut c = vec![0.0f64; CLASSES];
        c[y] = 1.0;
        c[j] = -1.0;
        let c32: Vec<f32> = c.iter().map(|&v| v as f32).collect();
        let xb = &x[b * il..(b + 1) * il];
        let mut ws = Workspace::new(&f32net, 1);
        let zb = f32net
            .forward_train(&params, xb, 1, &mut ws)
            .unwrap()
            .to_vec();
        let s = (zb[y] - zb[j]) as f64;
        let mut grads = params.clone();
        f32net.backward(&params, &mut ws, &c32, &mut grads).unwrap();
        let g = flat(&grads);
        let cert = backward.gradient(&encl, EXAMPLES, b, &c).unwrap();
        assert_eq!(cert.grad.len(), g.len());
        let scale = cert.grad.mid.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        for (k, &gk) in g.iter().enumerate() {
            assert!(
                (gk as f64 - cert.grad.mid[k]).abs() <= cert.grad.rad[k] + 1e-4 * (1.0 + scale),
                "{name}: example {b}: f32 gradient {k} = {gk} outside the certified {} ± {} \
                 (kinks {:?})",
                cert.grad.mid[k],
                cert.grad.rad[k],
                cert.kinks
            );
        }
        let euler: f64 = g
            .iter()
            .zip(&theta)
            .map(|(&a, &t)| a as f64 * t as f64)
            .sum();
        assert!(
            close(euler, degree * s, degree * s, 1e-4),
            "{name}: example {b}: <∇θ s, θ> = {euler}, L s = {}",
            degree * s
        );
        // Input gradient, on the bias-free net.
        let mut ws = Workspace::new(&f32net, 1);
        let zu = f32net
            .forward_train(&unbiased, xb, 1, &mut ws)
            .unwrap()
            .to_vec();
        let su = (zu[y] - zu[j]) as f64;
        let gx = f32net.input_gradient(&unbiased, &mut ws, &c32).unwrap();
        assert_eq!(gx.len(), il);
        let dot: f64 = gx.iter().zip(xb).map(|(&a, &v)| a as f64 * v as f64).sum();
        assert!(
            close(dot, su, su, 1e-4),
            "{name}: example {b}: <∇x s, x> = {dot}, s = {su} (bias-free net)"
        );
    }

    // IBP ≤ CROWN ≤ attack (L∞).
    let (eps_max, steps) = (1.0, 8);
    let ibp = robust::ibp_radius(&net, &data, task, eps_max, steps).unwrap();
    let crown_net = crown::Crown::from_prepared(&prepared).unwrap();
    let crown_r = crown::crown_radius(&crown_net, &net, &data, task, eps_max, steps).unwrap();
    let aopts = AttackOptions {
        steps: 10,
        restarts: 2,
        bisection: steps,
        seed: seed ^ 0xa77,
        ..AttackOptions::default()
    };
    let mut linf_attacks = Vec::new();
    for n in 0..EXAMPLES {
        assert!(ibp[n] >= 0.0 && ibp[n] <= eps_max);
        assert!(
            ibp[n] <= crown_r[n],
            "{name}: example {n}: IBP radius {} > CROWN radius {}",
            ibp[n],
            crown_r[n]
        );
        let a = robust::attack::attack(
            &f32net,
            &params,
            &net,
            data.image(n),
            labels[n],
            task,
            Norm::Inf,
            eps_max,
            &aopts,
        )
        .unwrap();
        assert!(
            crown_r[n] <= a.radius,
            "{name}: example {n}: CROWN radius {} > attack radius {}",
            crown_r[n],
            a.radius
        );
        linf_attacks.push(a.radius);
        if let Some(p) = &a.point {
            assert!(robust::attack::verified_adversarial(&net, p, labels[n], task).unwrap());
            assert!(robust::attack::distance_up(data.image(n), p, Norm::Inf) <= a.radius);
        } else {
            assert!(a.radius.is_infinite());
        }
    }

    assert!(
        linf_attacks.iter().any(|r| r.is_finite()),
        "{name}: the L∞ attack found no adversarial point (the CROWN ≤ attack check is vacuous)"
    );
    assert!(
        ibp.iter().any(|&r| r > 0.0),
        "{name}: no positive IBP radius"
    );

    // Lipschitz: every pair of inputs (exact logits).
    let lip = robust::lipschitz::lipschitz_of(prepared.model()).unwrap();
    assert_eq!(lip.per_layer.len(), spec.layers.len());
    let to64 = |q: &Rational| q.to_f64();
    for n in 0..EXAMPLES {
        for m in n + 1..EXAMPLES {
            let din = (0..il)
                .map(|k| {
                    let d = (pixels[n * il + k] as f64 - pixels[m * il + k] as f64) / 255.0;
                    d * d
                })
                .sum::<f64>()
                .sqrt();
            let dz: Vec<f64> = (0..CLASSES)
                .map(|k| to64(&Rational::from(&exact[n][k] - &exact[m][k])))
                .collect();
            let dout = dz.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(
                dout <= lip.network * din * (1.0 + 1e-9),
                "{name}: |Φ(x{n}) − Φ(x{m})| = {dout} > {} · {din}",
                lip.network
            );
            for a in 0..CLASSES {
                for bb in 0..CLASSES {
                    if a != bb {
                        let dg = (dz[a] - dz[bb]).abs();
                        assert!(
                            dg <= lip.gap(a, bb) * din * (1.0 + 1e-9),
                            "{name}: gap {a}-{bb} moves {dg} > {} · {din}",
                            lip.gap(a, bb)
                        );
                    }
                }
            }
        }
    }
    // The L2 run (Lipschitz radii against the L2 attack, through `robust::run`).
    let rep = robust::run(
        spec,
        &params,
        &data,
        &RobustOptions {
            norm: Norm::L2,
            eps_max: 2.0,
            steps: 6,
            attack: aopts,
        },
    )
    .unwrap();
    assert_eq!(rep.violations, 0, "{name}: L2 radii above the attack radii");
    assert_eq!(rep.lipschitz, lip.network, "{name}: one Lipschitz bound");
    for e in &rep.examples {
        assert!(
            e.certified <= e.attack && e.margin_only <= e.attack,
            "{name}: {e:?}"
        );
    }

    // Certificate + verify.
    let opts = CertifyOptions {
        witness_examples: EXAMPLES,
        ..CertifyOptions::default()
    };
    let run = margincert::certify::certificate::certify_run(spec, &params, &data, &opts).unwrap();
    let cert = &run.certificate;
    // Its logits are the Auto pass's, bit for bit.
    let auto = &by_mode[2].1;
    assert_eq!(run.logits.mid, auto.mid, "{name}: certificate logits");
    assert_eq!(run.logits.rad, auto.rad, "{name}: certificate radii");
    let q_exact = (0..EXAMPLES)
        .map(|n| exact_margin(&exact[n], labels[n] as usize))
        .min()
        .unwrap();
    assert!(
        rat64(cert.margin.q_min.lo) <= q_exact && q_exact <= rat64(cert.margin.q_min.hi),
        "{name}: q_min {:?} misses the exact {}",
        cert.margin.q_min,
        q_exact.to_f64()
    );
    let report = verify(cert, spec, &params, &data).unwrap();
    assert!(report.ok(), "{name}: verify: {:?}", report.failures());

    // Import: a PyTorch state_dict (safetensors) and the ONNX graph give the same network.
    let st = import::torch::from_bytes(
        &state_dict(&model),
        Path::new("layers.safetensors"),
        Some(spec),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(&st.checkpoint.spec, spec);
    assert_eq!(
        bits(&st.checkpoint.params),
        bits(&params),
        "{name}: torch import"
    );
    let st_cert = margincert::certify::certify(spec, &st.checkpoint.params, &data, &opts).unwrap();
    assert_eq!(&st_cert, cert, "{name}: certificate of the torch import");
    let ox = import::onnx::from_bytes(
        &onnx_bytes(&model),
        Path::new("layers.onnx"),
        &Default::default(),
    )
    .unwrap();
    let ox_spec = &ox.checkpoint.spec;
    assert_eq!(ox_spec.input, spec.input);
    assert_eq!(ops(ox_spec), ops(spec), "{name}: ONNX import plan");
    assert_eq!(
        bits(&ox.checkpoint.params),
        bits(&params),
        "{name}: ONNX import"
    );
    let ox_logits = CertifiedNet::new(ox_spec, &ox.checkpoint.params)
        .unwrap()
        .with_forward_mode(ForwardMode::Auto)
        .unwrap()
        .logits(&pixels, EXAMPLES)
        .unwrap();
    let same = |a: &BallVec, b: &BallVec| a.mid == b.mid && a.rad == b.rad;
    assert!(
        same(&ox_logits, auto),
        "{name}: certified logits of the ONNX import"
    );
    let ox_cert =
        margincert::certify::certify(ox_spec, &ox.checkpoint.params, &data, &opts).unwrap();
    // The graph writes a pool whose stride is its size as the spec's default (`None`): the
    // same plan, another spelling. Everything else in the certificate is identical.
    let ox_cert = margincert::certify::Certificate {
        spec: spec.clone(),
        ..ox_cert
    };
    assert_eq!(&ox_cert, cert, "{name}: certificate of the ONNX import");

    covered
}

#[test]
fn every_pass_runs_on_every_layer_kind() {
    let mut covered = BTreeSet::new();
    for (i, spec) in specs().iter().enumerate() {
        covered.extend(check_every_pass(spec, 0x1a7e + i as u64));
    }
    let missing: Vec<_> = REQUIRED.iter().filter(|f| !covered.contains(*f)).collect();
    assert!(missing.is_empty(), "no spec covers {missing:?}");
    let unknown: Vec<_> = covered.iter().filter(|f| !REQUIRED.contains(f)).collect();
    assert!(
        unknown.is_empty(),
        "features {unknown:?} are not in REQUIRED"
    );
}
