//! Gradient and forward checks of the f32 kernels (`margincert::nn`) against an independent
//! f64 reference written here with naive loops on C-major activations.
//!
//! For every layer type, a tiny net with random weights (and random biases where the layer
//! has one) is run forward in f32 and compared to the reference; then the scalar loss
//! `L = sum(c ⊙ logits)` (random `c`) is differentiated by `Network::backward` and compared
//! to central finite differences of the f64 reference.
//!
//! Why the finite differences are (nearly) exact: with the activation pattern fixed (signs
//! of ReLU inputs, max-pool winners), the logits are linear in any single parameter, so the
//! central difference has no truncation error; only f64 rounding, about 1e-16·|L|/h. We
//! reject samples where any ReLU input is within 1e-3 of 0 or any max-pool window's top
//! two values are within 1e-3 of each other, and use a step h = 1e-6, which moves every
//! value by far less than 1e-3, so the pattern cannot change inside [θ-h, θ+h]; the check
//! asserts that too.
//!
//! Tolerance: the f32 gradient is a sum of products along paths of a few layers with
//! fan-in at most ~100; its rounding error is at most about n·u ≈ 100·6e-8 ≈ 6e-6 relative
//! to the sum of absolute terms, which on these nets is within a factor ~10 of the largest
//! gradient. We allow 1e-4 · max(1, max |gradient|): an order of magnitude of headroom,
//! and still thousands of times smaller than any real error (a wrong index or missing term
//! changes a gradient by O(1) relative).

use margincert::Error;
use margincert::model::{Layer, ModelSpec, Padding, Params, Shape, Window};
use margincert::nn::{Network, Workspace};

/// SplitMix64: a small deterministic generator for test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------------------------------
// The f64 reference: C-major activations, naive loops.
// ---------------------------------------------------------------------------------------

/// Reference forward of one example. Returns the logits and the smallest distance to a
/// kink seen on the way (|ReLU/LeakyReLU input|, max-pool gap between the top two values).
fn reference(
    spec: &ModelSpec,
    params: &[(Vec<f64>, Option<Vec<f64>>)],
    x: &[f64],
) -> (Vec<f64>, f64) {
    let mut a = x.to_vec();
    let mut s = spec.input;
    let mut margin = f64::INFINITY;
    let mut slot = 0;
    for layer in &spec.layers {
        match *layer {
            Layer::Dense { out, .. } => {
                let (w, b) = &params[slot];
                slot += 1;
                let n = s.len();
                let mut y = vec![0.0; out];
                for o in 0..out {
                    let mut acc = b.as_ref().map_or(0.0, |b| b[o]);
                    for i in 0..n {
                        acc += w[o * n + i] * a[i];
                    }
                    y[o] = acc;
                }
                a = y;
                s = Shape::flat(out);
            }
            Layer::Conv2d {
                out,
                kernel: k,
                stride,
                padding,
                ..
            } => {
                let (w, b) = &params[slot];
                slot += 1;
                let win = Window::new(k, stride, padding, s.h, s.w).unwrap();
                let mut y = vec![0.0; out * win.out_h * win.out_w];
                for o in 0..out {
                    for oy in 0..win.out_h {
                        for ox in 0..win.out_w {
                            let mut acc = b.as_ref().map_or(0.0, |b| b[o]);
                            for ci in 0..s.c {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        // Padded coordinates, computed here without Window's
                                        // helpers.
                                        let py = (oy * stride + ky) as isize - win.pad_top as isize;
                                        let px =
                                            (ox * stride + kx) as isize - win.pad_left as isize;
                                        if py < 0
                                            || px < 0
                                            || py >= s.h as isize
                                            || px >= s.w as isize
                                        {
                                            continue;
                                        }
                                        let xi = (ci * s.h + py as usize) * s.w + px as usize;
                                        acc += w[((o * s.c + ci) * k + ky) * k + kx] * a[xi];
                                    }
                                }
                            }
                            y[(o * win.out_h + oy) * win.out_w + ox] = acc;
                        }
                    }
                }
                a = y;
                s = Shape::new(out, win.out_h, win.out_w);
            }
            Layer::MaxPool { size, stride } | Layer::AvgPool { size, stride } => {
                let st = stride.unwrap_or(size);
                let oh = (s.h - size) / st + 1;
                let ow = (s.w - size) / st + 1;
                let max = matches!(layer, Layer::MaxPool { .. });
                let mut y = vec![0.0; s.c * oh * ow];
                for c in 0..s.c {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut vals = Vec::new();
                            for ky in 0..size {
                                for kx in 0..size {
                                    vals.push(a[(c * s.h + oy * st + ky) * s.w + ox * st + kx]);
                                }
                            }
                            y[(c * oh + oy) * ow + ox] = if max {
                                vals.sort_by(|p, q| q.partial_cmp(p).unwrap());
                                // Ties of exact zeros (ReLU outputs whose inputs are at
                                // least KINK below 0) stay ties under the FD step and get
                                // no gradient either way.
                                if vals.len() > 1 && !(vals[0] == 0.0 && vals[1] == 0.0) {
                                    margin = margin.min(vals[0] - vals[1]);
                                }
                                vals[0]
                            } else {
                                vals.iter().sum::<f64>() / (size * size) as f64
                            };
                        }
                    }
                }
                a = y;
                s = Shape::new(s.c, oh, ow);
            }
            Layer::Flatten => s = Shape::flat(s.len()),
            Layer::Relu => activate(&mut a, 0.0, &mut margin),
            Layer::LeakyRelu { slope } => activate(&mut a, slope as f64, &mut margin),
        }
    }
    (a, margin)
}

