//! The bound methods of the certified radii and their one entry point per method and norm.
//!
//! Every method is a certified lower bound of the margin over the perturbation set; a more
//! expensive method runs only where the cheaper ones do not already prove the sign the
//! bisection asks for, and its bound is the maximum of all those computed (all are sound):
//! - [`Method::Ibp`]: interval bound propagation with the interval max-pool and the margin
//!   specification folded into the last dense layer ([`super::ibp`]);
//! - [`Method::Crown`]: then CROWN with IBP intermediate bounds, then full CROWN (the unstable
//!   pre-activations tightened by back-substitution, [`Crown::refine`]);
//! - [`Method::Alpha`]: then the lower ReLU slopes optimized per unit and gap
//!   ([`super::alpha`]), the final bound recomputed with the rounding charges.
//!
//! L2 radii start from the global Lipschitz radius ([`super::lipschitz_radius`]) and, for
//! CROWN and alpha, bisect above it with the bounds over the L2 ball ([`InputSet::L2`]).

use std::sync::Arc;

use crate::certify::ball::{BallVec, input_enclosure};
use crate::certify::forward::PreparedNet;
use crate::certify::margin::Task;
use crate::certify::round::up;
use crate::data::Dataset;
use crate::error::{Error, Result};

use super::crown::{Crown, InputSet};
use super::ibp::{SpecFold, forward_box, gap_lowers};
use super::{Norm, linf_box};

/// Rows back-substituted together by [`Crown::refine`] (bounds the memory of one pass).
const ROWS_PER_PASS: usize = 64;

/// Default [`Bounder::max_unstable`]: layers with more unstable units keep IBP bounds.
pub const DEFAULT_MAX_UNSTABLE: usize = 1024;

/// The time/tightness knob of the certified radii (`--method ibp|crown|alpha`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Interval bound propagation (fastest, loosest).
    Ibp,
    /// IBP, then CROWN with IBP intermediate bounds, then full CROWN.
    #[default]
    Crown,
    /// CROWN, then optimized lower ReLU slopes (alpha-CROWN style; slowest, tightest).
    Alpha,
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ibp" => Ok(Method::Ibp),
            "crown" => Ok(Method::Crown),
            "alpha" => Ok(Method::Alpha),
            o => Err(Error::Invalid(format!(
                "unknown bound method {o:?}: use ibp, crown or alpha"
            ))),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Ibp => "ibp",
            Method::Crown => "crown",
            Method::Alpha => "alpha",
        })
    }
}

/// Options of the radius search.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RadiusOptions {
    /// The bound method.
    pub method: Method,
    /// Largest radius searched (`> 0`, finite).
    pub eps_max: f64,
    /// Bisection halvings of the search interval.
    pub steps: usize,
    /// Projected-gradient iterations of [`Method::Alpha`] per bound.
    pub alpha_steps: usize,
}

impl Default for RadiusOptions {
    fn default() -> Self {
        Self {
            method: Method::Crown,
            eps_max: 0.3,
            steps: 12,
            alpha_steps: super::alpha::DEFAULT_STEPS,
        }
    }
}

/// A network prepared for every bound method.
///
/// Invariant: `crown` (when present) and `fold` are built from `net`.
pub struct Bounder {
    net: Arc<PreparedNet>,
    crown: Option<Crown>,
    fold: Option<SpecFold>,
    /// Full CROWN refines a layer only when it has at most this many unstable units.
    pub max_unstable: usize,
}

impl Bounder {
    /// Prepares the bounds of `net`; CROWN and alpha fall back to IBP on a network CROWN
    /// does not relax (a LeakyReLU slope above 1).
    pub fn new(net: Arc<PreparedNet>) -> Self {
        let crown = Crown::from_prepared(&net).ok();
        let fold = SpecFold::new(&net);
        Self {
            net,
            crown,
            fold,
            max_unstable: DEFAULT_MAX_UNSTABLE,
        }
    }

    /// [`Bounder::new`] with an already prepared `crown` (built from `net`).
    pub fn with_crown(net: Arc<PreparedNet>, crown: Crown) -> Self {
        let fold = SpecFold::new(&net);
        Self {
            net,
            crown: Some(crown),
            fold,
            max_unstable: DEFAULT_MAX_UNSTABLE,
        }
    }

    /// The prepared network.
    pub fn net(&self) -> &Arc<PreparedNet> {
        &self.net
    }

