//! Certified approximate-KKT bounds `(ε, δ)` of problem (P) and the Euler identity check.
//!
//! Problem (P): minimise `½‖θ‖²` subject to `q_c(θ) ≥ 1` for every constraint `c`
//! (binary: `q_n = y_n Φ(θ; x_n)`; multi-class: the pairwise `s_nj = Φ_{y_n} − Φ_j`,
//! `j ≠ y_n`, one multiplier each). A point `θ̃` is an `(ε, δ)`-KKT point when it is
//! feasible and there are `λ_c ≥ 0` and `h_c ∈ ∂°q_c(θ̃)` with
//! `‖θ̃ − Σ_c λ_c h_c‖₂ ≤ ε` and `λ_c (q_c(θ̃) − 1) ≤ δ` for every `c`.
//!
//! For an L-homogeneous net and a certified lower bound `q_lo ≤ q_min`, the rescaled point
//! `θ̃ = θ / q_lo^{1/L}` is feasible: `q_c(θ̃) = q_c(θ)/q_lo ≥ q_min/q_lo ≥ 1`, and
//! `∂°q_c(θ̃) = q_lo^{−(L−1)/L} ∂°q_c(θ)` (the gradient is (L−1)-homogeneous).
//! [`certify_kkt`] picks multipliers in two ways — the paper's (from the loss gradient) and
//! non-negative least squares — takes the picked values as exact, and certifies upper
//! bounds on `ε` and `δ` for them: `ε` bounds `‖θ̃ − Σ λ_c h_c‖` for EVERY `h_c` in the
//! certified gradient boxes of [`super::backward`] (which contain `∂°q_c`), so in
//! particular for the Clarke subgradients whose existence the definition asks for.
//! See proofs/kkt.md.
//!
//! Constraints with negligible loss weight get `λ_c = 0` exactly (an active set); this is
//! sound (they then add nothing to `Σ λ h` and `0 · (q_c − 1) = 0 ≤ δ`) and only makes `ε`
//! larger than with the full multipliers.

use inari::Interval;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::certify::backward::{
    Backward, Constraint, GradSum, KinkStats, RadConst, dot_with_params,
};
use crate::certify::enclosure::{BallVec, CertifiedNet, down, up};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params};

// The training loss whose negative gradient defines the paper's multipliers (multi-class
// exponential: one term per pair; cross-entropy: pairwise weights
// `w_nj = e^{−s_nj} / (1 + Σ_k e^{−s_nk})`; on a one-output model cross-entropy is read as the
// logistic loss).
use crate::loss::LossKind as KktLoss;
use crate::loss::softplus;

/// Options of [`certify_kkt`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KktOptions {
    /// Loss defining the paper's multipliers.
    pub loss: KktLoss,
    /// At most this many constraints get a nonzero multiplier (the highest loss weights).
    pub max_active: usize,
    /// Relative weight cutoff in `(0, 1]`: constraints with `w_c < cutoff · max w` get
    /// `λ_c = 0`.
    pub cutoff: f64,
    /// Number of active constraints (highest weights first) whose Euler identity is checked.
    pub euler_samples: usize,
    /// Examples per certified forward batch.
    pub batch: usize,
    /// Also compute the non-negative-least-squares multipliers.
    pub nnls: bool,
    /// Weight `τ ≥ 0` of the complementary-slackness term in the NNLS objective
    /// `‖θ̃ − Σ λ_c h_c‖² + τ Σ_c (λ_c (q_c(θ̃) − 1))²` (0: plain NNLS on `ε` alone, which may
    /// put weight on inactive constraints and give a large `δ`).
    pub nnls_delta_weight: f64,
    /// Memory budget in bytes for the midpoint gradients NNLS stores (f64 each); the NNLS
    /// is restricted to the highest-weight constraints that fit.
    pub nnls_memory_bytes: usize,
}

impl Default for KktOptions {
    fn default() -> Self {
        Self {
            loss: KktLoss::CrossEntropy,
            max_active: 256,
            cutoff: 1e-12,
            euler_samples: 8,
            batch: 32,
            nnls: true,
            nnls_delta_weight: 1.0,
            nnls_memory_bytes: 1 << 30,
        }
    }
}

