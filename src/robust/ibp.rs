//! Interval bound propagation (IBP) radii and the margin-only L2 radii (moved here from
//! `robust/mod.rs`, which keeps one-line entry points).

use crate::certify::ball::BallVec;
use crate::certify::forward::CertifiedNet;
use crate::certify::margin::{Task, gaps, margin_of};
use crate::certify::round::down;
use crate::data::Dataset;
use crate::error::Result;

use super::Lipschitz;
use super::linf_box;

/// Certified lower bounds of the margins of a batch of examples over their L∞ boxes.
fn ibp_margins(
    net: &CertifiedNet,
    data: &Dataset,
    idx: &[usize],
    eps: &[f64],
    task: Task,
) -> Result<Vec<f64>> {
    let il = data.shape.len();
    let px: Vec<u8> = idx
        .iter()
        .flat_map(|&n| data.image(n).iter().copied())
        .collect();
    let b = linf_box(&px, eps, il);
    let logits = net.logits_of_ball(&b, idx.len())?;
    Ok(idx
        .iter()
        .enumerate()
        .map(|(k, &n)| margin_of(&gaps(&logits, k, data.labels[n], task)).lo)
        .collect())
}

/// Certified L∞ radii by IBP with bisection (`steps` halvings of `[0, eps_max]`): for every
/// returned `r_n > 0`, the certified margin lower bound is `> 0` on the whole box of radius
/// `r_n` clipped to `[0,1]^d`. 0 when not even the clean point is certified.
pub fn ibp_radius(
    net: &CertifiedNet,
    data: &Dataset,
    task: Task,
    eps_max: f64,
    steps: usize,
) -> Result<Vec<f64>> {
    use rayon::prelude::*;
    let n = data.len();
    let chunks: Vec<Vec<usize>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(32)
        .map(|c| c.to_vec())
        .collect();
    let parts: Vec<Result<Vec<f64>>> = chunks
        .par_iter()
        .map(|idx| {
            let m = idx.len();
            let mut lo = vec![0.0; m];
            let mut hi = vec![eps_max; m];
            // clean certification, then eps_max.
            let q0 = ibp_margins(net, data, idx, &vec![0.0; m], task)?;
            let qm = ibp_margins(net, data, idx, &hi, task)?;
            let mut done: Vec<bool> = (0..m).map(|k| q0[k] <= 0.0 || qm[k] > 0.0).collect();
            for k in 0..m {
                if qm[k] > 0.0 {
                    lo[k] = eps_max;
                }
            }
            for _ in 0..steps {
                let mids: Vec<f64> = (0..m).map(|k| 0.5 * (lo[k] + hi[k])).collect();
                let q = ibp_margins(net, data, idx, &mids, task)?;
                for k in 0..m {
                    if done[k] {
                        continue;
                    }
                    if q[k] > 0.0 {
                        lo[k] = mids[k];
                    } else {
                        hi[k] = mids[k];
                    }
                }
                if done.iter().all(|d| *d) {
                    break;
                }
            }
            done.iter_mut().for_each(|d| *d = true);
            Ok(lo)
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// Certified L2 radii from the margin: `r_n = min_{j≠y} down(lo(s_nj) / Lip_j)` (0 when some
/// `lo(s_nj) ≤ 0`). Gap `s_j` moves by at most `Lip_j ||δ||₂`, so `s_j(x + δ) > 0` for
/// `||δ||₂ < r_n`.
pub fn lipschitz_radius(logits: &BallVec, lip: &Lipschitz, data: &Dataset, task: Task) -> Vec<f64> {
    (0..data.len())
        .map(|n| {
            let y = data.labels[n];
            let g = gaps(logits, n, y, task);
            let others: Vec<usize> = match task {
                Task::Binary => vec![0],
                Task::Multi(k) => (0..k).filter(|&j| j != y as usize).collect(),
            };
            g.iter()
                .zip(others)
                .map(|(s, j)| {
                    let l = lip.gap(y as usize, j);
                    if s.lo <= 0.0 || l.is_nan() {
                        0.0
                    } else if l == 0.0 {
                        f64::INFINITY
                    } else {
                        down(s.lo / l).max(0.0)
                    }
                })
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}
