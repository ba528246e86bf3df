//! Certified robustness radii from the margin, checked against real attacks.
//!
//! Every certified radius is a claim about the exact real network (stored f32 weights as
//! exact reals, inputs `p / 255`), computed with outward rounding:
//! - L2 ([`lipschitz()`]): `r_n ≥ min_j s_nj / Lip(Φ_y − Φ_j)` with certified upper bounds on
//!   the gap Lipschitz constants (proofs/robust-lipschitz.md). Holds for all real
//!   perturbations (no clipping needed).
//! - L∞ ([`ibp_radius`]): interval bound propagation through the certified forward pass on
//!   the box `[x − ε, x + ε] ∩ [0,1]^d` (clipped to the pixel domain), bisection on ε.
//!
//! [`attack`] gives upper bounds (PGD, verified on the real network). Robustness is over
//! the input domain `[0,1]^d` for L∞; the L2 certificate holds on all of `R^d`, a superset.

pub mod alpha;
pub mod attack;
pub mod crown;
pub mod ibp;
pub mod lipschitz;
pub mod method;
pub mod verify;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::certify::Enclosure;
use crate::certify::ball::{BallVec, input_enclosure};
use crate::certify::bounds::ext_f64;
use crate::certify::certificate::DatasetInfo;
use crate::certify::forward::{CertifiedNet, ForwardMode, PreparedNet};
use crate::certify::margin::{Task, margins};
use crate::certify::round::{down, interval_to_ball, up};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params};
use crate::nn::Network;
pub use attack::{AttackOptions, AttackResult};
pub use lipschitz::{Lipschitz, lipschitz};

/// The norm of a perturbation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// Euclidean.
    L2,
    /// Max-norm.
    Inf,
}

impl std::str::FromStr for Norm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "2" | "l2" | "L2" => Ok(Norm::L2),
            "inf" | "linf" | "Linf" => Ok(Norm::Inf),
            o => Err(Error::Invalid(format!("unknown norm {o:?}: use 2 or inf"))),
        }
    }
}

/// The L∞ input box `[x − ε, x + ε] ∩ [0,1]` around the exact pixels, as a ball enclosing it
/// (endpoints rounded outward).
pub fn linf_box(pixels: &[u8], eps: &[f64], input_len: usize) -> BallVec {
    let e = input_enclosure(pixels);
    let mut mid = Vec::with_capacity(e.len());
    let mut rad = Vec::with_capacity(e.len());
    for i in 0..e.len() {
        let ep = eps[i / input_len.max(1)];
        let lo = down(e.lo(i) - ep).max(0.0);
        let hi = up(e.hi(i) + ep).min(1.0);
        let (m, r) = interval_to_ball(lo, hi.max(lo));
        mid.push(m);
        rad.push(r);
    }
    BallVec { mid, rad }
}

/// Certified L∞ radii by IBP with bisection (`steps` halvings of `[0, eps_max]`): for every
/// returned `r_n > 0`, the certified margin lower bound is `> 0` on the whole box of radius
/// `r_n` clipped to `[0,1]^d`. 0 when not even the clean point is certified ([`ibp`]).
pub fn ibp_radius(
    net: &CertifiedNet,
    data: &Dataset,
    task: Task,
    eps_max: f64,
    steps: usize,
) -> Result<Vec<f64>> {
    ibp::ibp_radius(net, data, task, eps_max, steps)
}

/// Certified L2 radii from the margin: `r_n = min_{j≠y} down(lo(s_nj) / Lip_j)` (0 when some
/// `lo(s_nj) ≤ 0`) ([`ibp::lipschitz_radius`]).
pub fn lipschitz_radius(logits: &BallVec, lip: &Lipschitz, data: &Dataset, task: Task) -> Vec<f64> {
    ibp::lipschitz_radius(logits, lip, data, task)
}

/// Per-example result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleRadii {
    /// Index in the dataset.
    pub index: usize,
    /// Label.
    pub label: u8,
    /// Certified margin enclosure of the clean example `[lo, hi]`.
    pub margin: [f64; 2],
    /// Certified lower bound on the radius (L2: Lipschitz; L∞: IBP).
    #[serde(with = "ext_f64")]
    pub certified: f64,
    /// Certified L2 lower bound from the minimum margin alone: `lo(q_min)`-style uniform
    /// bound `lo(q_n)/(√2·Lip)` (L2 runs only; 0 otherwise).
    #[serde(with = "ext_f64")]
    pub margin_only: f64,
    /// L∞ only: certified lower bound by bisection on the `max(IBP, CROWN)` margin bound
    /// (MLPs and CNNs; `None` when not computed, e.g. a LeakyReLU slope above 1).
    #[serde(default)]
    pub crown: Option<f64>,
    /// Upper bound from a verified adversarial point (`inf` when the attack found none).
    #[serde(with = "ext_f64")]
    pub attack: f64,
}

