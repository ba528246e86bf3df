//! The two choices of multipliers: the paper's (`λ_c = κ w_c` from the loss weights, on an
//! active set) and non-negative least squares. Both are plain f64 *choices*: the values are
//! then taken as exact and certified by [`super::bounds`].

use inari::Interval;
use rayon::prelude::*;

use super::bounds::{delta_bound, epsilon_bound, pt, relative_upper};
use super::constraints::log_weights;
use super::pass::{Item, run_pass};
use super::{KktOptions, MultiplierBounds};
use crate::certify::backward::{Backward, Constraint};
use crate::certify::ball::BallVec;
use crate::certify::forward::CertifiedNet;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::linalg::nnls_gram;
use crate::model::Params;

/// The constraints that get a nonzero paper multiplier: the highest loss weights above the
/// relative cutoff, at most `max_active` of them.
///
/// Invariant: `active` is sorted by decreasing loss weight; `weights[k] ∈ (0, 1]` is the
/// relative weight of `active[k]` (exact f64, chosen from estimates).
pub(super) struct ActiveSet {
    /// Indices into the constraint list, highest weight first.
    pub(super) active: Vec<usize>,
    /// Relative loss weight of each active constraint.
    pub(super) weights: Vec<f64>,
    /// Estimate of the fraction of total loss weight outside the active set.
    pub(super) dropped: f64,
}

impl ActiveSet {
    /// Selects the active set from the margin estimates `est` (same order as `cons`).
    pub(super) fn select(cons: &[Constraint], est: &[f64], opts: &KktOptions) -> Self {
        let lw = log_weights(cons, est, opts.loss);
        let mut order: Vec<usize> = (0..cons.len()).collect();
        order.sort_by(|&a, &b| lw[b].total_cmp(&lw[a]));
        let lw0 = lw[order[0]];
        let ln_cut = opts.cutoff.ln();
        let active: Vec<usize> = order
            .iter()
            .copied()
            .take_while(|&c| lw[c] - lw0 >= ln_cut)
            .take(opts.max_active)
            .collect();
        let total_w: f64 = lw.iter().map(|&v| (v - lw0).exp()).sum();
        let act_w: f64 = active.iter().map(|&c| (lw[c] - lw0).exp()).sum();
        let dropped = ((total_w - act_w) / total_w).max(0.0);
        let weights: Vec<f64> = active.iter().map(|&c| (lw[c] - lw0).exp()).collect();
        Self {
            active,
            weights,
            dropped,
        }
    }

    /// The backward-pass items of the active constraints: multiplier `w_c`, midpoints kept
    /// for the first `nnls_m`, Euler samples for the first `euler_samples`.
    pub(super) fn items(
        &self,
        cons: &[Constraint],
        nnls_m: usize,
        euler_samples: usize,
    ) -> Vec<Item> {
        self.active
            .iter()
            .enumerate()
            .map(|(k, &c)| Item {
                c: cons[c],
                mu: self.weights[k],
                keep_mid: k < nnls_m,
                euler: k < euler_samples,
            })
            .collect()
    }
}

/// Estimates that fix the paper's multipliers `λ_c = κ w_c` (plain f64).
pub(super) struct PaperScale {
    /// `θ` as f64 (exact copies of the f32 parameters).
    pub(super) theta: Vec<f64>,
    /// `ρ = ‖θ‖₂` (estimate).
    pub(super) rho: f64,
    /// `β = ⟨θ, v⟩ / (ρ ‖v‖)` with `v` the midpoint of `Σ w_c ∇q_c(θ)` (estimate).
    pub(super) beta: f64,
    /// `κ = q_lo^{1 − 2/L} ρ / ‖v‖` (a positive finite f64, then exact).
    pub(super) kappa: f64,
    /// The paper's identity `sqrt(2(1−β)) ρ / q_min^{1/L}` (estimate), when finite.
    pub(super) eps_identity: Option<f64>,
}

