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

mod bounds;
mod constraints;
mod euler;
mod multipliers;
mod pass;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use self::bounds::{beta_lower, theta_tilde_norm_lower};
pub use self::constraints::constraints;
use self::constraints::margins;
pub use self::euler::euler_check;
use self::euler::euler_samples;
use self::multipliers::{ActiveSet, NnlsInputs, PaperScale, Rescaling, nnls_bounds, paper_bounds};
use self::pass::run_pass;
use crate::certify::backward::{Backward, Constraint, KinkStats};
use crate::certify::ball::BallVec;
use crate::certify::forward::{CertifiedNet, PreparedNet};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params};

// The loss whose negative gradient defines the paper's multipliers (multi-class exponential:
// one term per pair; cross-entropy: pairwise weights `w_nj = e^{−s_nj} / (1 + Σ_k e^{−s_nk})`;
// on a one-output model cross-entropy is read as the logistic loss).
use crate::loss::LossKind;

/// Options of [`certify_kkt`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KktOptions {
    /// Loss defining the paper's multipliers.
    pub loss: LossKind,
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

/// The default cap on active constraints (`max_active`), the one default of the library,
/// `certify --kkt-active` and `audit`: each active constraint costs one certified backward
/// pass. How `ε` depends on it is measured in docs/REPRODUCTION.md ("KKT: the active-set
/// cap").
pub const DEFAULT_MAX_ACTIVE: usize = 64;

impl Default for KktOptions {
    fn default() -> Self {
        Self {
            loss: LossKind::CrossEntropy,
            max_active: DEFAULT_MAX_ACTIVE,
            cutoff: 1e-12,
            euler_samples: 8,
            batch: 32,
            nnls: true,
            nnls_delta_weight: 1.0,
            nnls_memory_bytes: 1 << 29,
        }
    }
}

/// Certified bounds for one choice of multipliers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultiplierBounds {
    /// Certified: `‖θ̃ − Σ λ_c h_c‖₂ ≤ epsilon_upper` for all `h_c` in the gradient boxes.
    pub epsilon_upper: f64,
    /// Certified: `λ_c (q_c(θ̃) − 1) ≤ delta_upper` for every constraint `c`.
    pub delta_upper: f64,
    /// Certified: `ε/‖θ̃‖₂ ≤ epsilon_relative_upper`, the scale-free `ε` (for the paper
    /// multipliers `√(2(1−β))`; `λ = 0` gives 1, so a value below 1 beats the trivial
    /// multipliers). `‖θ̃‖` grows as the normalized margin shrinks, so the absolute `ε` falls
    /// with normalization alone; this one does not.
    #[serde(with = "crate::certify::bounds::ext_f64")]
    pub epsilon_relative_upper: f64,
    /// Estimate (f64, midpoints): `‖θ̃ − Σ λ_c h_c‖₂`.
    pub epsilon_estimate: f64,
    /// Number of constraints with `λ_c > 0`.
    pub positive: usize,
    /// Estimate of `Σ_c λ_c`.
    pub lambda_sum_estimate: f64,
}

/// One Euler-identity sample: `⟨h, θ⟩` over the gradient box against `L · q_c(θ)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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

/// Which certified bound makes `q_lo ≤ q_min` (the feasibility of `θ̃`) proven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QLoSource {
    /// `q_lo ≤` this pass's own certified lower bound of every constraint.
    ThisPass,
    /// `q_lo` is the caller's certified bound (in a certificate: `margin.q_min.lo`, proved
    /// by the margin pass). This pass's pairwise enclosures are a little wider, so they do
    /// not re-prove it on their own; the feasibility rests on the caller's proof.
    Caller,
}

/// Certified approximate-KKT bounds of problem (P) at `θ̃ = θ / q_lo^{1/L}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KktCertificate {
    /// Homogeneity degree `L`.
    pub degree: u32,
    /// The loss defining the paper's multipliers.
    pub loss: LossKind,
    /// The certified lower bound on `q_min` the rescaling uses (given by the caller).
    pub q_lo: f64,
    /// Lower bound on `q_min` certified here from the forward enclosures of every example.
    pub q_min_lower: f64,
    /// Upper bound on `q_min` certified here.
    pub q_min_upper: f64,
    /// Which certified bound proves `q_lo ≤ q_min`, i.e. that `θ̃` is feasible.
    pub q_lo_source: QLoSource,
    /// Certified lower bound on `‖θ̃‖₂ = ‖θ‖₂ / q_lo^{1/L}` (= `γ̄^{−1/L}` at `q_lo = q_min`).
    pub theta_tilde_norm_lower: f64,
    /// Certified lower bound on `β`, the cosine between `θ` and `Σ_c w_c h_c` (the direction
    /// of `−∇Loss` over the active constraints) for every `h_c` in the gradient boxes, from
    /// the paper multipliers' relative `ε`; `None` when that is not below 1 (nothing proved).
    pub beta_active_lower: Option<f64>,
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

/// The homogeneity degree or a clear refusal.
pub(super) fn degree(spec: &ModelSpec) -> Result<u32> {
    let h = spec.homogeneity();
    h.degree.ok_or_else(|| {
        Error::Certify(format!(
            "the KKT conditions of (P) and the Euler identity need a homogeneous network: {}",
            h.reasons.last().cloned().unwrap_or_default()
        ))
    })
}