/// Robust accuracy at each ε: certified (lower bound on the true robust accuracy) and
/// empirical (upper bound).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Curve {
    /// ε grid.
    pub eps: Vec<f64>,
    /// Fraction of examples with certified radius `> ε`.
    pub certified: Vec<f64>,
    /// Fraction with attack radius `> ε`.
    pub empirical: Vec<f64>,
}

/// The version of the robustness report schema this margincert writes and reads
/// ([`RobustReport::from_json`]); 1 is the first verifiable one.
pub const ROBUST_SCHEMA_VERSION: u32 = 1;

/// The report of one robustness run: a certificate of robustness radii that
/// [`verify::verify`] re-checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobustReport {
    /// The schema version, [`ROBUST_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The dataset (its examples, in order, are `examples`).
    pub dataset: DatasetInfo,
    /// SHA-256 of the model file (filled by the CLI; `verify` refuses a report without it).
    pub checkpoint_sha256: Option<String>,
    /// Norm.
    pub norm: Norm,
    /// Largest ε searched.
    pub eps_max: f64,
    /// Bisection steps on the radius (certified and attack).
    pub steps: usize,
    /// The attack's settings (its `bisection` is `steps`).
    pub attack: AttackOptions,
    /// The arithmetic of the clean margins' certified pass (an audit reuses its
    /// certificate's, `auto` by default; `robust` uses binary64).
    pub forward: ForwardMode,
    /// Certified upper bound on the network's L2 Lipschitz constant.
    #[serde(with = "ext_f64")]
    pub lipschitz: f64,
    /// Per example.
    pub examples: Vec<ExampleRadii>,
    /// Robust accuracy curves.
    pub curve: Curve,
    /// Number of examples whose certified radius exceeds the attack radius (must be 0).
    pub violations: usize,
}

impl RobustReport {
    /// The options the report was computed with.
    pub fn options(&self) -> RobustOptions {
        RobustOptions {
            norm: self.norm,
            eps_max: self.eps_max,
            steps: self.steps,
            attack: self.attack,
        }
    }
}

/// Options of [`run`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RobustOptions {
    /// Norm.
    pub norm: Norm,
    /// Largest ε.
    pub eps_max: f64,
    /// Bisection steps (certified and attack).
    pub steps: usize,
    /// Attack settings.
    pub attack: AttackOptions,
}

/// What the radii of every norm start from, computed once: the prepared network, its certified
/// logits and margins on the data, and the certified Lipschitz bound.
///
/// Invariant: `logits` are certified enclosures of the logits of `prepared` on exactly the
/// examples of `data` (one row per example), `margins[n]` the margin enclosure of row `n`.
pub struct RobustSetup<'a> {
    data: &'a Dataset,
    /// `data`'s description (its SHA-256 computed once), recorded in every report.
    dataset: DatasetInfo,
    forward: ForwardMode,
    prepared: Arc<PreparedNet>,
    net: CertifiedNet,
    task: Task,
    lip: Lipschitz,
    logits: BallVec,
    margins: Vec<Enclosure>,
}

impl<'a> RobustSetup<'a> {
    /// Prepares `(spec, params)` and certifies its logits on `data` in binary64.
    pub fn new(spec: &ModelSpec, params: &Params, data: &'a Dataset) -> Result<Self> {
        Self::with_forward_mode(spec, params, data, ForwardMode::F64)
    }

    /// [`RobustSetup::new`] with the clean logits certified in `forward` arithmetic.
    pub fn with_forward_mode(
        spec: &ModelSpec,
        params: &Params,
        data: &'a Dataset,
        forward: ForwardMode,
    ) -> Result<Self> {
        let prepared = Arc::new(PreparedNet::from_spec(spec, params)?);
        Self::from_prepared(prepared, data, forward)
    }

    /// Certifies the clean logits of exactly `data` on `prepared` in `forward` arithmetic.
    /// A report built this way is reproducible by `verify` from its own data alone (the
    /// midpoints of a certified pass depend on the batch they are computed in, so logits
    /// taken from a larger pass would be sound but not reproducible bit for bit).
    pub fn from_prepared(
        prepared: Arc<PreparedNet>,
        data: &'a Dataset,
        forward: ForwardMode,
    ) -> Result<Self> {
        check_data(prepared.model().spec(), data)?;
        let logits = CertifiedNet::from_prepared(prepared.clone())
            .with_forward_mode(forward)?
            .logits(&data.pixels, data.len())?;
        Self::with_logits(prepared, data, logits, forward)
    }

