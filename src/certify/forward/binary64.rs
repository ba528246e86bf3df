//! The binary64 certified kernels: dense and conv layers at matrix-product speed, the
//! row-sum radius variant, ReLU, LeakyReLU, max- and avg-pool on [`BallVec`]s.
//!
//! Dense and conv layers run `W·m` and `|W|·v` as two ordinary matrix products
//! ([`crate::linalg::matmul`], any summation order), and the radius is widened by Higham's
//! a-priori bound `|fl(aᵀb) − aᵀb| ≤ γ_n |a|ᵀ|b| + n·η` (`γ_n = nu/(1−nu)`, `u = 2⁻⁵³`,
//! `η = 2⁻¹⁰⁷⁴`) with the constants of `prepare::Affine`. Every upward rounding is done with [`up`]
//! (`f64::next_up` of the round-to-nearest result), which is never below the exact value
//! (Lemma 1 of `proofs/forward.md`).
//!
//! The conv gathers stay table-based (`prepare::gather_table`, built once per
//! network): the gather is the hot loop of every conv layer, and the table gives one
//! branch-free indexed load per entry instead of the per-tap padding logic of
//! `Window::taps`. The pools read each window as `k` contiguous row slices (valid pooling).

use super::prepare::{Affine, PreparedOp};
use crate::certify::ball::BallVec;
use crate::certify::round::{
    ETA, ONE_PLUS_4U, U, ball_to_interval, down, exact, gamma_up, interval_to_ball, up,
};
use crate::error::{Error, Result};
use crate::linalg::{Accum, MatMut, MatRef, Par, Scalar, matmul};
use crate::model::{LayerPlan, Window};

/// How dense and conv layers bound the radius product `|W|·v` (proofs/forward.md §4, §4c).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RadiusMode {
    /// `|W|·v` as a matrix product (binary32, binary64 fallback): the tightest radii, at the
    /// cost of a second matrix product per layer. The default.
    #[default]
    Gemm,
    /// `(Σ_j |w_ij|) · max_j v_j` per example: `O(outputs)` instead of `O(outputs·fan-in)`,
    /// radii a few times wider. For bulk margin certification where speed matters.
    RowSum,
}

/// Applies prepared layer `op` (plan `p`) to a batch of `batch` enclosures, sequentially;
/// checks the result is finite.
pub(crate) fn apply(
    p: &LayerPlan,
    op: &PreparedOp,
    mode: RadiusMode,
    x: BallVec,
    batch: usize,
) -> Result<BallVec> {
    let (il, ol) = (p.input.len(), p.output.len());
    debug_assert_eq!(x.len(), batch * il);
    // Max-pool and flatten map finite balls to finite balls exactly (no arithmetic);
    // every other step (ReLU rounds `m + r` up) needs the finiteness check.
    let (y, check) = match op {
        PreparedOp::Dense(a) => match mode {
            RadiusMode::RowSum => (rowsum_layer(a, None, &x, batch, il), true),
            RadiusMode::Gemm => (dense(a, &x, batch, il), true),
        },
        PreparedOp::Conv {
            affine,
            window,
            c_in,
            table,
        } => match mode {
            RadiusMode::RowSum => (
                rowsum_layer(affine, Some((window, table)), &x, batch, il),
                true,
            ),
            RadiusMode::Gemm => (conv(affine, window, *c_in, table, &x, batch), true),
        },
        PreparedOp::MaxPool { window, channels } => {
            (pool(window, *channels, &x, batch, true), false)
        }
        PreparedOp::AvgPool { window, channels } => {
            (pool(window, *channels, &x, batch, false), true)
        }
        PreparedOp::Flatten => (x, false),
        PreparedOp::Relu => (relu(x), true),
        PreparedOp::LeakyRelu { slope } => (leaky(x, *slope as f64), true),
    };
    debug_assert_eq!(y.len(), batch * ol);
    if check && !y.is_valid() {
        return Err(Error::Certify(format!(
            "layer {} ({}): the enclosure overflowed f64 (weights or activations too large \
             to certify in f64)",
            p.index,
            p.layer.describe()
        )));
    }
    Ok(y)
}