/// Checks that `data` fits the model's input and is not empty.
pub(super) fn check_data(spec: &ModelSpec, data: &Dataset) -> Result<()> {
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

/// Checks everything about a KKT request that does not need the parameters: a homogeneous
/// spec (returns its degree `L`), data that fit it, a finite positive `q_lo`, sane options.
fn validate(spec: &ModelSpec, data: &Dataset, opts: &KktOptions, q_lo: f64) -> Result<u32> {
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
    Ok(l)
}

/// Certifies `(ε, δ)`-KKT bounds of problem (P) at `θ̃ = θ / q_lo^{1/L}` for the paper's
/// multipliers and (optionally) NNLS multipliers.
///
/// `q_lo` must be a certified lower bound on `q_min` (e.g. from the margin certificate):
/// it makes `θ̃` feasible. It is checked against the bounds computed here: a `q_lo` above
/// a certified upper bound of some margin is an error; `q_lo_source` says whether it is
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
/// batch-major, as returned by [`super::forward::logit_enclosures`] on `data.pixels`), so
/// the margin certificate's forward pass is not repeated. `None` computes it.
pub fn certify_kkt_with_logits(
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
    opts: &KktOptions,
    q_lo: f64,
    logits: Option<&BallVec>,
) -> Result<KktCertificate> {
    let l = validate(spec, data, opts, q_lo)?;
    let net = Arc::new(PreparedNet::from_spec(spec, params)?);
    certify_validated(&net, l, data, opts, q_lo, logits)
}

/// [`certify_kkt_with_logits`] on an already prepared network (shared with the margin
/// certificate's forward pass instead of prepared again).
pub fn certify_kkt_prepared(
    net: &Arc<PreparedNet>,
    data: &Dataset,
    opts: &KktOptions,
    q_lo: f64,
    logits: Option<&BallVec>,
) -> Result<KktCertificate> {
    let l = validate(net.model().spec(), data, opts, q_lo)?;
    certify_validated(net, l, data, opts, q_lo, logits)
}

/// The KKT certificate of a validated request (`l` the degree), in named steps: constraint
/// values, active set, the first certified pass, the paper multipliers, NNLS.
fn certify_validated(
    prepared: &Arc<PreparedNet>,
    l: u32,
    data: &Dataset,
    opts: &KktOptions,
    q_lo: f64,
    logits: Option<&BallVec>,
) -> Result<KktCertificate> {
    let params = prepared.model().params();
    let net = CertifiedNet::from_prepared(Arc::clone(prepared));
    let bw = Backward::from_prepared(Arc::clone(prepared));
    // Certified values of every constraint; q_lo must not exceed their minimum's upper bound.
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
    // The active set and the items of the first pass.
    let act = ActiveSet::select(&cons, &est, opts);
    let n = bw.n_params();
    let nnls_m = if opts.nnls {
        act.active
            .len()
            .min(opts.nnls_memory_bytes / (8 * n.max(1)))
    } else {
        0
    };
    let items = act.items(&cons, nnls_m, opts.euler_samples);
    // Pass 1: certified Σ w_c ∇q_c(θ) (the paper multipliers are κ w_c).
    let out = run_pass(&net, &bw, params, data, &items, opts.batch)?;
    let active_vals: Vec<(f64, f64, f64)> = act.active.iter().map(|&c| vals[c]).collect();
    let euler = euler_samples(l, &items, &active_vals, &out.euler)?;
    // The paper multipliers.
    let scale = PaperScale::estimate(params, &out.sum.mid, l, q_lo, q_min_est)?;
    let resc = Rescaling::new(l, q_lo)?;
    let his: Vec<f64> = active_vals.iter().map(|v| v.1).collect();
    let tt_lower = theta_tilde_norm_lower(params, resc.a)?;
    let paper = paper_bounds(
        params,
        &out.sum,
        &scale,
        &resc,
        &act.weights,
        &his,
        tt_lower,
    )?;
    // NNLS multipliers on the first nnls_m active constraints.
    let nnls_in = NnlsInputs {
        net: &net,
        bw: &bw,
        params,
        data,
        theta: &scale.theta,
        active_vals: &active_vals,
        his: &his,
        resc,
        q_lo,
        theta_tilde_lower: tt_lower,
    };
    let (nnls, lambda_nnls) = nnls_bounds(&nnls_in, &items, out.kept, nnls_m, l, opts)?;

    let multipliers = act
        .active
        .iter()
        .enumerate()
        .map(|(k, &c)| ActiveMultiplier {
            constraint: cons[c],
            margin_lower: vals[c].0,
            margin_upper: vals[c].1,
            weight: act.weights[k],
            lambda_paper: scale.kappa * act.weights[k],
            lambda_nnls: lambda_nnls[k],
        })
        .collect();
    Ok(KktCertificate {
        degree: l,
        loss: opts.loss,
        q_lo,
        q_min_lower,
        q_min_upper,
        q_lo_source: if q_lo <= q_min_lower {
            QLoSource::ThisPass
        } else {
            QLoSource::Caller
        },
        theta_tilde_norm_lower: tt_lower,
        beta_active_lower: beta_lower(paper.epsilon_relative_upper)?,
        rho_estimate: scale.rho,
        constraints: cons.len(),
        active: act.active.len(),
        cutoff: opts.cutoff,
        max_active: opts.max_active,
        dropped_weight_fraction_estimate: act.dropped,
        paper_scale: scale.kappa,
        beta_estimate: scale.beta,
        epsilon_identity_estimate: scale.eps_identity,
        paper,
        nnls,
        nnls_considered: nnls_m,
        kinks: out.kinks,
        euler,
        multipliers,
    })
}
