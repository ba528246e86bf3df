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
use crate::certify::certificate::DatasetInfo;
use crate::certify::forward::{CertifiedNet, ForwardMode, PreparedNet};
use crate::certify::margin::{Task, margins};
use crate::certify::round::{down, interval_to_ball, up};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params};
use crate::nn::Network;
pub use attack::{AttackKind, AttackOptions, AttackResult};
pub use ibp::ibp_radius;
pub use lipschitz::{Lipschitz, lipschitz};
pub use method::Method;

/// The norm of a perturbation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    /// Euclidean.
    L2,
    /// Max-norm.
    Inf,
}

impl Norm {
    /// The largest radius searched when none is given: 3.0 in L2 (pixels `p/255`: about
    /// the distance of a clearly different digit), 0.3 in L∞.
    pub fn default_eps_max(self) -> f64 {
        match self {
            Norm::L2 => 3.0,
            Norm::Inf => 0.3,
        }
    }
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

/// Certified L2 radii from the margin: `r_n = min_{j≠y} down(lo(s_nj) / Lip_j)` (0 when some
/// `lo(s_nj) ≤ 0`) ([`ibp::lipschitz_radius`]).
pub fn lipschitz_radius(logits: &BallVec, lip: &Lipschitz, data: &Dataset, task: Task) -> Vec<f64> {
    ibp::lipschitz_radius(logits, lip, data, task)
}

/// Serde of a radius or bound whose `+inf` means "none known": `+inf` is written as `null`
/// and `null` read back as `+inf`, so that the JSON holds numbers and nulls only (no strings
/// for infinities). Refuses NaN and `-inf` both ways.
pub mod inf_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Finite values as numbers, `+inf` as `null`; NaN and `-inf` are errors.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if *v == f64::INFINITY {
            s.serialize_none()
        } else {
            Err(serde::ser::Error::custom(format!("not a radius: {v}")))
        }
    }

    /// Inverse of [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

/// The method that proved a certified radius.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RadiusMethod {
    /// L∞: interval bound propagation ([`ibp_radius`]).
    Ibp,
    /// L∞: CROWN back-substitution with IBP intermediate bounds, the margin bound
    /// `max(IBP, CROWN)` bisected ([`crown::crown_radius`]).
    Crown,
    /// L2: the margin's class gaps over certified global Lipschitz bounds of the gaps
    /// ([`lipschitz_radius`]).
    GlobalLipschitz,
    /// L2: the margin alone over `√2·Lip` of the network.
    MarginOnly,
}

impl RadiusMethod {
    /// Every method, in the order that breaks ties (the first of the largest radii wins).
    /// CROWN comes last: its L2 bisection starts from the global Lipschitz radius, so on a
    /// tie the cheaper method that already proved the radius is named.
    pub const ALL: [RadiusMethod; 4] = [
        RadiusMethod::Ibp,
        RadiusMethod::GlobalLipschitz,
        RadiusMethod::MarginOnly,
        RadiusMethod::Crown,
    ];

    /// The name used in JSON, tables and legends.
    pub fn name(self) -> &'static str {
        match self {
            RadiusMethod::Ibp => "ibp",
            RadiusMethod::Crown => "crown",
            RadiusMethod::GlobalLipschitz => "global_lipschitz",
            RadiusMethod::MarginOnly => "margin_only",
        }
    }
}

/// Per-example result. Certified radii are capped at the report's `eps_max` (a radius of at
/// least `eps_max` reads `eps_max`: still a lower bound), so they are finite numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleRadii {
    /// Index in the dataset.
    pub index: usize,
    /// Label.
    pub label: u8,
    /// Certified margin enclosure of the clean example `[lo, hi]`.
    pub margin: [f64; 2],
    /// The certified lower bound on the radius: the best (largest) of the methods run, the
    /// one every curve, table, median and gate uses. 0 when not even the clean point is
    /// certified.
    pub certified: f64,
    /// The method whose radius is `certified` (the first of [`RadiusMethod::ALL`] on ties).
    pub method: RadiusMethod,
    /// L∞ only: the IBP radius (`None` for L2).
    pub ibp: Option<f64>,
    /// The bisection on the CROWN (or alpha-CROWN, by the report's `relaxation`) margin
    /// bound: L∞ over the clipped box, L2 over the ball and never below `global_lipschitz`
    /// (`None` when not run or not applicable, e.g. a LeakyReLU slope above 1).
    pub crown: Option<f64>,
    /// L2 only: `min_j lo(s_nj) / Lip_j` over the class gaps (`None` for L∞).
    pub global_lipschitz: Option<f64>,
    /// L2 only: the uniform bound from the margin alone, `lo(q_n)/(√2·Lip)` (0 for L∞).
    pub margin_only: f64,
    /// Upper bound from a verified adversarial point; `+inf` (`null` in JSON) when the
    /// attack found none (within `eps_max` for PGD) or did not run.
    #[serde(with = "inf_as_null")]
    pub attack: f64,
}

