//! Certified upper bounds on the L2 Lipschitz constants of a network and of its class gaps
//! (proofs/robust-lipschitz.md).
//!
//! Every bound is computed from the stored f32 weights taken as exact reals; every sum,
//! product and square root is rounded upward with [`up`] (Lemma 1 of proofs/forward.md:
//! `up(RN(a)) ≥ a`), so each returned number is `≥` the exact real quantity it bounds.

use crate::certify::round::{ETA, U, down, gamma_up, up};
use crate::error::{Error, Result};
use crate::model::{CheckedModel, ModelSpec, Op, Params};
use ndarray::{Array2, linalg::general_mat_mul};

/// Upper bound on `Σ |v_i|` (each partial sum rounded up).
fn abs_sum_up(v: impl Iterator<Item = f64>) -> f64 {
    v.fold(0.0, |s, x| up(s + x.abs()))
}

/// Upper bound on `sqrt(Σ v_i²)`.
fn l2_up(v: impl Iterator<Item = f64>) -> f64 {
    up(v.fold(0.0, |s, x| up(s + up(x * x))).sqrt())
}

/// Certified upper bound on `||W||₂` of a dense `[out, inp]` matrix (row-major):
/// `min(||W||_F, sqrt(||W||₁ ||W||_∞))` (both are upper bounds of the spectral norm; the
/// second by Hölder/Riesz–Thorin: `||W||₂² ≤ ||W||₁ ||W||_∞`).
pub fn dense_norm_up(w: &[f32], out: usize, inp: usize) -> f64 {
    debug_assert_eq!(w.len(), out * inp);
    let fro = l2_up(w.iter().map(|&v| v as f64));
    let inf = (0..out)
        .map(|o| abs_sum_up(w[o * inp..(o + 1) * inp].iter().map(|&v| v as f64)))
        .fold(0.0, f64::max);
    let one = (0..inp)
        .map(|i| abs_sum_up((0..out).map(|o| w[o * inp + i] as f64)))
        .fold(0.0, f64::max);
    let mut best = fro.min(up(up(one * inf).sqrt()));
    if let Some(g) = gram_norm_up(w, out, inp) {
        best = best.min(g);
    }
    best
}

/// Certified `||W||₂ ≤ ||G||_F^{1/2}` with `G = A Aᵀ` the smaller Gram matrix (`A = W` or
/// `Wᵀ`, `G` symmetric PSD with `λ_max(G) = σ_max(W)²` and `λ_max ≤ ||G||_F`). `G` is
/// computed in f64 (any order) and each entry bounded in absolute value by
/// `|fl(G_ij)| + γ_m S_ij + mη` with `S ≥ |A||A|ᵀ` from `(fl(|A||A|ᵀ) + mη)/(1 − γ_m)` (Higham,
/// as in proofs/forward.md). `None` when the dot length is too long or the result overflows.
pub fn gram_norm_up(w: &[f32], out: usize, inp: usize) -> Option<f64> {
    let (r, m, a) = if out <= inp {
        (
            out,
            inp,
            Array2::from_shape_fn((out, inp), |(i, j)| w[i * inp + j] as f64),
        )
    } else {
        (
            inp,
            out,
            Array2::from_shape_fn((inp, out), |(i, j)| w[j * inp + i] as f64),
        )
    };
    if r == 0 || r > 4096 {
        return None;
    }
    let gamma = gamma_up(m).ok()?;
    let inv = up(1.0 / down(1.0 - gamma));
    let m_eta = m as f64 * ETA;
    let aa = a.mapv(f64::abs);
    let mut g = Array2::<f64>::zeros((r, r));
    let mut sabs = Array2::<f64>::zeros((r, r));
    general_mat_mul(1.0, &a, &a.t(), 0.0, &mut g);
    general_mat_mul(1.0, &aa, &aa.t(), 0.0, &mut sabs);
    let mut f2 = 0.0f64;
    for (gv, sv) in g.iter().zip(sabs.iter()) {
        let s_exact = up(up(up(*sv + m_eta) * inv) + m_eta);
        let bound = up(up(gv.abs() + up(gamma * s_exact)) + m_eta);
        f2 = up(f2 + up(bound * bound));
    }
    let v = up(up(f2.sqrt()).sqrt());
    v.is_finite().then_some(v)
}

/// Certified upper bound on the L2 operator norm of a conv layer with weights
/// `[out, inp, k, k]` (any stride, any zero padding): `sqrt(||C||₁ ||C||_∞)` with
/// `||C||_∞ ≤ max_o Σ_{i,ky,kx} |w|` (one output sums at most every tap once) and
/// `||C||₁ ≤ max_i Σ_{o,ky,kx} |w|` (one input pixel meets each tap of each output channel
/// at most once: the output position is determined by the tap for a fixed stride).
pub fn conv_norm_up(w: &[f32], out: usize, inp: usize, k: usize) -> f64 {
    let kk = k * k;
    debug_assert_eq!(w.len(), out * inp * kk);
    let inf = (0..out)
        .map(|o| {
            abs_sum_up(
                w[o * inp * kk..(o + 1) * inp * kk]
                    .iter()
                    .map(|&v| v as f64),
            )
        })
        .fold(0.0, f64::max);
    let one = (0..inp)
        .map(|i| {
            abs_sum_up((0..out).flat_map(|o| {
                w[(o * inp + i) * kk..(o * inp + i + 1) * kk]
                    .iter()
                    .map(|&v| v as f64)
            }))
        })
        .fold(0.0, f64::max);
    up(up(one * inf).sqrt())
}

