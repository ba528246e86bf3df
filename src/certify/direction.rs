//! The certified direction change between two parameter vectors of one model: the cosine and
//! the angle between `θ_a/‖θ_a‖` and `θ_b/‖θ_b‖` (proofs/direction.md).
//!
//! Theorem 4.4's KKT convergence is about the *direction* `θ/‖θ‖`; the scale-free KKT figures
//! say how far one checkpoint is from a KKT point, this says how far the direction still
//! moves between two checkpoints (e.g. consecutive kept checkpoints of a run). Both are
//! claims about the exact real vectors the stored f32 weights define.

use rug::{Float, float::Round, ops::AddAssignRound};
use serde::{Deserialize, Serialize};

use super::bounds::Enclosure;
use super::norms::{FloatBounds, sq_norm_bounds};
use crate::error::{Error, Result};
use crate::model::Params;

/// Certified enclosures of the cosine and the angle (radians, in `[0, π]`) between the
/// directions of two parameter vectors.
///
/// Invariant: `-1 ≤ cos.lo ≤ cos.hi ≤ 1`, `0 ≤ angle.lo ≤ angle.hi ≤ π` (rounded outward to
/// f64), and the exact cosine and angle lie in them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionChange {
    /// `⟨θ_a, θ_b⟩ / (‖θ_a‖ ‖θ_b‖)`.
    pub cos: Enclosure,
    /// `arccos` of the cosine, in radians.
    pub angle: Enclosure,
}

/// Lower and upper MPFR bounds of `⟨a, b⟩` for f32 vectors: each product of two f32 values
/// is exact in f64 (24-bit significands give 48-bit products; exponents stay inside f64's
/// normal range), and the sum is accumulated twice, rounding down and up.
fn dot_bounds<'a>(
    a: impl Iterator<Item = &'a f32>,
    b: impl Iterator<Item = &'a f32>,
    prec: u32,
) -> FloatBounds {
    let mut lo = Float::new(prec);
    let mut hi = Float::new(prec);
    for (&x, &y) in a.zip(b) {
        let p = x as f64 * y as f64; // exact (see above)
        lo.add_assign_round(p, Round::Down);
        hi.add_assign_round(p, Round::Up);
    }
    FloatBounds { lo, hi }
}

/// `num / sqrt(den)` rounded in direction `r` (`den > 0`).
fn ratio(num: &Float, den: &Float, r: Round, prec: u32) -> Float {
    // sqrt rounded against r's direction: a smaller denominator makes a positive quotient
    // larger and a negative one smaller, so the denominator is rounded toward whichever end
    // moves the quotient in direction r.
    let den_dir = match (r, num.is_sign_negative()) {
        (Round::Up, false) | (Round::Down, true) => Round::Down,
        _ => Round::Up,
    };
    let s = Float::with_val_round(prec, den.sqrt_ref(), den_dir).0;
    Float::with_val_round(prec, num / &s, r).0
}

/// The certified direction change between `a` and `b` at `prec` bits (at least 64).
///
/// Errors when the two parameter sets differ in layout (they must be two points of one
/// model) or when either is the zero vector (its direction is undefined).
pub fn direction_change(a: &Params, b: &Params, prec: u32) -> Result<DirectionChange> {
    let shapes = |p: &Params| {
        p.layers
            .iter()
            .map(|l| (l.weight_shape.clone(), l.bias.as_ref().map(Vec::len)))
            .collect::<Vec<_>>()
    };
    if shapes(a) != shapes(b) {
        return Err(Error::Shape(
            "the two parameter sets have different layers or shapes: a direction change \
             compares two checkpoints of the same model"
                .into(),
        ));
    }
    let prec = prec.max(64);
    let dot = dot_bounds(a.values(), b.values(), prec);
    let na = sq_norm_bounds(a.values(), prec);
    let nb = sq_norm_bounds(b.values(), prec);
    if na.lo.is_zero() || nb.lo.is_zero() {
        // Each squared norm is a sum of exact non-negative squares rounded down: it is 0
        // only when every value is 0 (or every square underflows f64, which f32 cannot do).
        return Err(Error::Invalid(
            "a parameter vector is zero: its direction is undefined".into(),
        ));
    }
    // Products of the squared-norm bounds, rounded outward: den_lo ≤ ‖a‖²‖b‖² ≤ den_hi.
    let den_lo = Float::with_val_round(prec, &na.lo * &nb.lo, Round::Down).0;
    let den_hi = Float::with_val_round(prec, &na.hi * &nb.hi, Round::Up).0;
    // cos = dot / sqrt(den): for a lower bound take dot's lower end over the denominator end
    // that makes the quotient smallest (largest denominator when dot_lo ≥ 0, smallest when it
    // is negative); symmetrically for the upper bound. Cauchy–Schwarz clamps to [-1, 1].
    let pick = |num: &Float, r: Round| {
        let larger_den = (r == Round::Down) != num.is_sign_negative();
        let den = if larger_den { &den_hi } else { &den_lo };
        ratio(num, den, r, prec)
    };
    let one = Float::with_val(prec, 1);
    let cos_lo = pick(&dot.lo, Round::Down).max(&(-one.clone()));
    let cos_hi = pick(&dot.hi, Round::Up).min(&one);
    // arccos is decreasing on [-1, 1]: the angle's lower end comes from cos_hi (rounded
    // down), its upper end from cos_lo (rounded up); MPFR's acos is correctly rounded.
    let angle_lo = Float::with_val_round(prec, cos_hi.acos_ref(), Round::Down).0;
    let angle_hi = Float::with_val_round(prec, cos_lo.acos_ref(), Round::Up).0;
    Ok(DirectionChange {
        cos: Enclosure::from_floats(&cos_lo, &cos_hi),
        angle: Enclosure::from_floats(&angle_lo, &angle_hi),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LayerParams;

    fn params(w: Vec<f32>) -> Params {
        Params {
            layers: vec![LayerParams {
                index: 0,
                weight_shape: vec![1, w.len()],
                weight: w,
                bias: None,
            }],
        }
    }

    #[test]
    fn orthogonal_parallel_and_opposite() {
        let d = direction_change(&params(vec![1.0, 0.0]), &params(vec![0.0, 3.0]), 128).unwrap();
        assert!(d.cos.lo <= 0.0 && d.cos.hi >= 0.0 && d.cos.hi - d.cos.lo < 1e-15);
        let half_pi = std::f64::consts::FRAC_PI_2;
        assert!(d.angle.lo <= half_pi && half_pi <= d.angle.hi);
        let d = direction_change(&params(vec![2.0, 4.0]), &params(vec![1.0, 2.0]), 128).unwrap();
        assert!(d.cos.hi == 1.0 && d.cos.lo > 1.0 - 1e-15 && d.angle.lo == 0.0);
        assert!(d.angle.hi < 1e-7);
        let d = direction_change(&params(vec![1.0, 1.0]), &params(vec![-2.0, -2.0]), 128).unwrap();
        assert!(d.cos.lo == -1.0 && d.angle.hi >= std::f64::consts::PI);
    }

    #[test]
    fn zero_vector_and_layout_mismatch_are_errors() {
        assert!(direction_change(&params(vec![0.0, 0.0]), &params(vec![1.0, 0.0]), 128).is_err());
        assert!(direction_change(&params(vec![1.0]), &params(vec![1.0, 0.0]), 128).is_err());
    }
}