/// Certified bounds for one choice of multipliers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultiplierBounds {
    /// Certified: `‖θ̃ − Σ λ_c h_c‖₂ ≤ epsilon_upper` for all `h_c` in the gradient boxes.
    pub epsilon_upper: f64,
    /// Certified: `λ_c (q_c(θ̃) − 1) ≤ delta_upper` for every constraint `c`.
    pub delta_upper: f64,
    /// Estimate (f64, midpoints): `‖θ̃ − Σ λ_c h_c‖₂`.
    pub epsilon_estimate: f64,
    /// Number of constraints with `λ_c > 0`.
    pub positive: usize,
    /// Estimate of `Σ_c λ_c`.
    pub lambda_sum_estimate: f64,
}

/// One Euler-identity sample: `⟨h, θ⟩` over the gradient box against `L · q_c(θ)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EulerSample {
    /// The constraint.
    pub constraint: Constraint,
    /// Certified enclosure of `{⟨h, θ⟩ : h in the gradient box}`: lower end.
    pub dot_lower: f64,
    /// Upper end.
    pub dot_upper: f64,
    /// Certified enclosure of `L · q_c(θ)`: lower end.
    pub lq_lower: f64,
    /// Upper end.
    pub lq_upper: f64,
    /// Whether the two enclosures intersect (they must, for a homogeneous net).
    pub overlap: bool,
}

/// Result of the Euler identity check `⟨∇q_c(θ), θ⟩ = L q_c(θ)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EulerCheck {
    /// Homogeneity degree `L`.
    pub degree: u32,
    /// The samples.
    pub samples: Vec<EulerSample>,
    /// True when every sample's enclosures overlap.
    pub all_overlap: bool,
}

/// One active constraint and its multipliers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveMultiplier {
    /// The constraint.
    pub constraint: Constraint,
    /// Certified lower bound on `q_c(θ)`.
    pub margin_lower: f64,
    /// Certified upper bound on `q_c(θ)`.
    pub margin_upper: f64,
    /// Relative loss weight `w_c ∈ (0, 1]` (exact f64, chosen from estimates).
    pub weight: f64,
    /// The paper multiplier is the exact real `paper_scale · weight`; this is its f64
    /// rounding, for display.
    pub lambda_paper: f64,
    /// The NNLS multiplier (exact f64 value used), 0 if NNLS was not run or excluded it.
    pub lambda_nnls: f64,
}

/// Certified approximate-KKT bounds of problem (P) at `θ̃ = θ / q_lo^{1/L}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KktCertificate {
    /// Homogeneity degree `L`.
    pub degree: u32,
    /// The loss defining the paper's multipliers.
    pub loss: KktLoss,
    /// The certified lower bound on `q_min` the rescaling uses (given by the caller).
    pub q_lo: f64,
    /// Lower bound on `q_min` certified here from the forward enclosures of every example.
    pub q_min_lower: f64,
    /// Upper bound on `q_min` certified here.
    pub q_min_upper: f64,
    /// True when `q_lo ≤ q_min_lower`, i.e. the feasibility of `θ̃` is certified by this
    /// run alone (otherwise it rests on the caller's bound).
    pub q_lo_verified: bool,
    /// `ρ = ‖θ‖₂` (f64 estimate).
    pub rho_estimate: f64,
    /// Number of constraints of (P).
    pub constraints: usize,
    /// Number of active constraints (candidate nonzero multipliers).
    pub active: usize,
    /// The relative weight cutoff used.
    pub cutoff: f64,
    /// The cap on active constraints used.
    pub max_active: usize,
    /// Estimate of the fraction of total loss weight outside the active set.
    pub dropped_weight_fraction_estimate: f64,
    /// `κ`: the paper multipliers are `λ_c = κ w_c` (exact reals) on the active set.
    pub paper_scale: f64,
    /// Estimate of `β = ⟨θ/ρ, −∇Loss⟩ / ‖∇Loss‖` (over the active set).
    pub beta_estimate: f64,
    /// Estimate `sqrt(2(1−β)) / γ̄^{1/L}`, `γ̄ = q_min/ρ^L`: the paper's identity for the
    /// paper multipliers' `ε` (consistency check, not a bound); `None` when the midpoint
    /// estimate of `q_min` is not positive.
    pub epsilon_identity_estimate: Option<f64>,
    /// Bounds for the paper's multipliers.
    pub paper: MultiplierBounds,
    /// Bounds for the NNLS multipliers, when computed.
    pub nnls: Option<MultiplierBounds>,
    /// Number of constraints the NNLS optimised over (the highest weights that fit memory).
    pub nnls_considered: usize,
    /// Nonsmooth points met by the backward passes (summed over constraints).
    pub kinks: KinkStats,
    /// Euler identity check on the highest-weight active constraints.
    pub euler: EulerCheck,
    /// The active constraints with their multipliers, highest weight first.
    pub multipliers: Vec<ActiveMultiplier>,
}

