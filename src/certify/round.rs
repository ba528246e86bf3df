//! Directed-rounding primitives every certified kernel is built from (proofs/forward.md,
//! Lemmas 1 and 2).
//!
//! All arithmetic runs in binary64 round-to-nearest; outward rounding is obtained by
//! stepping one ulp with [`up`] / [`down`] after the rounded operation, which brackets the
//! exact real result (Lemma 1). [`gamma_up`] bounds Higham's `γ_n` for dot products of
//! length `n`; [`ball_to_interval`] and [`interval_to_ball`] convert between the two
//! enclosure forms without losing containment.

use crate::error::{Error, Result};

/// Unit roundoff of f64 round-to-nearest, `2⁻⁵³`.
pub const U: f64 = 1.0 / 9_007_199_254_740_992.0;
/// Smallest positive subnormal f64, `2⁻¹⁰⁷⁴` (bound on the absolute underflow error of
/// one rounded product or fused multiply-add, with room to spare: the exact bound is half).
pub const ETA: f64 = f64::from_bits(1);

/// `1 + 4u`, exactly representable (`1 + 2⁻⁵¹`): `(1 − u)²(1 + 4u) ≥ 1`.
pub(crate) const ONE_PLUS_4U: f64 = 1.0 + 4.0 * U;

/// Upper bound of a real `a` from its round-to-nearest f64 value `x = RN(a)`:
/// `up(RN(a)) ≥ a` for every real `a` with a finite `RN(a)` (Lemma 1, proofs/forward.md).
#[inline(always)]
pub fn up(x: f64) -> f64 {
    x.next_up()
}

/// Lower bound of a real `a` from `x = RN(a)`: `down(RN(a)) ≤ a` (Lemma 1).
#[inline(always)]
pub fn down(x: f64) -> f64 {
    x.next_down()
}

/// Converts an enclosure `m ± r` to an interval `[lo, hi]` with `lo ≤ m − r` and
/// `hi ≥ m + r` (exact reals), by Lemma 1.
#[inline]
pub fn ball_to_interval(m: f64, r: f64) -> (f64, f64) {
    (down(m - r), up(m + r))
}

/// Converts an interval `[lo, hi]` to a ball `m ± r` containing it: `m = lo/2 + hi/2`
/// (rounded), `r ≥ max(hi − m, m − lo)` (each difference rounded up by Lemma 1).
#[inline]
pub fn interval_to_ball(lo: f64, hi: f64) -> (f64, f64) {
    if lo == hi {
        return (lo, 0.0);
    }
    let m = 0.5 * lo + 0.5 * hi;
    let r = up(hi - m).max(up(m - lo));
    (m, r)
}

/// `n` as f64 (exact for the sizes used here, `n < 2⁵³`).
#[inline]
pub(crate) fn exact(n: usize) -> f64 {
    n as f64
}

/// Upper bound on `γ_n = n u / (1 − n u)`; errors if `n u ≥ 1/2` (never for real nets).
pub fn gamma_up(n: usize) -> Result<f64> {
    // n·u is exact (an integer times a power of two, n < 2⁵³); 1 − n u is exact when
    // n u ≤ 1/2 (Sterbenz); the division is rounded up by Lemma 1.
    let nu = exact(n) * U;
    if nu >= 0.5 {
        return Err(Error::Certify(format!(
            "dot products of length {n} are too long for the a-priori error bound"
        )));
    }
    Ok(up(nu / (1.0 - nu)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lemma1_up_down_bracket_rounded_results() {
        // 1/3 is not a float: RN(1/3) is on one side; up/down must bracket it.
        let x = 1.0 / 3.0;
        assert!(down(x) < x && x < up(x));
        // subnormal range: up of the smallest subnormal is the next one.
        assert_eq!(up(0.0), ETA);
        assert!(gamma_up(10).unwrap() >= 10.0 * U);
        assert!(gamma_up(1 << 52).is_err());
    }

    #[test]
    fn interval_ball_round_trip_contains() {
        for (lo, hi) in [(0.0, 1.0), (-3.0, 1e-300), (1e-310, 3e-310), (2.0, 2.0)] {
            let (m, r) = interval_to_ball(lo, hi);
            let (m, r) = (
                rug::Rational::from_f64(m).unwrap(),
                rug::Rational::from_f64(r).unwrap(),
            );
            assert!(m.clone() - r.clone() <= lo && m + r >= hi);
        }
    }
}
