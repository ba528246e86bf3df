//! Certified number types: one-sided bounds and enclosures, named so that no code can mix an
//! estimate with a bound, and directed-rounding helpers on rug floats.
//!
//! JSON: finite values are numbers; infinite bounds (sound but vacuous, e.g. an upper bound
//! that overflowed f64) are the strings `"inf"` / `"-inf"`.

use rug::{Float, float::Round};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serde for f64 values that may be infinite (JSON has no infinity).
pub mod ext_f64 {
    use super::*;

    /// Serializes finite values as numbers, infinities as `"inf"` / `"-inf"`, NaN as `"nan"`.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    /// Inverse of [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Num {
            F(f64),
            S(String),
        }
        match Num::deserialize(d)? {
            Num::F(v) => Ok(v),
            Num::S(s) => match s.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!("not a number: {other}"))),
            },
        }
    }
}

/// A certified lower bound: the true value is `≥ self.0`.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct Lower(#[serde(with = "ext_f64")] pub f64);

/// A certified upper bound: the true value is `≤ self.0`.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct Upper(#[serde(with = "ext_f64")] pub f64);

/// A certified enclosure: the true value lies in `[lo, hi]`.
///
/// Invariant: `lo ≤ hi` (both may be infinite, never NaN).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enclosure {
    /// Lower bound.
    #[serde(with = "ext_f64")]
    pub lo: f64,
    /// Upper bound.
    #[serde(with = "ext_f64")]
    pub hi: f64,
}

impl Enclosure {
    /// `[lo, hi]`; debug-asserts `lo ≤ hi`.
    pub fn new(lo: f64, hi: f64) -> Self {
        debug_assert!(lo <= hi, "enclosure [{lo}, {hi}]");
        Self { lo, hi }
    }
    /// The lower end as a [`Lower`] bound.
    pub fn lower(&self) -> Lower {
        Lower(self.lo)
    }
    /// The upper end as an [`Upper`] bound.
    pub fn upper(&self) -> Upper {
        Upper(self.hi)
    }
    /// Width `hi − lo` (rounded; for display only).
    pub fn width(&self) -> f64 {
        self.hi - self.lo
    }
    /// Midpoint (rounded; for display only — an estimate, not a bound).
    pub fn mid(&self) -> f64 {
        0.5 * self.lo + 0.5 * self.hi
    }
    /// True if `[lo, hi]` and `other` intersect.
    pub fn overlaps(&self, other: &Enclosure) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }
    /// From rug floats: `lo` rounded down, `hi` rounded up to f64.
    pub fn from_floats(lo: &Float, hi: &Float) -> Self {
        Self::new(to_f64_down(lo), to_f64_up(hi))
    }
}

impl std::fmt::Display for Enclosure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:.9e}, {:.9e}]", self.lo, self.hi)
    }
}

/// A three-valued certified decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Proven true.
    True,
    /// Proven false.
    False,
    /// The enclosures are too wide to decide.
    Undecided,
}

/// `x` rounded down to f64 (`≤ x`; `-inf` below range, `f64::MAX`-capped above).
pub fn to_f64_down(x: &Float) -> f64 {
    x.to_f64_round(Round::Down)
}

/// `x` rounded up to f64 (`≥ x`).
pub fn to_f64_up(x: &Float) -> f64 {
    x.to_f64_round(Round::Up)
}

/// An exact rug float of an f64 (`prec ≥ 53`).
pub fn exact(prec: u32, v: f64) -> Float {
    debug_assert!(prec >= 53);
    Float::with_val(prec, v)
}

/// Enclosure of `a / p` for `a ∈ [a_lo, a_hi]` and `p ∈ [p_lo, p_hi]` with `p_lo > 0`, each
/// end rounded outward. `a/p` increases in `a`; for fixed `a ≥ 0` it decreases in `p`, for
/// `a < 0` it increases, so the extremes are at the corners chosen below.
pub fn div_pos(a_lo: &Float, a_hi: &Float, p_lo: &Float, p_hi: &Float) -> (Float, Float) {
    let prec = a_lo.prec().max(p_lo.prec());
    debug_assert!(*p_lo > 0);
    let lo_den = if a_lo.is_sign_negative() { p_lo } else { p_hi };
    let hi_den = if a_hi.is_sign_negative() { p_hi } else { p_lo };
    let (lo, _) = Float::with_val_round(prec, a_lo / lo_den, Round::Down);
    let (hi, _) = Float::with_val_round(prec, a_hi / hi_den, Round::Up);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infinite_bounds_round_trip_json() {
        let e = Enclosure::new(f64::NEG_INFINITY, 2.5);
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(s, r#"{"lo":"-inf","hi":2.5}"#);
        assert_eq!(serde_json::from_str::<Enclosure>(&s).unwrap(), e);
        let u: Upper = serde_json::from_str("\"inf\"").unwrap();
        assert_eq!(u.0, f64::INFINITY);
    }

    #[test]
    fn div_pos_corners_enclose_every_quotient() {
        let f = |v: f64| exact(64, v);
        for (a, b) in [(-3.0, -1.0), (-2.0, 5.0), (1.0, 4.0)] {
            let (lo, hi) = div_pos(&f(a), &f(b), &f(2.0), &f(8.0));
            for x in [a, b, 0.5 * (a + b)] {
                for p in [2.0, 3.0, 8.0] {
                    let q = f(x) / f(p);
                    assert!(lo <= q && q <= hi, "{x}/{p}");
                }
            }
        }
    }
}