impl KktCertificate {
    /// A human-readable summary (one quantity per line), bounds labelled as bounds and
    /// estimates as estimates.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "KKT of (P) at theta~ = theta / q_lo^(1/L), L = {}, q_lo = {:e}\n  ({}; certified q_min in [{:e}, {:e}])",
            self.degree,
            self.q_lo,
            if self.q_lo_verified {
                "verified here"
            } else {
                "caller's bound"
            },
            self.q_min_lower,
            self.q_min_upper
        );
        let _ = writeln!(
            s,
            "  active constraints: {} of {} (relative weight cutoff {:e}, cap {}; dropped weight fraction ~ {:.3e})",
            self.active,
            self.constraints,
            self.cutoff,
            self.max_active,
            self.dropped_weight_fraction_estimate
        );
        let _ = writeln!(
            s,
            "  paper multipliers: epsilon <= {:.6e}, delta <= {:.6e} (estimates: beta ~ {:.9}, epsilon ~ {:.6e}, identity sqrt(2(1-beta))/gamma^(1/L) ~ {})",
            self.paper.epsilon_upper,
            self.paper.delta_upper,
            self.beta_estimate,
            self.paper.epsilon_estimate,
            self.epsilon_identity_estimate
                .map_or("n/a".to_string(), |v| format!("{v:.6e}"))
        );
        match &self.nnls {
            Some(n) => {
                let _ = writeln!(
                    s,
                    "  NNLS multipliers ({} considered, {} positive): epsilon <= {:.6e}, delta <= {:.6e}",
                    self.nnls_considered, n.positive, n.epsilon_upper, n.delta_upper
                );
            }
            None => {
                let _ = writeln!(s, "  NNLS multipliers: not computed");
            }
        }
        let _ = writeln!(
            s,
            "  Euler identity <grad q, theta> = L q: {} of {} samples consistent{}",
            self.euler.samples.iter().filter(|e| e.overlap).count(),
            self.euler.samples.len(),
            if self.euler.all_overlap {
                ""
            } else {
                " -- FAILED"
            }
        );
        let _ = writeln!(
            s,
            "  nonsmooth points met: {} ReLU units, {} max-pool windows",
            self.kinks.ambiguous_units, self.kinks.ambiguous_pools
        );
        s
    }
}

/// Every constraint of (P) for `data` on a model with `outputs` outputs, example-major.
pub fn constraints(data: &Dataset, outputs: usize) -> Result<Vec<Constraint>> {
    let mut out = Vec::new();
    if outputs == 1 {
        if data.classes != 2 {
            return Err(Error::Invalid(format!(
                "a one-output model needs a binary dataset (labels 1/0), {} has {} classes",
                data.name, data.classes
            )));
        }
        for (example, &l) in data.labels.iter().enumerate() {
            out.push(Constraint::Binary {
                example,
                positive: l == 1,
            });
        }
    } else {
        if data.classes != outputs {
            return Err(Error::Invalid(format!(
                "the model has {outputs} outputs, the dataset {} has {} classes",
                data.name, data.classes
            )));
        }
        for (example, &l) in data.labels.iter().enumerate() {
            for other in (0..outputs).filter(|&j| j != l as usize) {
                out.push(Constraint::Pair {
                    example,
                    label: l as usize,
                    other,
                });
            }
        }
    }
    Ok(out)
}

/// Log of the (unnormalised) loss weight `−ℓ'` of each constraint, from margin estimates
/// `est` (same order as `cons`).
fn log_weights(cons: &[Constraint], est: &[f64], loss: KktLoss) -> Vec<f64> {
    let mut lw = vec![0.0; cons.len()];
    match loss {
        KktLoss::Exponential => {
            for (l, &s) in lw.iter_mut().zip(est) {
                *l = -s;
            }
        }
        KktLoss::Logistic | KktLoss::CrossEntropy => {
            // group the constraints of each example (they are contiguous).
            let mut i = 0;
            while i < cons.len() {
                let ex = cons[i].example();
                let mut j = i;
                while j < cons.len() && cons[j].example() == ex {
                    j += 1;
                }
                // LSE_k(−s_k)
                let mx = est[i..j].iter().fold(f64::NEG_INFINITY, |a, &s| a.max(-s));
                let lse = mx + est[i..j].iter().map(|&s| (-s - mx).exp()).sum::<f64>().ln();
                let norm = softplus(lse);
                for k in i..j {
                    lw[k] = -est[k] - norm;
                }
                i = j;
            }
        }
    }
    lw
}

