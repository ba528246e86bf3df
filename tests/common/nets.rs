//! Random networks for the property tests: the small architecture tables, a random deep
//! MLP / CNN, and one generator of random weights and pixels whose distributions each test
//! module picks by its own `mode` numbering.
//!
//! The generators are deterministic in the `ChaCha8Rng` they are given: a seed (and the
//! proptest regression files, which store seeds) names the same network on every run.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use margincert::model::{Layer, ModelSpec, Padding, Params, Shape};

/// How [`random_params`] redraws each weight after a He-normal draw.
#[derive(Clone, Copy, Debug)]
pub enum Weights {
    /// Keep the He-normal draw.
    He,
    /// `m · 2^e` with `m` uniform in `[-1, 1)` and `e` uniform in `exp` (inclusive): magnitudes
    /// over many orders. `exponent_first` sets the order of the two draws.
    Wide {
        /// Exponent range, inclusive.
        exp: (i32, i32),
        /// Draw `e` before `m`.
        exponent_first: bool,
    },
    /// Ill-conditioned: even entries `±2^e` (`e` uniform in `exp`, inclusive), each odd entry
    /// the negation of the one before plus a residual `r · 2^residual_exp`, `r` uniform in
    /// `[-1, 1)`. With `residual_p = Some(p)` the residual is present with probability `p`
    /// (else the cancellation is exact); `None`: always present.
    Cancelling {
        /// Exponent range of the large entries, inclusive.
        exp: (i32, i32),
        /// Exponent of the residual's scale.
        residual_exp: i32,
        /// Probability of a residual (`None`: always, without a draw).
        residual_p: Option<f64>,
    },
    /// Exact kinks and ties: `0` with probability `p_zero`, else a half-integer in `[-2, 2]`.
    Halves {
        /// Probability of an exact zero.
        p_zero: f64,
    },
}

/// How [`random_params`] redraws each bias.
#[derive(Clone, Copy, Debug)]
pub enum Biases {
    /// `r · scale`, `r` uniform in `[-1, 1)`.
    Uniform {
        /// Scale of the draw.
        scale: f32,
    },
    /// A half-integer in `[-1, 1]`.
    Halves,
    /// Exactly zero (no draw).
    Zero,
}

/// How [`random_pixels`] draws pixel bytes.
#[derive(Clone, Copy, Debug)]
pub enum Pixels {
    /// Uniform bytes.
    Uniform,
    /// Uniform bytes, then within each example every odd pixel copies the one before it (so
    /// antisymmetric weight rows give exact zero pre-activations).
    Pairs,
    /// Each pixel one of `0, 0, 51, 255` (zero half the time).
    Levels,
}

/// He-normal parameters for `spec` (seeded from `rng`), then every weight and bias redrawn
/// as `weights` and `biases` say, layer by layer in order.
pub fn random_params(
    spec: &ModelSpec,
    weights: Weights,
    biases: Biases,
    rng: &mut ChaCha8Rng,
) -> Params {
    let mut p = Params::he_normal(spec, rng.random()).expect("params");
    for l in &mut p.layers {
        for i in 0..l.weight.len() {
            let cur = l.weight[i];
            let prev = if i > 0 { l.weight[i - 1] } else { 0.0 };
            l.weight[i] = match weights {
                Weights::He => cur,
                Weights::Wide {
                    exp: (lo, hi),
                    exponent_first,
                } => {
                    let (m, e) = if exponent_first {
                        let e: i32 = rng.random_range(lo..=hi);
                        (rng.random_range(-1.0f32..1.0), e)
                    } else {
                        let m: f32 = rng.random_range(-1.0f32..1.0);
                        (m, rng.random_range(lo..=hi))
                    };
                    m * 2f32.powi(e)
                }
                Weights::Cancelling {
                    exp: (lo, hi),
                    residual_exp,
                    residual_p,
                } => {
                    if i % 2 == 0 {
                        let e: i32 = rng.random_range(lo..=hi);
                        2f32.powi(e) * if rng.random_bool(0.5) { 1.0 } else { -1.0 }
                    } else if residual_p.is_none_or(|p| rng.random_bool(p)) {
                        // cancel the previous weight, off by a tiny residual
                        -prev + rng.random_range(-1.0f32..1.0) * 2f32.powi(residual_exp)
                    } else {
                        -prev
                    }
                }
                Weights::Halves { p_zero } => {
                    if rng.random_bool(p_zero) {
                        0.0
                    } else {
                        rng.random_range(-4i32..=4) as f32 * 0.5
                    }
                }
            };
        }
        if let Some(b) = &mut l.bias {
            for v in b.iter_mut() {
                *v = match biases {
                    Biases::Uniform { scale } => rng.random_range(-1.0f32..1.0) * scale,
                    Biases::Halves => rng.random_range(-2i32..=2) as f32 * 0.5,
                    Biases::Zero => 0.0,
                };
            }
        }
    }
    p
}

