//! Certified parameter norms: `||W_i||_F` (weight and bias together), `ρ = ||θ||₂`, `ρ^L`
//! and `∏ ||W_i||`, each as a lower and an upper bound with MPFR directed rounding
//! (proofs/norms.md).

use rug::{
    Float,
    float::Round,
    ops::{AddAssignRound, Pow},
};
use serde::{Deserialize, Serialize};

use super::bounds::Enclosure;
use crate::model::Params;

/// Lower and upper rug floats of a non-negative quantity.
#[derive(Clone, Debug)]
pub struct FloatBounds {
    /// `≤` the true value.
    pub lo: Float,
    /// `≥` the true value.
    pub hi: Float,
}

impl FloatBounds {
    /// As an f64 enclosure (outward).
    pub fn enclosure(&self) -> Enclosure {
        Enclosure::from_floats(&self.lo, &self.hi)
    }
    /// `self^k` with outward rounding (monotone for non-negative values).
    pub fn pow(&self, k: u32) -> FloatBounds {
        let p = self.lo.prec();
        FloatBounds {
            lo: Float::with_val_round(p, (&self.lo).pow(k), Round::Down).0,
            hi: Float::with_val_round(p, (&self.hi).pow(k), Round::Up).0,
        }
    }
}

/// Bounds on the squared norm of a list of f32 values: every square of an f32 is exact in
/// f64 (24-bit mantissas give 48-bit products, exponents stay in range) and in a rug float
/// of `prec ≥ 53` bits; the sum is accumulated twice, rounding down and up.
pub fn sq_norm_bounds<'a>(values: impl Iterator<Item = &'a f32>, prec: u32) -> FloatBounds {
    let mut lo = Float::new(prec);
    let mut hi = Float::new(prec);
    for &v in values {
        let v = v as f64;
        let sq = v * v; // exact (see above)
        lo.add_assign_round(sq, Round::Down);
        hi.add_assign_round(sq, Round::Up);
    }
    FloatBounds { lo, hi }
}

fn sqrt_bounds(sq: &FloatBounds) -> FloatBounds {
    let p = sq.lo.prec();
    FloatBounds {
        lo: Float::with_val_round(p, sq.lo.sqrt_ref(), Round::Down).0,
        hi: Float::with_val_round(p, sq.hi.sqrt_ref(), Round::Up).0,
    }
}

/// All certified norms of a parameter set.
#[derive(Clone, Debug)]
pub struct Norms {
    /// `||W_i||_F` per weight layer (weight and bias).
    pub layers: Vec<FloatBounds>,
    /// `ρ = ||θ||₂`.
    pub rho: FloatBounds,
    /// `∏_i ||W_i||_F`.
    pub product: FloatBounds,
}

/// The JSON view of [`Norms`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormsCert {
    /// `||W_i||_F` per weight layer, in layer order (weight and bias together).
    pub layers: Vec<Enclosure>,
    /// `ρ = ||θ||₂`.
    pub rho: Enclosure,
    /// `∏_i ||W_i||_F`.
    pub product: Enclosure,
    /// `ρ^L` (present for homogeneous specs).
    pub rho_pow_l: Option<Enclosure>,
}

/// Computes the norms at `prec` bits.
pub fn norms(params: &Params, prec: u32) -> Norms {
    let sq: Vec<FloatBounds> = params
        .layers
        .iter()
        .map(|l| sq_norm_bounds(l.weight.iter().chain(l.bias.iter().flatten()), prec))
        .collect();
    let mut total = FloatBounds {
        lo: Float::new(prec),
        hi: Float::new(prec),
    };
    for s in &sq {
        total.lo.add_assign_round(&s.lo, Round::Down);
        total.hi.add_assign_round(&s.hi, Round::Up);
    }
    let layers: Vec<FloatBounds> = sq.iter().map(sqrt_bounds).collect();
    let mut product = FloatBounds {
        lo: Float::with_val(prec, 1),
        hi: Float::with_val(prec, 1),
    };
    for l in &layers {
        // products of non-negative bounds are monotone.
        product.lo = Float::with_val_round(prec, &product.lo * &l.lo, Round::Down).0;
        product.hi = Float::with_val_round(prec, &product.hi * &l.hi, Round::Up).0;
    }
    Norms {
        layers,
        rho: sqrt_bounds(&total),
        product,
    }
}

impl Norms {
    /// The JSON view, with `ρ^L` for degree `l`.
    pub fn cert(&self, l: Option<u32>) -> NormsCert {
        NormsCert {
            layers: self.layers.iter().map(FloatBounds::enclosure).collect(),
            rho: self.rho.enclosure(),
            product: self.product.enclosure(),
            rho_pow_l: l.map(|l| self.rho.pow(l).enclosure()),
        }
    }
}
