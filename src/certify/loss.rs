//! Certified training loss (summed over examples, as in the paper), its log10, the
//! smoothed margin and the theorem's loss threshold, in MPFR with directed rounding so
//! that values far below f64 range (1e-800) are bounded correctly (proofs/loss.md).

use rayon::prelude::*;
use rug::{
    Float,
    float::{Constant, Round},
    ops::AddAssignRound,
};
use serde::{Deserialize, Serialize};

use super::bounds::{Decision, Enclosure, div_pos, to_f64_down, to_f64_up};
use super::margin::margin_of;
use super::norms::FloatBounds;
use crate::error::{Error, Result};

pub use crate::loss::LossKind;

/// `e^{−x}` for an f64 `x`, rounded in direction `r` (`−x` is exact).
fn exp_neg(prec: u32, x: f64, r: Round) -> Float {
    let mut f = Float::with_val(prec.max(53), -x);
    f.exp_round(r);
    f
}

/// Bounds on one example's loss. `gaps` are the example's gap enclosures (see
/// [`super::margin::gaps`]). Each bound composes monotone functions with the rounding
/// direction of the bound: `e^{−q}` decreases in `q`, `log1p` and sums increase.
fn example_bounds(kind: LossKind, gaps: &[Enclosure], prec: u32) -> (Float, Float) {
    match kind {
        LossKind::Exponential | LossKind::Logistic => {
            let q = margin_of(gaps);
            let mut lo = exp_neg(prec, q.hi, Round::Down);
            let mut hi = exp_neg(prec, q.lo, Round::Up);
            if kind == LossKind::Logistic {
                lo.ln_1p_round(Round::Down);
                hi.ln_1p_round(Round::Up);
            }
            (lo, hi)
        }
        LossKind::CrossEntropy => {
            let mut lo = Float::new(prec);
            let mut hi = Float::new(prec);
            for g in gaps {
                lo.add_assign_round(exp_neg(prec, g.hi, Round::Down), Round::Down);
                hi.add_assign_round(exp_neg(prec, g.lo, Round::Up), Round::Up);
            }
            lo.ln_1p_round(Round::Down);
            hi.ln_1p_round(Round::Up);
            (lo, hi)
        }
    }
}

/// Bounds on the summed loss over all examples (`gaps[n]` per example).
pub fn loss_bounds(kind: LossKind, gaps: &[Vec<Enclosure>], prec: u32) -> FloatBounds {
    let parts: Vec<(Float, Float)> = gaps
        .par_chunks(512)
        .map(|chunk| {
            let mut lo = Float::new(prec);
            let mut hi = Float::new(prec);
            for g in chunk {
                let (l, h) = example_bounds(kind, g, prec);
                lo.add_assign_round(&l, Round::Down);
                hi.add_assign_round(&h, Round::Up);
            }
            (lo, hi)
        })
        .collect();
    let mut lo = Float::new(prec);
    let mut hi = Float::new(prec);
    for (l, h) in parts {
        lo.add_assign_round(&l, Round::Down);
        hi.add_assign_round(&h, Round::Up);
    }
    FloatBounds { lo, hi }
}

/// Decimal string of `x` with 20 significant digits, rounded in direction `r`.
pub fn decimal(x: &Float, r: Round) -> String {
    x.to_string_radix_round(10, Some(20), r)
}

/// Parses a decimal string to a rug float at `prec` bits rounded in direction `r`.
pub fn parse_decimal(s: &str, prec: u32, r: Round) -> Result<Float> {
    let p = Float::parse(s).map_err(|e| Error::Certify(format!("not a number '{s}': {e}")))?;
    Ok(Float::with_val_round(prec, p, r).0)
}

/// The JSON view of certified loss facts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossCert {
    /// Which loss.
    pub kind: LossKind,
    /// Lower bound on the summed loss, decimal (rounded down; may be far below f64 range).
    pub lower: String,
    /// Upper bound on the summed loss, decimal (rounded up).
    pub upper: String,
    /// Enclosure of `log10(Loss)`.
    pub log10: Enclosure,
    /// The theorem's threshold: `1` (exponential) or `log 2` (logistic, cross-entropy).
    pub threshold: String,
    /// Whether `Loss < threshold` is proven.
    pub below_threshold: Decision,
}

/// Enclosure of `log10` of a positive quantity (`-inf` for a zero lower bound).
pub fn log10_enclosure(b: &FloatBounds) -> Enclosure {
    let p = b.lo.prec();
    let lo = if b.lo.is_zero() {
        f64::NEG_INFINITY
    } else {
        to_f64_down(&Float::with_val_round(p, b.lo.log10_ref(), Round::Down).0)
    };
    let hi = to_f64_up(&Float::with_val_round(p, b.hi.log10_ref(), Round::Up).0);
    Enclosure::new(lo, hi)
}

/// Threshold enclosure `[lo, hi]` of the theorem for `kind`.
pub fn threshold(kind: LossKind, prec: u32) -> (Float, Float) {
    match kind {
        LossKind::Exponential => (Float::with_val(prec, 1), Float::with_val(prec, 1)),
        _ => (
            Float::with_val_round(prec, Constant::Log2, Round::Down).0,
            Float::with_val_round(prec, Constant::Log2, Round::Up).0,
        ),
    }
}

/// Certified `Loss < threshold`: true if `hi < t_lo`, false if `lo ≥ t_hi`.
pub fn below_threshold(kind: LossKind, b: &FloatBounds) -> Decision {
    let (t_lo, t_hi) = threshold(kind, b.lo.prec());
    if b.hi < t_lo {
        Decision::True
    } else if b.lo >= t_hi {
        Decision::False
    } else {
        Decision::Undecided
    }
}

/// The JSON view of a loss bound.
pub fn loss_cert(kind: LossKind, b: &FloatBounds) -> LossCert {
    LossCert {
        kind,
        lower: decimal(&b.lo, Round::Down),
        upper: decimal(&b.hi, Round::Up),
        log10: log10_enclosure(b),
        threshold: match kind {
            LossKind::Exponential => "1".into(),
            _ => "log 2".into(),
        },
        below_threshold: below_threshold(kind, b),
    }
}

/// Enclosure of the smoothed margin `γ̃ = A(Loss) / ρ^L` with `A = log(1/Loss)`
/// (exponential) or `A = −log(expm1(Loss))` (logistic, cross-entropy). `A` decreases in
/// `Loss`, so its lower end comes from the loss upper bound and vice versa. Returns `None`
/// if `ρ^L`'s lower bound is not positive.
pub fn smoothed_margin(
    kind: LossKind,
    loss: &FloatBounds,
    rho_l: &FloatBounds,
) -> Option<Enclosure> {
    if rho_l.lo <= 0 {
        return None;
    }
    let a_of = |x: &Float, r: Round| -> Float {
        // A(x) rounded in direction r: −log(y) rounded r means log(y) rounded against r,
        // and y = x or expm1(x) must then be rounded against r as well (log increases).
        let against = if r == Round::Down {
            Round::Up
        } else {
            Round::Down
        };
        let mut y = x.clone();
        if kind != LossKind::Exponential {
            y.exp_m1_round(against);
        }
        y.ln_round(against); // log(0) = −inf gives A = +inf: sound for an upper end.
        -y
    };
    let a_lo = a_of(&loss.hi, Round::Down);
    let a_hi = a_of(&loss.lo, Round::Up);
    let (lo, hi) = div_pos(&a_lo, &a_hi, &rho_l.lo, &rho_l.hi);
    Some(Enclosure::from_floats(&lo, &hi))
}