/// `[lo, hi]` as an inari interval (both finite, `lo ≤ hi`).
fn iv(lo: f64, hi: f64) -> Result<Interval> {
    Interval::try_from((lo, hi))
        .map_err(|_| Error::Certify(format!("invalid interval [{lo}, {hi}]")))
}

fn pt(x: f64) -> Result<Interval> {
    iv(x, x)
}

/// Certified `ε ≥ sup ‖A θ − C v‖₂` over `v ∈ sum` (a ball vector over the parameters),
/// `A ∋ a`, `C ∋ c` intervals; returns (bound, f64 estimate with the midpoints).
fn epsilon_bound(params: &Params, sum: &BallVec, a: Interval, c: Interval) -> Result<(f64, f64)> {
    let n = sum.len();
    let theta: Vec<f64> = params.values().map(|&v| v as f64).collect();
    let (am, cm) = (a.mid(), c.mid());
    let (s_hat, est) = theta
        .par_iter()
        .zip(sum.mid.par_iter().zip(sum.rad.par_iter()))
        .map(|(&t, (&m, &r))| -> Result<(f64, f64)> {
            let v = iv(down(m - r), up(m + r))?;
            let d = a * pt(t)? - c * v;
            let mag = d.mag();
            let e = am * t - cm * m;
            Ok((mag * mag, e * e))
        })
        .try_reduce(|| (0.0, 0.0), |x, y| Ok((x.0 + y.0, x.1 + y.1)))?;
    // exact Σ mag² ≤ (ŝ + nη)(1 + 2γ_{n+5}) (Lemma B1 for non-negative single products).
    let k = RadConst::new(n)?;
    let bound = up(up(s_hat + k.n_eta) * k.one_plus_2g);
    let eps = up(bound.sqrt());
    if !eps.is_finite() {
        return Err(Error::Certify("the epsilon bound overflowed f64".into()));
    }
    Ok((eps, est.sqrt()))
}

/// Certified `δ ≥ max(0, max_c σ μ_c (hi_c / q_lo − 1))`.
fn delta_bound(sigma: Interval, mu: &[f64], hi: &[f64], q_lo: Interval) -> Result<f64> {
    let one = pt(1.0)?;
    let mut d = 0.0f64;
    for (&m, &h) in mu.iter().zip(hi) {
        if m == 0.0 {
            continue;
        }
        let v = sigma * pt(m)? * (pt(h)? / q_lo - one);
        if v.is_empty() || !v.sup().is_finite() {
            return Err(Error::Certify("the delta bound overflowed f64".into()));
        }
        d = d.max(v.sup());
    }
    Ok(d)
}

/// One item of a backward pass: a constraint, its multiplier and what to keep.
#[derive(Clone, Copy, Debug)]
struct Item {
    c: Constraint,
    mu: f64,
    keep_mid: bool,
    euler: bool,
}

/// What a pass over constraints returns.
struct PassOut {
    /// Certified enclosure of `Σ μ_c ∇q_c(θ)`.
    sum: BallVec,
    /// Nonsmooth points met.
    kinks: KinkStats,
    /// Midpoint gradients of items with `keep_mid`, by item index.
    kept: Vec<(usize, Vec<f64>)>,
    /// `(item index, dot enclosure)` for items with `euler`.
    euler: Vec<(usize, (f64, f64))>,
}