/// `C = A · Bᵀ` for row-major `a: [m, k]`, `b: [n, k]`, into `c: [m, n]`, on the calling
/// thread (any summation order — the error bound does not depend on it).
fn mat_abt<T: Scalar>(a: &[T], b: &[T], c: &mut [T], m: usize, n: usize, k: usize) {
    matmul(
        MatMut::row_major(c, m, n),
        Accum::Replace,
        MatRef::row_major(a, m, k),
        MatRef::row_major(b, n, k).transpose(),
        Par::Seq,
    );
}

/// `C = A · B` for row-major `a: [m, k]`, `b: [k, n]`, on the calling thread.
fn mat_ab<T: Scalar>(a: &[T], b: &[T], c: &mut [T], m: usize, n: usize, k: usize) {
    matmul(
        MatMut::row_major(c, m, n),
        Accum::Replace,
        MatRef::row_major(a, m, k),
        MatRef::row_major(b, k, n),
        Par::Seq,
    );
}

fn dense(a: &Affine, x: &BallVec, batch: usize, il: usize) -> BallVec {
    let mut c = vec![0.0; batch * a.out];
    let mut s = vec![0.0; batch * a.out];
    mat_abt(&x.mid, &a.w, &mut c, batch, a.out, il);
    let mut s32 = None;
    if let Some(w32) = &a.w_abs32 {
        // |W|·v in binary32 (proofs/forward.md §4b); fall back to f64 on overflow.
        let v32 = a.inflate_input32(&x.mid, &x.rad);
        let mut t = vec![0f32; batch * a.out];
        mat_abt(&v32, w32, &mut t, batch, a.out, il);
        if t.iter().fold(true, |ok, x| ok & x.is_finite()) {
            s32 = Some(t);
        }
    }
    if s32.is_none() {
        let v = a.inflate_input(&x.mid, &x.rad);
        mat_abt(&v, &a.w_abs, &mut s, batch, a.out, il);
    }
    let out = a.out;
    a.finish(&mut c, &mut s, |i| i % out, s32.as_deref());
    BallVec { mid: c, rad: s }
}

/// A dense (`conv = None`) or conv layer in [`RadiusMode::RowSum`]: the midpoint is the
/// binary64 product as in §4; the radius of output `i` of example `b` is
/// `up(up(ρ_i · vmax_b) + up(D + nη))` with `ρ_i ≥ Σ_j |w_ij|` and
/// `vmax_b = max_j v_j` over the example's input (proofs/forward.md §4c).
fn rowsum_layer(
    a: &Affine,
    conv: Option<(&Window, &[u32])>,
    x: &BallVec,
    batch: usize,
    il: usize,
) -> BallVec {
    let c1 = a.c1;
    // v_j ≥ γ_n|m_j| + r_j − η (Lemma 3); max is exact.
    let vmax: Vec<f64> = x
        .mid
        .chunks(il)
        .zip(x.rad.chunks(il))
        .map(|(m, r)| {
            m.iter().zip(r).fold(0.0f64, |acc, (&m, &r)| {
                acc.max(c1 * m.abs() + ONE_PLUS_4U * r)
            })
        })
        .collect();
    let (mut c, p) = match conv {
        None => {
            let mut c = vec![0.0; batch * a.out];
            mat_abt(&x.mid, &a.w, &mut c, batch, a.out, il);
            (c, 1)
        }
        Some((w, table)) => {
            let p = w.out_h * w.out_w;
            let k = a.fan_in;
            let mut col = vec![0.0; k * p];
            let mut c = vec![0.0; batch * a.out * p];
            for b in 0..batch {
                im2col(&x.mid[b * il..(b + 1) * il], table, &mut col);
                mat_ab(
                    &a.w,
                    &col,
                    &mut c[b * a.out * p..(b + 1) * a.out * p],
                    a.out,
                    p,
                    k,
                );
            }
            (c, p)
        }
    };
    let ol = a.out * p;
    let mut rad = vec![0.0; batch * ol];
    for b in 0..batch {
        for o in 0..a.out {
            // S_i = Σ_j |w_ij| v_j ≤ ρ_i · vmax; each product and sum rounded up (Lemma 1).
            let r = up(up(a.rowsum_up[o] * vmax[b]) + a.dn);
            rad[b * ol + o * p..b * ol + (o + 1) * p].fill(r);
        }
    }
    if let Some(bias) = &a.bias {
        for (i, (c, s)) in c.iter_mut().zip(rad.iter_mut()).enumerate() {
            // c' = RN(c + b): |c' − (c + b)| ≤ u|c'| (Lemma 2), added rounded up.
            let cb = *c + bias[(i % ol) / p];
            *s = up(*s + up(U * cb.abs()));
            *c = cb;
        }
    }
    BallVec { mid: c, rad }
}