/// `x` for `x >= 0`, `slope * x` otherwise, in place; lowers `margin` to the smallest |input|.
fn activate(a: &mut [f64], slope: f64, margin: &mut f64) {
    for v in a.iter_mut() {
        *margin = margin.min(v.abs());
        if *v < 0.0 {
            *v *= slope;
        }
    }
}

fn to_f64(p: &Params) -> Vec<(Vec<f64>, Option<Vec<f64>>)> {
    p.layers
        .iter()
        .map(|l| {
            (
                l.weight.iter().map(|&v| v as f64).collect(),
                l.bias
                    .as_ref()
                    .map(|b| b.iter().map(|&v| v as f64).collect()),
            )
        })
        .collect()
}

/// A random sample: parameters (He-normal weights, uniform biases), inputs p/255, and the
/// loss coefficients c, with every kink at least `KINK` away.
struct Sample {
    params: Params,
    x: Vec<f32>,
    c: Vec<f64>,
    batch: usize,
}

const KINK: f64 = 1e-3;

fn sample(spec: &ModelSpec, batch: usize, seed: u64) -> Sample {
    for attempt in 0..200 {
        let mut rng = Rng(seed * 1000 + attempt);
        let mut params = Params::he_normal(spec, seed * 1000 + attempt).unwrap();
        for l in &mut params.layers {
            if let Some(b) = &mut l.bias {
                for v in b.iter_mut() {
                    *v = rng.uniform(-0.5, 0.5) as f32;
                }
            }
        }
        let n = spec.input.len();
        let x: Vec<f32> = (0..batch * n)
            .map(|_| (rng.next() % 256) as f32 / 255.0)
            .collect();
        let k = spec.outputs().unwrap();
        let c: Vec<f64> = (0..batch * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let p64 = to_f64(&params);
        let ok = (0..batch).all(|b| {
            let xb: Vec<f64> = x[b * n..(b + 1) * n].iter().map(|&v| v as f64).collect();
            reference(spec, &p64, &xb).1 >= KINK
        });
        if ok {
            return Sample {
                params,
                x,
                c,
                batch,
            };
        }
    }
    panic!("no sample without near-kinks in 200 attempts for {spec:?}");
}

/// Reference loss `sum(c ⊙ logits)` over the batch, and the smallest kink distance.
fn ref_loss(spec: &ModelSpec, p64: &[(Vec<f64>, Option<Vec<f64>>)], s: &Sample) -> (f64, f64) {
    let n = spec.input.len();
    let k = spec.outputs().unwrap();
    let mut loss = 0.0;
    let mut margin = f64::INFINITY;
    for b in 0..s.batch {
        let xb: Vec<f64> = s.x[b * n..(b + 1) * n].iter().map(|&v| v as f64).collect();
        let (y, m) = reference(spec, p64, &xb);
        margin = margin.min(m);
        loss += y.iter().zip(&s.c[b * k..]).map(|(a, c)| a * c).sum::<f64>();
    }
    (loss, margin)
}

/// The full check for one spec: forward vs reference, backward vs finite differences.
fn check(spec: &ModelSpec, seed: u64) {
    let batch = 3;
    let s = sample(spec, batch, seed);
    let net = Network::new(spec).unwrap();
    let k = net.outputs();
    let n = spec.input.len();

    // Forward: f32 kernels against the f64 reference.
    let p64 = to_f64(&s.params);
    let logits = net.forward(&s.params, &s.x, batch).unwrap();
    for b in 0..batch {
        let xb: Vec<f64> = s.x[b * n..(b + 1) * n].iter().map(|&v| v as f64).collect();
        let (want, _) = reference(spec, &p64, &xb);
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (j, w) in want.iter().enumerate() {
            let got = logits[b * k + j] as f64;
            assert!(
                (got - w).abs() <= 1e-5 * scale,
                "{}: logit {b},{j}: f32 {got} vs f64 {w}",
                spec.name
            );
        }
    }

    // Backward against central differences.
    let mut ws = Workspace::new(&net, batch);
    net.forward_train(&s.params, &s.x, batch, &mut ws).unwrap();
    let dl: Vec<f32> = s.c.iter().map(|&v| v as f32).collect();
    let mut grads = s.params.zeros_like();
    // Poison the output buffer: backward must overwrite it.
    for v in grads.values_mut() {
        *v = f32::NAN;
    }
    net.backward(&s.params, &mut ws, &dl, &mut grads).unwrap();
    // The f32 gradient is of sum(fl32(c) ⊙ logits); use the same coefficients in f64.
    let s64 = Sample {
        params: s.params.clone(),
        x: s.x.clone(),
        c: dl.iter().map(|&v| v as f64).collect(),
        batch,
    };
    let h = 1e-6;
    let mut fd = Vec::new();
    let mut p = p64.clone();
    for li in 0..p.len() {
        for which in 0..2 {
            let len = if which == 0 {
                p[li].0.len()
            } else {
                p[li].1.as_ref().map_or(0, Vec::len)
            };
            for j in 0..len {
                let base = if which == 0 {
                    p64[li].0[j]
                } else {
                    p64[li].1.as_ref().unwrap()[j]
                };
                let set = |p: &mut Vec<(Vec<f64>, Option<Vec<f64>>)>, v: f64| {
                    if which == 0 {
                        p[li].0[j] = v
                    } else {
                        p[li].1.as_mut().unwrap()[j] = v
                    }
                };
                set(&mut p, base + h);
                let (lp, mp) = ref_loss(spec, &p, &s64);
                set(&mut p, base - h);
                let (lm, mm) = ref_loss(spec, &p, &s64);
                set(&mut p, base);
                assert!(
                    mp > 0.0 && mm > 0.0,
                    "{}: the FD step crossed a kink",
                    spec.name
                );
                fd.push((li, which, j, (lp - lm) / (2.0 * h)));
            }
        }
    }
    let gmax = fd.iter().fold(1.0f64, |m, f| m.max(f.3.abs()));
    for &(li, which, j, want) in &fd {
        let got = if which == 0 {
            grads.layers[li].weight[j]
        } else {
            grads.layers[li].bias.as_ref().unwrap()[j]
        } as f64;
        assert!(
            (got - want).abs() <= 1e-4 * gmax,
            "{}: layer {} {} [{j}]: backward {got} vs finite difference {want} (max |g| {gmax})",
            spec.name,
            s.params.layers[li].index,
            if which == 0 { "weight" } else { "bias" },
        );
    }
    assert!(!fd.is_empty());
}

fn spec(name: &str, input: Shape, layers: Vec<Layer>) -> ModelSpec {
    let s = ModelSpec {
        name: name.into(),
        input,
        layers,
    };
    s.validate().unwrap();
    s
}

fn dense(out: usize, bias: bool) -> Layer {
    Layer::Dense { out, bias }
}

#[test]
fn dense_with_and_without_bias() {
    for (i, (b1, b2)) in [(true, false), (false, true), (false, false), (true, true)]
        .into_iter()
        .enumerate()
    {
        let s = spec(
            &format!("dense {b1} {b2}"),
            Shape::flat(7),
            vec![
                dense(6, b1),
                Layer::Relu,
                dense(5, b2),
                Layer::Relu,
                dense(3, b1),
            ],
        );
        check(&s, i as u64);
    }
}

#[test]
fn conv_every_stride_padding_and_bias() {
    let paddings = [Padding::Valid, Padding::Same, Padding::Explicit(1)];
    let mut seed = 100;
    for stride in [1, 2] {
        for padding in paddings {
            for bias in [false, true] {
                let s = spec(
                    &format!("conv s{stride} {padding:?} bias {bias}"),
                    Shape::new(2, 7, 7),
                    vec![
                        Layer::conv(3, 3, stride, padding, bias),
                        Layer::LeakyRelu { slope: 0.2 },
                        Layer::conv(2, 2, stride, padding, !bias),
                        Layer::Relu,
                        Layer::Flatten,
                        dense(3, false),
                    ],
                );
                check(&s, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn conv_same_with_even_kernel_pads_asymmetrically() {
    // k = 4, stride 1 SAME: 3 padding rows, 1 on top and 2 at the bottom (TensorFlow).
    let s = spec(
        "conv k4 same",
        Shape::new(1, 6, 5),
        vec![
            Layer::conv(2, 4, 1, Padding::Same, true),
            Layer::Relu,
            Layer::conv(2, 4, 2, Padding::Same, false),
            Layer::Flatten,
            dense(2, false),
        ],
    );
    check(&s, 200);
}

#[test]
fn conv_padding_wider_than_the_kernel() {
    // Explicit(3) with a 2x2 kernel: the corner windows read only padding.
    for (stride, bias) in [(1, true), (2, false)] {
        let s = spec(
            &format!("conv wide pad s{stride}"),
            Shape::new(2, 4, 5),
            vec![
                Layer::conv(3, 2, 1, Padding::Same, true),
                Layer::LeakyRelu { slope: 0.3 },
                Layer::conv(2, 2, stride, Padding::Explicit(3), bias),
                Layer::Flatten,
                dense(2, false),
            ],
        );
        check(&s, 250 + stride as u64);
    }
}

#[test]
fn maxpool_and_avgpool() {
    let mut seed = 300;
    for max in [true, false] {
        for (size, stride) in [(2, None), (3, Some(2)), (2, Some(1))] {
            let pool = if max {
                Layer::MaxPool { size, stride }
            } else {
                Layer::AvgPool { size, stride }
            };
            // Pool then activation, and activation then pool (which the network runs
            // reordered for max-pools).
            for act in [Layer::Relu, Layer::LeakyRelu { slope: 0.2 }] {
                for act_first in [false, true] {
                    let mut layers = vec![Layer::conv(3, 3, 1, Padding::Same, false)];
                    if act_first {
                        layers.extend([act.clone(), pool.clone()]);
                    } else {
                        layers.extend([pool.clone(), act.clone()]);
                    }
                    layers.extend([
                        Layer::conv(2, 2, 1, Padding::Valid, false),
                        Layer::Flatten,
                        dense(3, false),
                    ]);
                    let s = spec(
                        &format!("pool max={max} {size}/{stride:?} {act:?} first={act_first}"),
                        Shape::new(2, 8, 7),
                        layers,
                    );
                    check(&s, seed);
                    seed += 1;
                }
            }
        }
    }
}

#[test]
fn small_paper_like_cnn() {
    // The paper CNN's structure at a small size: conv SAME - relu - pool - conv - relu -
    // pool - flatten - dense - relu - dense, with a first-layer bias.
    let s = spec(
        "mini paper cnn",
        Shape::new(1, 12, 12),
        vec![
            Layer::conv(4, 5, 1, Padding::Same, true),
            Layer::Relu,
            Layer::MaxPool {
                size: 2,
                stride: None,
            },
            Layer::conv(5, 3, 1, Padding::Same, false),
            Layer::LeakyRelu { slope: 0.1 },
            Layer::MaxPool {
                size: 2,
                stride: None,
            },
            Layer::Flatten,
            dense(8, false),
            Layer::Relu,
            dense(4, false),
        ],
    );
    check(&s, 400);
}

#[test]
fn flatten_of_multichannel_maps_is_c_major_and_binary_output() {
    let s = spec(
        "flatten",
        Shape::new(3, 4, 3),
        vec![
            Layer::conv(4, 2, 1, Padding::Valid, false),
            Layer::Flatten,
            dense(5, false),
            Layer::LeakyRelu { slope: 0.01 },
            dense(1, false),
        ],
    );
    check(&s, 500);
}

// ---------------------------------------------------------------------------------------
// Properties of the f32 path itself.
// ---------------------------------------------------------------------------------------

fn mini_cnn() -> ModelSpec {
    spec(
        "mini",
        Shape::new(2, 10, 10),
        vec![
            Layer::conv(6, 3, 1, Padding::Same, true),
            Layer::Relu,
            Layer::MaxPool {
                size: 2,
                stride: None,
            },
            Layer::conv(8, 3, 2, Padding::Explicit(1), false),
            Layer::LeakyRelu { slope: 0.1 },
            Layer::AvgPool {
                size: 2,
                stride: Some(1),
            },
            Layer::Flatten,
            dense(16, true),
            Layer::Relu,
            dense(4, false),
        ],
    )
}

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed);
    (0..n).map(|_| (r.next() % 256) as f32 / 255.0).collect()
}

#[test]
fn inference_equals_training_forward_bitwise() {
    for s in [
        mini_cnn(),
        margincert::model::presets::mlp_with(Shape::new(1, 6, 6), &[20, 20], 3),
    ] {
        let net = Network::new(&s).unwrap();
        let p = Params::he_normal(&s, 3).unwrap();
        let batch = 9;
        let x = data(batch * s.input.len(), 4);
        let a = net.forward(&p, &x, batch).unwrap();
        let mut ws = Workspace::new(&net, 1);
        let b = net.forward_train(&p, &x, batch, &mut ws).unwrap();
        assert_eq!(a.len(), batch * net.outputs());
        assert!(a.iter().zip(b).all(|(u, v)| u.to_bits() == v.to_bits()));
    }
}

#[test]
fn logits_do_not_depend_on_the_rest_of_the_batch() {
    let s = mini_cnn();
    let net = Network::new(&s).unwrap();
    let p = Params::he_normal(&s, 5).unwrap();
    let n = s.input.len();
    let x = data(7 * n, 6);
    let all = net.forward(&p, &x, 7).unwrap();
    let k = net.outputs();
    for i in 0..7 {
        let one = net.forward(&p, &x[i * n..(i + 1) * n], 1).unwrap();
        for j in 0..k {
            let (u, v) = (one[j], all[i * k + j]);
            assert!(
                (u - v).abs() <= 1e-6 * (1.0 + v.abs()),
                "example {i}: {u} vs {v}"
            );
        }
    }
}

#[test]
fn backward_is_bitwise_deterministic() {
    let s = mini_cnn();
    let net = Network::new(&s).unwrap();
    let p = Params::he_normal(&s, 8).unwrap();
    let batch = 33;
    let x = data(batch * s.input.len(), 9);
    let dl = data(batch * net.outputs(), 10);
    let run = || {
        let mut ws = Workspace::new(&net, batch);
        net.forward_train(&p, &x, batch, &mut ws).unwrap();
        let mut g = p.zeros_like();
        net.backward(&p, &mut ws, &dl, &mut g).unwrap();
        g.values().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let first = run();
    for _ in 0..3 {
        assert_eq!(first, run());
    }
    // Reusing one workspace for two batch sizes gives the same bits as fresh ones.
    let mut ws = Workspace::new(&net, 2);
    let small = &x[..2 * s.input.len()];
    net.forward_train(&p, small, 2, &mut ws).unwrap();
    net.forward_train(&p, &x, batch, &mut ws).unwrap();
    let mut g = p.zeros_like();
    net.backward(&p, &mut ws, &dl, &mut g).unwrap();
    assert_eq!(first, g.values().map(|v| v.to_bits()).collect::<Vec<_>>());
}

#[test]
fn maxpool_gives_the_gradient_to_the_first_maximum() {
    // A 1x1 conv with weights (1, 0) copies channel 0 exactly (ties stay ties); the gradient
    // of its second weight, sum over the selected positions of channel 1, shows which
    // position of each window the max-pool picked.
    let s = spec(
        "tie",
        Shape::new(2, 2, 2),
        vec![
            Layer::conv(1, 1, 1, Padding::Valid, false),
            Layer::MaxPool {
                size: 2,
                stride: None,
            },
            Layer::Flatten,
            dense(1, false),
        ],
    );
    let net = Network::new(&s).unwrap();
    let mut p = Params::he_normal(&s, 1).unwrap();
    p.layers[0].weight = vec![1.0, 0.0];
    p.layers[1].weight = vec![1.0];
    // Channel 0 (row-major 2x2): 1, 3, 3, 3 (three-way tie); channel 1 marks positions.
    let x = vec![1.0, 3.0, 3.0, 3.0, 10.0, 20.0, 40.0, 80.0];
    let mut ws = Workspace::new(&net, 1);
    assert_eq!(net.forward_train(&p, &x, 1, &mut ws).unwrap(), &[3.0]);
    let mut g = p.zeros_like();
    net.backward(&p, &mut ws, &[1.0], &mut g).unwrap();
    assert_eq!(g.layers[0].weight, vec![3.0, 20.0]);
}

#[test]
fn relu_derivative_at_zero_is_zero() {
    let s = spec(
        "relu0",
        Shape::flat(2),
        vec![dense(1, false), Layer::Relu, dense(1, false)],
    );
    let net = Network::new(&s).unwrap();
    let mut p = Params::he_normal(&s, 1).unwrap();
    p.layers[0].weight = vec![1.0, -1.0];
    p.layers[1].weight = vec![2.0];
    let mut ws = Workspace::new(&net, 1);
    net.forward_train(&p, &[0.5, 0.5], 1, &mut ws).unwrap();
    let mut g = p.zeros_like();
    net.backward(&p, &mut ws, &[1.0], &mut g).unwrap();
    assert_eq!(g.layers[0].weight, vec![0.0, 0.0]);
    assert_eq!(g.layers[1].weight, vec![0.0]);
}

#[test]
fn bad_shapes_are_errors() {
    let s = mini_cnn();
    let net = Network::new(&s).unwrap();
    let p = Params::he_normal(&s, 1).unwrap();
    let n = s.input.len();
    let x = data(2 * n, 1);
    assert!(matches!(net.forward(&p, &x[1..], 2), Err(Error::Shape(_))));
    assert!(matches!(net.forward(&p, &x, 3), Err(Error::Shape(_))));
    let mut ws = Workspace::new(&net, 2);
    assert!(matches!(
        net.forward_train(&p, &x, 1, &mut ws),
        Err(Error::Shape(_))
    ));
    // Backward before any forward_train.
    let mut g = p.zeros_like();
    assert!(matches!(
        net.backward(&p, &mut ws, &vec![0.0; 2 * net.outputs()], &mut g),
        Err(Error::Shape(_))
    ));
    net.forward_train(&p, &x, 2, &mut ws).unwrap();
    assert!(matches!(
        net.backward(&p, &mut ws, &[0.0; 3], &mut g),
        Err(Error::Shape(_))
    ));
    // Parameters of the wrong shape (a layer missing, a weight cut, a bias removed).
    let mut bad = p.clone();
    bad.layers.pop();
    assert!(matches!(net.forward(&bad, &x, 2), Err(Error::Shape(_))));
    let mut bad = p.clone();
    bad.layers[1].weight.pop();
    assert!(matches!(net.forward(&bad, &x, 2), Err(Error::Shape(_))));
    let mut bad = p.clone();
    bad.layers[0].bias = None;
    assert!(matches!(net.forward(&bad, &x, 2), Err(Error::Shape(_))));
    let mut bad_g = p.zeros_like();
    bad_g.layers[2].bias = None;
    assert!(matches!(
        net.backward(&p, &mut ws, &vec![0.0; 2 * net.outputs()], &mut bad_g),
        Err(Error::Shape(_))
    ));
    // Bad specs.
    let mut bs = s.clone();
    bs.layers.truncate(6);
    assert!(Network::new(&bs).is_err());
}

#[test]
fn paper_cnn_backward_is_bitwise_deterministic_with_threads() {
    // Big enough that every matrix product runs multi-threaded inside `gemm`.
    let s = margincert::model::presets::mnist_cnn();
    let net = Network::new(&s).unwrap();
    let p = Params::he_normal(&s, 11).unwrap();
    let batch = 6;
    let x = data(batch * s.input.len(), 12);
    let dl = data(batch * net.outputs(), 13);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut ws = Workspace::new(&net, batch);
            let logits = net.forward_train(&p, &x, batch, &mut ws).unwrap().to_vec();
            let mut g = p.zeros_like();
            net.backward(&p, &mut ws, &dl, &mut g).unwrap();
            let mut bits: Vec<u32> = logits.iter().map(|v| v.to_bits()).collect();
            bits.extend(g.values().map(|v| v.to_bits()));
            bits
        })
    };
    for threads in [2, 3] {
        let first = run(threads);
        assert_eq!(first, run(threads), "{threads} threads");
        assert_eq!(first, run(threads), "{threads} threads");
    }
}