/// Runs certified backward passes over `items`, grouped by example.
fn run_pass(
    net: &CertifiedNet,
    bw: &Backward,
    params: &Params,
    data: &Dataset,
    items: &[Item],
    batch: usize,
) -> Result<PassOut> {
    let n = bw.n_params();
    let mut sum = GradSum::new(n);
    let mut kinks = KinkStats::default();
    let mut kept = Vec::new();
    let mut euler = Vec::new();
    let mut examples: Vec<usize> = items.iter().map(|it| it.c.example()).collect();
    examples.sort_unstable();
    examples.dedup();
    let il = data.shape.len();
    let par = 2 * rayon::current_num_threads().max(1);
    for chunk in examples.chunks(batch.max(1)) {
        let mut pixels = Vec::with_capacity(chunk.len() * il);
        for &e in chunk {
            pixels.extend_from_slice(data.image(e));
        }
        let acts = net.forward(&pixels, chunk.len())?;
        let todo: Vec<(usize, usize)> = items
            .iter()
            .enumerate()
            .filter_map(|(k, it)| chunk.binary_search(&it.c.example()).ok().map(|b| (k, b)))
            .collect();
        for group in todo.chunks(par) {
            let grads: Vec<Result<_>> = group
                .par_iter()
                .map(|&(k, b)| {
                    let adj = items[k].c.adjoint(bw.outputs())?;
                    bw.gradient(&acts, chunk.len(), b, &adj)
                })
                .collect();
            for (&(k, _), g) in group.iter().zip(grads) {
                let g = g?;
                kinks.ambiguous_units += g.kinks.ambiguous_units;
                kinks.ambiguous_pools += g.kinks.ambiguous_pools;
                if items[k].euler {
                    euler.push((k, dot_with_params(&g.grad, params)?));
                }
                sum.add(items[k].mu, &g.grad)?;
                if items[k].keep_mid {
                    kept.push((k, g.grad.mid));
                }
            }
        }
    }
    Ok(PassOut {
        sum: sum.finish()?,
        kinks,
        kept,
        euler,
    })
}

/// The homogeneity degree or a clear refusal.
fn degree(spec: &ModelSpec) -> Result<u32> {
    let h = spec.homogeneity();
    h.degree.ok_or_else(|| {
        Error::Certify(format!(
            "the KKT conditions of (P) and the Euler identity need a homogeneous network: {}",
            h.reasons.last().cloned().unwrap_or_default()
        ))
    })
}

fn check_data(spec: &ModelSpec, data: &Dataset) -> Result<()> {
    if data.shape != spec.input {
        return Err(Error::Shape(format!(
            "the dataset {} has examples of shape {}, the model wants {}",
            data.name, data.shape, spec.input
        )));
    }
    if data.is_empty() {
        return Err(Error::Invalid(format!(
            "the dataset {} is empty",
            data.name
        )));
    }
    Ok(())
}

/// Certified enclosures of each constraint's value `q_c(θ)`, same order as `cons`.
fn margins(
    net: &CertifiedNet,
    data: &Dataset,
    cons: &[Constraint],
    logits: Option<&BallVec>,
) -> Result<Vec<(f64, f64, f64)>> {
    let k = net.outputs();
    let owned;
    let logits = match logits {
        Some(l) => {
            if l.mid.len() != data.len() * k || l.rad.len() != data.len() * k {
                return Err(Error::Shape(format!(
                    "logit enclosure of {} values for {} examples x {k} outputs",
                    l.mid.len(),
                    data.len()
                )));
            }
            l
        }
        None => {
            owned = net.logits(&data.pixels, data.len())?;
            &owned
        }
    };
    cons.iter()
        .map(|c| {
            let e = c.example();
            let (m, r) = (
                &logits.mid[e * k..(e + 1) * k],
                &logits.rad[e * k..(e + 1) * k],
            );
            let (lo, hi) = c.value_enclosure(m, r)?;
            let adj = c.adjoint(k)?;
            let est: f64 = adj.iter().zip(m).map(|(a, b)| a * b).sum();
            Ok((lo, hi, est))
        })
        .collect()
}

/// Checks the Euler identity `⟨h, θ⟩ = L q_c(θ)` for the given constraints: the certified
/// enclosure of `⟨h, θ⟩` over the gradient box must meet the certified enclosure of
/// `L q_c(θ)`. Errors on a non-homogeneous net.
pub fn euler_check(
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
    cons: &[Constraint],
) -> Result<EulerCheck> {
    let l = degree(spec)?;
    check_data(spec, data)?;
    let net = CertifiedNet::new(spec, params)?;
    let bw = Backward::new(spec, params)?;
    let items: Vec<Item> = cons
        .iter()
        .map(|&c| Item {
            c,
            mu: 0.0,
            keep_mid: false,
            euler: true,
        })
        .collect();
    for c in cons {
        if c.example() >= data.len() {
            return Err(Error::Invalid(format!(
                "constraint on example {} of a dataset of {}",
                c.example(),
                data.len()
            )));
        }
    }
    let vals = margins(&net, data, cons, None)?;
    let out = run_pass(&net, &bw, params, data, &items, 32)?;
    euler_samples(l, &items, &vals, &out.euler)
}

