//! A CROWN-style linear-relaxation lower bound on the class gaps over an L∞ box, sound under
//! floating point (proofs/robust-crown.md). Dense / ReLU / flatten networks only (MLPs);
//! other layers give an error (callers fall back to IBP).
//!
//! The bound is kept as `s_j(x) ≥ Σ_k λ_k a_k + β` with `λ` EXACT f64 numbers and `β` a
//! rounded-down constant: every rounding error of a back-substitution step (`λ' = fl(Wᵀλ)`,
//! `μ = fl(λ·slope)`) is bounded a priori and charged to `β` using the IBP enclosures of the
//! activations, so the final minimisation over the box is of an exactly known linear
//! function, done with downward rounding.

use crate::certify::enclosure::{BallVec, CertifiedNet, ETA, U, down, gamma_up, up};
use crate::certify::margin::Task;
use crate::error::{Error, Result};
use crate::model::{Layer, LayerPlan, ModelSpec, Params};

/// Dense weights of an MLP, prepared for back-substitution.
#[derive(Clone, Debug)]
pub struct Crown {
    plan: Vec<LayerPlan>,
    /// Per plan step: `(weight [out, inp] as f64, bias)`, empty for other layers.
    w: Vec<(Vec<f64>, Option<Vec<f64>>)>,
}

impl Crown {
    /// Errors unless every layer is flatten, dense or ReLU.
    pub fn new(spec: &ModelSpec, params: &Params) -> Result<Self> {
        params.check(spec)?;
        let plan = spec.plan()?;
        let mut it = params.layers.iter();
        let mut w = Vec::with_capacity(plan.len());
        for p in &plan {
            match p.layer {
                Layer::Dense { .. } => {
                    let l = it.next().expect("checked by Params::check");
                    w.push((
                        l.weight.iter().map(|&v| v as f64).collect(),
                        l.bias
                            .as_ref()
                            .map(|b| b.iter().map(|&v| v as f64).collect()),
                    ));
                }
                Layer::Flatten | Layer::Relu => w.push((vec![], None)),
                ref other => {
                    return Err(Error::Certify(format!(
                        "CROWN here supports dense/ReLU networks only, not {}",
                        other.describe()
                    )));
                }
            }
        }
        Ok(Self { plan, w })
    }

    /// Certified lower bound of every gap `Φ_y − Φ_j` (`j ≠ y`, increasing; binary: `[q]`)
    /// over the box `x` (one example), whose layer enclosures `encl` come from
    /// [`CertifiedNet::forward_of_ball`]. Returns the minimum (a lower bound of the margin).
    pub fn margin_lower(&self, encl: &[BallVec], label: u8, task: Task) -> Result<f64> {
        let k = task.outputs();
        let specs: Vec<Vec<f64>> = match task {
            Task::Binary => vec![vec![if label == 1 { 1.0 } else { -1.0 }]],
            Task::Multi(_) => {
                let y = label as usize;
                (0..k)
                    .filter(|&j| j != y)
                    .map(|j| {
                        let mut c = vec![0.0; k];
                        c[y] = 1.0;
                        c[j] = -1.0;
                        c
                    })
                    .collect()
            }
        };
        let mut best = f64::INFINITY;
        for c in specs {
            best = best.min(self.lower(encl, c)?);
        }
        Ok(best)
    }

