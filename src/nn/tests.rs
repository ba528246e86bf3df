//! Checks of [`Network::input_gradient`] against central finite differences of the f32
//! forward pass, the Euler identity of homogeneous networks, and the batch/single-example
//! consistency.
//!
//! Why the finite differences are meaningful in f32: the networks are piecewise linear in the
//! input, so with the activation pattern fixed on `[x - h e_i, x + h e_i]` the central
//! difference has no truncation error, only the rounding of two f32 forward passes (about
//! 1e-6 on logits of size ~1, so ~1e-4 after dividing by `2h = 2e-2`). A coordinate whose
//! segment crosses a kink is detected (the two one-sided differences disagree) and skipped;
//! the test asserts that most coordinates are checked.

use super::{Network, Workspace};
use crate::model::{Layer, ModelSpec, Padding, Params, Shape, presets};

/// SplitMix64 for test data.
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
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// Every layer kind: a strided SAME conv with bias on a two-channel input (the input is
/// transposed to channels-last), LeakyReLU, max-pool (after which the activation is swapped),
/// a padded conv, ReLU, avg-pool, flatten of a multi-channel map, dense layers.
fn every_layer(outputs: usize) -> ModelSpec {
    ModelSpec {
        name: "every-layer".into(),
        input: Shape::new(2, 7, 7),
        layers: vec![
            Layer::conv(3, 3, 2, Padding::Same, true),
            Layer::LeakyRelu { slope: 0.1 },
            Layer::MaxPool {
                size: 2,
                stride: Some(1),
            },
            Layer::conv(4, 2, 1, Padding::Explicit(1), false),
            Layer::Relu,
            Layer::AvgPool {
                size: 2,
                stride: None,
            },
            Layer::Flatten,
            Layer::dense(6, true),
            Layer::Relu,
            Layer::dense(outputs, false),
        ],
    }
}

/// Random parameters (biases included) and inputs in [0, 1].
fn setup(spec: &ModelSpec, batch: usize, seed: u64) -> (Params, Vec<f32>) {
    let mut rng = Rng(seed);
    let mut p = Params::he_normal(spec, seed).unwrap();
    for b in p.layers.iter_mut().filter_map(|l| l.bias.as_mut()) {
        b.iter_mut().for_each(|v| *v = rng.uniform(-0.5, 0.5));
    }
    let x = (0..batch * spec.input.len())
        .map(|_| rng.uniform(0.0, 1.0))
        .collect();
    (p, x)
}

