//! The per-layer kernels of the certified backward pass: weight gradients and input
//! adjoints of dense and conv layers, and the generalised derivatives of (Leaky)ReLU and
//! pooling, in midpoint-radius arithmetic (proofs/backward.md).

use super::KinkStats;
use super::sum::{RadConst, finish_rad};
use crate::certify::ball::BallVec;
use crate::certify::round::{down, exact, interval_to_ball, up};
use crate::error::Result;
use crate::model::Window;

/// Encloses `x·d` for `x ∈ [xl, xh]`, `d ∈ [dl, dh]` by an interval rounded outward.
#[inline]
fn imul(xl: f64, xh: f64, dl: f64, dh: f64) -> (f64, f64) {
    if dl == dh && dl == 1.0 {
        return (xl, xh);
    }
    let p = [xl * dl, xl * dh, xh * dl, xh * dh];
    let lo = p.iter().fold(f64::INFINITY, |a, &b| a.min(b));
    let hi = p.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    (down(lo), up(hi))
}

/// `G[o, k] = g_o x_k` for each entry: one product of two balls (Lemma B1 with n = 1).
#[allow(clippy::too_many_arguments)]
pub(super) fn dense_weight_grad(
    gm: &[f64],
    gr: &[f64],
    xm: &[f64],
    xr: &[f64],
    out: usize,
    il: usize,
    grad: &mut BallVec,
    off: usize,
) -> Result<()> {
    let k1 = RadConst::new(1)?;
    for o in 0..out {
        let (a, ar) = (gm[o], gr[o]);
        let dst_m = &mut grad.mid[off + o * il..off + (o + 1) * il];
        let dst_r = &mut grad.rad[off + o * il..off + (o + 1) * il];
        if a == 0.0 && ar == 0.0 {
            // exact zero adjoint: exact zero gradient row.
            dst_m.fill(0.0);
            dst_r.fill(0.0);
            continue;
        }
        for k in 0..il {
            let (b, br) = (xm[k], xr[k]);
            let m = a * b;
            let rs = a.abs() * br + ar * b.abs() + ar * br;
            dst_m[k] = m;
            dst_r[k] = finish_rad(rs, m.abs(), &k1);
        }
    }
    Ok(())
}

/// `Wᵀ g` for exact `W: [out, il]` and a ball `g` (Lemma B1, n = out).
pub(super) fn dense_input_adjoint(
    w: &[f64],
    gm: &[f64],
    gr: &[f64],
    out: usize,
    il: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let k = RadConst::new(out)?;
    let mut m = vec![0.0; il];
    let mut r = vec![0.0; il];
    let mut a = vec![0.0; il];
    for o in 0..out {
        let (g, grr) = (gm[o], gr[o]);
        if g == 0.0 && grr == 0.0 {
            continue;
        }
        let ga = g.abs();
        let row = &w[o * il..(o + 1) * il];
        for j in 0..il {
            let wv = row[j];
            m[j] += wv * g;
            r[j] += wv.abs() * grr;
            a[j] += wv.abs() * ga;
        }
    }
    for j in 0..il {
        r[j] = finish_rad(r[j], a[j], &k);
    }
    Ok((m, r))
}

