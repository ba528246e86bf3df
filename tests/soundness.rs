//! Soundness of the certified path: on random small MLPs and CNNs, including ill-conditioned
//! ones, the exact rational value of the real network lies inside every enclosure, and every
//! certified lower bound is ≤ the true value ≤ every upper bound.
//!
//! Default run: `cargo test --test soundness` (see docs/SOUNDNESS.md for the case counts).
//! Long run: `cargo test --test soundness -- --ignored`.

use margincert::certify::enclosure::{BallVec, forward_enclosures, logit_enclosures};
use margincert::certify::reference::{reference_logits, reference_logits_exact};
use margincert::model::{Layer, LayerParams, ModelSpec, Padding, Params, Shape, presets};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rug::Rational;

/// Exact test `|q − mid| ≤ rad`.
fn contains(b: &BallVec, i: usize, q: &Rational) -> bool {
    let m = Rational::from_f64(b.mid[i]).expect("finite mid");
    let r = Rational::from_f64(b.rad[i]).expect("finite rad");
    r >= 0 && Rational::from(q - &m).abs() <= r
}

fn conv(out: usize, kernel: usize, stride: usize, padding: Padding, bias: bool) -> Layer {
    Layer::Conv2d {
        out,
        kernel,
        stride,
        padding,
        bias,
    }
}

