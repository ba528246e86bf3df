//! Midpoint-radius enclosures of batches of real vectors ([`BallVec`]) and the enclosure of
//! the exact network inputs `p / 255` ([`input_enclosure`]).

use super::round::{down, up};

/// Enclosures of a batch of real vectors in midpoint-radius form.
///
/// Invariant: `mid.len() == rad.len()`; every `rad[i]` is `≥ 0` (or NaN-free and finite
/// when produced by the certified passes), and the real value it encloses lies in
/// `[mid[i] − rad[i], mid[i] + rad[i]]` (exact real endpoints, not rounded ones).
/// Layout is batch-major `[batch, len]`, each example in the spec's `[C, H, W]` order.
#[derive(Clone, Debug, PartialEq)]
pub struct BallVec {
    /// Midpoints.
    pub mid: Vec<f64>,
    /// Radii, `≥ 0`.
    pub rad: Vec<f64>,
}

impl BallVec {
    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.mid.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.mid.is_empty()
    }
    /// A lower bound on the enclosed real `i`: `≤ mid − rad` exactly.
    pub fn lo(&self, i: usize) -> f64 {
        down(self.mid[i] - self.rad[i])
    }
    /// An upper bound on the enclosed real `i`: `≥ mid + rad` exactly.
    pub fn hi(&self, i: usize) -> f64 {
        up(self.mid[i] + self.rad[i])
    }
    /// True when every midpoint and radius is finite and every radius `≥ 0`.
    pub fn is_valid(&self) -> bool {
        // Non-short-circuit `&` so the loop vectorizes.
        self.mid.len() == self.rad.len()
            && self.mid.iter().zip(&self.rad).fold(true, |ok, (m, r)| {
                ok & m.is_finite() & r.is_finite() & (*r >= 0.0)
            })
    }
    /// Rows `[from, to)` of a batch-major enclosure whose rows have length `len`.
    pub fn rows(&self, len: usize, from: usize, to: usize) -> BallVec {
        BallVec {
            mid: self.mid[from * len..to * len].to_vec(),
            rad: self.rad[from * len..to * len].to_vec(),
        }
    }
}

/// Enclosure of the exact inputs `p / 255`: `mid = RN(p/255)`, `rad = 2⁻⁵⁴` unless
/// `p ∈ {0, 255}` (exact). For `0 < p/255 < 1`, `ulp ≤ 2⁻⁵³`, so the correctly rounded
/// quotient is within `2⁻⁵⁴` (proofs/forward.md, §Inputs).
pub fn input_enclosure(pixels: &[u8]) -> BallVec {
    const HALF_ULP_BELOW_ONE: f64 = 1.0 / 18_014_398_509_481_984.0; // 2⁻⁵⁴
    BallVec {
        mid: pixels.iter().map(|&p| p as f64 / 255.0).collect(),
        rad: pixels
            .iter()
            .map(|&p| {
                if p == 0 || p == 255 {
                    0.0
                } else {
                    HALF_ULP_BELOW_ONE
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_enclosure_contains_p_over_255() {
        let e = input_enclosure(&[0, 1, 128, 254, 255]);
        assert_eq!((e.mid[0], e.rad[0]), (0.0, 0.0));
        assert_eq!((e.mid[4], e.rad[4]), (1.0, 0.0));
        for (k, p) in [1u32, 128, 254].into_iter().enumerate() {
            let q = rug::Rational::from((p, 255u32));
            let m = rug::Rational::from_f64(e.mid[k + 1]).unwrap();
            let r = rug::Rational::from_f64(e.rad[k + 1]).unwrap();
            assert!((q - m).abs() <= r, "p = {p}");
        }
    }
}