/// Conv weight gradient `G[o, c, ky, kx] = Σ_{oy, ox} g[o, oy, ox] x[c, iy, ix]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv_weight_grad(
    gm: &[f64],
    gr: &[f64],
    xm: &[f64],
    xr: &[f64],
    out: usize,
    c_in: usize,
    w: &Window,
    grad: &mut BallVec,
    off: usize,
) -> Result<()> {
    let p = w.out_h * w.out_w;
    let plane = w.in_h * w.in_w;
    let kc = RadConst::new(p)?;
    let kk = w.k * w.k;
    for o in 0..out {
        let g_m = &gm[o * p..(o + 1) * p];
        let g_r = &gr[o * p..(o + 1) * p];
        let zero = g_m.iter().all(|&v| v == 0.0) && g_r.iter().all(|&v| v == 0.0);
        for c in 0..c_in {
            let x_m = &xm[c * plane..(c + 1) * plane];
            let x_r = &xr[c * plane..(c + 1) * plane];
            for ky in 0..w.k {
                for kx in 0..w.k {
                    let idx = off + ((o * c_in + c) * kk) + ky * w.k + kx;
                    if zero {
                        grad.mid[idx] = 0.0;
                        grad.rad[idx] = 0.0;
                        continue;
                    }
                    let (mut m, mut r, mut a) = (0.0, 0.0, 0.0);
                    for oy in 0..w.out_h {
                        let Some(iy) = w.in_row(oy, ky) else { continue };
                        for ox in 0..w.out_w {
                            let Some(ix) = w.in_col(ox, kx) else { continue };
                            let (ga, gra) = (g_m[oy * w.out_w + ox], g_r[oy * w.out_w + ox]);
                            let (xa, xra) = (x_m[iy * w.in_w + ix], x_r[iy * w.in_w + ix]);
                            let prod = ga * xa;
                            m += prod;
                            a += prod.abs();
                            r += ga.abs() * xra + gra * xa.abs() + gra * xra;
                        }
                    }
                    grad.mid[idx] = m;
                    grad.rad[idx] = finish_rad(r, a, &kc);
                }
            }
        }
    }
    Ok(())
}

/// Conv bias gradient `Σ_{oy, ox} g[o, oy, ox]`.
pub(super) fn conv_bias_grad(
    gm: &[f64],
    gr: &[f64],
    out: usize,
    w: &Window,
    grad: &mut BallVec,
    off: usize,
) -> Result<()> {
    let p = w.out_h * w.out_w;
    let kc = RadConst::new(p)?;
    for o in 0..out {
        let (mut m, mut r, mut a) = (0.0, 0.0, 0.0);
        for q in o * p..(o + 1) * p {
            m += gm[q];
            r += gr[q];
            a += gm[q].abs();
        }
        grad.mid[off + o] = m;
        grad.rad[off + o] = finish_rad(r, a, &kc);
    }
    Ok(())
}

/// Transposed convolution: `x̄[c, iy, ix] = Σ W[o, c, ky, kx] g[o, oy, ox]` over the
/// output positions whose window covers `(iy, ix)`; at most `out·k²` terms per entry.
pub(super) fn conv_input_adjoint(
    wt: &[f64],
    gm: &[f64],
    gr: &[f64],
    out: usize,
    c_in: usize,
    w: &Window,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let p = w.out_h * w.out_w;
    let plane = w.in_h * w.in_w;
    let kk = w.k * w.k;
    let kc = RadConst::new(out * kk)?;
    let n = c_in * plane;
    let mut m = vec![0.0; n];
    let mut r = vec![0.0; n];
    let mut a = vec![0.0; n];
    for o in 0..out {
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                let q = o * p + oy * w.out_w + ox;
                let (g, grr) = (gm[q], gr[q]);
                if g == 0.0 && grr == 0.0 {
                    continue;
                }
                let ga = g.abs();
                for (tap, at) in w.taps(oy, ox) {
                    for c in 0..c_in {
                        let wv = wt[(o * c_in + c) * kk + tap];
                        let j = c * plane + at;
                        m[j] += wv * g;
                        r[j] += wv.abs() * grr;
                        a[j] += wv.abs() * ga;
                    }
                }
            }
        }
    }
    for j in 0..n {
        r[j] = finish_rad(r[j], a[j], &kc);
    }
    Ok((m, r))
}

/// (Leaky)ReLU with slope `s` (`s = 0` for ReLU): multiplies the adjoint by the
/// generalised derivative `D`: `1` when the pre-activation `z ∈ xm ± xr` is certainly
/// `> 0` (`xm > xr`, an exact comparison), `s` when certainly `< 0`, and the interval
/// `[min(s,1), max(s,1)]` otherwise (the Clarke subdifferential of the unit at 0).
pub(super) fn leaky_backward(
    gm: &[f64],
    gr: &[f64],
    xm: &[f64],
    xr: &[f64],
    s: f64,
    kinks: &mut KinkStats,
) -> (Vec<f64>, Vec<f64>) {
    let n = gm.len();
    let mut m = vec![0.0; n];
    let mut r = vec![0.0; n];
    let (dlo, dhi) = (s.min(1.0), s.max(1.0));
    for j in 0..n {
        if xm[j] > xr[j] {
            m[j] = gm[j];
            r[j] = gr[j];
            continue;
        }
        let (d_lo, d_hi) = if -xm[j] > xr[j] {
            if s == 0.0 {
                continue; // exact zero
            }
            (s, s)
        } else {
            kinks.ambiguous_units += 1;
            (dlo, dhi)
        };
        let (lo, hi) = (down(gm[j] - gr[j]), up(gm[j] + gr[j]));
        let (plo, phi) = imul(lo, hi, d_lo, d_hi);
        (m[j], r[j]) = interval_to_ball(plo, phi);
    }
    (m, r)
}

