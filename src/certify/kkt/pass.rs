//! The backward passes of the KKT check: certified gradients of many constraints, grouped
//! by example (one forward pass per batch of examples), summed with their multipliers.

use rayon::prelude::*;

use crate::certify::backward::{Backward, Constraint, GradSum, KinkStats, dot_with_params};
use crate::certify::ball::BallVec;
use crate::certify::forward::CertifiedNet;
use crate::data::Dataset;
use crate::error::Result;
use crate::model::Params;

/// One item of a backward pass: a constraint, its multiplier and what to keep.
#[derive(Clone, Copy, Debug)]
pub(super) struct Item {
    /// The constraint.
    pub(super) c: Constraint,
    /// Its multiplier in the certified sum (exact, `≥ 0`).
    pub(super) mu: f64,
    /// Keep the midpoint gradient (for NNLS).
    pub(super) keep_mid: bool,
    /// Enclose `⟨h, θ⟩` (for the Euler check).
    pub(super) euler: bool,
}

/// What a pass over constraints returns.
pub(super) struct PassOut {
    /// Certified enclosure of `Σ μ_c ∇q_c(θ)`.
    pub(super) sum: BallVec,
    /// Nonsmooth points met.
    pub(super) kinks: KinkStats,
    /// Midpoint gradients of items with `keep_mid`, by item index.
    pub(super) kept: Vec<(usize, Vec<f64>)>,
    /// `(item index, dot enclosure)` for items with `euler`.
    pub(super) euler: Vec<(usize, (f64, f64))>,
}

/// Runs certified backward passes over `items`, grouped by example.
pub(super) fn run_pass(
    net: &CertifiedNet,
    bw: &Backward,
    params: &Params,
    data: &Dataset,
    items: &[Item],
    batch: usize,
) -> Result<PassOut> {
    let n = bw.n_params();
    let mut sum = GradSum::new(n);
    let mut kinks = KinkStats::default();
    let mut kept = Vec::new();
    let mut euler = Vec::new();
    let mut examples: Vec<usize> = items.iter().map(|it| it.c.example()).collect();
    examples.sort_unstable();
    examples.dedup();
    let il = data.shape.len();
    let par = 2 * rayon::current_num_threads().max(1);
    for chunk in examples.chunks(batch.max(1)) {
        let mut pixels = Vec::with_capacity(chunk.len() * il);
        for &e in chunk {
            pixels.extend_from_slice(data.image(e));
        }
        let acts = net.forward(&pixels, chunk.len())?;
        let todo: Vec<(usize, usize)> = items
            .iter()
            .enumerate()
            .filter_map(|(k, it)| chunk.binary_search(&it.c.example()).ok().map(|b| (k, b)))
            .collect();
        for group in todo.chunks(par) {
            let grads: Vec<Result<_>> = group
                .par_iter()
                .map(|&(k, b)| {
                    let adj = items[k].c.adjoint(bw.outputs())?;
                    bw.gradient(&acts, chunk.len(), b, &adj)
                })
                .collect();
            for (&(k, _), g) in group.iter().zip(grads) {
                let g = g?;
                kinks.ambiguous_units += g.kinks.ambiguous_units;
                kinks.ambiguous_pools += g.kinks.ambiguous_pools;
                if items[k].euler {
                    euler.push((k, dot_with_params(&g.grad, params)?));
                }
                sum.add(items[k].mu, &g.grad)?;
                if items[k].keep_mid {
                    kept.push((k, g.grad.mid));
                }
            }
        }
    }
    Ok(PassOut {
        sum: sum.finish()?,
        kinks,
        kept,
        euler,
    })
}