/// im2col of one example `[c_in, h, w]` into `[c_in·k·k, oh·ow]` by the gather table
/// (padding entries are exact zeros).
fn im2col<T: Copy + Default>(x: &[T], table: &[u32], col: &mut [T]) {
    // `u32::MAX` is out of bounds for every input (an example of 2³² − 1 values would be
    // 32 GiB of f64), so `get` yields the padding zero without a data-dependent branch.
    for (c, &g) in col.iter_mut().zip(table) {
        *c = x.get(g as usize).copied().unwrap_or_default();
    }
}

fn conv(a: &Affine, w: &Window, c_in: usize, table: &[u32], x: &BallVec, batch: usize) -> BallVec {
    let il = c_in * w.in_h * w.in_w;
    let p = w.out_h * w.out_w;
    let k = a.fan_in;
    let ol = a.out * p;
    let mut v: Option<Vec<f64>> = None; // binary64 inflation, only if a fallback needs it
    let mut mid = vec![0.0; batch * ol];
    let mut rad = vec![0.0; batch * ol];
    debug_assert_eq!(table.len(), k * p);
    let mut col_m = vec![0.0; k * p];
    let mut col_v = vec![0.0; if a.w_abs32.is_some() { 0 } else { k * p }];
    let v32: Vec<f32> = if a.w_abs32.is_some() {
        a.inflate_input32(&x.mid, &x.rad)
    } else {
        vec![]
    };
    let mut col_v32 = vec![0f32; if a.w_abs32.is_some() { k * p } else { 0 }];
    let mut s32 = vec![0f32; col_v32.len().min(1) * a.out * p];
    for b in 0..batch {
        // Padding entries are exact zeros with radius 0.
        im2col(&x.mid[b * il..(b + 1) * il], table, &mut col_m);
        let c = &mut mid[b * ol..(b + 1) * ol];
        let s = &mut rad[b * ol..(b + 1) * ol];
        mat_ab(&a.w, &col_m, c, a.out, p, k);
        let mut single = false;
        if let Some(w32) = &a.w_abs32 {
            // |W|·v in binary32 (proofs/forward.md §4b); fall back to f64 on overflow.
            im2col(&v32[b * il..(b + 1) * il], table, &mut col_v32);
            mat_ab(w32, &col_v32, &mut s32, a.out, p, k);
            single = s32.iter().fold(true, |ok, x| ok & x.is_finite());
        }
        if !single {
            let v = v.get_or_insert_with(|| a.inflate_input(&x.mid, &x.rad));
            col_v.resize(k * p, 0.0);
            im2col(&v[b * il..(b + 1) * il], table, &mut col_v);
            mat_ab(&a.w_abs, &col_v, s, a.out, p, k);
        }
        a.finish(c, s, |i| i / p, single.then_some(&s32[..]));
    }
    BallVec { mid, rad }
}