impl ExampleRadii {
    /// The radius claimed for `m` (`None` when `m` did not run).
    pub fn radius(&self, m: RadiusMethod) -> Option<f64> {
        match m {
            RadiusMethod::Ibp => self.ibp,
            RadiusMethod::Crown => self.crown,
            RadiusMethod::GlobalLipschitz => self.global_lipschitz,
            RadiusMethod::MarginOnly => self.global_lipschitz.map(|_| self.margin_only),
        }
    }

    /// The best of the claimed method radii and its method (the first of
    /// [`RadiusMethod::ALL`] on ties; `(0, first method run)` when none is positive).
    pub fn best(&self) -> (f64, RadiusMethod) {
        let mut best: Option<(f64, RadiusMethod)> = None;
        for m in RadiusMethod::ALL {
            if let Some(r) = self.radius(m)
                && best.is_none_or(|(b, _)| r > b)
            {
                best = Some((r, m));
            }
        }
        best.unwrap_or((0.0, RadiusMethod::Ibp))
    }
}

/// Robust accuracy against ε: certified (a lower bound on the true robust accuracy, from the
/// best certified radius of every example) and empirical (an upper bound, from the attack).
///
/// The grid follows the radii ([`grid`]): 0, every distinct radius in `(0, eps_max)` to three
/// significant digits (or [`CURVE_POINTS`] quantiles of them when there are more), and
/// `eps_max`; between two grid points the accuracies change only where a radius lies
/// within its rounding (0.5 %) of the upper point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Curve {
    /// ε grid (increasing).
    pub eps: Vec<f64>,
    /// Fraction of examples with certified radius `> ε`.
    pub certified: Vec<f64>,
    /// Fraction with attack radius `> ε`.
    pub empirical: Vec<f64>,
}