impl PaperScale {
    /// From the parameters, the midpoint `v` of the certified weighted gradient sum, the
    /// degree `l`, `q_lo` and the midpoint estimate of `q_min`. Errors when the gradient or
    /// the parameters vanish or `κ` is not a positive finite f64.
    pub(super) fn estimate(
        params: &Params,
        v: &[f64],
        l: u32,
        q_lo: f64,
        q_min_est: f64,
    ) -> Result<Self> {
        let theta: Vec<f64> = params.values().map(|&v| v as f64).collect();
        let rho = theta.iter().map(|t| t * t).sum::<f64>().sqrt();
        let vnorm = v.iter().map(|t| t * t).sum::<f64>().sqrt();
        let dot: f64 = theta.iter().zip(v).map(|(a, b)| a * b).sum();
        if !(vnorm > 0.0 && vnorm.is_finite() && rho > 0.0) {
            return Err(Error::Certify(
                "the loss gradient or the parameters vanish: no paper multipliers".into(),
            ));
        }
        let beta = dot / (rho * vnorm);
        let lf = l as f64;
        let kappa = q_lo.powf(1.0 - 2.0 / lf) * rho / vnorm;
        if !(kappa.is_finite() && kappa > 0.0) {
            return Err(Error::Certify(format!(
                "the paper multiplier scale {kappa} is not a positive finite f64"
            )));
        }
        let eps_identity =
            Some((2.0 * (1.0 - beta).max(0.0)).sqrt() * rho / q_min_est.powf(1.0 / lf))
                .filter(|v| v.is_finite());
        Ok(Self {
            theta,
            rho,
            beta,
            kappa,
            eps_identity,
        })
    }
}

/// The rescaling `θ̃ = a θ`, `a = q_lo^{−1/L}`, enclosed: gradients scale by `a^{L−1}`.
#[derive(Clone, Copy)]
pub(super) struct Rescaling {
    /// `[q_lo, q_lo]`.
    pub(super) q: Interval,
    /// Encloses `a = q_lo^{−1/L}`.
    pub(super) a: Interval,
    /// Encloses `a^{L−1}`.
    pub(super) a_l1: Interval,
}

impl Rescaling {
    /// Encloses the rescaling for degree `l`; errors when it leaves f64 range.
    pub(super) fn new(l: u32, q_lo: f64) -> Result<Self> {
        let lf = l as f64;
        // a = q_lo^{-1/L}, enclosed.
        let q_iv = pt(q_lo)?;
        let inv_l = pt(-1.0)? / pt(lf)?;
        let a = q_iv.pow(inv_l);
        let a_l1 = if l == 1 {
            pt(1.0)?
        } else {
            a.powi(l as i32 - 1)
        };
        if a.is_empty() || !a.sup().is_finite() || !a_l1.sup().is_finite() {
            return Err(Error::Certify("q_lo^(-1/L) overflowed f64".into()));
        }
        Ok(Self { q: q_iv, a, a_l1 })
    }
}

/// Certified bounds of the paper multipliers `κ w_c` given the certified sum
/// `Σ w_c ∇q_c(θ)` and the certified upper bounds `his` of the active constraints' values.
pub(super) fn paper_bounds(
    params: &Params,
    sum: &BallVec,
    scale: &PaperScale,
    resc: &Rescaling,
    weights: &[f64],
    his: &[f64],
    theta_tilde_lower: f64,
) -> Result<MultiplierBounds> {
    let kappa_iv = pt(scale.kappa)?;
    let (eps_p, eps_p_est) = epsilon_bound(params, sum, resc.a, resc.a_l1 * kappa_iv)?;
    let delta_p = delta_bound(kappa_iv, weights, his, resc.q)?;
    Ok(MultiplierBounds {
        epsilon_upper: eps_p,
        delta_upper: delta_p,
        epsilon_relative_upper: relative_upper(eps_p, theta_tilde_lower)?,
        epsilon_estimate: eps_p_est,
        positive: weights.len(),
        lambda_sum_estimate: scale.kappa * weights.iter().sum::<f64>(),
    })
}

/// What the NNLS step needs besides the items: the forward and backward passes, the data,
/// and the quantities of the paper step it reuses.
pub(super) struct NnlsInputs<'a> {
    /// Forward pass (shared prepared network).
    pub(super) net: &'a CertifiedNet,
    /// Backward pass (shared prepared network).
    pub(super) bw: &'a Backward,
    /// The parameters `θ`.
    pub(super) params: &'a Params,
    /// The dataset.
    pub(super) data: &'a Dataset,
    /// `θ` as f64.
    pub(super) theta: &'a [f64],
    /// The active constraints' `(lo, hi, estimate)` values, by item index.
    pub(super) active_vals: &'a [(f64, f64, f64)],
    /// Their certified upper bounds.
    pub(super) his: &'a [f64],
    /// The rescaling.
    pub(super) resc: Rescaling,
    /// The caller's certified lower bound on `q_min`.
    pub(super) q_lo: f64,
    /// Certified lower bound on `‖θ̃‖₂`.
    pub(super) theta_tilde_lower: f64,
}