fn euler_samples(
    l: u32,
    items: &[Item],
    vals: &[(f64, f64, f64)],
    dots: &[(usize, (f64, f64))],
) -> Result<EulerCheck> {
    let lf = l as f64;
    let mut samples = Vec::new();
    for &(k, (dlo, dhi)) in dots {
        let (lo, hi, _) = vals[k];
        let lq = pt(lf)? * iv(lo, hi)?;
        let overlap = dlo <= lq.sup() && lq.inf() <= dhi;
        samples.push(EulerSample {
            constraint: items[k].c,
            dot_lower: dlo,
            dot_upper: dhi,
            lq_lower: lq.inf(),
            lq_upper: lq.sup(),
            overlap,
        });
    }
    Ok(EulerCheck {
        degree: l,
        all_overlap: samples.iter().all(|s| s.overlap),
        samples,
    })
}

/// Certifies `(ε, δ)`-KKT bounds of problem (P) at `θ̃ = θ / q_lo^{1/L}` for the paper's
/// multipliers and (optionally) NNLS multipliers.
///
/// `q_lo` must be a certified lower bound on `q_min` (e.g. from the margin certificate):
/// it makes `θ̃` feasible. It is checked against the bounds computed here: a `q_lo` above
/// a certified upper bound of some margin is an error; `q_lo_verified` says whether it is
/// below this run's own certified lower bound.
///
/// Errors: non-homogeneous spec, shape mismatches, `q_lo` not finite and positive, bad
/// options, or f64 overflow in the enclosures.
pub fn certify_kkt(
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
    opts: &KktOptions,
    q_lo: f64,
) -> Result<KktCertificate> {
    certify_kkt_with_logits(spec, params, data, opts, q_lo, None)
}

/// [`certify_kkt`] reusing a certified logit enclosure of the whole dataset (`[N, outputs]`,
/// batch-major, as returned by [`super::enclosure::logit_enclosures`] on `data.pixels`), so
/// the margin certificate's forward pass is not repeated. `None` computes it.
pub fn certify_kkt_with_logits(
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
    opts: &KktOptions,
    q_lo: f64,
    logits: Option<&BallVec>,
) -> Result<KktCertificate> {
    let l = degree(spec)?;
    check_data(spec, data)?;
    if !(q_lo.is_finite() && q_lo > 0.0) {
        return Err(Error::Certify(format!(
            "q_lo = {q_lo}: the KKT rescaling needs a finite positive lower bound on q_min \
             (the data must be separated with a certified positive margin)"
        )));
    }
    if !(opts.cutoff > 0.0 && opts.cutoff <= 1.0)
        || opts.max_active == 0
        || opts.batch == 0
        || !(opts.nnls_delta_weight >= 0.0 && opts.nnls_delta_weight.is_finite())
    {
        return Err(Error::Invalid(format!(
            "KKT options: cutoff must be in (0, 1] (got {}), max_active and batch at least 1, \
             nnls_delta_weight finite and >= 0 (got {})",
            opts.cutoff, opts.nnls_delta_weight
        )));
    }
    let net = CertifiedNet::new(spec, params)?;
    let bw = Backward::new(spec, params)?;
    let cons = constraints(data, net.outputs())?;
    let vals = margins(&net, data, &cons, logits)?;
    let q_min_lower = vals.iter().fold(f64::INFINITY, |a, v| a.min(v.0));
    let q_min_upper = vals.iter().fold(f64::INFINITY, |a, v| a.min(v.1));
    if q_lo > q_min_upper {
        return Err(Error::Certify(format!(
            "q_lo = {q_lo} is above the certified upper bound {q_min_upper} of q_min: it is not \
             a lower bound on the minimum margin"
        )));
    }
    let est: Vec<f64> = vals.iter().map(|v| v.2).collect();
    let q_min_est = est.iter().fold(f64::INFINITY, |a, &b| a.min(b));
    let lw = log_weights(&cons, &est, opts.loss);
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
    let n = bw.n_params();
    let nnls_m = if opts.nnls {
        active.len().min(opts.nnls_memory_bytes / (8 * n.max(1)))
    } else {
        0
    };
    let items: Vec<Item> = active
        .iter()
        .enumerate()
        .map(|(k, &c)| Item {
            c: cons[c],
            mu: weights[k],
            keep_mid: k < nnls_m,
            euler: k < opts.euler_samples,
        })
        .collect();
    // Pass 1: certified Σ w_c ∇q_c(θ) (the paper multipliers are κ w_c).
    let out = run_pass(&net, &bw, params, data, &items, opts.batch)?;
    let active_vals: Vec<(f64, f64, f64)> = active.iter().map(|&c| vals[c]).collect();
    let euler = euler_samples(l, &items, &active_vals, &out.euler)?;

    let theta: Vec<f64> = params.values().map(|&v| v as f64).collect();
    let rho = theta.iter().map(|t| t * t).sum::<f64>().sqrt();
    let v = &out.sum.mid;
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
    let eps_identity = Some((2.0 * (1.0 - beta).max(0.0)).sqrt() * rho / q_min_est.powf(1.0 / lf))
        .filter(|v| v.is_finite());

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
    let his: Vec<f64> = active_vals.iter().map(|v| v.1).collect();
    let kappa_iv = pt(kappa)?;
    let (eps_p, eps_p_est) = epsilon_bound(params, &out.sum, a, a_l1 * kappa_iv)?;
    let delta_p = delta_bound(kappa_iv, &weights, &his, q_iv)?;
    let paper = MultiplierBounds {
        epsilon_upper: eps_p,
        delta_upper: delta_p,
        epsilon_estimate: eps_p_est,
        positive: weights.len(),
        lambda_sum_estimate: kappa * weights.iter().sum::<f64>(),
    };

    // NNLS multipliers on the first nnls_m active constraints.
    let mut lambda_nnls = vec![0.0; active.len()];
    let nnls = if nnls_m > 0 {
        let mut cols: Vec<(usize, Vec<f64>)> = out.kept;
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
            run_pass(&net, &bw, params, data, &items2, opts.batch)?.sum
        };
        let (eps_n, eps_n_est) = epsilon_bound(params, &sum, a, a_l1)?;
        let delta_n = delta_bound(pt(1.0)?, &lambda_nnls, &his, q_iv)?;
        Some(MultiplierBounds {
            epsilon_upper: eps_n,
            delta_upper: delta_n,
            epsilon_estimate: eps_n_est,
            positive: items2.len(),
            lambda_sum_estimate: lambda_nnls.iter().sum(),
        })
    } else {
        None
    };

    let multipliers = active
        .iter()
        .enumerate()
        .map(|(k, &c)| ActiveMultiplier {
            constraint: cons[c],
            margin_lower: vals[c].0,
            margin_upper: vals[c].1,
            weight: weights[k],
            lambda_paper: kappa * weights[k],
            lambda_nnls: lambda_nnls[k],
        })
        .collect();
    Ok(KktCertificate {
        degree: l,
        loss: opts.loss,
        q_lo,
        q_min_lower,
        q_min_upper,
        q_lo_verified: q_lo <= q_min_lower,
        rho_estimate: rho,
        constraints: cons.len(),
        active: active.len(),
        cutoff: opts.cutoff,
        max_active: opts.max_active,
        dropped_weight_fraction_estimate: dropped,
        paper_scale: kappa,
        beta_estimate: beta,
        epsilon_identity_estimate: eps_identity,
        paper,
        nnls,
        nnls_considered: nnls_m,
        kinks: out.kinks,
        euler,
        multipliers,
    })
}