/// `batch` examples of `len` pixel bytes each, drawn as `pixels` says.
pub fn random_pixels(len: usize, batch: usize, pixels: Pixels, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut px: Vec<u8> = (0..len * batch)
        .map(|_| match pixels {
            Pixels::Uniform | Pixels::Pairs => rng.random(),
            Pixels::Levels => [0u8, 0, 51, 255][rng.random_range(0..4)],
        })
        .collect();
    if let Pixels::Pairs = pixels {
        for b in 0..batch {
            for i in (1..len).step_by(2) {
                px[b * len + i] = px[b * len + i - 1];
            }
        }
    }
    px
}

/// Five small architectures, index `arch % 5` (bias only in the first layer when
/// `first_bias`): MLPs and CNNs with every padding kind, overlapping and plain max / avg
/// pools, ReLU and LeakyReLU (incl. a negative slope). The forward and certificate
/// soundness properties run on them.
pub fn arch(arch: usize, first_bias: bool, classes: usize) -> ModelSpec {
    let dense = Layer::dense;
    let (input, layers) = match arch % 5 {
        0 => (
            Shape::new(1, 4, 4),
            vec![
                Layer::Flatten,
                dense(6, first_bias),
                Layer::Relu,
                dense(5, false),
                Layer::Relu,
                dense(classes, false),
            ],
        ),
        1 => (
            Shape::new(2, 5, 5),
            vec![
                Layer::conv(3, 3, 2, Padding::Same, first_bias),
                Layer::LeakyRelu { slope: 0.1 },
                Layer::MaxPool {
                    size: 2,
                    stride: Some(1),
                },
                Layer::Flatten,
                dense(classes, false),
            ],
        ),
        2 => (
            Shape::new(1, 6, 6),
            vec![
                Layer::conv(2, 3, 1, Padding::Explicit(1), first_bias),
                Layer::Relu,
                Layer::AvgPool {
                    size: 3,
                    stride: None,
                },
                Layer::Flatten,
                dense(4, false),
                Layer::LeakyRelu { slope: 0.25 },
                dense(classes, false),
            ],
        ),
        3 => (
            Shape::new(1, 7, 7),
            vec![
                Layer::conv(3, 2, 1, Padding::Valid, first_bias),
                Layer::Relu,
                Layer::MaxPool {
                    size: 2,
                    stride: None,
                },
                Layer::conv(2, 2, 1, Padding::Same, false),
                Layer::Relu,
                Layer::AvgPool {
                    size: 2,
                    stride: None,
                },
                Layer::Flatten,
                dense(classes, false),
            ],
        ),
        _ => (
            Shape::new(3, 3, 3),
            vec![
                Layer::Flatten,
                dense(4, first_bias),
                Layer::LeakyRelu { slope: -0.5 },
                dense(classes, false),
            ],
        ),
    };
    let spec = ModelSpec {
        name: format!("arch{arch}"),
        input,
        layers,
    };
    spec.validate().expect("valid test spec");
    spec
}

/// Six small homogeneous architectures, index `i % 6` (bias only in the first layer when
/// `first_bias`), with strided convolutions: the backward-pass and KKT properties run on
/// them.
pub fn homogeneous_arch(i: usize, first_bias: bool, outputs: usize) -> ModelSpec {
    let dense = Layer::dense;
    let (input, layers) = match i % 6 {
        0 => (
            Shape::flat(5),
            vec![dense(4, first_bias), Layer::Relu, dense(outputs, false)],
        ),
        1 => (
            Shape::new(1, 3, 3),
            vec![
                Layer::Flatten,
                dense(5, first_bias),
                Layer::LeakyRelu { slope: 0.125 },
                dense(3, false),
                Layer::Relu,
                dense(outputs, false),
            ],
        ),
        2 => (
            Shape::new(2, 5, 5),
            vec![
                Layer::conv(3, 3, 1, Padding::Same, first_bias),
                Layer::Relu,
                Layer::MaxPool {
                    size: 2,
                    stride: None,
                },
                Layer::Flatten,
                dense(outputs, false),
            ],
        ),
        3 => (
            Shape::new(1, 6, 6),
            vec![
                Layer::conv(2, 2, 2, Padding::Valid, first_bias),
                Layer::LeakyRelu { slope: 0.5 },
                Layer::MaxPool {
                    size: 2,
                    stride: Some(1),
                },
                Layer::Flatten,
                dense(3, false),
                Layer::Relu,
                dense(outputs, false),
            ],
        ),
        4 => (
            Shape::new(1, 5, 5),
            vec![
                Layer::conv(2, 3, 2, Padding::Explicit(1), first_bias),
                Layer::Relu,
                Layer::conv(2, 2, 1, Padding::Same, false),
                Layer::Relu,
                Layer::AvgPool {
                    size: 2,
                    stride: None,
                },
                Layer::Flatten,
                dense(outputs, false),
            ],
        ),
        _ => (
            Shape::new(1, 4, 4),
            vec![
                Layer::Flatten,
                dense(3, first_bias),
                Layer::Relu,
                dense(outputs, false),
            ],
        ),
    };
    ModelSpec {
        name: format!("arch{i}"),
        input,
        layers,
    }
}

