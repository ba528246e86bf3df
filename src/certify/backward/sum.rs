//! Rounding-error bounds of sums computed in round-to-nearest (Lemma B1 of
//! proofs/backward.md): [`finish_rad`] and its constants, the certified inner product with the
//! parameters, and the accumulator [`GradSum`] of `Σ_c λ_c ∇s_c`.

use rayon::prelude::*;

use crate::certify::ball::BallVec;
use crate::certify::round::{ETA, U, down, exact, gamma_up, up};
use crate::error::{Error, Result};
use crate::model::Params;

/// Rigorous radius of a sum `Σ_{i<n} a_i b_i` computed in round-to-nearest (Lemma B1).
///
/// Inputs: `rad_hat = fl(Σ ρ_i)`, where each exact `ρ_i ≥ 0` is a sum of at most three
/// products of two non-negative f64 (the radius contribution of term `i`), and
/// `abs_hat = fl(Σ |fl(ma_i mb_i)|)`, for `n` terms, in any summation order. Returns `R`
/// with `|Σ a_i b_i − fl(Σ ma_i mb_i)| ≤ R` whenever `|a_i b_i − ma_i mb_i| ≤ ρ_i`:
///
/// `R = (1 + 2g)(rad_hat + g·abs_hat + 4nη) + nη`, `g ≥ γ_{n+5}`, every operation rounded
/// up.
#[inline]
pub fn finish_rad(rad_hat: f64, abs_hat: f64, g: &RadConst) -> f64 {
    let t = up(rad_hat + up(g.g * abs_hat));
    let t = up(t + g.four_n_eta);
    up(up(t * g.one_plus_2g) + g.n_eta)
}

/// Constants of [`finish_rad`] for sums of `n` terms.
#[derive(Clone, Copy, Debug)]
pub struct RadConst {
    /// `≥ γ_{n+5}`.
    pub g: f64,
    /// `≥ 1 + 2g`.
    pub one_plus_2g: f64,
    /// `4 n η` (exact).
    pub four_n_eta: f64,
    /// `n η` (exact).
    pub n_eta: f64,
}

impl RadConst {
    /// Constants for sums of `n ≥ 1` terms; errors if `n` is absurdly large.
    pub fn new(n: usize) -> Result<Self> {
        let n = n.max(1);
        let g = gamma_up(n + 5)?;
        if g > 0.25 {
            return Err(Error::Certify(format!("sums of {n} terms are too long")));
        }
        Ok(Self {
            g,
            one_plus_2g: up(1.0 + up(2.0 * g)),
            // an integer below 2^52 times 2^-1074 is an exact subnormal.
            four_n_eta: exact(4 * n) * ETA,
            n_eta: exact(n) * ETA,
        })
    }
}

/// Certified enclosure `[lo, hi]` of `⟨g, θ⟩` for every `g` in the ball vector `grad`
/// (flat, [`Params`] order) and the exact parameters `θ` (Lemma B1 with n = #params).
pub fn dot_with_params(grad: &BallVec, params: &Params) -> Result<(f64, f64)> {
    let n = grad.len();
    if params.len() != n {
        return Err(Error::Shape(format!(
            "{n} gradient entries for {} parameters",
            params.len()
        )));
    }
    let (mut m, mut r, mut a) = (0.0, 0.0, 0.0);
    for ((&gmi, &gri), &t) in grad.mid.iter().zip(&grad.rad).zip(params.values()) {
        let t = t as f64;
        let prod = gmi * t;
        m += prod;
        a += prod.abs();
        r += gri * t.abs();
    }
    let rad = finish_rad(r, a, &RadConst::new(n)?);
    Ok((down(m - rad), up(m + rad)))
}

/// Certified accumulator of `Σ_c λ_c g_c` over gradient enclosures `g_c` and exact f64
/// multipliers `λ_c ≥ 0`, without storing the `g_c`: the result contains
/// `Σ_c λ_c h_c` for every choice `h_c ∈ g_c`.
///
/// Invariant: `mid`, `rad`, `abs` have one entry per parameter; `rad` holds
/// `fl(Σ λ_c r_c)` and `abs` `fl(Σ |fl(λ_c m_c)|)`, `terms` the number of added terms
/// (the `n` of Lemma B1; any summation order and any merge order is covered).
#[derive(Clone, Debug)]
pub struct GradSum {
    mid: Vec<f64>,
    rad: Vec<f64>,
    abs: Vec<f64>,
    terms: usize,
}

impl GradSum {
    /// An empty sum over `n` parameters.
    pub fn new(n: usize) -> Self {
        Self {
            mid: vec![0.0; n],
            rad: vec![0.0; n],
            abs: vec![0.0; n],
            terms: 0,
        }
    }

    /// Adds `λ g` (λ exact, `≥ 0` and finite).
    pub fn add(&mut self, lambda: f64, g: &BallVec) -> Result<()> {
        if !(lambda >= 0.0 && lambda.is_finite()) {
            return Err(Error::Invalid(format!(
                "multiplier {lambda} is not a finite non-negative number"
            )));
        }
        if g.len() != self.mid.len() {
            return Err(Error::Shape(format!(
                "gradient of length {} added to a sum of length {}",
                g.len(),
                self.mid.len()
            )));
        }
        self.terms += 1;
        if lambda == 0.0 {
            return Ok(());
        }
        // Elementwise and independent: parallel chunks do not change any sum's order.
        const CHUNK: usize = 1 << 15;
        self.mid
            .par_chunks_mut(CHUNK)
            .zip(self.abs.par_chunks_mut(CHUNK))
            .zip(self.rad.par_chunks_mut(CHUNK))
            .zip(g.mid.par_chunks(CHUNK).zip(g.rad.par_chunks(CHUNK)))
            .for_each(|(((m, a), r), (gm, gr))| {
                for i in 0..m.len() {
                    let p = lambda * gm[i];
                    m[i] += p;
                    a[i] += p.abs();
                    r[i] += lambda * gr[i];
                }
            });
        Ok(())
    }

    /// Adds another partial sum (a reordering of the same sum: Lemma B1 holds for any
    /// order).
    pub fn merge(&mut self, other: &GradSum) {
        for i in 0..self.mid.len() {
            self.mid[i] += other.mid[i];
            self.abs[i] += other.abs[i];
            self.rad[i] += other.rad[i];
        }
        self.terms += other.terms;
    }

    /// Number of terms added so far.
    pub fn terms(&self) -> usize {
        self.terms
    }

    /// The certified enclosure of the sum.
    pub fn finish(self) -> Result<BallVec> {
        let k = RadConst::new(self.terms)?;
        let mut rad = self.rad;
        for (r, &a) in rad.iter_mut().zip(&self.abs) {
            *r = finish_rad(*r, a, &k);
        }
        let out = BallVec { mid: self.mid, rad };
        if !out.is_valid() {
            return Err(Error::Certify(
                "the sum of gradient enclosures overflowed f64".into(),
            ));
        }
        Ok(out)
    }
}

/// Squared radius helper for tests and reports: `max_i rad_i` of a ball vector.
pub fn max_radius(v: &BallVec) -> f64 {
    v.rad.iter().fold(0.0, |a: f64, &b| a.max(b))
}

/// Unit-roundoff used in the bounds (re-exported for the proofs' notation).
pub const UNIT_ROUNDOFF: f64 = U;
