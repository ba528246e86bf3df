//! The constraint functions `s = cᵀΦ` whose gradients the backward pass encloses, and the
//! count of nonsmooth points met.

use super::sum::{RadConst, finish_rad};
use crate::certify::round::{down, up};
use crate::error::{Error, Result};

/// Which scalar margin function of the network a gradient is taken of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Constraint {
    /// Binary model (one output): `q_n = y_n Φ(θ; x_n)` with `y = +1` for label 1 and
    /// `y = −1` for label 0.
    Binary {
        /// Example index.
        example: usize,
        /// `true` for `y = +1`.
        positive: bool,
    },
    /// Multi-class pairwise constraint `s_nj = Φ_{y_n} − Φ_j`, `j ≠ y_n`.
    Pair {
        /// Example index.
        example: usize,
        /// The label `y_n`.
        label: usize,
        /// The other class `j`.
        other: usize,
    },
}

impl Constraint {
    /// The example the constraint is about.
    pub fn example(&self) -> usize {
        match *self {
            Constraint::Binary { example, .. } | Constraint::Pair { example, .. } => example,
        }
    }

    /// The exact output adjoint `c` with `s = cᵀ Φ` (entries in `{−1, 0, 1}`), of length
    /// `outputs`. Errors when the classes do not fit the output count.
    pub fn adjoint(&self, outputs: usize) -> Result<Vec<f64>> {
        let mut c = vec![0.0; outputs];
        match *self {
            Constraint::Binary { positive, .. } => {
                if outputs != 1 {
                    return Err(Error::Shape(format!(
                        "a binary constraint needs a model with one output, found {outputs}"
                    )));
                }
                c[0] = if positive { 1.0 } else { -1.0 };
            }
            Constraint::Pair { label, other, .. } => {
                if label >= outputs || other >= outputs || label == other {
                    return Err(Error::Shape(format!(
                        "pairwise constraint ({label}, {other}) does not fit {outputs} outputs"
                    )));
                }
                c[label] = 1.0;
                c[other] = -1.0;
            }
        }
        Ok(c)
    }

    /// Certified enclosure `[lo, hi]` of `s = cᵀΦ` from the output enclosure `out` (the
    /// row of one example, length `outputs`).
    pub fn value_enclosure(&self, out_mid: &[f64], out_rad: &[f64]) -> Result<(f64, f64)> {
        let c = self.adjoint(out_mid.len())?;
        let mut m = 0.0;
        let mut r = 0.0;
        let mut a = 0.0;
        for ((&ci, &om), &or) in c.iter().zip(out_mid).zip(out_rad) {
            if ci != 0.0 {
                m += ci * om;
                r += or;
                a += om.abs();
            }
        }
        // at most two nonzero terms, each an exact ±product.
        let rad = finish_rad(r, a, &RadConst::new(2)?);
        Ok((down(m - rad), up(m + rad)))
    }
}

/// How many nonsmooth points the backward pass met (units whose generalised derivative
/// had to be taken as an interval).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinkStats {
    /// ReLU / LeakyReLU units whose pre-activation enclosure contains 0.
    pub ambiguous_units: usize,
    /// Max-pool windows with more than one candidate for the maximum (this includes ties
    /// among exact zeros after a ReLU, which are harmless when the ReLU below is certainly
    /// inactive: its derivative 0 then kills the interval adjoint).
    pub ambiguous_pools: usize,
}

impl KinkStats {
    /// Total number of ambiguous points.
    pub fn total(&self) -> usize {
        self.ambiguous_units + self.ambiguous_pools
    }
}