/// An activation chosen by `kind`: ReLU (half the time), LeakyReLU 0.1 or -0.5.
fn act(kind: u32) -> Layer {
    match kind % 4 {
        0 | 1 => Layer::Relu,
        2 => Layer::LeakyRelu { slope: 0.1 },
        _ => Layer::LeakyRelu { slope: -0.5 },
    }
}

/// A random deep MLP (`cnn = false`: 3–12 dense layers of width 2–7) or CNN (3–9 conv
/// layers with kernels 1–3, SAME / explicit padding, stride 1–2, max and avg pools, then a
/// dense head), first layer with a bias.
pub fn random_deep_spec(cnn: bool, rng: &mut ChaCha8Rng) -> ModelSpec {
    let outputs = if rng.random_bool(0.3) { 1 } else { 3 };
    let mut layers = Vec::new();
    let input = if cnn {
        Shape::new(2, 7, 7)
    } else {
        Shape::new(1, 3, 3)
    };
    if cnn {
        let depth = rng.random_range(3..=9);
        let (mut h, mut w) = (input.h, input.w);
        for d in 0..depth {
            let k = rng.random_range(1..=3);
            let stride = if h >= 4 && rng.random_bool(0.2) { 2 } else { 1 };
            let padding = if rng.random_bool(0.5) {
                Padding::Same
            } else {
                Padding::Explicit(k / 2)
            };
            layers.push(Layer::conv(
                rng.random_range(1..=4),
                k,
                stride,
                padding,
                d == 0,
            ));
            h = h.div_ceil(stride);
            w = w.div_ceil(stride);
            layers.push(act(rng.random()));
            if h >= 3 && rng.random_bool(0.3) {
                let (size, stride) = if rng.random_bool(0.5) {
                    (2, Some(1))
                } else {
                    (3, Some(1))
                };
                layers.push(if rng.random_bool(0.5) {
                    Layer::MaxPool { size, stride }
                } else {
                    Layer::AvgPool { size, stride }
                });
                h = h + 1 - size;
                w = w + 1 - size;
            }
        }
        layers.push(Layer::Flatten);
    } else {
        layers.push(Layer::Flatten);
        let depth = rng.random_range(3..=12);
        for d in 0..depth {
            layers.push(Layer::dense(rng.random_range(2..=7), d == 0));
            layers.push(act(rng.random()));
        }
    }
    layers.push(Layer::dense(outputs, false));
    let spec = ModelSpec {
        name: "deep".into(),
        input,
        layers,
    };
    spec.validate().expect("valid random spec");
    spec
}

/// A robustness test case on `spec` (which has 3 outputs): He-normal parameters with biases
/// redrawn in `[-0.3, 0.3)`, a random image, a box half-width `k/255` (`k` in 1..=40) and a
/// label — the common tail of the random CNN / MLP builders of the robustness tests.
pub fn robust_case(spec: ModelSpec, rng: &mut ChaCha8Rng) -> (ModelSpec, Params, Vec<u8>, u8, u8) {
    let mut params = Params::he_normal(&spec, rng.random()).unwrap();
    for l in &mut params.layers {
        if let Some(b) = &mut l.bias {
            b.iter_mut()
                .for_each(|v| *v = rng.random_range(-0.3f32..0.3));
        }
    }
    let image: Vec<u8> = (0..spec.input.len()).map(|_| rng.random()).collect();
    let k = rng.random_range(1..=40u8);
    let label = rng.random_range(0..3u8);
    (spec, params, image, k, label)
}