/// Non-negative least squares on the normal equations (Lawson–Hanson active set):
/// minimises `½ xᵀ K x − bᵀ x` over `x ≥ 0`, i.e. `‖t − G x‖²` with `K = GᵀG`, `b = Gᵀt`.
/// `k` is the symmetric `m × m` Gram matrix, row-major. Plain f64: the result is only a
/// choice of multipliers, certified afterwards. Stops after `max_iter` outer iterations.
pub fn nnls_gram(k: &[f64], b: &[f64], m: usize, max_iter: usize) -> Vec<f64> {
    let mut x = vec![0.0; m];
    if m == 0 {
        return x;
    }
    let mut passive = vec![false; m];
    let scale = b.iter().fold(0.0f64, |a, v| a.max(v.abs()))
        + (0..m).fold(0.0f64, |a, i| a.max(k[i * m + i]));
    let tol = 1e-13 * scale.max(f64::MIN_POSITIVE);
    for _ in 0..max_iter {
        let w: Vec<f64> = (0..m)
            .map(|i| b[i] - (0..m).map(|j| k[i * m + j] * x[j]).sum::<f64>())
            .collect();
        let cand = (0..m)
            .filter(|&i| !passive[i])
            .max_by(|&i, &j| w[i].total_cmp(&w[j]));
        let Some(j) = cand else { break };
        if w[j] <= tol {
            break;
        }
        passive[j] = true;
        for _ in 0..=m {
            let p: Vec<usize> = (0..m).filter(|&i| passive[i]).collect();
            if p.is_empty() {
                break;
            }
            let z = solve_spd(k, b, m, &p);
            if p.iter().zip(&z).all(|(_, &zi)| zi > 0.0) {
                x.iter_mut().for_each(|v| *v = 0.0);
                for (&i, &zi) in p.iter().zip(&z) {
                    x[i] = zi;
                }
                break;
            }
            let mut alpha = f64::INFINITY;
            for (&i, &zi) in p.iter().zip(&z) {
                if zi <= 0.0 {
                    let d = x[i] - zi;
                    if d > 0.0 {
                        alpha = alpha.min(x[i] / d);
                    } else {
                        alpha = 0.0;
                    }
                }
            }
            let alpha = alpha.clamp(0.0, 1.0);
            for (&i, &zi) in p.iter().zip(&z) {
                x[i] += alpha * (zi - x[i]);
                if x[i] <= 1e-300 || (zi <= 0.0 && x[i] <= tol * 1e-3) {
                    x[i] = 0.0;
                    passive[i] = false;
                }
            }
        }
    }
    x.iter().map(|&v| v.max(0.0)).collect()
}

