//! The Euler identity check `⟨∇q_c(θ), θ⟩ = L q_c(θ)` of an L-homogeneous network.

use std::sync::Arc;

use super::bounds::{iv, pt};
use super::constraints::margins;
use super::pass::{Item, run_pass};
use super::{EulerCheck, EulerSample, check_data, degree};
use crate::certify::backward::{Backward, Constraint};
use crate::certify::forward::{CertifiedNet, PreparedNet};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params};

/// Checks the Euler identity `⟨h, θ⟩ = L q_c(θ)` for the given constraints: the certified
/// enclosure of `⟨h, θ⟩` over the gradient box must meet the certified enclosure of
/// `L q_c(θ)`. Errors on a non-homogeneous net.
pub fn euler_check(
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
    cons: &[Constraint],
) -> Result<EulerCheck> {
    let l = degree(spec)?;
    check_data(spec, data)?;
    let prepared = Arc::new(PreparedNet::from_spec(spec, params)?);
    let net = CertifiedNet::from_prepared(Arc::clone(&prepared));
    let bw = Backward::from_prepared(prepared);
    let items: Vec<Item> = cons
        .iter()
        .map(|&c| Item {
            c,
            mu: 0.0,
            keep_mid: false,
            euler: true,
        })
        .collect();
    for c in cons {
        if c.example() >= data.len() {
            return Err(Error::Invalid(format!(
                "constraint on example {} of a dataset of {}",
                c.example(),
                data.len()
            )));
        }
    }
    let vals = margins(&net, data, cons, None)?;
    let out = run_pass(&net, &bw, params, data, &items, 32)?;
    euler_samples(l, &items, &vals, &out.euler)
}

/// The Euler samples of the items with `euler` set: `dots` are the certified enclosures of
/// `⟨h, θ⟩` (by item index), `vals` the constraint values (same indices as `items`).
pub(super) fn euler_samples(
    l: u32,
    items: &[Item],
    vals: &[(f64, f64, f64)],
    dots: &[(usize, (f64, f64))],
) -> Result<EulerCheck> {
    let lf = l as f64;
    let mut samples = Vec::new();
    for &(k, (dlo, dhi)) in dots {
        let (lo, hi, _) = vals[k];
        let lq = pt(lf)? * iv(lo, hi)?;
        let overlap = dlo <= lq.sup() && lq.inf() <= dhi;
        samples.push(EulerSample {
            constraint: items[k].c,
            dot_lower: dlo,
            dot_upper: dhi,
            lq_lower: lq.inf(),
            lq_upper: lq.sup(),
            overlap,
        });
    }
    Ok(EulerCheck {
        degree: l,
        all_overlap: samples.iter().all(|s| s.overlap),
        samples,
    })
}