/// ReLU on balls. If `m ≥ r` every input is `≥ 0`: identity. If `−m ≥ r` every input is
/// `≤ 0`: exactly `0 ± 0`. Otherwise the ball straddles 0 and the image is `[0, m + r]`:
/// with `h = up(m + r) ≥ m + r`, `c = RN(h/2)` and `ρ = up(max(h − c, c))`, the ball `c ± ρ`
/// holds `[0, h]` (`c + ρ ≥ h`, `c − ρ ≤ 0`), which is tighter than `max(m, 0) ± r` (its
/// width `h ≈ m + r` is below `2r` because `|m| < r`). Comparisons are exact; the two `up`
/// steps are the only roundings (proofs/forward.md, "ReLU").
fn relu(x: BallVec) -> BallVec {
    let BallVec { mut mid, mut rad } = x;
    for (m, r) in mid.iter_mut().zip(rad.iter_mut()) {
        let (mm, rr) = (*m, *r);
        // The straddling image is computed for every entry and selected without a branch
        // (the sign pattern of a layer is unpredictable); each case returns exactly what
        // the case analysis above prescribes.
        // Straddling: m + r > 0 is computed rounding up (up(RN(m + r)) ≥ m + r).
        let h = up(mm + rr);
        let c = 0.5 * h;
        // c − ρ ≤ 0 needs ρ ≥ c; c + ρ ≥ h needs ρ ≥ h − c (rounded up).
        let rho = up((h - c).max(c));
        let (pos, neg) = (mm >= rr, -mm >= rr);
        *m = if pos {
            mm
        } else if neg {
            0.0
        } else {
            c
        };
        *r = if pos {
            rr
        } else if neg {
            0.0
        } else {
            rho
        };
    }
    BallVec { mid, rad }
}

/// LeakyReLU `x ↦ x (x ≥ 0), s·x (x < 0)` with an exact slope `s` (an f32).
/// On the negative side `s·x ∈ RN(s m) ± up(|s| r + u|RN(s m)| + η)`; on a ball that
/// straddles 0 the image lies in the hull of `{s·lo, 0, hi}`.
fn leaky(x: BallVec, s: f64) -> BallVec {
    let BallVec { mut mid, mut rad } = x;
    for (m, r) in mid.iter_mut().zip(rad.iter_mut()) {
        if *m >= *r {
            continue;
        }
        if -*m >= *r {
            let c = s * *m;
            // |RN(s m) − s m| ≤ u|RN(s m)| + η (Lemma 2 with underflow).
            let rr = up(up(s.abs() * *r) + up(up(U * c.abs()) + ETA));
            (*m, *r) = (c, rr);
        } else {
            let (lo, hi) = ball_to_interval(*m, *r);
            // s·lo enclosed by [down(RN(s lo)), up(RN(s lo))] (Lemma 1).
            let sl = s * lo;
            let (sl_lo, sl_hi) = (down(sl), up(sl));
            let new_lo = sl_lo.min(0.0);
            let new_hi = hi.max(sl_hi).max(0.0);
            (*m, *r) = interval_to_ball(new_lo, new_hi);
        }
    }
    BallVec { mid, rad }
}