/// The small architectures of the property tests (index `arch`).
pub fn arch(arch: usize, first_bias: bool, classes: usize) -> ModelSpec {
    let dense = |out, bias| Layer::Dense { out, bias };
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
                conv(3, 3, 2, Padding::Same, first_bias),
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
                conv(2, 3, 1, Padding::Explicit(1), first_bias),
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
                conv(3, 2, 1, Padding::Valid, first_bias),
                Layer::Relu,
                Layer::MaxPool {
                    size: 2,
                    stride: None,
                },
                conv(2, 2, 1, Padding::Same, false),
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

/// Random weights by `mode`: 0 Gaussian-like, 1 magnitudes over many orders (2^±40),
/// 2 huge cancelling pairs plus tiny residuals, 3 exact zeros and kinks.
pub fn random_params(spec: &ModelSpec, mode: u32, rng: &mut ChaCha8Rng) -> Params {
    let mut p = Params::he_normal(spec, rng.random()).expect("params");
    for l in &mut p.layers {
        let n = l.weight.len();
        for i in 0..n {
            let cur = l.weight[i];
            let prev = if i > 0 { l.weight[i - 1] } else { 0.0 };
            l.weight[i] = match mode {
                0 => cur,
                1 => {
                    let e: i32 = rng.random_range(-40..=40);
                    let m: f32 = rng.random_range(-1.0f32..1.0);
                    m * 2f32.powi(e)
                }
                2 => {
                    if i % 2 == 0 {
                        let e: i32 = rng.random_range(18..=30);
                        2f32.powi(e) * if rng.random_bool(0.5) { 1.0 } else { -1.0 }
                    } else if rng.random_bool(0.3) {
                        // cancel the previous weight, off by a tiny residual
                        -prev + rng.random_range(-1.0f32..1.0) * 2f32.powi(-10)
                    } else {
                        -prev
                    }
                }
                _ => {
                    if rng.random_bool(0.3) {
                        0.0
                    } else {
                        (rng.random_range(-4i32..=4)) as f32 * 0.5
                    }
                }
            };
        }
        if let Some(b) = &mut l.bias {
            for v in b.iter_mut() {
                *v = rng.random_range(-1.0f32..1.0) * if mode == 1 { 1e3 } else { 1.0 };
            }
        }
    }
    p
}

/// Random pixel bytes; in kink mode (3) pixels come in equal pairs so antisymmetric weight
/// rows give exact zero pre-activations.
pub fn random_pixels(len: usize, batch: usize, mode: u32, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut px: Vec<u8> = (0..len * batch).map(|_| rng.random()).collect();
    if mode == 3 {
        for b in 0..batch {
            for i in (1..len).step_by(2) {
                px[b * len + i] = px[b * len + i - 1];
            }
        }
    }
    px
}

/// In kink mode, make the first dense layer's first row antisymmetric on pixel pairs so its
/// pre-activation is exactly 0.
fn make_kink(spec: &ModelSpec, p: &mut Params) {
    if let (Some(Layer::Flatten), Some(l)) = (spec.layers.first(), p.layers.first_mut())
        && l.weight_shape.len() == 2
    {
        let n = l.weight_shape[1];
        for j in (1..n).step_by(2) {
            l.weight[j] = -l.weight[j - 1];
        }
        if n % 2 == 1 {
            l.weight[n - 1] = 0.0;
        }
        if let Some(b) = &mut l.bias {
            b[0] = 0.0;
        }
    }
}

fn check_forward(arch_i: usize, mode: u32, seed: u64, batch: usize, first_bias: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let classes = if seed.is_multiple_of(3) { 1 } else { 3 };
    let spec = arch(arch_i, first_bias, classes);
    let mut params = random_params(&spec, mode, &mut rng);
    if mode == 3 {
        make_kink(&spec, &mut params);
    }
    let len = spec.input.len();
    let pixels = random_pixels(len, batch, mode, &mut rng);
    let encl = forward_enclosures(&spec, &params, &pixels, batch).expect("enclosures");
    assert_eq!(encl.len(), spec.layers.len() + 1);
    let logits = logit_enclosures(&spec, &params, &pixels, batch).expect("logits");
    assert_eq!(
        &logits,
        encl.last().unwrap(),
        "chunked and full passes agree"
    );
    for b in 0..batch {
        let img = &pixels[b * len..(b + 1) * len];
        let exact = reference_logits_exact(&spec, &params, img).expect("reference");
        assert_eq!(exact.len(), classes);
        for (j, q) in exact.iter().enumerate() {
            let i = b * classes + j;
            assert!(
                contains(&logits, i, q),
                "arch {arch_i} mode {mode} seed {seed}: logit {j} of example {b} = {} not in {} ± {}",
                q.to_f64(),
                logits.mid[i],
                logits.rad[i]
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The exact logits lie in the certified enclosures on random nets of every kind.
    #[test]
    fn forward_encloses_exact_logits(
        arch_i in 0usize..5,
        mode in 0u32..4,
        seed in any::<u64>(),
        batch in 1usize..4,
        first_bias in any::<bool>(),
    ) {
        check_forward(arch_i, mode, seed, batch, first_bias);
    }
}

/// Every intermediate layer's enclosure contains the exact intermediate values too (checked
/// on a small MLP against an exact evaluation of each prefix of the network).
#[test]
fn every_layer_encloses_the_exact_prefix() {
    for seed in 0..6u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let spec = arch(seed as usize % 5, seed % 2 == 0, 3);
        let params = random_params(&spec, (seed % 4) as u32, &mut rng);
        let px = random_pixels(spec.input.len(), 1, 0, &mut rng);
        let encl = forward_enclosures(&spec, &params, &px, 1).unwrap();
        for (cut, e) in encl.iter().enumerate().skip(1) {
            // The prefix network up to layer `cut` (its output must be flat for the
            // reference, so check only cuts after which the shape is flat or flatten it).
            let mut prefix = ModelSpec {
                name: "prefix".into(),
                input: spec.input,
                layers: spec.layers[..cut].to_vec(),
            };
            if prefix.validate().is_err() {
                prefix.layers.push(Layer::Flatten);
            }
            let pp = Params {
                layers: params
                    .layers
                    .iter()
                    .filter(|l| l.index < cut)
                    .cloned()
                    .collect(),
            };
            let exact = reference_logits_exact(&prefix, &pp, &px).unwrap();
            assert_eq!(e.len(), exact.len());
            for (i, q) in exact.iter().enumerate() {
                assert!(contains(e, i, q), "seed {seed} layer {cut} entry {i}");
            }
        }
    }
}

/// A constructed case where plain f64 evaluation gets the SIGN of the output wrong: the
/// enclosure still contains the exact value.
///
/// Φ(x) = x₁ − (w₂ + w₃ + w₄)·1 with x₁ = p/255 (inexact in f64) and the other three inputs
/// equal to 1 (p = 255). The three f32 weights sum (to ~72 bits) to the midpoint T between
/// p/255 and RN(p/255), so the exact Φ = p/255 − S and the f64 value RN(p/255) − S (every
/// subtraction exact by Sterbenz) have opposite signs.
#[test]
fn f64_gets_the_sign_wrong_certificate_does_not() {
    let p = 1u8;
    let x = Rational::from((p as u32, 255u32));
    let fx = Rational::from_f64(p as f64 / 255.0).unwrap();
    let t = Rational::from(&x + &fx) / 2u32;
    let w2 = t.to_f32();
    let r1 = &t - Rational::from_f32(w2).unwrap();
    let w3 = r1.to_f32();
    let r2 = r1 - Rational::from_f32(w3).unwrap();
    let w4 = r2.to_f32();
    let spec = presets::mlp_with(Shape::flat(4), &[], 1);
    let params = Params {
        layers: vec![LayerParams {
            index: 1,
            weight_shape: vec![1, 4],
            weight: vec![1.0, -w2, -w3, -w4],
            bias: None,
        }],
    };
    let px = [p, 255, 255, 255];
    let exact = &reference_logits_exact(&spec, &params, &px).unwrap()[0];
    assert!(*exact != 0);
    // Plain f64 evaluation, in order, with and without FMA.
    let xs: Vec<f64> = px.iter().map(|&p| p as f64 / 255.0).collect();
    let ws: Vec<f64> = params.layers[0].weight.iter().map(|&w| w as f64).collect();
    let plain = ws.iter().zip(&xs).fold(0.0, |acc, (w, x)| acc + w * x);
    let fma = ws
        .iter()
        .zip(&xs)
        .fold(0.0f64, |acc, (w, x)| w.mul_add(*x, acc));
    for v in [plain, fma] {
        assert!(
            (v > 0.0) != (*exact > 0),
            "construction failed: f64 {v:e}, exact {:e}",
            exact.to_f64()
        );
    }
    let e = logit_enclosures(&spec, &params, &px, 1).unwrap();
    assert!(contains(&e, 0, exact));
    println!(
        "exact {:e}, plain f64 {plain:e}, enclosure {:e} ± {:e}",
        exact.to_f64(),
        e.mid[0],
        e.rad[0]
    );
}

/// The 256-bit MPFR reference agrees with the exact one to far below f64 resolution.
#[test]
fn mpfr_reference_matches_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let spec = arch(2, true, 3);
    let params = random_params(&spec, 1, &mut rng);
    let px = random_pixels(spec.input.len(), 1, 0, &mut rng);
    let exact = reference_logits_exact(&spec, &params, &px).unwrap();
    let mp = reference_logits(&spec, &params, &px, 256).unwrap();
    for (q, f) in exact.iter().zip(&mp) {
        let d = (q - f.to_rational().unwrap()).abs();
        let scale = q.clone().abs() + Rational::from(1);
        assert!(d <= scale * Rational::from_f64(1e-60).unwrap());
    }
}

/// Bad inputs are errors, never enclosures.
#[test]
fn bad_inputs_are_errors() {
    let spec = arch(0, false, 3);
    let mut params = Params::he_normal(&spec, 1).unwrap();
    let px = vec![0u8; spec.input.len()];
    assert!(forward_enclosures(&spec, &params, &px[1..], 1).is_err());
    assert!(logit_enclosures(&spec, &params, &px, 2).is_err());
    params.layers[0].weight[3] = f32::INFINITY;
    assert!(forward_enclosures(&spec, &params, &px, 1).is_err());
    params.layers[0].weight[3] = f32::MAX;
    params.layers[1]
        .weight
        .iter_mut()
        .for_each(|w| *w = f32::MAX);
    params.layers[2]
        .weight
        .iter_mut()
        .for_each(|w| *w = f32::MAX);
    // f32::MAX³·… overflows f64 only at ~1e115: these stay finite; a deeper product
    // would not. Either way the result is Ok only if it is finite and valid.
    if let Ok(e) = forward_enclosures(&spec, &params, &vec![255u8; spec.input.len()], 1) {
        assert!(e.iter().all(|b| b.is_valid()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The long run of [`forward_encloses_exact_logits`].
    #[test]
    #[ignore = "long run (~minutes): cargo test --release --test soundness -- --ignored"]
    fn forward_encloses_exact_logits_long(
        arch_i in 0usize..5,
        mode in 0u32..4,
        seed in any::<u64>(),
        batch in 1usize..6,
        first_bias in any::<bool>(),
    ) {
        check_forward(arch_i, mode, seed, batch, first_bias);
    }
}