/// Upper bound on the L2 Lipschitz constant of a max- or average-pool with kernel `k` and
/// stride `s`: `sqrt(m)`, `m = ceil(k/s)²` the most windows one input can lie in. For one
/// window `|max a − max b| ≤ max|a − b| ≤ ||a − b||₂` and `|avg(a − b)| ≤ ||a − b||₂`
/// (weights of sum ≤ 1, Cauchy–Schwarz); summing squares over windows counts each input at
/// most `m` times. Non-overlapping pools (`s ≥ k`, as in the paper CNN) give 1.
pub fn pool_lip_up(k: usize, s: usize) -> f64 {
    let per_axis = k.div_ceil(s.max(1));
    // a small integer: sqrt is exact or rounded up by up().
    up(((per_axis * per_axis) as f64).sqrt())
}

/// Certified Lipschitz bounds of a network in the L2 norm.
///
/// Invariant: every field is `≥` the exact quantity named (all rounded upward), finite or
/// `+inf` (vacuous but sound).
#[derive(Clone, Debug, PartialEq)]
pub struct Lipschitz {
    /// Per layer of the spec, an upper bound on its L2 Lipschitz constant (1 for flatten,
    /// ReLU; `max(1,|slope|)` for LeakyReLU).
    pub per_layer: Vec<f64>,
    /// Upper bound on the Lipschitz constant of the whole network `x ↦ Φ(x)` (product).
    pub network: f64,
    /// Upper bound on the Lipschitz constant of every class gap `x ↦ Φ_a(x) − Φ_b(x)`
    /// indexed `[a * k + b]` (`k` outputs; diagonal 0). For one output, `[Φ]`'s constant.
    /// When the last weight layer is a dense layer at the very end (up to flatten), this is
    /// `||w_a − w_b||₂ · Lip(prefix)`, else `√2 · network`.
    pub gap: Vec<f64>,
    /// Number of outputs `k`.
    pub outputs: usize,
}

impl Lipschitz {
    /// Bound on the gap `Φ_y − Φ_j` (binary: `Φ` itself).
    pub fn gap(&self, y: usize, j: usize) -> f64 {
        if self.outputs == 1 {
            self.gap[0]
        } else {
            self.gap[y * self.outputs + j]
        }
    }
}

/// Certified L2 Lipschitz bounds of `params` on `spec` (checks them; see [`lipschitz_of`]).
pub fn lipschitz(spec: &ModelSpec, params: &Params) -> Result<Lipschitz> {
    lipschitz_of(&CheckedModel::new(spec.clone(), params.clone())?)
}

/// Certified L2 Lipschitz bounds of a checked model (from its f32 weights, taken as exact
/// reals); for a [`crate::certify::PreparedNet`] pass `net.model()`.
pub fn lipschitz_of(model: &CheckedModel) -> Result<Lipschitz> {
    let plan = model.plan();
    let mut weights = model.params().layers.iter();
    let mut per_layer = Vec::with_capacity(plan.len());
    let mut last_dense: Option<(usize, usize, usize, &[f32])> = None; // (plan idx, out, inp, w)
    for (i, p) in plan.iter().enumerate() {
        let l = match p.op {
            Op::Dense { out, .. } => {
                let lp = weights
                    .next()
                    .ok_or_else(|| Error::Spec("missing weights".into()))?;
                let inp = p.input.len();
                last_dense = Some((i, out, inp, &lp.weight));
                dense_norm_up(&lp.weight, out, inp)
            }
            Op::Conv {
                out, c_in, window, ..
            } => {
                let lp = weights
                    .next()
                    .ok_or_else(|| Error::Spec("missing weights".into()))?;
                last_dense = None;
                conv_norm_up(&lp.weight, out, c_in, window.k)
            }
            Op::MaxPool { window: w, .. } | Op::AvgPool { window: w, .. } => {
                pool_lip_up(w.k, w.stride)
            }
            Op::Flatten | Op::Relu => 1.0,
            Op::LeakyRelu { slope } => (slope as f64).abs().max(1.0),
        };
        per_layer.push(l);
    }
    let network = per_layer.iter().fold(1.0, |a, &b| up(a * b));
    let k = model.outputs();
    // The final dense layer counts only when nothing but flatten follows it.
    let tail_ok = |i: usize| plan[i + 1..].iter().all(|p| matches!(p.op, Op::Flatten));
    let gap = match last_dense {
        Some((i, out, inp, w)) if tail_ok(i) && out == k => {
            let prefix = per_layer[..i].iter().fold(1.0, |a, &b| up(a * b));
            if k == 1 {
                vec![up(l2_up(w.iter().map(|&v| v as f64)) * prefix)]
            } else {
                let mut g = vec![0.0; k * k];
                for a in 0..k {
                    for b in 0..k {
                        if a != b {
                            // |x − y| ≤ |RN(x − y)| / (1 − u) ≤ |r| + 2u|r| (Lemma 2 of
                            // proofs/forward.md; f32 differences never underflow in f64).
                            let d = (0..inp).map(|c| {
                                let r = (w[a * inp + c] as f64 - w[b * inp + c] as f64).abs();
                                up(r + up(2.0 * U * r))
                            });
                            g[a * k + b] = up(l2_up(d) * prefix);
                        }
                    }
                }
                g
            }
        }
        _ => {
            if k == 1 {
                vec![network]
            } else {
                let s2 = up(std::f64::consts::SQRT_2);
                let mut g = vec![up(s2 * network); k * k];
                for a in 0..k {
                    g[a * k + a] = 0.0;
                }
                g
            }
        }
    };
    Ok(Lipschitz {
        per_layer,
        network,
        gap,
        outputs: k,
    })
}