    /// Certified lower bound of the margin of `image` (label `label`) over the L∞ box of
    /// radius `eps` clipped to `[0,1]^d` (`norm = Inf`) or over the L2 ball of radius `eps`
    /// (`norm = L2`, not clipped), by `method`; stops at the first method whose bound is
    /// `> 0` (the bisection asks for the sign only).
    #[allow(clippy::too_many_arguments)]
    pub fn margin_lower(
        &self,
        image: &[u8],
        label: u8,
        task: Task,
        norm: Norm,
        eps: f64,
        method: Method,
        alpha_steps: usize,
    ) -> Result<f64> {
        let min = |v: Vec<f64>| v.into_iter().fold(f64::INFINITY, f64::min);
        let center = input_enclosure(image);
        let b = match norm {
            Norm::Inf => linf_box(image, &[eps], image.len()),
            Norm::L2 => l2_box(&center, eps),
        };
        let input = match norm {
            Norm::Inf => InputSet::Box,
            Norm::L2 => InputSet::L2 {
                center: &center,
                eps,
            },
        };
        let mut encl = forward_box(&self.net, &b, 1)?;
        let mut best = min(gap_lowers(self.fold.as_ref(), &encl, 0, label, task));
        let Some(crown) = &self.crown else {
            return Ok(best);
        };
        if best > 0.0 || method == Method::Ibp {
            return Ok(best);
        }
        if norm == Norm::Inf {
            // CROWN with the IBP intermediate bounds: cheap, often enough.
            best = best.max(min(crown.gap_lowers(&encl, label, task)?));
            if best > 0.0 {
                return Ok(best);
            }
        }
        crown.refine(
            &self.net,
            &mut encl,
            &input,
            ROWS_PER_PASS,
            self.max_unstable,
        )?;
        best = best.max(min(gap_lowers(self.fold.as_ref(), &encl, 0, label, task)));
        let gaps = crown.gap_lowers_over(&encl, label, task, &input, None)?;
        best = best.max(min(gaps));
        if best > 0.0 || method == Method::Crown {
            return Ok(best);
        }
        let alphas = super::alpha::optimize(crown, &encl, label, task, &input, alpha_steps)?;
        let gaps = crown.gap_lowers_over(&encl, label, task, &input, Some(&alphas))?;
        Ok(best.max(min(gaps)))
    }
}

/// The box `center ± eps` (rounded outward), enclosing the L2 ball of radius `eps` around
/// every point of `center`.
pub fn l2_box(center: &BallVec, eps: f64) -> BallVec {
    let mut mid = Vec::with_capacity(center.len());
    let mut rad = Vec::with_capacity(center.len());
    for (&m, &r) in center.mid.iter().zip(&center.rad) {
        mid.push(m);
        rad.push(up(r + eps));
    }
    BallVec { mid, rad }
}

/// Checks the options of a radius search.
fn check(opts: &RadiusOptions) -> Result<()> {
    if !(opts.eps_max.is_finite() && opts.eps_max > 0.0) {
        return Err(Error::Invalid(format!(
            "eps-max must be a positive number, got {}",
            opts.eps_max
        )));
    }
    Ok(())
}

/// Certified radii of every example of `data` in `norm` by `opts.method`: for each returned
/// `r_n > 0` the certified margin lower bound is `> 0` over the whole perturbation set of
/// radius `r_n` (L∞: clipped box, bisection on `[0, eps_max]`; L2: ball, the radii
/// `l2_start` already certified — the Lipschitz radii, [`super::lipschitz_radius`] —
/// raised by bisection on `[r_n, eps_max]` for CROWN and alpha; from 0 without them).
/// 0 when the clean margin is not certified.
pub fn radii(
    bounder: &Bounder,
    data: &Dataset,
    task: Task,
    norm: Norm,
    opts: &RadiusOptions,
    l2_start: Option<&[f64]>,
) -> Result<Vec<f64>> {
    use rayon::prelude::*;
    check(opts)?;
    let start: Vec<f64> = match (norm, l2_start) {
        (Norm::L2, Some(r)) => {
            if r.len() != data.len() {
                return Err(Error::Shape(format!(
                    "{} starting radii for {} examples",
                    r.len(),
                    data.len()
                )));
            }
            r.iter().map(|r| r.min(opts.eps_max)).collect()
        }
        (Norm::L2, None) => vec![0.0; data.len()],
        (Norm::Inf, _) => {
            let net = crate::certify::forward::CertifiedNet::from_prepared(bounder.net.clone());
            let r = super::ibp::ibp_radius(&net, data, task, opts.eps_max, opts.steps)?;
            if opts.method == Method::Ibp {
                return Ok(r);
            }
            r
        }
    };
    if norm == Norm::L2 && opts.method == Method::Ibp {
        return Ok(start);
    }
    (0..data.len())
        .into_par_iter()
        .map(|n| {
            let bound = |eps: f64| {
                bounder.margin_lower(
                    data.image(n),
                    data.labels[n],
                    task,
                    norm,
                    eps,
                    opts.method,
                    opts.alpha_steps,
                )
            };
            bisect(start[n], opts.eps_max, opts.steps, &bound)
        })
        .collect()
}

/// The largest `ε` found by `steps` halvings of `[0, eps_max]` with `bound(ε) > 0`, given a
/// radius `known` already certified (`0` or a cheaper method's): midpoints `≤ known` count as
/// certified without evaluating the bound, so the grid is the one of a search from 0 (a
/// tighter bound never returns a smaller radius than a looser one on the same grid), and the
/// result is never below `known`. 0 when `known = 0` and the clean bound (`ε = 0`) is not
/// positive.
fn bisect(
    known: f64,
    eps_max: f64,
    steps: usize,
    bound: &dyn Fn(f64) -> Result<f64>,
) -> Result<f64> {
    if known >= eps_max {
        return Ok(eps_max);
    }
    if known == 0.0 && bound(0.0)? <= 0.0 {
        return Ok(0.0);
    }
    if bound(eps_max)? > 0.0 {
        return Ok(eps_max);
    }
    let (mut lo, mut hi) = (0.0, eps_max);
    for _ in 0..steps {
        let mid = 0.5 * (lo + hi);
        if mid <= known || bound(mid)? > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // `lo` is 0, or an ε ≤ `known`, or an ε whose bound was checked positive.
    Ok(lo.max(known))
}
