//! Interval bound propagation (IBP) over input boxes, with the margin specification folded
//! into the last linear layer, and the margin-only L2 radii (`robust/mod.rs` keeps one-line
//! entry points).
//!
//! - [`forward_box`]: the enclosures of every layer over a box, as the certified forward
//!   pass ([`crate::certify::forward`], proofs/forward.md) except that max-pool takes the
//!   interval maximum (proofs/robust-ibp.md, "Max-pool").
//! - [`SpecFold`]: every gap `Φ_y − Φ_j = (w_y − w_j)ᵀh + (b_y − b_j)` bounded directly from
//!   the enclosure of the last dense layer's input `h` (proofs/robust-ibp.md, "Folded
//!   specification"), instead of `lo(Φ_y) − hi(Φ_j)`.

use crate::certify::ball::BallVec;
use crate::certify::forward::CertifiedNet;
use crate::certify::forward::binary64::{self, RadiusMode};
use crate::certify::forward::prepare::{PreparedNet, PreparedOp};
use crate::certify::margin::{Task, gaps};
use crate::certify::round::{down, interval_to_ball, up};
use crate::data::Dataset;
use crate::error::Result;
use crate::model::Op;

use super::Lipschitz;
use super::linf_box;

/// Applies layer `i` of `net` to a batch of enclosures (sequentially).
fn apply_layer(net: &PreparedNet, i: usize, x: BallVec, batch: usize) -> Result<BallVec> {
    let (p, op) = (&net.plan()[i], &net.ops()[i]);
    match op {
        PreparedOp::MaxPool { window, channels } => {
            Ok(binary64::max_pool_interval(window, *channels, &x, batch))
        }
        _ => binary64::apply(p, op, RadiusMode::Gemm, x, batch),
    }
}

/// Enclosures of the input box `x` (`[batch, input_len]`, any reals) and of every layer's
/// output over it (index `i + 1` = output of layer `i`), sequentially; max-pool takes the
/// interval maximum. Errors on a shape mismatch, an invalid box or an overflow.
pub fn forward_box(net: &PreparedNet, x: &BallVec, batch: usize) -> Result<Vec<BallVec>> {
    net.check_box(x, batch)?;
    let mut out = vec![x.clone()];
    for i in 0..net.plan().len() {
        let next = apply_layer(net, i, out[i].clone(), batch)?;
        out.push(next);
    }
    Ok(out)
}

/// The enclosure of the output of layer `upto − 1` (the input for `upto = 0`) over the box
/// `x` (a batch of `batch`), as [`forward_box`] computes it.
pub fn forward_prefix(
    net: &PreparedNet,
    x: &BallVec,
    upto: usize,
    batch: usize,
) -> Result<BallVec> {
    let mut y = x.clone();
    for i in 0..upto.min(net.plan().len()) {
        y = apply_layer(net, i, y, batch)?;
    }
    Ok(y)
}

/// Recomputes `encl[from + 1..]` from `encl[from]` (one example or a batch of `batch`) and
/// keeps, entry by entry, the intersection with the previous enclosures (both contain the
/// exact set, so their intersection does). Used after a layer's bounds were tightened.
pub fn forward_from(
    net: &PreparedNet,
    encl: &mut [BallVec],
    from: usize,
    batch: usize,
) -> Result<()> {
    for i in from..net.plan().len() {
        let next = apply_layer(net, i, encl[i].clone(), batch)?;
        intersect(&mut encl[i + 1], &next);
    }
    Ok(())
}

/// `old ← old ∩ new` entry by entry (both enclosures of the same exact values): keeps the
/// ball that lies inside the other, else the ball of the intersected interval (rounded
/// outward).
pub fn intersect(old: &mut BallVec, new: &BallVec) {
    for i in 0..old.len() {
        let (ol, oh) = (old.lo(i), old.hi(i));
        let (nl, nh) = (new.lo(i), new.hi(i));
        if nl >= ol && nh <= oh {
            old.mid[i] = new.mid[i];
            old.rad[i] = new.rad[i];
        } else if !(ol >= nl && oh <= nh) {
            let (lo, hi) = (ol.max(nl), oh.min(nh));
            if lo <= hi {
                (old.mid[i], old.rad[i]) = interval_to_ball(lo, hi);
            }
        }
    }
}

/// `[lo, hi]` enclosing the exact `a − b` of two f64 numbers (exact when the rounded
/// difference is: TwoSum's error term is then 0).
fn diff_interval(a: f64, b: f64) -> (f64, f64) {
    let s = a - b;
    let bb = s - a;
    let err = (a - (s - bb)) + (-b - bb);
    if err == 0.0 && s.is_finite() {
        (s, s)
    } else {
        (down(s), up(s))
    }
}

/// The margin specification folded into the last dense layer: for every label `y` and
/// class `j ≠ y`, the exact row `w_y − w_j` (as an interval per entry, a point when the f64
/// difference is exact) and a lower bound of `b_y − b_j`; for one output (binary), `±w`.
///
/// Invariant: `at` is the index of a dense layer followed only by flattens, with `inp`
/// inputs and `k` outputs; `rows[(y·k + j)·inp + c]` encloses `w_yc − w_jc`
/// (binary: `rows[label·inp + c]` encloses `(2·label − 1)·w_c`), `bias[y·k + j]` is
/// `≤ b_y − b_j` (binary: `≤ ±b`).
#[derive(Clone, Debug)]
pub struct SpecFold {
    at: usize,
    inp: usize,
    k: usize,
    rows: Vec<(f64, f64)>,
    bias: Vec<f64>,
}

