//! Robustness radii: certified lower bounds never exceed exact or attack-found radii.

use margincert::certify::CertifiedNet;
use margincert::data::{DataSource, Dataset};
use margincert::loss::LossKind;
use margincert::model::{Layer, ModelSpec, Padding, Params, Shape, presets};
use margincert::report::Summary;
use margincert::robust::{
    self, AttackOptions, Method, Norm, RadiusMethod, RobustOptions, lipschitz::dense_norm_up,
};
use margincert::train::{EpochOutcome, Schedule, TrainConfig, Trainer};
use proptest::prelude::*;

use crate::common::cli;
use crate::common::data::embedded_train;

fn train(spec: &ModelSpec, data: &Dataset, epochs: usize) -> Params {
    let params = Params::he_normal(spec, 3).unwrap();
    let cfg = TrainConfig {
        loss: LossKind::CrossEntropy,
        batch: 32,
        epochs,
        seed: 7,
        schedule: Schedule::paper_loss_based(),
        save_at_log10: vec![],
        stop_log10_loss: None,
    };
    let mut t = Trainer::new(spec, params, cfg, data, None, None).unwrap();
    let start = std::time::Instant::now();
    for _ in 0..10 * epochs {
        if let EpochOutcome::Finished(_) = t.step_epoch(start).unwrap() {
            break;
        }
    }
    t.params().clone()
}

fn small_cnn(classes: usize) -> ModelSpec {
    ModelSpec {
        name: "small-cnn".into(),
        input: Shape { c: 1, h: 28, w: 28 },
        layers: vec![
            Layer::Conv2d {
                out: 4,
                kernel: 5,
                stride: 2,
                padding: Padding::Valid,
                bias: false,
            },
            Layer::Relu,
            Layer::MaxPool {
                size: 2,
                stride: None,
            },
            Layer::Flatten,
            Layer::Dense {
                out: classes,
                bias: false,
            },
        ],
    }
}

fn check_report(rep: &robust::RobustReport, what: &str) {
    assert_eq!(
        rep.violations, 0,
        "{what}: certified radius above attack radius"
    );
    for e in &rep.examples {
        assert!(
            e.certified <= e.attack,
            "{what}: example {}: {} > {}",
            e.index,
            e.certified,
            e.attack
        );
        // The global-constant bound lo(q)/(√2 Lip) is never above the per-gap bound
        // (up to the last ulps of the two roundings).
        assert!(
            e.margin_only <= e.certified * (1.0 + 1e-9),
            "{what}: {} > {}",
            e.margin_only,
            e.certified
        );
        if rep.norm == Norm::L2 && e.margin[0] > 0.0 {
            assert!(e.margin_only > 0.0, "{what}");
        }
        if let Some(c) = e.crown {
            assert!(c <= e.attack, "{what}: CROWN radius above attack radius");
            // CROWN bisects a pointwise larger lower bound than IBP (L∞), or above the
            // global Lipschitz radius (L2): never below the cheaper method's radius.
            let cheap = match rep.norm {
                Norm::Inf => e.ibp.expect("IBP runs with CROWN"),
                Norm::L2 => e.global_lipschitz.expect("L2 reports the Lipschitz radius"),
            };
            assert!(c >= cheap, "{what}: CROWN {c} < the cheaper radius {cheap}");
            // The reported radius is the best of the methods run.
            assert_eq!(e.certified, c, "{what}: the best radius is CROWN's");
        }
        if e.margin[0] > 0.0 {
            assert!(e.certified > 0.0, "{what}: positive margin but zero radius");
        }
    }
    if rep.norm == Norm::L2 && rep.relaxation != Method::Ibp {
        // The local bound over the ball beats the global Lipschitz radius somewhere.
        let raised = rep
            .examples
            .iter()
            .filter(|e| e.crown > e.global_lipschitz && e.method == RadiusMethod::Crown)
            .count();
        assert!(
            raised > 0,
            "{what}: CROWN raised no L2 radius above Lipschitz"
        );
    }
    let certified_pos = rep.examples.iter().filter(|e| e.certified > 0.0).count();
    let attacked = rep.examples.iter().filter(|e| e.attack.is_finite()).count();
    assert!(
        certified_pos > 0 && attacked > 0,
        "{what}: {certified_pos} certified, {attacked} attacked"
    );
    // Curves: certified accuracy ≤ empirical at every ε, both non-increasing.
    let c = &rep.curve;
    for i in 0..c.eps.len() {
        assert!(
            c.certified[i] <= c.empirical[i],
            "{what}: curve at {}",
            c.eps[i]
        );
        if i > 0 {
            assert!(c.certified[i] <= c.certified[i - 1] && c.empirical[i] <= c.empirical[i - 1]);
        }
    }
}