/// `sum_k c_k z_k` of one example, in f64.
fn combo(net: &Network, p: &Params, x: &[f32], c: &[f32]) -> f64 {
    let z = net.forward(p, x, 1).unwrap();
    z.iter().zip(c).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Input gradient of the whole batch vs per-coordinate central differences.
fn check_fd(spec: &ModelSpec, batch: usize, seed: u64) {
    let net = Network::new(spec).unwrap();
    let (p, x) = setup(spec, batch, seed);
    let k = net.outputs();
    let n = spec.input.len();
    let mut rng = Rng(seed ^ 0xabc);
    let c: Vec<f32> = (0..batch * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let mut ws = Workspace::new(&net, batch);
    net.forward_train(&p, &x, batch, &mut ws).unwrap();
    let g = net.input_gradient(&p, &mut ws, &c).unwrap().to_vec();
    assert_eq!(g.len(), batch * n);
    let gmax = g.iter().fold(1.0f64, |m, v| m.max(v.abs() as f64));
    let h = 1e-2f32;
    let (mut checked, mut skipped) = (0, 0);
    for b in 0..batch {
        let (xb, cb) = (&x[b * n..(b + 1) * n], &c[b * k..(b + 1) * k]);
        let f0 = combo(&net, &p, xb, cb);
        for i in 0..n {
            let mut xp = xb.to_vec();
            xp[i] += h;
            let fp = combo(&net, &p, &xp, cb);
            xp[i] = xb[i] - h;
            let fm = combo(&net, &p, &xp, cb);
            // The steps actually taken in f32.
            let (hp, hm) = ((xb[i] + h - xb[i]) as f64, (xb[i] - (xb[i] - h)) as f64);
            let (right, left) = ((fp - f0) / hp, (f0 - fm) / hm);
            if (right - left).abs() > 1e-3 * gmax {
                skipped += 1; // a kink inside the segment
                continue;
            }
            let fd = (fp - fm) / (hp + hm);
            let got = g[b * n + i] as f64;
            assert!(
                (got - fd).abs() <= 1e-3 * gmax,
                "{}: example {b} input {i}: input_gradient {got} vs finite difference {fd} \
                 (max |g| {gmax})",
                spec.name
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 4 * skipped && checked > 0,
        "{}: {checked} coordinates checked, {skipped} skipped at kinks",
        spec.name
    );
}

#[test]
fn input_gradient_matches_finite_differences_for_every_layer_kind() {
    check_fd(&every_layer(3), 3, 1);
    check_fd(&every_layer(1), 2, 2);
    check_fd(&presets::mlp_with(Shape::flat(9), &[7, 5], 4), 4, 3);
}

#[test]
fn input_gradient_satisfies_euler_on_a_homogeneous_cnn() {
    // Bias-free, ReLU/max-pool: positively 1-homogeneous in the input, so on every linear
    // piece `<grad_x f, x> = f(x)` for `f = sum_k c_k z_k`.
    let spec = presets::paper_cnn_shape(Shape::new(1, 12, 12), [4, 6, 16], 5, [false; 4]);
    let net = Network::new(&spec).unwrap();
    let batch = 3;
    let (p, x) = setup(&spec, batch, 9);
    let n = spec.input.len();
    let k = net.outputs();
    let mut rng = Rng(10);
    let c: Vec<f32> = (0..batch * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let mut ws = Workspace::new(&net, batch);
    let z = net.forward_train(&p, &x, batch, &mut ws).unwrap().to_vec();
    let g = net.input_gradient(&p, &mut ws, &c).unwrap();
    for b in 0..batch {
        let f: f64 = (0..k)
            .map(|j| z[b * k + j] as f64 * c[b * k + j] as f64)
            .sum();
        let e: f64 = (0..n)
            .map(|i| g[b * n + i] as f64 * x[b * n + i] as f64)
            .sum();
        // Rounding is relative to the sums of absolute terms on both sides.
        let scale = (0..k)
            .map(|j| (z[b * k + j] * c[b * k + j]).abs() as f64)
            .sum::<f64>()
            .max(
                (0..n)
                    .map(|i| (g[b * n + i] * x[b * n + i]).abs() as f64)
                    .sum(),
            );
        assert!(
            (e - f).abs() <= 1e-4 * scale.max(1e-3),
            "example {b}: {e} vs {f}"
        );
    }
}

#[test]
fn input_gradient_of_a_batch_matches_single_examples_and_leaves_backward_intact() {
    let spec = every_layer(3);
    let net = Network::new(&spec).unwrap();
    let batch = 5;
    let (p, x) = setup(&spec, batch, 4);
    let (n, k) = (spec.input.len(), net.outputs());
    let c: Vec<f32> = (0..batch * k).map(|i| [1.0, -1.0, 0.5][i % 3]).collect();
    let mut ws = Workspace::new(&net, batch);
    net.forward_train(&p, &x, batch, &mut ws).unwrap();
    let mut before = p.zeros_like();
    net.backward(&p, &mut ws, &c, &mut before).unwrap();
    let all = net.input_gradient(&p, &mut ws, &c).unwrap().to_vec();
    // The parameter gradient does not change after an input gradient on the same workspace.
    let mut after = p.zeros_like();
    net.backward(&p, &mut ws, &c, &mut after).unwrap();
    assert_eq!(before, after);
    for b in 0..batch {
        let mut w1 = Workspace::new(&net, 1);
        net.forward_train(&p, &x[b * n..(b + 1) * n], 1, &mut w1)
            .unwrap();
        let one = net
            .input_gradient(&p, &mut w1, &c[b * k..(b + 1) * k])
            .unwrap();
        for i in 0..n {
            let (u, v) = (one[i], all[b * n + i]);
            assert!(
                (u - v).abs() <= 1e-5 * (1.0 + v.abs()),
                "example {b} input {i}: {u} vs {v}"
            );
        }
    }
    // Without a forward pass, or with the wrong length, an error.
    let mut fresh = Workspace::new(&net, 1);
    assert!(net.input_gradient(&p, &mut fresh, &c[..k]).is_err());
    assert!(net.input_gradient(&p, &mut ws, &c[..k]).is_err());
}

#[test]
fn from_model_compiles_the_same_network() {
    let spec = every_layer(2);
    let (p, x) = setup(&spec, 2, 5);
    let model = crate::model::CheckedModel::new(spec.clone(), p.clone()).unwrap();
    let a = Network::from_model(&model).forward(&p, &x, 2).unwrap();
    let b = Network::new(&spec).unwrap().forward(&p, &x, 2).unwrap();
    assert_eq!(a, b);
}