/// NNLS multipliers on the first `kept.len()` active constraints (whose midpoint gradients
/// `kept` the first pass stored), then a certified pass over the positive ones. Returns the
/// bounds (`None` when NNLS is off, `nnls_m == 0`) and the multiplier of every item.
pub(super) fn nnls_bounds(
    inp: &NnlsInputs<'_>,
    items: &[Item],
    kept: Vec<(usize, Vec<f64>)>,
    nnls_m: usize,
    l: u32,
    opts: &KktOptions,
) -> Result<(Option<MultiplierBounds>, Vec<f64>)> {
    let NnlsInputs {
        net,
        bw,
        params,
        data,
        theta,
        active_vals,
        his,
        resc,
        q_lo,
        theta_tilde_lower,
    } = *inp;
    let (a, a_l1, q_iv) = (resc.a, resc.a_l1, resc.q);
    let n = bw.n_params();
    let mut lambda_nnls = vec![0.0; items.len()];
    if nnls_m == 0 {
        return Ok((None, lambda_nnls));
    }
    let mut cols: Vec<(usize, Vec<f64>)> = kept;
    cols.sort_by_key(|c| c.0);
    let m = cols.len();
    // ‖θ̃ − a^{L−1} G μ‖² + τ Σ (μ_c s_c)² = a^{2(L−1)} (‖t − G μ‖² + Σ μ_c² τ s_c² /
    // a^{2(L−1)}) with t = a^{2−L} θ and slack s_c = q_c/q_lo − 1 (midpoint estimates).
    let t_scale = a.mid().powi(2 - l as i32);
    let a2 = a.mid().powi(2 * (l as i32 - 1));
    let t: Vec<f64> = theta.iter().map(|&x| x * t_scale).collect();
    let mut gram = vec![0.0; m * m];
    let pairs: Vec<(usize, usize)> = (0..m).flat_map(|i| (i..m).map(move |j| (i, j))).collect();
    let vals_g: Vec<f64> = pairs
        .par_iter()
        .map(|&(i, j)| cols[i].1.iter().zip(&cols[j].1).map(|(x, y)| x * y).sum())
        .collect();
    for (&(i, j), &g) in pairs.iter().zip(&vals_g) {
        gram[i * m + j] = g;
        gram[j * m + i] = g;
    }
    for (i, c) in cols.iter().enumerate() {
        let slack = (active_vals[c.0].2 / q_lo - 1.0).max(0.0);
        gram[i * m + i] += opts.nnls_delta_weight * slack * slack / a2;
    }
    let rhs: Vec<f64> = cols
        .par_iter()
        .map(|c| c.1.iter().zip(&t).map(|(x, y)| x * y).sum())
        .collect();
    let mu = nnls_gram(&gram, &rhs, m, 3 * m + 10);
    for (c, &mv) in cols.iter().zip(&mu) {
        lambda_nnls[c.0] = mv;
    }
    drop(cols);
    let items2: Vec<Item> = items
        .iter()
        .zip(&lambda_nnls)
        .filter(|(_, m)| **m > 0.0)
        .map(|(it, &m)| Item {
            c: it.c,
            mu: m,
            keep_mid: false,
            euler: false,
        })
        .collect();
    let sum = if items2.is_empty() {
        BallVec {
            mid: vec![0.0; n],
            rad: vec![0.0; n],
        }
    } else {
        run_pass(net, bw, params, data, &items2, opts.batch)?.sum
    };
    let (eps_n, eps_n_est) = epsilon_bound(params, &sum, a, a_l1)?;
    let delta_n = delta_bound(pt(1.0)?, &lambda_nnls, his, q_iv)?;
    Ok((
        Some(MultiplierBounds {
            epsilon_upper: eps_n,
            delta_upper: delta_n,
            epsilon_relative_upper: relative_upper(eps_n, theta_tilde_lower)?,
            epsilon_estimate: eps_n_est,
            positive: items2.len(),
            lambda_sum_estimate: lambda_nnls.iter().sum(),
        }),
        lambda_nnls,
    ))
}