    /// The setup of `data` on `prepared` from its certified logits (`forward` arithmetic).
    fn with_logits(
        prepared: Arc<PreparedNet>,
        data: &'a Dataset,
        logits: BallVec,
        forward: ForwardMode,
    ) -> Result<Self> {
        let net = CertifiedNet::from_prepared(prepared.clone());
        let task = Task::new(net.outputs(), data.classes)?;
        let lip = lipschitz::lipschitz_of(prepared.model())?;
        let margins = margins(&logits, &data.labels, task)?;
        Ok(Self {
            data,
            dataset: DatasetInfo::of(data),
            forward,
            prepared,
            net,
            task,
            lip,
            logits,
            margins,
        })
    }

    /// Certified and empirical radii of every example, in `opts.norm`.
    pub fn run(&self, opts: &RobustOptions) -> Result<RobustReport> {
        use rayon::prelude::*;
        if !(opts.eps_max.is_finite() && opts.eps_max > 0.0) {
            return Err(Error::Invalid(format!(
                "eps-max must be a positive number, got {}",
                opts.eps_max
            )));
        }
        let (data, net, task, lip) = (self.data, &self.net, self.task, &self.lip);
        let margins = &self.margins;
        let (certified, margin_only) = match opts.norm {
            Norm::L2 => {
                let c = lipschitz_radius(&self.logits, lip, data, task);
                let s2 = up(std::f64::consts::SQRT_2);
                let l = if task == Task::Binary {
                    lip.network
                } else {
                    up(s2 * lip.network)
                };
                let m = margins
                    .iter()
                    .map(|q| if q.lo > 0.0 { down(q.lo / l) } else { 0.0 })
                    .collect();
                (c, m)
            }
            Norm::Inf => (
                ibp_radius(net, data, task, opts.eps_max, opts.steps)?,
                vec![0.0; data.len()],
            ),
        };
        let crown_r = match (opts.norm, crown::Crown::from_prepared(&self.prepared)) {
            (Norm::Inf, Ok(c)) => Some(crown::crown_radius(
                &c,
                net,
                data,
                task,
                opts.eps_max,
                opts.steps,
            )?),
            _ => None,
        };
        let model = self.prepared.model();
        let f32net = Network::from_model(model);
        let aopts = AttackOptions {
            bisection: opts.steps,
            ..opts.attack
        };
        let attacks: Vec<Result<AttackResult>> = (0..data.len())
            .into_par_iter()
            .map(|n| {
                attack::attack(
                    &f32net,
                    model.params(),
                    net,
                    data.image(n),
                    data.labels[n],
                    task,
                    opts.norm,
                    opts.eps_max,
                    &aopts,
                )
            })
            .collect();
        let mut examples = Vec::with_capacity(data.len());
        for (n, a) in attacks.into_iter().enumerate() {
            examples.push(ExampleRadii {
                index: n,
                label: data.labels[n],
                margin: [margins[n].lo, margins[n].hi],
                certified: certified[n],
                margin_only: margin_only[n],
                crown: crown_r.as_ref().map(|r| r[n]),
                attack: a?.radius,
            });
        }
        let violations = examples
            .iter()
            .filter(|e| e.certified > e.attack || e.crown.is_some_and(|c| c > e.attack))
            .count();
        let curve = curve(&examples, opts.eps_max, 21);
        Ok(RobustReport {
            schema_version: ROBUST_SCHEMA_VERSION,
            dataset: self.dataset.clone(),
            checkpoint_sha256: None,
            norm: opts.norm,
            eps_max: opts.eps_max,
            steps: opts.steps,
            attack: aopts,
            forward: self.forward,
            lipschitz: lip.network,
            examples,
            curve,
            violations,
        })
    }
}

/// The data must have the model's input shape.
fn check_data(spec: &ModelSpec, data: &Dataset) -> Result<()> {
    if data.shape != spec.input {
        return Err(Error::Shape(format!(
            "the data has shape {:?}, the model input {:?}",
            data.shape, spec.input
        )));
    }
    Ok(())
}

/// Certified and empirical radii of every example of `data` ([`RobustSetup::run`]).
pub fn run(
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
    opts: &RobustOptions,
) -> Result<RobustReport> {
    RobustSetup::new(spec, params, data)?.run(opts)
}

/// Robust accuracy curves on `points` evenly spaced ε in `[0, eps_max]`.
pub fn curve(ex: &[ExampleRadii], eps_max: f64, points: usize) -> Curve {
    let n = ex.len().max(1) as f64;
    let eps: Vec<f64> = (0..points)
        .map(|i| eps_max * i as f64 / (points.max(2) - 1) as f64)
        .collect();
    let frac = |f: &dyn Fn(&ExampleRadii) -> f64, e: f64| {
        ex.iter().filter(|x| f(x) > e).count() as f64 / n
    };
    Curve {
        certified: eps.iter().map(|&e| frac(&|x| x.certified, e)).collect(),
        empirical: eps.iter().map(|&e| frac(&|x| x.attack, e)).collect(),
        eps,
    }
}

/// Median of the finite values (`None` when there are none).
pub fn median(v: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = v.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}
