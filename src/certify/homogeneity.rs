//! Homogeneity: the structural proof from [`ModelSpec::homogeneity`] plus a numeric witness:
//! for `c ∈ {2, 1/2, 4}` (powers of two, so `c·θ` is exact when nothing overflows or
//! underflows — checked) the certified enclosures of `Φ(cθ; x)` and `c^L Φ(θ; x)` must
//! overlap on a sample of examples (proofs/homogeneity.md). The witness can refute a wrong
//! degree; it does not prove homogeneity (the structural argument does).

use serde::{Deserialize, Serialize};

use super::ball::BallVec;
use super::forward::{CertifiedNet, ForwardMode};
use crate::error::Result;
use crate::model::{ModelSpec, Params};

/// The witness for one scale `c`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessCheck {
    /// The scale `c` (a power of two).
    pub c: f64,
    /// Examples checked (0 when skipped).
    pub examples: usize,
    /// True when every pair of enclosures overlaps (consistent with degree L); false is a
    /// proof that `Φ(cθ) ≠ c^L Φ(θ)` for some example.
    pub consistent: bool,
    /// Largest radius of the two enclosures relative to the value, over the sample (how
    /// sharp the check is).
    pub max_rel_radius: f64,
    /// Why the check was skipped (overflow / underflow of the scaled weights or logits).
    pub skipped: Option<String>,
}

/// Homogeneity facts for a certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomogeneityCert {
    /// The structural degree `L` (`None`: not homogeneous).
    pub degree: Option<u32>,
    /// The structural proof, one line per layer.
    pub reasons: Vec<String>,
    /// The first layer that breaks homogeneity.
    pub offending_layer: Option<usize>,
    /// The numeric witness (empty for non-homogeneous specs).
    pub witness: Vec<WitnessCheck>,
}

/// `c·θ` if every scaled parameter is exact (finite, and `(c·w)/c == w`), else why not.
pub fn scale_params(params: &Params, c: f32) -> std::result::Result<Params, String> {
    let mut p = params.clone();
    for (i, v) in p.values_mut().enumerate() {
        let s = *v * c;
        if !s.is_finite() || s / c != *v {
            return Err(format!(
                "parameter {i} = {v:e} times {c} is not exact in f32"
            ));
        }
        *v = s;
    }
    Ok(p)
}

/// `c^L · b` exactly (power-of-two scaling) or `None` if a value over/underflows.
fn scale_ball(b: &BallVec, f: f64) -> Option<BallVec> {
    let exact = |v: f64| {
        let s = v * f;
        (s.is_finite() && s / f == v).then_some(s)
    };
    Some(BallVec {
        mid: b.mid.iter().map(|&v| exact(v)).collect::<Option<_>>()?,
        rad: b.rad.iter().map(|&v| exact(v)).collect::<Option<_>>()?,
    })
}

/// The structural result and the witness on `pixels` (`batch` examples), the logits
/// enclosed in forward `mode` (double-double keeps the witness sharp on deep nets).
pub fn homogeneity(
    spec: &ModelSpec,
    params: &Params,
    pixels: &[u8],
    batch: usize,
    mode: ForwardMode,
) -> Result<HomogeneityCert> {
    let h = spec.homogeneity();
    let mut witness = Vec::new();
    if let Some(l) = h.degree {
        let base = CertifiedNet::new(spec, params)?
            .with_forward_mode(mode)?
            .logits(pixels, batch)?;
        for c in [2.0f32, 0.5, 4.0] {
            let skip = |why: String| WitnessCheck {
                c: c as f64,
                examples: 0,
                consistent: true,
                max_rel_radius: 0.0,
                skipped: Some(why),
            };
            let scaled = match scale_params(params, c) {
                Ok(p) => p,
                Err(why) => {
                    witness.push(skip(why));
                    continue;
                }
            };
            let f = (c as f64).powi(l as i32); // a power of two, exact
            let Some(expected) = scale_ball(&base, f) else {
                witness.push(skip(format!(
                    "c^L = {f:e} times the logits leaves f64 range"
                )));
                continue;
            };
            let got = CertifiedNet::new(spec, &scaled)?
                .with_forward_mode(mode)?
                .logits(pixels, batch)?;
            let mut consistent = true;
            let mut rel: f64 = 0.0;
            for i in 0..got.len() {
                // overlap of [lo, hi] intervals, both outward-rounded
                consistent &= got.lo(i) <= expected.hi(i) && expected.lo(i) <= got.hi(i);
                let scale = got.mid[i].abs().max(f64::MIN_POSITIVE);
                rel = rel.max(got.rad[i].max(expected.rad[i]) / scale);
            }
            witness.push(WitnessCheck {
                c: c as f64,
                examples: batch,
                consistent,
                max_rel_radius: rel,
                skipped: None,
            });
        }
    }
    Ok(HomogeneityCert {
        degree: h.degree,
        reasons: h.reasons,
        offending_layer: h.offending_layer,
        witness,
    })
}