/// On a trained MLP and a trained small CNN (embedded MNIST subset), for both norms, every
/// example's certified radius is at most its verified attack radius.
#[test]
fn trained_nets_certified_below_attack() {
    let data = embedded_train(300);
    let eval = data.take(24);
    let mlp = presets::mlp_with(data.shape, &[32], 10);
    let cnn = small_cnn(10);
    for (name, spec) in [("mlp", mlp), ("cnn", cnn)] {
        let params = train(&spec, &data, 8);
        for (norm, eps) in [(Norm::L2, 4.0), (Norm::Inf, 0.25)] {
            let opts = RobustOptions {
                norm,
                eps_max: eps,
                steps: 7,
                attack: AttackOptions {
                    steps: 15,
                    restarts: 2,
                    ..Default::default()
                },
            };
            let rep = robust::run(&spec, &params, &eval, &opts).unwrap();
            check_report(&rep, &format!("{name} {norm:?}"));
            println!("{name} {norm:?}\n{}", rep.summary());
            let dir = tempfile::tempdir().unwrap();
            margincert::report::robust::write(&rep, dir.path()).unwrap();
            let back: robust::RobustReport = serde_json::from_str(
                &std::fs::read_to_string(dir.path().join("robust.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(back.examples.len(), rep.examples.len());
            assert!(
                std::fs::read_to_string(dir.path().join("robust.svg"))
                    .unwrap()
                    .contains("<polyline")
            );
        }
    }
}

/// Exact σ_max of a 2×2 matrix (largest root of the characteristic polynomial of WᵀW, in
/// 256-bit MPFR) never exceeds the certified bound.
#[test]
fn dense_norm_bound_above_exact_sigma_max() {
    use rug::Float;
    let mats: [[f32; 4]; 4] = [
        [1.0, 2.0, 3.0, 4.0],
        [1e-3, -7.0, 0.5, 0.25],
        [3.0, 0.0, 0.0, 3.0],
        [1.0, 1.0, 1.0, 1.0],
    ];
    for m in mats {
        let f = |v: f32| Float::with_val(256, v);
        let (a, b, c, d) = (f(m[0]), f(m[1]), f(m[2]), f(m[3]));
        // WᵀW = [[a²+c², ab+cd],[ab+cd, b²+d²]]; λ_max = (t + sqrt(t² − 4 det))/2.
        let p = Float::with_val(256, &a * &a) + Float::with_val(256, &c * &c);
        let q = Float::with_val(256, &b * &b) + Float::with_val(256, &d * &d);
        let r = Float::with_val(256, &a * &b) + Float::with_val(256, &c * &d);
        let t = Float::with_val(256, &p + &q);
        let det = Float::with_val(256, &p * &q) - Float::with_val(256, &r * &r);
        let disc = Float::with_val(256, &t * &t) - Float::with_val(256, 4 * det);
        let lam: Float = (t + disc.sqrt()) / 2u32;
        let sigma = lam.sqrt();
        let bound = dense_norm_up(&m, 2, 2);
        assert!(
            Float::with_val(256, bound) >= sigma,
            "{m:?}: {bound} < {sigma}"
        );
        // and not absurdly loose: within the Frobenius norm.
        let fro: f64 = m.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        assert!(bound <= fro * (1.0 + 1e-12));
    }
}

fn tiny_net() -> impl Strategy<Value = (ModelSpec, Params)> {
    (2usize..6, any::<u64>()).prop_map(|(h, seed)| {
        let spec = presets::mlp_with(Shape::flat(2), &[h], 2);
        let params = Params::he_normal(&spec, seed).unwrap();
        (spec, params)
    })
}

/// Plain f64 logits of a bias-free ReLU MLP (`presets::mlp_with`) at `x`: an estimate, summed
/// in the order of the f64 evaluator the attack used before it moved to `nn`.
fn mlp_logits(params: &Params, x: &[f64]) -> Vec<f64> {
    let mut a = x.to_vec();
    for (i, l) in params.layers.iter().enumerate() {
        if i > 0 {
            a.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        let n = l.fan_in();
        a = (0..l.out())
            .map(|o| {
                let w = &l.weight[o * n..(o + 1) * n];
                w.iter().zip(&a).map(|(&u, v)| u as f64 * v).sum()
            })
            .collect();
    }
    a
}

/// Smallest distance from `x0` to a grid point whose f64 margin is clearly negative (an
/// upper bound on the exact radius, up to the grid; the threshold keeps rounding out of it).
fn grid_radius(g: &Params, x0: &[f64], label: u8, norm: Norm) -> f64 {
    let n = 160;
    let mut best = f64::INFINITY;
    for i in 0..=n {
        for j in 0..=n {
            let x = [i as f64 / n as f64, j as f64 / n as f64];
            let z = mlp_logits(g, &x);
            let y = label as usize;
            if z[y] - z[1 - y] < -1e-9 {
                let (dx, dy) = ((x[0] - x0[0]).abs(), (x[1] - x0[1]).abs());
                let d = match norm {
                    Norm::L2 => (dx * dx + dy * dy).sqrt(),
                    Norm::Inf => dx.max(dy),
                };
                best = best.min(d);
            }
        }
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Certified radii of tiny random nets (2-D inputs) never exceed the radius found by an
    /// exhaustive grid search, nor the verified attack radius; the Lipschitz bound is above
    /// every observed ratio |q(x) − q(x')| / ||x − x'||.
    #[test]
    fn tiny_nets_certified_below_exact((spec, params) in tiny_net(), px in proptest::collection::vec(any::<u8>(), 8)) {
        let labels: Vec<u8> = (0..4).map(|i| px[2 * i] % 2).collect();
        let data = Dataset::new("tiny", Shape::flat(2), px.clone(), labels, 2).unwrap();
        let g = &params;
        for norm in [Norm::L2, Norm::Inf] {
            let opts = RobustOptions { norm, eps_max: 1.5, steps: 12, attack: AttackOptions { steps: 20, restarts: 4, ..Default::default() } };
            let rep = robust::run(&spec, &params, &data, &opts).unwrap();
            prop_assert_eq!(rep.violations, 0);
            for e in &rep.examples {
                let x0: Vec<f64> = data.image(e.index).iter().map(|&p| p as f64 / 255.0).collect();
                let grid = grid_radius(g, &x0, e.label, norm);
                // grid points are in [0,1]²; allow the f64 evaluation's rounding in x0.
                prop_assert!(e.certified <= grid + 1e-12, "{:?} ex {}: certified {} > grid {}", norm, e.index, e.certified, grid);
                prop_assert!(e.certified <= e.attack);
                if let Some(c) = e.crown {
                    prop_assert!(c <= grid + 1e-12, "CROWN {} > grid {}", c, grid);
                    prop_assert!(c >= e.certified);
                }
            }
        }
        // Lipschitz bound vs observed gap ratios on random pairs.
        let lip = robust::lipschitz(&spec, &params).unwrap();
        for k in 0..4 {
            let a = [px[k] as f64 / 255.0, px[k + 1] as f64 / 255.0];
            let b = [px[k + 4] as f64 / 255.0, px[(k + 5) % 8] as f64 / 255.0];
            let d = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
            if d > 1e-6 {
                let (za, zb) = (mlp_logits(g, &a), mlp_logits(g, &b));
                let ratio = ((za[0] - za[1]) - (zb[0] - zb[1])).abs() / d;
                prop_assert!(ratio <= lip.gap(0, 1) * (1.0 + 1e-9), "{} > {}", ratio, lip.gap(0, 1));
                let net_ratio = ((za[0] - zb[0]).powi(2) + (za[1] - zb[1]).powi(2)).sqrt() / d;
                prop_assert!(net_ratio <= lip.network * (1.0 + 1e-9));
            }
        }
    }
}

/// IBP certification is consistent with the certified forward pass: a positive-radius example
/// has a positive certified clean margin, and a non-certified one gets radius 0.
#[test]
fn ibp_zero_radius_iff_clean_margin_not_certified() {
    let data = embedded_train(150);
    let spec = presets::mlp_with(data.shape, &[16], 10);
    let params = train(&spec, &data, 5);
    let net = CertifiedNet::new(&spec, &params).unwrap();
    let eval = data.take(20);
    let task = margincert::certify::margin::Task::Multi(10);
    let r = robust::ibp_radius(&net, &eval, task, 0.2, 8).unwrap();
    let logits = net.logits(&eval.pixels, eval.len()).unwrap();
    let q = margincert::certify::margin::margins(&logits, &eval.labels, task).unwrap();
    for n in 0..eval.len() {
        // a positive IBP radius implies a certified positive clean margin.
        if r[n] > 0.0 {
            assert!(q[n].lo > 0.0, "example {n}");
        }
        if q[n].lo <= 0.0 {
            assert_eq!(r[n], 0.0);
        }
    }
    assert!(r.iter().any(|&v| v > 0.0));
}

/// Bad options give errors, not panics.
#[test]
fn bad_options_are_errors() {
    let data = embedded_train(4);
    let spec = presets::mlp_with(data.shape, &[4], 10);
    let params = Params::he_normal(&spec, 1).unwrap();
    let opts = RobustOptions {
        norm: Norm::L2,
        eps_max: -1.0,
        steps: 3,
        attack: AttackOptions::default(),
    };
    assert!(robust::run(&spec, &params, &data, &opts).is_err());
    let wrong = presets::mlp_with(Shape::flat(3), &[4], 10);
    let p2 = Params::he_normal(&wrong, 1).unwrap();
    let opts = RobustOptions {
        eps_max: 1.0,
        ..opts
    };
    assert!(robust::run(&wrong, &p2, &data, &opts).is_err());
    assert!("7".parse::<Norm>().is_err());
}

/// `margincert robust` end to end on a freshly trained checkpoint, both norms, and clean
/// failures (non-zero exit, an error line, no panic) on bad input.
#[test]
fn cli_robust_end_to_end_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    cli::train_small(dir.path());
    let ckpt = dir.path().join("last.safetensors");
    let ck = ckpt.to_str().unwrap();
    for norm in ["2", "inf"] {
        let out = dir.path().join(format!("r{norm}"));
        let o = cli::margincert(&[
            "robust",
            ck,
            "--norm",
            norm,
            "--subset",
            "8",
            "--steps",
            "5",
            "--restarts",
            "1",
            "--out",
            out.to_str().unwrap(),
        ]);
        let t = cli::text(&o);
        assert!(o.status.success(), "{t}");
        assert!(t.contains("violations 0") && t.contains("certified"), "{t}");
        let rep: robust::RobustReport =
            serde_json::from_str(&std::fs::read_to_string(out.join("robust.json")).unwrap())
                .unwrap();
        assert_eq!(rep.examples.len(), 8);
        assert!(out.join("robust-curve.json").exists() && out.join("robust.svg").exists());
    }
    for (args, needle) in [
        (vec!["robust", ck, "--norm", "7"], "norm"),
        (
            vec!["robust", "/nonexistent.safetensors", "--norm", "2"],
            "nonexistent",
        ),
        (vec!["robust", ck, "--norm", "2", "--eps-max=-1"], "eps"),
    ] {
        cli::assert_clean_failure(&cli::margincert(&args), needle);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The certified dense and conv norm bounds are above a power-iteration estimate of
    /// `σ_max` (a lower bound of it: a Rayleigh quotient), and the dense bound is below the
    /// Frobenius norm.
    #[test]
    fn norm_bounds_above_power_iteration(out in 1usize..9, inp in 1usize..9, seed in any::<u64>()) {
        let mut s = seed | 1;
        let mut rnd = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 };
        let w: Vec<f32> = (0..out * inp).map(|_| rnd()).collect();
        let wf: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let mut v = vec![1.0f64; inp];
        let mut sigma = 0.0;
        for _ in 0..300 {
            let u: Vec<f64> = (0..out).map(|o| (0..inp).map(|i| wf[o * inp + i] * v[i]).sum()).collect();
            let nv: Vec<f64> = (0..inp).map(|i| (0..out).map(|o| wf[o * inp + i] * u[o]).sum()).collect();
            let n = nv.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n == 0.0 { break; }
            let nu = u.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nvv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            sigma = nu / nvv;
            v = nv.iter().map(|x| x / n).collect();
        }
        let b = dense_norm_up(&w, out, inp);
        prop_assert!(sigma <= b * (1.0 + 1e-12), "{} > {}", sigma, b);
        let fro = wf.iter().map(|x| x * x).sum::<f64>().sqrt();
        prop_assert!(b <= fro * (1.0 + 1e-12));
        // A 1×1 conv is the dense map applied per pixel: same operator norm.
        let c = robust::lipschitz::conv_norm_up(&w, out, inp, 1);
        prop_assert!(sigma <= c * (1.0 + 1e-12));
    }
}

/// CROWN on convolutional nets (src/robust/crown.rs, proofs/robust-crown.md).
mod crown_cnn {
    use super::*;
    use crate::common::exact::reference_logits_exact;
    use margincert::certify::margin::{Task, gaps};
    use margincert::robust::crown::Crown;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rug::Rational;

    fn out_shape(input: Shape, layers: &[Layer]) -> Shape {
        let spec = ModelSpec {
            name: String::new(),
            input,
            layers: layers.iter().cloned().chain([Layer::Flatten]).collect(),
        };
        spec.plan().unwrap().last().map_or(input, |p| p.input)
    }

    /// A random small CNN (conv with strides 1–2 and valid / same / explicit padding, max or
    /// avg pools incl. overlapping ones, ReLU or LeakyReLU, random biases or none, 3 classes),
    /// a random image, L∞ radius in pixels and label.
    pub(super) fn random_cnn(seed: u64) -> (ModelSpec, Params, Vec<u8>, u8, u8) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let input = Shape::new(
            rng.random_range(1..=2),
            rng.random_range(5..=8),
            rng.random_range(5..=8),
        );
        let mut layers = Vec::new();
        let act = |rng: &mut ChaCha8Rng| {
            if rng.random_bool(0.5) {
                Layer::Relu
            } else {
                Layer::LeakyRelu {
                    slope: [0.1f32, 0.25, 0.3][rng.random_range(0..3)],
                }
            }
        };
        let convs = rng.random_range(1..=2);
        for c in 0..convs {
            // Valid padding only on the first conv (the second may see a 1x1 input).
            let padding = match rng.random_range(if c == 0 { 0 } else { 1 }..3) {
                0 => Padding::Valid,
                1 => Padding::Same,
                _ => Padding::Explicit(1),
            };
            layers.push(Layer::Conv2d {
                out: rng.random_range(2..=3),
                kernel: rng.random_range(2..=3),
                stride: if c == 0 { rng.random_range(1..=2) } else { 1 },
                padding,
                bias: rng.random_bool(0.5),
            });
            layers.push(act(&mut rng));
            let s = out_shape(input, &layers);
            if rng.random_bool(0.7) && s.h >= 3 && s.w >= 3 {
                let size = rng.random_range(2..=3);
                let stride = Some(rng.random_range(1..=size));
                layers.push(if rng.random_bool(0.5) {
                    Layer::MaxPool { size, stride }
                } else {
                    Layer::AvgPool { size, stride }
                });
            }
        }
        layers.push(Layer::Flatten);
        if rng.random_bool(0.5) {
            layers.push(Layer::Dense {
                out: 6,
                bias: rng.random_bool(0.5),
            });
            layers.push(act(&mut rng));
        }
        layers.push(Layer::Dense {
            out: 3,
            bias: rng.random_bool(0.5),
        });
        let spec = ModelSpec {
            name: "random-cnn".into(),
            input,
            layers,
        };
        crate::common::nets::robust_case(spec, &mut rng)
    }

    /// Per-gap CROWN and IBP lower bounds of a random CNN over the box of radius `k/255`
    /// (rounded up) around `image`, and the worst (smallest) EXACT gap found at `points`
    /// sampled box points (random corners and random interior pixel points, each a pixel
    /// image, so the rational reference is the exact real network).
    pub(super) fn crown_case(
        seed: u64,
        points: usize,
    ) -> (Vec<f64>, Vec<f64>, Vec<Rational>, ModelSpec) {
        let (spec, params, image, k, label) = random_cnn(seed);
        let net = CertifiedNet::new(&spec, &params).unwrap();
        let crown = Crown::new(&spec, &params).unwrap();
        let task = Task::Multi(3);
        let eps = (k as f64 / 255.0).next_up(); // ≥ k/255: the box holds every p'/255 below
        let b = robust::linf_box(&image, &[eps], image.len());
        let encl = net.forward_of_ball(&b, 1).unwrap();
        let cl = crown.gap_lowers(&encl, label, task).unwrap();
        let ibp: Vec<f64> = gaps(encl.last().unwrap(), 0, label, task)
            .iter()
            .map(|e| e.lo)
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let y = label as usize;
        let others: Vec<usize> = (0..3).filter(|&j| j != y).collect();
        let mut worst: Vec<Option<Rational>> = vec![None; others.len()];
        for t in 0..points {
            let pt: Vec<u8> = image
                .iter()
                .map(|&p| {
                    let d = if t == 0 {
                        0
                    } else if t % 2 == 1 {
                        if rng.random_bool(0.5) {
                            k as i32
                        } else {
                            -(k as i32)
                        }
                    } else {
                        rng.random_range(-(k as i32)..=k as i32)
                    };
                    (p as i32 + d).clamp(0, 255) as u8
                })
                .collect();
            let z = reference_logits_exact(&spec, &params, &pt).unwrap();
            for (g, &j) in others.iter().enumerate() {
                let gap = Rational::from(&z[y] - &z[j]);
                if worst[g].as_ref().is_none_or(|w| gap < *w) {
                    worst[g] = Some(gap);
                }
            }
        }
        (
            cl,
            ibp,
            worst.into_iter().map(Option::unwrap).collect(),
            spec,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Soundness of CROWN on random small CNNs: each gap's CROWN lower bound is at most
        /// the exact gap (rational reference) at 24 sampled pixel points of the box
        /// (the centre, random corners, random interior points).
        #[test]
        fn crown_cnn_below_exact_gaps(seed in any::<u64>()) {
            let (cl, _ibp, worst, spec) = crown_case(seed, 24);
            for (c, w) in cl.iter().zip(&worst) {
                if c.is_finite() {
                    let c = Rational::from_f64(*c).unwrap();
                    prop_assert!(c <= *w, "{:?}: CROWN {} > exact gap {}", spec.layers, c.to_f64(), w.to_f64());
                }
            }
        }
    }

    /// Over 120 seeded random CNNs: CROWN is sound at the sampled points (as above) and at
    /// least as tight as IBP (up to 1e-9 relative) on most gaps; prints how often it is
    /// strictly tighter.
    #[test]
    fn crown_cnn_mostly_tighter_than_ibp() {
        let (mut total, mut tighter, mut not_worse) = (0usize, 0usize, 0usize);
        for seed in 0..120u64 {
            let (cl, ibp, worst, _) = crown_case(seed, 6);
            for ((c, i), w) in cl.iter().zip(&ibp).zip(&worst) {
                total += 1;
                assert!(c.is_finite(), "seed {seed}: CROWN bound overflowed");
                assert!(Rational::from_f64(*c).unwrap() <= *w, "seed {seed}");
                tighter += (c > i) as usize;
                not_worse += (*c >= i - 1e-9 * (1.0 + i.abs())) as usize;
            }
        }
        println!("CROWN vs IBP on {total} gaps: tighter {tighter}, not worse {not_worse}");
        assert!(not_worse * 10 >= total * 8, "{not_worse} of {total}");
        assert!(tighter * 2 >= total, "{tighter} of {total}");
    }

    /// A trained small CNN with bias, LeakyReLU, an overlapping max-pool and an avg-pool, on
    /// embedded MNIST: the CROWN(+IBP) L∞ radius is never below IBP's, never above the
    /// verified attack radius, and strictly above IBP's for some examples.
    #[test]
    fn trained_cnn_crown_between_ibp_and_attack() {
        let data = embedded_train(300);
        let eval = data.take(16);
        let spec = ModelSpec {
            name: "crown-cnn".into(),
            input: data.shape,
            layers: vec![
                Layer::conv(4, 5, 2, Padding::Valid, true),
                Layer::LeakyRelu { slope: 0.1 },
                Layer::MaxPool {
                    size: 2,
                    stride: Some(1),
                },
                Layer::conv(6, 3, 1, Padding::Same, false),
                Layer::Relu,
                Layer::AvgPool {
                    size: 2,
                    stride: None,
                },
                Layer::Flatten,
                Layer::dense(10, true),
            ],
        };
        let params = train(&spec, &data, 6);
        let opts = RobustOptions {
            norm: Norm::Inf,
            eps_max: 0.2,
            steps: 8,
            attack: AttackOptions {
                steps: 15,
                restarts: 2,
                ..Default::default()
            },
        };
        let rep = robust::run(&spec, &params, &eval, &opts).unwrap();
        assert_eq!(rep.violations, 0);
        let mut above = 0;
        for e in &rep.examples {
            let c = e.crown.expect("CROWN runs on CNNs");
            assert!(
                c <= e.attack,
                "example {}: CROWN {c} > attack {}",
                e.index,
                e.attack
            );
            let ibp = e.ibp.expect("L∞ runs IBP");
            assert!(c >= ibp, "example {}", e.index);
            above += (c > ibp) as usize;
        }
        println!(
            "{}\nCROWN above IBP on {above} of {}",
            rep.summary(),
            rep.examples.len()
        );
        assert!(above > 0);
        // The cost knob: with no layer refined (cap 0) every radius is at most the default
        // one (the cascade keeps the best bound of each stage); the report records the cap
        // and verifies with it, and a recomputation with another cap is refused.
        let setup = robust::RobustSetup::new(&spec, &params, &eval).unwrap();
        let cheap = setup.run_capped(&opts, Method::Crown, 0).unwrap();
        assert_eq!(cheap.max_unstable, 0);
        let mut raised = 0;
        for (a, b) in cheap.examples.iter().zip(&rep.examples) {
            assert!(a.crown <= b.crown, "example {}", a.index);
            raised += (a.crown < b.crown) as usize;
        }
        println!(
            "refining raised {raised} of {} CROWN radii",
            rep.examples.len()
        );
        let v = robust::verify::verify(&cheap, &spec, &params, &eval).unwrap();
        assert!(v.ok(), "{v:?}");
        assert!(robust::verify::compare(&cheap, &rep).is_err());
    }

    /// Rounding charges are necessary: nets whose gap is `−x/1024` on the input `x = p/255`,
    /// while the f64 back-substitution `fl(Wᵀλ)` rounds `2⁶⁰ − 2⁻¹⁰` to `2⁶⁰` and cancels to an
    /// exactly-zero input coefficient. Without charging that rounding error the bound would
    /// be `0 > −x/1024`; with it, the bound is below the exact (rational) gap. Through a conv
    /// layer (1x1 kernels, 2 channels) and a dense layer (each fails without its charge),
    /// plus an overlapping max-pool's accumulation (soundness only, see below).
    #[test]
    fn crown_rounding_charges_needed() {
        let big = 2f32.powi(60);
        let small = 2f32.powi(-10);
        let conv_spec = ModelSpec {
            name: "cancel-conv".into(),
            input: Shape::new(1, 1, 1),
            layers: vec![
                Layer::conv(2, 1, 1, Padding::Valid, false),
                Layer::conv(2, 1, 1, Padding::Valid, false),
                Layer::Flatten,
            ],
        };
        let dense_spec = ModelSpec {
            name: "cancel-dense".into(),
            input: Shape::flat(1),
            layers: vec![Layer::dense(2, false), Layer::dense(2, false)],
        };
        // A 3x3/1 max-pool on a 3x5 image whose pixel x at (1, 2) dominates all three
        // (overlapping) windows, so every pool output is exactly x; out 0 = 2⁶⁰ P0 − 2⁻¹⁰ P1
        // − 2⁶⁰ P2. The pool routes 2⁶⁰, −2⁻¹⁰, −2⁶⁰ to x's coefficient in that order: the
        // accumulation rounds 2⁶⁰ − 2⁻¹⁰ to 2⁶⁰ and then cancels to exactly 0 (the true
        // coefficient is −2⁻¹⁰). Here the dense layer's own a-priori charge (≈ 2u·2⁶⁰) is
        // larger than the pool's realised error, so this case checks soundness only (removing
        // the pool's charge alone does not make it fail).
        let pool_spec = ModelSpec {
            name: "cancel-pool".into(),
            input: Shape::new(1, 3, 5),
            layers: vec![
                Layer::MaxPool {
                    size: 3,
                    stride: Some(1),
                },
                Layer::Flatten,
                Layer::dense(2, false),
            ],
        };
        for spec in [conv_spec, dense_spec, pool_spec] {
            let mut params = Params::he_normal(&spec, 1).unwrap();
            let image = |p: u8| {
                let n = spec.input.len();
                let mut v = vec![0u8; n];
                v[if n == 1 { 0 } else { 7 }] = p; // x: pixel 0, or (1, 2)
                v
            };
            if spec.name == "cancel-pool" {
                params.layers[0].weight = vec![big, -small, -big, 0.0, 0.0, 0.0];
            } else {
                params.layers[0].weight = vec![1.0, 1.0];
                // out 0 = 2⁶⁰ h0 − 2⁶⁰ h1, out 1 = 2⁻¹⁰ h0: gap out0 − out1 = −2⁻¹⁰ x.
                params.layers[1].weight = vec![big, -big, small, 0.0];
            }
            let net = CertifiedNet::new(&spec, &params).unwrap();
            let crown = Crown::new(&spec, &params).unwrap();
            for p in [1u8, 77, 255] {
                let img = image(p);
                let b = robust::linf_box(&img, &[0.0], img.len());
                let encl = net.forward_of_ball(&b, 1).unwrap();
                let lb = crown.gap_lowers(&encl, 0, Task::Multi(2)).unwrap()[0];
                let z = reference_logits_exact(&spec, &params, &img).unwrap();
                let gap = Rational::from(&z[0] - &z[1]);
                assert!(gap < 0, "{}: the construction", spec.name);
                assert!(lb.is_finite() && lb > -1e4, "{}: {lb}", spec.name);
                assert!(
                    Rational::from_f64(lb).unwrap() <= gap,
                    "{}, p = {p}: CROWN {lb} > exact gap {}",
                    spec.name,
                    gap.to_f64()
                );
            }
        }
    }

    /// The checkpoint of a measurement (`MARGINCERT_CNN_CKPT`) and its example count
    /// (`MARGINCERT_CROWN_N`, else `default_n`); `None`, saying so, when no checkpoint is set.
    fn measured_checkpoint(
        default_n: usize,
    ) -> Option<(margincert::checkpoint::Checkpoint, usize)> {
        let Ok(path) = std::env::var("MARGINCERT_CNN_CKPT") else {
            println!("skipped: MARGINCERT_CNN_CKPT is not set");
            return None;
        };
        let ck = margincert::checkpoint::Checkpoint::load(std::path::Path::new(&path)).unwrap();
        let n = std::env::var("MARGINCERT_CROWN_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_n);
        Some((ck, n))
    }

    /// Measurement (not a default test): median certified L∞ radius of IBP and CROWN(+IBP)
    /// and the verified attack radius on a paper-CNN checkpoint, on the first
    /// `MARGINCERT_CROWN_N` (default 32) embedded test images, with CROWN radii per second.
    #[test]
    #[ignore = "measurement; MARGINCERT_CNN_CKPT=path/to/mnist-cnn.safetensors cargo test --release --test suite robust::crown_cnn::paper_cnn_crown_figures -- --ignored --nocapture"]
    fn paper_cnn_crown_figures() {
        let Some((ck, n)) = measured_checkpoint(32) else {
            return;
        };
        let split = "embedded".parse::<DataSource>().unwrap().load().unwrap();
        let data = split.test.take(n);
        let net = CertifiedNet::new(&ck.spec, &ck.params).unwrap();
        let task = Task::new(net.outputs(), data.classes).unwrap();
        let crown = Crown::new(&ck.spec, &ck.params).unwrap();
        let (eps_max, steps) = (0.1, 14);
        let t = std::time::Instant::now();
        let ibp = robust::ibp_radius(&net, &data, task, eps_max, steps).unwrap();
        let t_ibp = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let cr = margincert::robust::crown::crown_radius(&crown, &net, &data, task, eps_max, steps)
            .unwrap();
        let t_crown = t.elapsed().as_secs_f64();
        let opts = RobustOptions {
            norm: Norm::Inf,
            eps_max,
            steps,
            attack: AttackOptions::default(),
        };
        let rep = robust::run(&ck.spec, &ck.params, &data, &opts).unwrap();
        assert_eq!(rep.violations, 0);
        for (e, c) in rep.examples.iter().zip(&cr) {
            assert!(*c <= e.attack && *c >= ibp[e.index]);
        }
        let med = |v: &[f64]| robust::median(v.iter().copied()).unwrap_or(f64::NAN);
        // The attack median counts "nothing found below eps_max" as +∞.
        let mut att: Vec<f64> = rep.examples.iter().map(|e| e.attack).collect();
        att.sort_by(|a, b| a.total_cmp(b));
        let att_med = att[att.len() / 2];
        let found = att.iter().filter(|a| a.is_finite()).count();
        println!(
            "attack found an adversarial point below eps_max = {eps_max} for {found} of {n} \
             examples (median of those {:.4e})",
            med(&att)
        );
        println!(
            "{} examples on {} threads: median L∞ radius IBP {:.4e}, CROWN(+IBP) {:.4e}, attack {:.4e}; \
             certified > 0: IBP {}, CROWN {}; CROWN > IBP on {}; IBP {:.2} s ({:.2}/s), \
             CROWN {:.2} s ({:.2} radii/s)",
            n,
            rayon::current_num_threads(),
            med(&ibp),
            med(&cr),
            att_med,
            ibp.iter().filter(|&&r| r > 0.0).count(),
            cr.iter().filter(|&&r| r > 0.0).count(),
            cr.iter().zip(&ibp).filter(|(c, i)| c > i).count(),
            t_ibp,
            n as f64 / t_ibp,
            t_crown,
            n as f64 / t_crown
        );
    }

    /// Measurement (not a default test): certified L2 radii of the paper CNN over the ball
    /// (global Lipschitz, CROWN with layers of at most 1,024 unstable units refined, and
    /// CROWN with every layer refined) against the verified Carlini-Wagner radius, on the
    /// first `MARGINCERT_CROWN_N` (default 4) embedded training images (the first MNIST
    /// training images); eps_max 3, 14 bisection steps, as `robust --norm 2`.
    #[test]
    #[ignore = "measurement, ~6 CPU-min per example; MARGINCERT_CNN_CKPT=path/to/mnist-cnn.safetensors cargo test --release --test suite robust::crown_cnn::paper_cnn_l2_figures -- --ignored --nocapture"]
    fn paper_cnn_l2_figures() {
        use margincert::certify::forward::PreparedNet;
        use margincert::robust::RobustSetup;
        use margincert::robust::method::{Bounder, RadiusOptions, radii};
        let Some((ck, n)) = measured_checkpoint(4) else {
            return;
        };
        let data = embedded_train(n);
        let (eps_max, steps) = (3.0, 14);
        let opts = RobustOptions {
            norm: Norm::L2,
            eps_max,
            steps,
            attack: AttackOptions::cw(200, 6),
        };
        let t = std::time::Instant::now();
        let rep = RobustSetup::new(&ck.spec, &ck.params, &data)
            .unwrap()
            .run_with(&opts, Method::Crown)
            .unwrap();
        let t_default = t.elapsed().as_secs_f64();
        assert_eq!(rep.violations, 0);
        let mut all = Bounder::new(std::sync::Arc::new(
            PreparedNet::from_spec(&ck.spec, &ck.params).unwrap(),
        ));
        all.max_unstable = usize::MAX;
        let task = Task::new(all.net().outputs(), data.classes).unwrap();
        let ropts = RadiusOptions {
            method: Method::Crown,
            eps_max,
            steps,
            ..RadiusOptions::default()
        };
        let t = std::time::Instant::now();
        let full = radii(&all, &data, task, Norm::L2, &ropts, None).unwrap();
        let t_full = t.elapsed().as_secs_f64();
        for (e, f) in rep.examples.iter().zip(&full) {
            assert!(*f <= e.attack, "example {}: {f} above the attack", e.index);
            println!(
                "example {} (label {}): global Lipschitz {:.4e}, CROWN (<= 1024 unstable refined) \
                 {:.4e}, CROWN (all refined) {:.4e}, CW attack {:.4e}; attack / best certified {:.1}",
                e.index,
                e.label,
                e.global_lipschitz.unwrap_or(0.0),
                e.crown.unwrap_or(0.0),
                f,
                e.attack,
                e.attack / f.max(e.certified)
            );
        }
        println!(
            "{n} examples on {} threads: report (CROWN <= 1024 unstable + CW attack) {t_default:.1} s, \
             CROWN with every layer refined {t_full:.1} s",
            rayon::current_num_threads()
        );
    }
}