/// The version of the robustness report schema this margincert writes and reads
/// ([`RobustReport::from_json`]): 1 was the first verifiable one; 2 reports the best certified
/// radius with its method, the per-method radii, `null` for unknown attack radii and a
/// curve grid that follows the radii; 3 adds the L2 CROWN/alpha radius (`crown` for L2),
/// the recorded `max_unstable` cap, and names the cheaper method on ties.
pub const ROBUST_SCHEMA_VERSION: u32 = 3;

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
    /// Largest ε searched; certified radii are capped at it.
    pub eps_max: f64,
    /// Bisection steps on the radius (certified and PGD): resolution `eps_max / 2^steps`.
    pub steps: usize,
    /// The attack's settings (for PGD its `bisection` is `steps`).
    pub attack: AttackOptions,
    /// The certified bounds run on top of the cheap ones (`robust --method`, [`Method`]).
    pub relaxation: Method,
    /// Full CROWN refines a layer's pre-activations only when it has at most this many
    /// unstable units (`robust --max-unstable`; [`method::DEFAULT_MAX_UNSTABLE`]): the cost
    /// knob of `crown` and `alpha`, a setting `verify` recomputes with.
    pub max_unstable: usize,
    /// The arithmetic of the clean margins' certified pass (an audit reuses its
    /// certificate's, `auto` by default; `robust` uses binary64).
    pub forward: ForwardMode,
    /// Certified upper bound on the network's L2 Lipschitz constant (`null`: overflowed).
    #[serde(with = "inf_as_null")]
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

    /// The best certified radius of every example (what curves, medians and gates use).
    pub fn certified(&self) -> Vec<f64> {
        self.examples.iter().map(|e| e.certified).collect()
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

    /// Certified and empirical radii of every example, in `opts.norm`, with every certified
    /// method ([`Method::Crown`]).
    pub fn run(&self, opts: &RobustOptions) -> Result<RobustReport> {
        self.run_with(opts, Method::Crown)
    }

    /// [`RobustSetup::run`] with the bounds of `relax` on top of the cheap ones (`Ibp`
    /// alone is faster and looser). Every example's `certified` radius is the best of the
    /// methods run.
    pub fn run_with(&self, opts: &RobustOptions, relax: Method) -> Result<RobustReport> {
        self.run_capped(opts, relax, method::DEFAULT_MAX_UNSTABLE)
    }

    /// [`RobustSetup::run_with`] refining only layers with at most `max_unstable` unstable
    /// units ([`RobustReport::max_unstable`]; larger is tighter and slower).
    pub fn run_capped(
        &self,
        opts: &RobustOptions,
        relax: Method,
        max_unstable: usize,
    ) -> Result<RobustReport> {
        use rayon::prelude::*;
        if !(opts.eps_max.is_finite() && opts.eps_max > 0.0) {
            return Err(Error::Invalid(format!(
                "eps-max must be a positive number, got {}",
                opts.eps_max
            )));
        }
        if opts.attack.kind == AttackKind::Cw && opts.norm == Norm::Inf {
            return Err(Error::Invalid(
                "the Carlini-Wagner attack (cw) is an L2 attack: use --attack pgd with --norm inf"
                    .into(),
            ));
        }
        let (data, net, task, lip) = (self.data, &self.net, self.task, &self.lip);
        let margins = &self.margins;
        let cap = |r: f64| r.min(opts.eps_max);
        let n = data.len();
        let (mut ibp, mut global, mut margin_only) = (vec![None; n], vec![None; n], vec![0.0; n]);
        // L2: the global Lipschitz radii, also where CROWN's bisection starts.
        let mut l2_start = None;
        match opts.norm {
            Norm::L2 => {
                let c = lipschitz_radius(&self.logits, lip, data, task);
                let s2 = up(std::f64::consts::SQRT_2);
                let l = if task == Task::Binary {
                    lip.network
                } else {
                    up(s2 * lip.network)
                };
                for (k, q) in margins.iter().enumerate() {
                    global[k] = Some(cap(c[k]));
                    margin_only[k] = cap(if q.lo > 0.0 { down(q.lo / l) } else { 0.0 });
                }
                l2_start = Some(c);
            }
            Norm::Inf => {
                let r = ibp_radius(net, data, task, opts.eps_max, opts.steps)?;
                for (k, x) in r.into_iter().enumerate() {
                    ibp[k] = Some(cap(x));
                }
            }
        }
        // CROWN (IBP, CROWN-IBP, full CROWN) or alpha-CROWN on top: the `crown` radius.
        // L∞: bisection on the box; L2: bisection over the ball above the global Lipschitz
        // radius (the bounds over the ball, proofs/robust-crown-full.md).
        let crown_r = match (relax, crown::Crown::from_prepared(&self.prepared)) {
            (Method::Crown | Method::Alpha, Ok(c)) => {
                let mut bounder = method::Bounder::with_crown(Arc::clone(&self.prepared), c);
                bounder.max_unstable = max_unstable;
                let ropts = method::RadiusOptions {
                    method: relax,
                    eps_max: opts.eps_max,
                    steps: opts.steps,
                    ..method::RadiusOptions::default()
                };
                Some(method::radii(
                    &bounder,
                    data,
                    task,
                    opts.norm,
                    &ropts,
                    l2_start.as_deref(),
                )?)
            }
            _ => None,
        };
        let model = self.prepared.model();
        let f32net = Network::from_model(model);
        let aopts = AttackOptions {
            bisection: if opts.attack.kind == AttackKind::Pgd {
                opts.steps
            } else {
                opts.attack.bisection
            },
            ..opts.attack
        };
        let attacks: Vec<Result<AttackResult>> = (0..n)
            .into_par_iter()
            .map(|k| {
                attack::attack(
                    &f32net,
                    model.params(),
                    net,
                    data.image(k),
                    data.labels[k],
                    task,
                    opts.norm,
                    opts.eps_max,
                    &aopts,
                )
            })
            .collect();
        let mut examples = Vec::with_capacity(n);
        for (k, a) in attacks.into_iter().enumerate() {
            let mut e = ExampleRadii {
                index: k,
                label: data.labels[k],
                margin: [margins[k].lo, margins[k].hi],
                certified: 0.0,
                method: RadiusMethod::Ibp,
                ibp: ibp[k],
                crown: crown_r.as_ref().map(|r| cap(r[k])),
                global_lipschitz: global[k],
                margin_only: margin_only[k],
                attack: a?.radius,
            };
            (e.certified, e.method) = e.best();
            examples.push(e);
        }
        let violations = violations(&examples);
        let curve = curve(&examples, opts.eps_max);
        Ok(RobustReport {
            schema_version: ROBUST_SCHEMA_VERSION,
            dataset: self.dataset.clone(),
            checkpoint_sha256: None,
            norm: opts.norm,
            eps_max: opts.eps_max,
            steps: opts.steps,
            attack: aopts,
            relaxation: relax,
            max_unstable,
            forward: self.forward,
            lipschitz: lip.network,
            examples,
            curve,
            violations,
        })
    }
}