/// Max-pool (`max = true`) or avg-pool over windows of each channel.
///
/// Max: `max` is monotone in each argument, so `[max lo_i, max hi_i]` encloses it; when
/// one ball's lower end is above every other upper end, that ball is the exact result.
/// Avg: `Σ x_i / k²` with `Σ m_i` rounded (error `≤ γ_{k²} Σ|m_i|`), radii summed and
/// divided, every step rounded up (proofs/forward.md, §Pooling).
fn pool(w: &Window, c: usize, x: &BallVec, batch: usize, max: bool) -> BallVec {
    let il = c * w.in_h * w.in_w;
    let p = w.out_h * w.out_w;
    let ol = c * p;
    let kk = w.k * w.k;
    let g = gamma_up(kk).expect("pool windows are small");
    let inv_one_minus_g = up(1.0 / down(1.0 - g));
    let kkf = exact(kk);
    let mut mid = vec![0.0; batch * ol];
    let mut rad = vec![0.0; batch * ol];
    let plane = w.in_h * w.in_w;
    // One input plane (example b, channel ch) and its output plane at a time; valid
    // pooling: every window position is inside the input plane.
    let planes_in = x.mid.chunks_exact(plane).zip(x.rad.chunks_exact(plane));
    let planes_out = mid.chunks_exact_mut(p).zip(rad.chunks_exact_mut(p));
    debug_assert_eq!(x.mid.len(), batch * il);
    for ((xm, xr), (om, or)) in planes_in.zip(planes_out) {
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                let o = oy * w.out_w + ox;
                let base = oy * w.stride * w.in_w + ox * w.stride;
                if max {
                    // max_i x_i ∈ [m_b − r_b, max_i (m_i + r_i)] ⊂ m_b ± max_i r_i where
                    // m_b is the largest midpoint (m_i ≤ m_b): exact, no rounding.
                    let (mut mb, mut rb) = (f64::NEG_INFINITY, 0.0f64);
                    for ky in 0..w.k {
                        let row = base + ky * w.in_w;
                        for (&m, &r) in xm[row..row + w.k].iter().zip(&xr[row..row + w.k]) {
                            mb = mb.max(m);
                            rb = rb.max(r);
                        }
                    }
                    om[o] = mb;
                    or[o] = rb;
                } else {
                    let (mut s, mut a, mut t) = (0.0f64, 0.0f64, 0.0f64);
                    for ky in 0..w.k {
                        let row = base + ky * w.in_w;
                        for (&m, &r) in xm[row..row + w.k].iter().zip(&xr[row..row + w.k]) {
                            s += m;
                            a += m.abs();
                            t += r;
                        }
                    }
                    // Exact Σ r ≤ t/(1−γ) and |s − Σ m| ≤ γ Σ|m| ≤ γ a/(1−γ) (sums of
                    // floats underflow exactly, no η needed).
                    let sum_rad = up(up(up(up(g * a) + t)) * inv_one_minus_g);
                    let m = s / kkf;
                    // |RN(s/k²) − s/k²| ≤ u|m| + η.
                    let r = up(up(sum_rad / kkf) + up(up(U * m.abs()) + ETA));
                    om[o] = m;
                    or[o] = r;
                }
            }
        }
    }
    BallVec { mid, rad }
}

/// Max-pool as the interval maximum, for the robustness bounds (`robust::ibp`): output `o`
/// encloses `[max_i lo_i, max_i hi_i]` with `lo_i ≤ m_i − r_i`, `hi_i ≥ m_i + r_i` (exact
/// when `r_i = 0`), converted to a ball with [`interval_to_ball`] (rounded outward). `max`
/// is monotone in each argument, so this is the tightest interval enclosure; it is never
/// wider than [`pool`]'s `max m_i ± max r_i` by more than the rounding of the conversion,
/// and much narrower when the largest midpoint and the largest radius belong to different
/// inputs. Kept apart from [`pool`] so that the certified margins (and the certificates in
/// fixtures/expected) stay bit for bit what they were.
pub(crate) fn max_pool_interval(w: &Window, c: usize, x: &BallVec, batch: usize) -> BallVec {
    let plane = w.in_h * w.in_w;
    let p = w.out_h * w.out_w;
    let mut mid = vec![0.0; batch * c * p];
    let mut rad = vec![0.0; batch * c * p];
    debug_assert_eq!(x.mid.len(), batch * c * plane);
    let ends = |m: f64, r: f64| {
        if r == 0.0 {
            (m, m)
        } else {
            ball_to_interval(m, r)
        }
    };
    let planes_in = x.mid.chunks_exact(plane).zip(x.rad.chunks_exact(plane));
    let planes_out = mid.chunks_exact_mut(p).zip(rad.chunks_exact_mut(p));
    for ((xm, xr), (om, or)) in planes_in.zip(planes_out) {
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                let o = oy * w.out_w + ox;
                let base = oy * w.stride * w.in_w + ox * w.stride;
                let (mut lo, mut hi) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
                for ky in 0..w.k {
                    let row = base + ky * w.in_w;
                    for (&m, &r) in xm[row..row + w.k].iter().zip(&xr[row..row + w.k]) {
                        let (l, h) = ends(m, r);
                        lo = lo.max(l);
                        hi = hi.max(h);
                    }
                }
                (om[o], or[o]) = interval_to_ball(lo, hi);
            }
        }
    }
    BallVec { mid, rad }
}
