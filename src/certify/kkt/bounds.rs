//! The certified `ε` and `δ` bounds of one choice of multipliers (proofs/kkt.md), in
//! interval arithmetic (inari) over the certified gradient sum.

use inari::Interval;
use rayon::prelude::*;

use crate::certify::backward::RadConst;
use crate::certify::ball::BallVec;
use crate::certify::round::{down, up};
use crate::error::{Error, Result};
use crate::model::Params;

/// `[lo, hi]` as an inari interval (both finite, `lo ≤ hi`).
pub(super) fn iv(lo: f64, hi: f64) -> Result<Interval> {
    Interval::try_from((lo, hi))
        .map_err(|_| Error::Certify(format!("invalid interval [{lo}, {hi}]")))
}

/// The point interval `[x, x]`.
pub(super) fn pt(x: f64) -> Result<Interval> {
    iv(x, x)
}

/// Certified `ε ≥ sup ‖A θ − C v‖₂` over `v ∈ sum` (a ball vector over the parameters),
/// `A ∋ a`, `C ∋ c` intervals; returns (bound, f64 estimate with the midpoints).
pub(super) fn epsilon_bound(
    params: &Params,
    sum: &BallVec,
    a: Interval,
    c: Interval,
) -> Result<(f64, f64)> {
    let n = sum.len();
    let theta: Vec<f64> = params.values().map(|&v| v as f64).collect();
    let (am, cm) = (a.mid(), c.mid());
    // Fixed chunks summed in order: the same floating-point sum whatever the thread count
    // or scheduling, so a certificate is reproducible bit for bit (the bound below holds for
    // any summation order; determinism is for `verify` and the regression fixtures).
    const CHUNK: usize = 4096;
    let parts: Vec<(f64, f64)> = theta
        .par_chunks(CHUNK)
        .zip(sum.mid.par_chunks(CHUNK).zip(sum.rad.par_chunks(CHUNK)))
        .map(|(ts, (ms, rs))| -> Result<(f64, f64)> {
            let (mut s, mut e2) = (0.0, 0.0);
            for ((&t, &m), &r) in ts.iter().zip(ms).zip(rs) {
                let v = iv(down(m - r), up(m + r))?;
                let d = a * pt(t)? - c * v;
                let mag = d.mag();
                let e = am * t - cm * m;
                s += mag * mag;
                e2 += e * e;
            }
            Ok((s, e2))
        })
        .collect::<Result<_>>()?;
    let (s_hat, est) = parts.iter().fold((0.0, 0.0), |x, y| (x.0 + y.0, x.1 + y.1));
    // exact Σ mag² ≤ (ŝ + nη)(1 + 2γ_{n+5}) (Lemma B1 for non-negative single products).
    let k = RadConst::new(n)?;
    let bound = up(up(s_hat + k.n_eta) * k.one_plus_2g);
    let eps = up(bound.sqrt());
    if !eps.is_finite() {
        return Err(Error::Certify("the epsilon bound overflowed f64".into()));
    }
    Ok((eps, est.sqrt()))
}

/// Certified `δ ≥ max(0, max_c σ μ_c (hi_c / q_lo − 1))`.
pub(super) fn delta_bound(sigma: Interval, mu: &[f64], hi: &[f64], q_lo: Interval) -> Result<f64> {
    let one = pt(1.0)?;
    let mut d = 0.0f64;
    for (&m, &h) in mu.iter().zip(hi) {
        if m == 0.0 {
            continue;
        }
        let v = sigma * pt(m)? * (pt(h)? / q_lo - one);
        if v.is_empty() || !v.sup().is_finite() {
            return Err(Error::Certify("the delta bound overflowed f64".into()));
        }
        d = d.max(v.sup());
    }
    Ok(d)
}

/// Certified lower bound on `‖θ̃‖₂ = a‖θ‖₂`, `A ∋ a` (proofs/kkt.md, step 5): `Σ θ_i²` summed
/// in inari intervals (every square and sum outward-rounded), its square root and the product
/// with `A` outward-rounded, and the lower end taken.
pub(super) fn theta_tilde_norm_lower(params: &Params, a: Interval) -> Result<f64> {
    let mut s = pt(0.0)?;
    for &v in params.values() {
        let t = pt(v as f64)?;
        s += t * t;
    }
    let n = (a * s.sqrt()).inf();
    if !n.is_finite() {
        return Err(Error::Certify(
            "the norm of the rescaled parameters overflowed f64".into(),
        ));
    }
    Ok(n.max(0.0))
}

/// Certified `ε/‖θ̃‖ ≤` the result, from `ε ≤ eps_upper` and `‖θ̃‖ ≥ norm_lower`
/// (`+∞` when `norm_lower = 0`).
pub(super) fn relative_upper(eps_upper: f64, norm_lower: f64) -> Result<f64> {
    if norm_lower <= 0.0 {
        return Ok(f64::INFINITY);
    }
    Ok((pt(eps_upper)? / pt(norm_lower)?).sup())
}

/// Certified lower bound on the cosine between `θ` and `Σ_c w_c h_c` for every choice of
/// `h_c` in the gradient boxes, from the paper multipliers' `ε/‖θ̃‖ ≤ r` (proofs/kkt.md,
/// step 5): when `r < 1`, `cos ≥ √(1 − r²)`; `None` otherwise (nothing is proved).
pub(super) fn beta_lower(r: f64) -> Result<Option<f64>> {
    if r.is_nan() || r >= 1.0 {
        return Ok(None);
    }
    let r = pt(r)?;
    let c = (pt(1.0)? - r * r).sqrt();
    Ok(Some(c.inf().max(0.0)))
}