/// The examples one of whose claimed certified radii exceeds the attack radius (0 for a sound
/// report: each certified radius is below the true one, each attack radius above it).
pub fn violations(ex: &[ExampleRadii]) -> usize {
    ex.iter()
        .filter(|e| {
            std::iter::once(e.certified)
                .chain(RadiusMethod::ALL.iter().filter_map(|&m| e.radius(m)))
                .any(|r| r > e.attack)
        })
        .count()
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

/// The default bisection steps of a radius search (CLI and Python): resolution
/// `eps_max / 2^14` (1.8e-5 at the L∞ default 0.3, 1.8e-4 at the L2 default 3.0), finer than
/// the radii people ask about (1e-4 and up).
pub const DEFAULT_STEPS: usize = 14;

/// At most this many ε in a curve's grid besides 0 and `eps_max` ([`curve`]).
pub const CURVE_POINTS: usize = 256;

/// `x` to three significant digits (the grid of a curve: an edit of a radius by a few ulps,
/// such as a weaker claim, leaves its grid point unchanged). The rounding's ties
/// (`d.dd5·10^e`) include short binary fractions such as 0.1875, which bisection returns
/// (`eps_max·k/2^s`); `x` is first lowered by a relative `2^-40` so that no such radius sits
/// on a tie, where one ulp less would change its grid point.
fn three_digits(x: f64) -> f64 {
    let x = x * (1.0 - f64::powi(2.0, -40));
    format!("{x:.2e}").parse().unwrap_or(x)
}

/// The ε grid that follows `radii`: 0, the distinct finite radii in `(0, eps_max)` to three
/// significant digits (when there are more than [`CURVE_POINTS`], that many of them at
/// evenly spaced ranks: quantiles), and `eps_max`.
pub fn grid(radii: impl Iterator<Item = f64>, eps_max: f64) -> Vec<f64> {
    let mut r: Vec<f64> = radii
        .filter(|&x| x > 0.0 && x < eps_max)
        .map(three_digits)
        .filter(|&x| x > 0.0 && x < eps_max)
        .collect();
    r.sort_by(f64::total_cmp);
    r.dedup();
    if r.len() > CURVE_POINTS {
        let m = r.len() - 1;
        r = (0..CURVE_POINTS)
            .map(|i| r[i * m / (CURVE_POINTS - 1)])
            .collect();
        r.dedup();
    }
    let mut g = Vec::with_capacity(r.len() + 2);
    g.push(0.0);
    g.extend(r);
    g.push(eps_max);
    g
}

/// Robust accuracy curves of `ex` (best certified radius and attack radius) on the grid of
/// their radii ([`grid`]).
pub fn curve(ex: &[ExampleRadii], eps_max: f64) -> Curve {
    let n = ex.len().max(1) as f64;
    let eps = grid(ex.iter().flat_map(|e| [e.certified, e.attack]), eps_max);
    let frac = |r: &[f64], e: f64| r.iter().filter(|&&x| x > e).count() as f64 / n;
    let cert: Vec<f64> = ex.iter().map(|e| e.certified).collect();
    let att: Vec<f64> = ex.iter().map(|e| e.attack).collect();
    Curve {
        certified: eps.iter().map(|&e| frac(&cert, e)).collect(),
        empirical: eps.iter().map(|&e| frac(&att, e)).collect(),
        eps,
    }
}

/// Median of all the values (`+inf` included, NaN excluded): the middle one, or the mean of
/// the two middle ones; `None` when there is none. Over radii, a non-robust example counts
/// as radius 0 and an unknown attack radius as `+inf`.
pub fn median(v: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = v.filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let h = v.len() / 2;
    Some(if v.len() % 2 == 1 || v[h].is_infinite() {
        v[h]
    } else {
        0.5 * (v[h - 1] + v[h])
    })
}