/// Max-pool: the adjoint of each window goes to the elements that may be its maximum
/// (`hi_e ≥ max_k lo_k`), with derivative 1 when there is a single candidate and `[0, 1]`
/// otherwise; contributions of overlapping windows are added as outward-rounded intervals.
pub(super) fn maxpool_backward(
    gm: &[f64],
    gr: &[f64],
    xm: &[f64],
    xr: &[f64],
    c: usize,
    w: &Window,
    kinks: &mut KinkStats,
) -> (Vec<f64>, Vec<f64>) {
    let plane = w.in_h * w.in_w;
    let p = w.out_h * w.out_w;
    let n = c * plane;
    let mut lo = vec![0.0; n];
    let mut hi = vec![0.0; n];
    let mut cand = Vec::with_capacity(w.k * w.k);
    for ch in 0..c {
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                let q = ch * p + oy * w.out_w + ox;
                let (g, grr) = (gm[q], gr[q]);
                if g == 0.0 && grr == 0.0 {
                    continue;
                }
                let (glo, ghi) = (down(g - grr), up(g + grr));
                // Valid pooling: every tap is inside the plane.
                let window = move || w.taps(oy, ox).map(move |(_, t)| ch * plane + t);
                let mut best_lo = f64::NEG_INFINITY;
                for e in window() {
                    best_lo = best_lo.max(down(xm[e] - xr[e]));
                }
                cand.clear();
                for e in window() {
                    if up(xm[e] + xr[e]) >= best_lo {
                        cand.push(e);
                    }
                }
                let (clo, chi) = if cand.len() == 1 {
                    (glo, ghi)
                } else {
                    kinks.ambiguous_pools += 1;
                    (glo.min(0.0), ghi.max(0.0))
                };
                for &e in &cand {
                    lo[e] = down(lo[e] + clo);
                    hi[e] = up(hi[e] + chi);
                }
            }
        }
    }
    to_balls(lo, hi)
}

/// Avg-pool: every window element receives `g / k²` (outward-rounded intervals).
pub(super) fn avgpool_backward(
    gm: &[f64],
    gr: &[f64],
    c: usize,
    w: &Window,
) -> (Vec<f64>, Vec<f64>) {
    let plane = w.in_h * w.in_w;
    let p = w.out_h * w.out_w;
    let kk = exact(w.k * w.k);
    let n = c * plane;
    let mut lo = vec![0.0; n];
    let mut hi = vec![0.0; n];
    for ch in 0..c {
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                let q = ch * p + oy * w.out_w + ox;
                let (g, grr) = (gm[q], gr[q]);
                if g == 0.0 && grr == 0.0 {
                    continue;
                }
                let clo = down(down(g - grr) / kk);
                let chi = up(up(g + grr) / kk);
                for (_, t) in w.taps(oy, ox) {
                    let e = ch * plane + t;
                    lo[e] = down(lo[e] + clo);
                    hi[e] = up(hi[e] + chi);
                }
            }
        }
    }
    to_balls(lo, hi)
}

fn to_balls(lo: Vec<f64>, hi: Vec<f64>) -> (Vec<f64>, Vec<f64>) {
    let mut m = lo;
    let mut r = hi;
    for (m, r) in m.iter_mut().zip(r.iter_mut()) {
        let (l, h) = (*m, *r);
        if l == 0.0 && h == 0.0 {
            continue;
        }
        (*m, *r) = interval_to_ball(l, h);
    }
    (m, r)
}
