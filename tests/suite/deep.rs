//! The double-double certified forward pass on deep nets (src/certify/dd.rs,
//! proofs/forward-dd.md): soundness against exact / 256-bit references, tightness against
//! the binary64 pass, and the CIFAR-10 VGG.
//!
//! Default run: `cargo test --test suite deep::` (256 + 256 property cases against exact rationals,
//! every layer of 12 nets, a 12-layer CNN, a deep CNN on 4 real CIFAR-10 images, Auto
//! certify + verify, the CLI flag; ~2 s of tests after the build). Long runs (the VGG
//! preset against its 256-bit reference, ~4 min; throughput):
//! `cargo test --release --test suite deep:: -- --ignored --nocapture`.

use std::time::Instant;

use margincert::Error;
use margincert::certify::{BallVec, CertifiedNet, ForwardMode};
use margincert::certify::{CertifyOptions, certify, verify};
use margincert::data::{Dataset, load_cifar};
use margincert::model::{Layer, ModelSpec, Padding, Params, Shape, presets};
use margincert::report::Summary;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rug::{Float, Rational};

use crate::common::cli;
use crate::common::data::shared_data;
use crate::common::exact::{ball_contains, dd_contains, reference_logits, reference_logits_exact};
use crate::common::nets::{self, Biases, Pixels, Weights, random_deep_spec};

/// Random weights by `mode`: 0 He-normal, 1 magnitudes over `2^±30`, 2 huge cancelling
/// pairs with tiny residuals, 3 small half-integers with zeros (exact kinks), plus inputs
/// in equal pairs (see `pixels`).
fn random_params(spec: &ModelSpec, mode: u32, rng: &mut ChaCha8Rng) -> Params {
    let weights = match mode {
        0 => Weights::He,
        1 => Weights::Wide {
            exp: (-30, 30),
            exponent_first: false,
        },
        2 => Weights::Cancelling {
            exp: (10, 24),
            residual_exp: -12,
            residual_p: None,
        },
        _ => Weights::Halves { p_zero: 0.3 },
    };
    let biases = if mode == 3 {
        Biases::Zero
    } else {
        Biases::Uniform { scale: 1.0 }
    };
    nets::random_params(spec, weights, biases, rng)
}

/// Random pixels of `batch` examples; in mode 3 they come in equal pairs along the whole
/// batch buffer (across example boundaries when `len` is odd).
fn pixels(len: usize, batch: usize, mode: u32, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let pixels = if mode == 3 {
        Pixels::Pairs
    } else {
        Pixels::Uniform
    };
    nets::random_pixels(len * batch, 1, pixels, rng)
}