    /// Lower bound of `cᵀ Φ(x)` over the box `encl[0]`.
    fn lower(&self, encl: &[BallVec], mut lam: Vec<f64>) -> Result<f64> {
        let mut beta = 0.0f64;
        for (i, p) in self.plan.iter().enumerate().rev() {
            let inp = &encl[i]; // input enclosure of layer i
            match p.layer {
                Layer::Dense { out, .. } => {
                    let (w, b) = &self.w[i];
                    let n = p.input.len();
                    if let Some(b) = b {
                        for o in 0..out {
                            beta = down(beta + down(lam[o] * b[o]));
                        }
                    }
                    let gamma = gamma_up(out)?;
                    let n_eta = out as f64 * ETA;
                    let mut next = vec![0.0; n];
                    let mut abs = vec![0.0; n];
                    for o in 0..out {
                        let l = lam[o];
                        if l == 0.0 {
                            continue;
                        }
                        let row = &w[o * n..(o + 1) * n];
                        for kk in 0..n {
                            next[kk] += row[kk] * l;
                            abs[kk] = up(abs[kk] + up((row[kk] * l).abs()));
                        }
                    }
                    // |next_k − (Wᵀλ)_k| ≤ γ_out Σ_o |W_ok λ_o| + out·η; times |a_k|.
                    let mut slack = 0.0f64;
                    for (kk, &a) in abs.iter().enumerate() {
                        let err = up(up(gamma * a) + n_eta);
                        let amax = inp.lo(kk).abs().max(inp.hi(kk).abs());
                        slack = up(slack + up(err * amax));
                    }
                    if !slack.is_finite() {
                        return Err(Error::Certify("CROWN slack overflowed".into()));
                    }
                    beta = down(beta - slack);
                    lam = next;
                }
                Layer::Relu => {
                    let mut slack = 0.0f64;
                    for (kk, lk) in lam.iter_mut().enumerate() {
                        let (l, u) = (inp.lo(kk), inp.hi(kk));
                        let lv = *lk;
                        if l >= 0.0 {
                            continue; // a = z
                        }
                        if u <= 0.0 || lv == 0.0 {
                            *lk = 0.0; // a = 0 (or no contribution)
                            continue;
                        }
                        if lv > 0.0 {
                            // a ≥ α z, α ∈ {0, 1} (exact products).
                            if u < -l {
                                *lk = 0.0;
                            }
                        } else {
                            // a ≤ s (z − l), s ≥ u/(u − l): λ a ≥ λ s z − λ s l.
                            let s = up(u / down(u - l));
                            let mu = lv * s;
                            let zmax = (-l).max(u);
                            slack = up(slack + up(up(up(2.0 * U * mu.abs()) + ETA) * zmax));
                            // −λ s l = (−λ s)·l with −λ s > 0 and l < 0: round (−λ s) up,
                            // the product down.
                            let p1 = up(-lv * s);
                            beta = down(beta + down(p1 * l));
                            *lk = mu;
                        }
                    }
                    beta = down(beta - slack);
                }
                Layer::Flatten => {}
                _ => unreachable!("checked in Crown::new"),
            }
        }
        // min over the box of Σ λ_k x_k.
        let x = &encl[0];
        let mut s = beta;
        for (kk, &l) in lam.iter().enumerate() {
            let v = if l >= 0.0 { x.lo(kk) } else { x.hi(kk) };
            s = down(s + down(l * v));
        }
        if s.is_nan() {
            return Err(Error::Certify("CROWN bound is NaN".into()));
        }
        Ok(s)
    }
}

/// Certified L∞ radii by bisection on ε with the margin lower bound `max(IBP, CROWN)` over
/// the clipped box (both sound, so their maximum is).
pub fn crown_radius(
    crown: &Crown,
    net: &CertifiedNet,
    data: &crate::data::Dataset,
    task: Task,
    eps_max: f64,
    steps: usize,
) -> Result<Vec<f64>> {
    use rayon::prelude::*;
    let il = data.shape.len();
    let bound = |n: usize, eps: f64| -> Result<f64> {
        let b = super::linf_box(data.image(n), &[eps], il);
        let encl = net.forward_of_ball(&b, 1)?;
        let logits = encl.last().expect("non-empty");
        let ibp = crate::certify::margin::margin_of(&crate::certify::margin::gaps(
            logits,
            0,
            data.labels[n],
            task,
        ))
        .lo;
        Ok(ibp.max(crown.margin_lower(&encl, data.labels[n], task)?))
    };
    (0..data.len())
        .into_par_iter()
        .map(|n| {
            if bound(n, 0.0)? <= 0.0 {
                return Ok(0.0);
            }
            if bound(n, eps_max)? > 0.0 {
                return Ok(eps_max);
            }
            let (mut lo, mut hi) = (0.0, eps_max);
            for _ in 0..steps {
                let mid = 0.5 * (lo + hi);
                if bound(n, mid)? > 0.0 {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            Ok(lo)
        })
        .collect()
}