impl SpecFold {
    /// The fold of `net`'s last dense layer; `None` when the network does not end with a
    /// dense layer (up to flattens).
    pub fn new(net: &PreparedNet) -> Option<Self> {
        let plan = net.plan();
        let at = (0..plan.len())
            .rev()
            .find(|&i| !matches!(plan[i].op, Op::Flatten))?;
        let PreparedOp::Dense(a) = &net.ops()[at] else {
            return None;
        };
        let (k, inp) = (a.out, a.fan_in);
        let b = |o: usize| a.bias.as_ref().map_or(0.0, |b| b[o]);
        let (mut rows, mut bias);
        if k == 1 {
            rows = Vec::with_capacity(2 * inp);
            rows.extend(a.w.iter().map(|&v| (-v, -v)));
            rows.extend(a.w.iter().map(|&v| (v, v)));
            bias = vec![-b(0), b(0)];
        } else {
            rows = vec![(0.0, 0.0); k * k * inp];
            bias = vec![0.0; k * k];
            for y in 0..k {
                for j in (0..k).filter(|&j| j != y) {
                    let r = &mut rows[(y * k + j) * inp..][..inp];
                    for (c, e) in r.iter_mut().enumerate() {
                        *e = diff_interval(a.w[y * inp + c], a.w[j * inp + c]);
                    }
                    bias[y * k + j] = diff_interval(b(y), b(j)).0;
                }
            }
        }
        Some(Self {
            at,
            inp,
            k,
            rows,
            bias,
        })
    }

    /// Index into the enclosures of [`forward_box`] of the folded layer's input.
    pub fn input_index(&self) -> usize {
        self.at
    }

    /// Lower bound of `dᵀh + β` over `h` in the enclosure `h` (rows `n·inp..`), `d` given
    /// entrywise by intervals: each product's minimum over the corners, every product and
    /// sum rounded down.
    fn lower(&self, row: usize, beta: f64, h: &BallVec, n: usize) -> f64 {
        let d = &self.rows[row * self.inp..][..self.inp];
        let mut s = beta;
        for (c, &(dl, dh)) in d.iter().enumerate() {
            let (l, u) = (h.lo(n * self.inp + c), h.hi(n * self.inp + c));
            let t = if dl == dh {
                if dl >= 0.0 { dl * l } else { dl * u }
            } else {
                (dl * l).min(dl * u).min(dh * l).min(dh * u)
            };
            // A product of floats is exact or rounded: down(RN(t)) ≤ t; 0·x is exact.
            let t = if t == 0.0 { 0.0 } else { down(t) };
            s = down(s + t);
        }
        if s.is_nan() { f64::NEG_INFINITY } else { s }
    }

    /// Certified lower bounds of every gap of example `n` of the batch whose enclosures are
    /// `encl` (from [`forward_box`]): `j ≠ y` increasing (binary: `[q]`), each at least the
    /// unfolded `lo(Φ_y) − hi(Φ_j)` (both are sound; their maximum is taken).
    pub fn gap_lowers(&self, encl: &[BallVec], n: usize, label: u8, task: Task) -> Vec<f64> {
        let h = &encl[self.at];
        let unfolded = gaps(encl.last().expect("non-empty"), n, label, task);
        let y = label as usize;
        let folded: Vec<f64> = match task {
            Task::Binary => {
                let r = usize::from(label == 1);
                vec![self.lower(r, self.bias[r], h, n)]
            }
            Task::Multi(_) => (0..self.k)
                .filter(|&j| j != y)
                .map(|j| self.lower(y * self.k + j, self.bias[y * self.k + j], h, n))
                .collect(),
        };
        folded
            .into_iter()
            .zip(unfolded)
            .map(|(f, g)| f.max(g.lo))
            .collect()
    }
}

/// Certified lower bounds of every gap of example `n` of a batch of enclosures from
/// [`forward_box`]: folded when `fold` is given, else `lo(Φ_y) − hi(Φ_j)`.
pub fn gap_lowers(
    fold: Option<&SpecFold>,
    encl: &[BallVec],
    n: usize,
    label: u8,
    task: Task,
) -> Vec<f64> {
    match fold {
        Some(f) => f.gap_lowers(encl, n, label, task),
        None => gaps(encl.last().expect("non-empty"), n, label, task)
            .iter()
            .map(|g| g.lo)
            .collect(),
    }
}

/// Certified lower bounds of the margins of a batch of examples over their L∞ boxes.
fn ibp_margins(
    net: &PreparedNet,
    fold: Option<&SpecFold>,
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
    let encl = forward_box(net, &b, idx.len())?;
    Ok(idx
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            gap_lowers(fold, &encl, k, data.labels[n], task)
                .into_iter()
                .fold(f64::INFINITY, f64::min)
        })
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
    let prepared = net.prepared();
    let fold = SpecFold::new(prepared);
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
            let q0 = ibp_margins(prepared, fold.as_ref(), data, idx, &vec![0.0; m], task)?;
            let qm = ibp_margins(prepared, fold.as_ref(), data, idx, &hi, task)?;
            let mut done: Vec<bool> = (0..m).map(|k| q0[k] <= 0.0 || qm[k] > 0.0).collect();
            for k in 0..m {
                if qm[k] > 0.0 {
                    lo[k] = eps_max;
                }
            }
            for _ in 0..steps {
                let mids: Vec<f64> = (0..m).map(|k| 0.5 * (lo[k] + hi[k])).collect();
                let q = ibp_margins(prepared, fold.as_ref(), data, idx, &mids, task)?;
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