/// The exact rational logits lie in every double-double logit enclosure and in its f64
/// conversion; returns the largest radius relative to the largest |logit| (for reporting).
fn check_exact(cnn: bool, mode: u32, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let spec = random_deep_spec(cnn, &mut rng);
    let params = random_params(&spec, mode, &mut rng);
    let batch = 2;
    let len = spec.input.len();
    let px = pixels(len, batch, mode, &mut rng);
    let net = CertifiedNet::new(&spec, &params).unwrap();
    let dd = match net.logits_dd(&px, batch) {
        Ok(d) => d,
        // Weights of 2^±30 over 12 layers may overflow f64: an error, never a lie.
        Err(Error::Certify(msg)) if msg.contains("overflowed") => return,
        Err(e) => panic!("{e}"),
    };
    for b in 0..batch {
        let exact = reference_logits_exact(&spec, &params, &px[b * len..(b + 1) * len]).unwrap();
        let ball = dd[b].to_ball();
        for (i, q) in exact.iter().enumerate() {
            assert!(
                dd_contains(&dd[b], i, q),
                "seed {seed} mode {mode} example {b} logit {i}: {} not in ({} + {}) ± {}\n{:?}",
                q.to_f64(),
                dd[b].hi[i],
                dd[b].lo[i],
                dd[b].rad[i],
                spec.layers
            );
            assert!(ball_contains(&ball, i, q));
            assert!(dd[b].lower(i) <= q.to_f64() && q.to_f64() <= dd[b].upper(i));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// 256 cases: random deep MLPs (up to 12 dense layers), all weight modes.
    #[test]
    fn dd_encloses_exact_logits_of_deep_mlps(mode in 0u32..4, seed in any::<u64>()) {
        check_exact(false, mode, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// 256 cases: random deep CNNs (up to 9 conv layers with max/avg pools), all weight modes.
    #[test]
    fn dd_encloses_exact_logits_of_deep_cnns(mode in 0u32..4, seed in any::<u64>()) {
        check_exact(true, mode, seed);
    }
}

/// Every intermediate double-double enclosure holds the exact prefix network's value.
#[test]
fn every_dd_layer_encloses_the_exact_prefix() {
    for seed in 0..12u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
        let cnn = seed % 2 == 0;
        let mode = (seed % 4) as u32;
        let spec = random_deep_spec(cnn, &mut rng);
        let params = random_params(&spec, mode, &mut rng);
        let len = spec.input.len();
        let px = pixels(len, 1, mode, &mut rng);
        let net = CertifiedNet::new(&spec, &params).unwrap();
        let Ok(all) = net.forward_dd(&px, 1) else {
            continue; // overflow: an error, checked elsewhere
        };
        let mut weights_used = 0;
        for (i, layer) in spec.layers.iter().enumerate() {
            if matches!(layer, Layer::Dense { .. } | Layer::Conv2d { .. }) {
                weights_used += 1;
            }
            // The prefix ending after layer i (its output shape is the plan's).
            let mut layers = spec.layers[..=i].to_vec();
            if !matches!(layers.last(), Some(Layer::Flatten)) {
                layers.push(Layer::Flatten); // the identity on the layout: a flat output
            }
            let prefix = ModelSpec {
                name: "prefix".into(),
                input: spec.input,
                layers,
            };
            let pp = Params {
                layers: params.layers[..weights_used].to_vec(),
            };
            let exact = reference_logits_exact(&prefix, &pp, &px).unwrap();
            let e = &all[0][i + 1];
            assert_eq!(e.len(), exact.len());
            for (j, q) in exact.iter().enumerate() {
                assert!(dd_contains(e, j, q), "seed {seed} layer {i} entry {j}");
            }
        }
    }
}

/// A 12-layer CNN (10 conv + ReLU, avg and max pool, dense head) at He init on random
/// images.
fn deep_cnn() -> ModelSpec {
    let mut layers = Vec::new();
    for (i, c) in [8, 8, 8, 8, 12, 12, 12, 16, 16, 16].into_iter().enumerate() {
        layers.push(Layer::conv(c, 3, 1, Padding::Same, false));
        layers.push(Layer::Relu);
        if i == 3 {
            layers.push(Layer::MaxPool {
                size: 2,
                stride: None,
            });
        }
        if i == 6 {
            layers.push(Layer::AvgPool {
                size: 2,
                stride: None,
            });
        }
    }
    layers.push(Layer::Flatten);
    layers.push(Layer::dense(32, false));
    layers.push(Layer::Relu);
    layers.push(Layer::dense(10, false));
    let spec = ModelSpec {
        name: "deep-cnn".into(),
        input: Shape::new(3, 16, 16),
        layers,
    };
    spec.validate().unwrap();
    spec
}

fn max_rel(b: &BallVec, row: usize, n: usize) -> f64 {
    let scale = b.mid[row * n..(row + 1) * n]
        .iter()
        .fold(0.0f64, |a, m| a.max(m.abs()));
    b.rad[row * n..(row + 1) * n]
        .iter()
        .fold(0.0f64, |a, r| a.max(r / scale))
}

#[test]
fn dd_is_far_tighter_than_f64_on_a_12_layer_cnn() {
    let spec = deep_cnn();
    let params = Params::he_normal(&spec, 3).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let batch = 3;
    let px = pixels(spec.input.len(), batch, 0, &mut rng);
    let net = CertifiedNet::new(&spec, &params).unwrap();
    let f = net.logits(&px, batch).unwrap();
    let d = net
        .clone()
        .with_forward_mode(ForwardMode::DoubleDouble)
        .unwrap()
        .logits(&px, batch)
        .unwrap();
    for b in 0..batch {
        let (rf, rd) = (max_rel(&f, b, 10), max_rel(&d, b, 10));
        eprintln!("example {b}: max relative logit radius f64 {rf:.2e}, dd {rd:.2e}");
        assert!(rd * 1e6 <= rf, "dd {rd:e} not 1e6x tighter than f64 {rf:e}");
        // And the 256-bit reference lies in both.
        let r = reference_logits(&spec, &params, &px[b * 768..(b + 1) * 768], 256).unwrap();
        for (i, v) in r.iter().enumerate() {
            let q = v.to_rational().unwrap();
            assert!(ball_contains(&f, b * 10 + i, &q) && ball_contains(&d, b * 10 + i, &q));
        }
    }
}

/// The first `n` CIFAR-10 test images from the shared data folder, `None` (with a printed
/// reason) when absent.
fn cifar_test(n: usize) -> Option<Dataset> {
    let file = shared_data("cifar-10/test_batch.bin.gz")?;
    Some(load_cifar("cifar10-test", &[file]).unwrap().take(n))
}

/// Margin `q = Φ_y − max_{j≠y} Φ_j` of a 256-bit reference, as a rational.
fn ref_margin(r: &[Float], y: usize) -> Rational {
    let qy = r[y].to_rational().unwrap();
    r.iter()
        .enumerate()
        .filter(|(j, _)| *j != y)
        .map(|(_, v)| &qy - v.to_rational().unwrap())
        .min()
        .unwrap()
}

/// Certifies `spec` at He init on `data` in dd and f64, checks every dd margin enclosure
/// is decided, contains the 256-bit reference margin and is within `1e-6` relative.
fn check_cifar_margins(spec: &ModelSpec, data: &Dataset, seed: u64) {
    let params = Params::he_normal(spec, seed).unwrap();
    let n = data.len();
    let k = 10;
    let net = CertifiedNet::new(spec, &params).unwrap();
    let t = Instant::now();
    let f = net.logits(&data.pixels, n).unwrap();
    let tf = t.elapsed().as_secs_f64();
    let dnet = net
        .clone()
        .with_forward_mode(ForwardMode::DoubleDouble)
        .unwrap();
    let t = Instant::now();
    let d = dnet.logits(&data.pixels, n).unwrap();
    let td = t.elapsed().as_secs_f64();
    eprintln!(
        "{}: {n} images, f64 {:.2} img/s, dd {:.2} img/s",
        spec.name,
        n as f64 / tf,
        n as f64 / td
    );
    for b in 0..n {
        let y = data.labels[b] as usize;
        let t = Instant::now();
        let r = reference_logits(spec, &params, data.image(b), 256).unwrap();
        let tr = t.elapsed().as_secs_f64();
        let truth = ref_margin(&r, y);
        // Margin enclosure from the logit balls: min over j of [Φ_y − Φ_j] (exactly, in Q).
        let margin = |e: &BallVec| {
            let (mut lo, mut hi) = (None::<Rational>, None::<Rational>);
            for j in (0..k).filter(|&j| j != y) {
                let m = Rational::from_f64(e.mid[b * k + y]).unwrap()
                    - Rational::from_f64(e.mid[b * k + j]).unwrap();
                let rr = Rational::from_f64(e.rad[b * k + y]).unwrap()
                    + Rational::from_f64(e.rad[b * k + j]).unwrap();
                let (l, h) = (Rational::from(&m - &rr), m + rr);
                lo = Some(lo.map_or(l.clone(), |a| a.min(l)));
                hi = Some(hi.map_or(h.clone(), |a| a.min(h)));
            }
            (lo.unwrap(), hi.unwrap())
        };
        let (dl, dh) = margin(&d);
        let (fl, fh) = margin(&f);
        let rel = |l: &Rational, h: &Rational| {
            Rational::from(h - l).to_f64() / 2.0 / truth.to_f64().abs()
        };
        eprintln!(
            "  image {b}: margin {:.6e}, relative radius f64 {:.2e}, dd {:.2e} (reference {tr:.1} s)",
            truth.to_f64(),
            rel(&fl, &fh),
            rel(&dl, &dh)
        );
        assert!(
            dl <= truth && truth <= dh,
            "image {b}: dd margin misses the reference"
        );
        assert!(
            fl <= truth && truth <= fh,
            "image {b}: f64 margin misses the reference"
        );
        assert!(
            dl.is_positive() == dh.is_positive() && !dl.is_zero() && !dh.is_zero(),
            "image {b}: dd margin not decided in sign"
        );
        assert!(rel(&dl, &dh) <= 1e-6, "image {b}: dd margin too wide");
    }
}

/// A deep (10 conv + 2 dense) CNN on 4 real CIFAR-10 test images, in the default suite.
#[test]
fn dd_certifies_a_deep_cnn_on_cifar10() {
    let Some(data) = cifar_test(4) else {
        return;
    };
    let mut spec = deep_cnn();
    spec.input = Shape::new(3, 32, 32);
    spec.name = "deep-cnn-32".into();
    // 32x32 input: one more max-pool keeps the head small.
    spec.layers
        .insert(0, Layer::conv(3, 3, 2, Padding::Same, false));
    spec.validate().unwrap();
    check_cifar_margins(&spec, &data, 11);
}

/// The CIFAR VGG preset (13 conv + dense, He init) on 8 test images. Ignored: the 256-bit
/// reference costs ~a minute per image. Run:
/// `cargo test --release --test suite deep::dd_certifies_vgg -- --ignored --nocapture`.
#[test]
#[ignore = "the 256-bit reference of the VGG is slow (~4 min for 8 images, needs CIFAR-10): cargo test --release --test suite deep::dd_certifies_vgg -- --ignored --nocapture"]
fn dd_certifies_vgg_margins_on_cifar10() {
    let Some(data) = cifar_test(8) else {
        return;
    };
    check_cifar_margins(&presets::cifar_vgg(), &data, 1);
}

/// The whole certificate in Auto mode on a deep net: examples go to dd, the margins are
/// decided, `verify` confirms the certificate, and old JSON without the option parses as f64.
#[test]
fn certify_auto_uses_dd_on_deep_net_and_verifies() {
    let spec = deep_cnn();
    let params = Params::he_normal(&spec, 9).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let n = 4;
    let px = pixels(spec.input.len(), n, 0, &mut rng);
    // Labels: the f64-argmax class so the margins are positive.
    let net = CertifiedNet::new(&spec, &params).unwrap();
    let f = net.logits(&px, n).unwrap();
    let labels: Vec<u8> = (0..n)
        .map(|b| {
            (0..10)
                .max_by(|&i, &j| f.mid[b * 10 + i].total_cmp(&f.mid[b * 10 + j]))
                .unwrap() as u8
        })
        .collect();
    let data = Dataset::new("rand", spec.input, px, labels, 10).unwrap();
    let opts = CertifyOptions {
        kkt: None,
        witness_examples: 1,
        ..CertifyOptions::default()
    };
    assert_eq!(opts.forward, ForwardMode::Auto);
    let cert = certify(&spec, &params, &data, &opts).unwrap();
    let fw = cert.forward.unwrap();
    eprintln!("{}", cert.summary());
    assert_eq!(fw.examples, n);
    assert!(cert.summary().contains("examples in double-double"));
    let f64_cert = certify(
        &spec,
        &params,
        &data,
        &CertifyOptions {
            forward: ForwardMode::F64,
            ..opts.clone()
        },
    )
    .unwrap();
    // The Auto certificate is at least as tight as the f64 one.
    assert!(cert.margin.q_min.lo >= f64_cert.margin.q_min.lo);
    assert!(cert.margin.q_min.hi <= f64_cert.margin.q_min.hi);
    let report = verify(&cert, &spec, &params, &data).unwrap();
    assert!(report.ok(), "{}", report.summary());
    // A certificate without forward statistics (`null`: no claim) verifies; one without the
    // fields at all was written before schema 2 and is refused, saying why.
    let mut json: serde_json::Value = serde_json::from_str(&f64_cert.to_json()).unwrap();
    json["forward"] = serde_json::Value::Null;
    let old = margincert::certify::Certificate::from_json(&json.to_string()).unwrap();
    assert!(old.forward.is_none());
    assert!(verify(&old, &spec, &params, &data).unwrap().ok());
    json.as_object_mut().unwrap().remove("schema_version");
    json["options"].as_object_mut().unwrap().remove("forward");
    let err = margincert::certify::Certificate::from_json(&json.to_string()).unwrap_err();
    assert!(err.to_string().contains("schema version"), "{err}");
}

/// `certify --precision-mode dd|f64|auto` end to end; the mode is recorded in the
/// certificate, `verify` recomputes with it, and a bad value is a clean error.
#[test]
fn cli_precision_mode_round_trip() {
    let run = |args: &[&str]| {
        let o = cli::margincert(args);
        (o.status.success(), cli::text(&o))
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, t) = run(&[
        "train",
        "--model",
        "small-mlp",
        "--train-subset",
        "60",
        "--test-subset",
        "20",
        "--batch",
        "20",
        "--epochs",
        "2",
        "--quiet",
        "--out",
        d,
    ]);
    assert!(ok, "{t}");
    let ckpt = dir.path().join("last.safetensors");
    let ck = ckpt.to_str().unwrap();
    for (mode, want) in [
        ("dd", "DoubleDouble mode, 60 / 60"),
        ("f64", "F64 mode, 0 / 60"),
        // A shallow MLP is tight in binary64: Auto sends nothing to double-double.
        ("auto", "Auto mode, 0 / 60"),
    ] {
        let cert = dir.path().join(format!("{mode}.json"));
        let c = cert.to_str().unwrap();
        let (ok, t) = run(&[
            "certify",
            ck,
            "--no-kkt",
            "--precision-mode",
            mode,
            "--out",
            c,
        ]);
        assert!(ok && t.contains(want), "{mode}: {t}");
        let json = std::fs::read_to_string(&cert).unwrap();
        assert!(json.contains("\"forward\""), "{json}");
        let (ok, t) = run(&["verify", c, ck]);
        assert!(ok, "{mode}: {t}");
    }
    let (ok, t) = run(&["certify", ck, "--precision-mode", "quad"]);
    assert!(!ok && t.contains("quad") && !t.contains("panicked"), "{t}");
}

/// Throughput of the VGG preset (He init) on 64 CIFAR-10 test images, f64 vs dd, with the
/// relative radii of the margins (no reference). Run:
/// `cargo test --release --test suite deep::vgg_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement (~20 s in release, needs CIFAR-10): cargo test --release --test suite deep::vgg_throughput -- --ignored --nocapture"]
fn vgg_throughput() {
    // MARGINCERT_VGG_IMAGES overrides the number of images (default 64).
    let n = std::env::var("MARGINCERT_VGG_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let Some(data) = cifar_test(n) else {
        return;
    };
    let spec = presets::cifar_vgg();
    let params = Params::he_normal(&spec, 1).unwrap();
    let net = CertifiedNet::new(&spec, &params).unwrap();
    let t = Instant::now();
    let f = net.logits(&data.pixels, n).unwrap();
    let tf = t.elapsed().as_secs_f64();
    let dnet = net
        .clone()
        .with_forward_mode(ForwardMode::DoubleDouble)
        .unwrap();
    let t = Instant::now();
    let d = dnet.logits(&data.pixels, n).unwrap();
    let td = t.elapsed().as_secs_f64();
    let auto = net.with_forward_mode(ForwardMode::Auto).unwrap();
    let (_, stats) = auto.logits_with_stats(&data.pixels, n).unwrap();
    // Radius of the margin Φ_y − Φ_j (j the dd-argmax competitor) relative to its value
    // (taken from the dd midpoints, accurate to ~1e-10 here; the f64 midpoints drift far
    // from the truth once straddling ReLUs recentre wide balls).
    let rel = |e: &BallVec| {
        let mut v: Vec<f64> = (0..n)
            .map(|b| {
                let y = data.labels[b] as usize;
                let j = (0..10)
                    .filter(|&j| j != y)
                    .max_by(|&i, &j| d.mid[b * 10 + i].total_cmp(&d.mid[b * 10 + j]))
                    .unwrap();
                (e.rad[b * 10 + y] + e.rad[b * 10 + j])
                    / (d.mid[b * 10 + y] - d.mid[b * 10 + j]).abs()
            })
            .collect();
        v.sort_by(f64::total_cmp);
        (v[0], v[n / 2], v[n - 1])
    };
    eprintln!(
        "VGG, {n} images, {} threads: f64 {:.2} img/s, dd {:.2} img/s; Auto sent {} / {} to dd",
        rayon::current_num_threads(),
        n as f64 / tf,
        n as f64 / td,
        stats.dd_examples,
        stats.examples
    );
    eprintln!(
        "relative margin radius (min, median, max): f64 {:?}, dd {:?}",
        rel(&f),
        rel(&d)
    );
    assert!(rel(&d).2 < 1e-6);
}

/// The whole certificate (Auto mode, no KKT) of the VGG preset at He init on 32 CIFAR-10
/// test images: every margin decided in sign, and `verify` confirms it. Run:
/// `cargo test --release --test suite deep::vgg_certify -- --ignored --nocapture`.
#[test]
#[ignore = "VGG certificate + verification (~30 s in release, needs CIFAR-10): cargo test --release --test suite deep::vgg_certify_and_verify -- --ignored"]
fn vgg_certify_and_verify_end_to_end() {
    let Some(data) = cifar_test(32) else {
        return;
    };
    let spec = presets::cifar_vgg();
    let params = Params::he_normal(&spec, 1).unwrap();
    let opts = CertifyOptions {
        kkt: None,
        ..CertifyOptions::default()
    };
    let t = Instant::now();
    let cert = certify(&spec, &params, &data, &opts).unwrap();
    let tc = t.elapsed().as_secs_f64();
    eprintln!("{}", cert.summary());
    let m = &cert.margin;
    assert_eq!(m.certified_positive + m.certified_nonpositive, data.len());
    let fw = cert.forward.unwrap();
    assert_eq!(fw.dd_examples, data.len());
    let t = Instant::now();
    let report = verify(&cert, &spec, &params, &data).unwrap();
    eprintln!(
        "certify {tc:.1} s, verify {:.1} s ({} images)",
        t.elapsed().as_secs_f64(),
        data.len()
    );
    assert!(report.ok(), "{}", report.summary());
    // The same in binary64 decides nothing.
    let f = certify(
        &spec,
        &params,
        &data,
        &CertifyOptions {
            forward: ForwardMode::F64,
            ..opts
        },
    )
    .unwrap();
    eprintln!(
        "binary64: {} / {} margins decided",
        f.margin.certified_positive + f.margin.certified_nonpositive,
        data.len()
    );
}

/// Weights of `2^120` over 10 layers overflow f64 in both passes: a clear error naming the
/// layer, in every mode, never a panic or a wrong enclosure.
#[test]
fn overflow_is_an_error_in_every_mode() {
    let spec = presets::mlp_with(Shape::new(1, 2, 2), &[3; 9], 2);
    let mut params = Params::he_normal(&spec, 1).unwrap();
    for l in &mut params.layers {
        for w in &mut l.weight {
            *w = 2f32.powi(120);
        }
    }
    let px = [7u8, 200, 3, 90];
    for mode in [
        ForwardMode::F64,
        ForwardMode::DoubleDouble,
        ForwardMode::Auto,
    ] {
        let net = CertifiedNet::new(&spec, &params)
            .unwrap()
            .with_forward_mode(mode)
            .unwrap();
        match net.logits(&px, 1) {
            Err(Error::Certify(msg)) => {
                assert!(msg.contains("overflowed") && msg.contains("layer"), "{msg}")
            }
            other => panic!("{mode:?}: expected an overflow error, got {other:?}"),
        }
    }
}