/// Solves `K_PP z = b_P` by Cholesky, with a small ridge if `K_PP` is not numerically
/// positive definite.
fn solve_spd(k: &[f64], b: &[f64], m: usize, p: &[usize]) -> Vec<f64> {
    let s = p.len();
    let diag_max = p.iter().fold(0.0f64, |a, &i| a.max(k[i * m + i]));
    let mut ridge = 0.0;
    loop {
        let mut l = vec![0.0; s * s];
        let mut ok = true;
        for i in 0..s {
            for j in 0..=i {
                let mut v =
                    k[p[i] * m + p[j]] - (0..j).map(|t| l[i * s + t] * l[j * s + t]).sum::<f64>();
                if i == j {
                    v += ridge;
                    if v <= 0.0 || !v.is_finite() {
                        ok = false;
                        break;
                    }
                    l[i * s + i] = v.sqrt();
                } else {
                    l[i * s + j] = v / l[j * s + j];
                }
            }
            if !ok {
                break;
            }
        }
        if ok {
            let mut y = vec![0.0; s];
            for i in 0..s {
                y[i] = (b[p[i]] - (0..i).map(|t| l[i * s + t] * y[t]).sum::<f64>()) / l[i * s + i];
            }
            let mut z = vec![0.0; s];
            for i in (0..s).rev() {
                z[i] = (y[i] - (i + 1..s).map(|t| l[t * s + i] * z[t]).sum::<f64>()) / l[i * s + i];
            }
            return z;
        }
        ridge = if ridge == 0.0 {
            1e-14 * diag_max.max(f64::MIN_POSITIVE)
        } else {
            ridge * 100.0
        };
        if !ridge.is_finite() || ridge > diag_max.max(1.0) * 1e6 {
            return vec![0.0; s];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nnls_solves_a_small_problem_with_an_active_bound() {
        // G = I (2x2), t = (1, -1): the NNLS solution is (1, 0).
        let k = [1.0, 0.0, 0.0, 1.0];
        let x = nnls_gram(&k, &[1.0, -1.0], 2, 20);
        assert_eq!(x, vec![1.0, 0.0]);
        // G = [[1, 1], [0, 1]] columns g1 = (1, 0), g2 = (1, 1); t = (2, 1) = g1 + g2.
        let k = [1.0, 1.0, 1.0, 2.0];
        let b = [2.0, 3.0];
        let x = nnls_gram(&k, &b, 2, 20);
        assert!(
            (x[0] - 1.0).abs() < 1e-12 && (x[1] - 1.0).abs() < 1e-12,
            "{x:?}"
        );
    }

    #[test]
    fn log_weights_match_cross_entropy_formula() {
        let cons = vec![
            Constraint::Pair {
                example: 0,
                label: 0,
                other: 1,
            },
            Constraint::Pair {
                example: 0,
                label: 0,
                other: 2,
            },
        ];
        let est = [1.0, 2.0];
        let lw = log_weights(&cons, &est, KktLoss::CrossEntropy);
        let den = 1.0 + (-1.0f64).exp() + (-2.0f64).exp();
        assert!((lw[0].exp() - (-1.0f64).exp() / den).abs() < 1e-15);
        assert!((lw[1].exp() - (-2.0f64).exp() / den).abs() < 1e-15);
        let lw = log_weights(&cons, &est, KktLoss::Exponential);
        assert_eq!(lw, vec![-1.0, -2.0]);
    }
}
