//! Optimized lower ReLU slopes (alpha-CROWN style, proofs/robust-alpha.md).
//!
//! For a straddling unit (`l < 0 < u`) whose back-substitution coefficient is positive,
//! every line `y ≥ α z` with `α ∈ [a, 1]` (`a` the LeakyReLU slope, 0 for ReLU) is a valid
//! lower bound of the activation, so any choice of slopes gives a sound bound once the
//! bound is computed by `Crown::lower_at` with its rounding charges. This module only
//! CHOOSES the slopes: projected gradient ascent (Adam steps, clamped into `[a, 1]`) on the
//! bound of every gap row separately, evaluated in plain binary64 without any rounding
//! control (a wrong digit here costs tightness, never soundness).
//!
//! The gradient: the bound of one row is `λ_topᵀ R(x*)` where `R` is the relaxed (affine)
//! network the back-substitution encodes and `x*` the input minimising its linear form
//! (the box corner, or `x0 − ε λ/‖λ‖₂` for an L2 ball). By Danskin's theorem its
//! derivative in the slope of unit `k` of an activation layer is `λ_k · ẑ_k`, `λ_k` the
//! coefficient at the layer's output and `ẑ_k` the relaxed pre-activation at `x*`,
//! computed by one forward pass of `R` from `x*`.

use crate::certify::ball::BallVec;
use crate::certify::margin::Task;
use crate::error::Result;
use crate::linalg::{Accum, MatMut, MatRef, Par, matmul};

use super::crown::{BackSub, Crown, InputSet, conv_transpose};

/// Default number of projected-gradient iterations per bound.
pub const DEFAULT_STEPS: usize = 20;

/// What one layer of the backward pass chose, for the forward pass.
enum Record {
    /// Affine layers, flatten and avg-pool need nothing.
    None,
    /// Max-pool: per output, the routed input (`usize::MAX`: the constant `U_o`) and the
    /// constant, per row.
    Pool { route: Vec<usize>, konst: Vec<f64> },
    /// Activation: per (row, unit) the slope `D`, offset `C` and output coefficient `λ`.
    Act {
        d: Vec<f64>,
        c: Vec<f64>,
        lam: Vec<f64>,
    },
}

/// Slopes `alphas[i]` (`Some` for every activation layer, `[rows, units]`) that maximise
/// the float bounds of the gap rows of `label` over `input`, starting from CROWN's choice;
/// the best slopes seen (by the float bound) per row are returned. `steps = 0` returns
/// CROWN's choice.
pub fn optimize(
    crown: &Crown,
    encl: &[BallVec],
    label: u8,
    task: Task,
    input: &InputSet,
    steps: usize,
) -> Result<Vec<Option<Vec<f64>>>> {
    let lam_top = crown.gap_specs(label, task)?;
    let st = crown.steps();
    let lens = crown.lens();
    let ns = lam_top.len() / lens[st.len()].max(1);
    // CROWN's initial choice: α = 1 when u ≥ −l, else a.
    let mut alphas: Vec<Option<Vec<f64>>> = st
        .iter()
        .enumerate()
        .map(|(i, s)| match s {
            BackSub::Act { slope } => {
                let e = &encl[i];
                let one: Vec<f64> = (0..e.len())
                    .map(|k| if e.hi(k) >= -e.lo(k) { 1.0 } else { *slope })
                    .collect();
                Some(one.repeat(ns))
            }
            _ => None,
        })
        .collect();
    let mut best = alphas.clone();
    let mut best_f = vec![f64::NEG_INFINITY; ns];
    let mut m: Vec<Option<Vec<f64>>> = alphas
        .iter()
        .map(|a| a.as_ref().map(|v| vec![0.0; v.len()]))
        .collect();
    let mut v2 = m.clone();
    let (b1, b2, mut lr) = (0.9f64, 0.999f64, 0.2f64);
    for it in 0..=steps {
        let (f, grads) = eval(crown, encl, &lam_top, ns, input, &alphas);
        for s in 0..ns {
            if f[s] > best_f[s] {
                best_f[s] = f[s];
                for (bl, al) in best.iter_mut().zip(&alphas) {
                    if let (Some(b), Some(a)) = (bl, al) {
                        let n = a.len() / ns;
                        b[s * n..(s + 1) * n].copy_from_slice(&a[s * n..(s + 1) * n]);
                    }
                }
            }
        }
        if it == steps {
            break;
        }
        let t = (it + 1) as i32;
        for (i, g) in grads.iter().enumerate() {
            let (Some(g), Some(a), Some(mm), Some(vv)) =
                (g, alphas[i].as_mut(), m[i].as_mut(), v2[i].as_mut())
            else {
                continue;
            };
            let BackSub::Act { slope } = st[i] else {
                continue;
            };
            for k in 0..a.len() {
                if g[k] == 0.0 {
                    continue;
                }
                mm[k] = b1 * mm[k] + (1.0 - b1) * g[k];
                vv[k] = b2 * vv[k] + (1.0 - b2) * g[k] * g[k];
                let mh = mm[k] / (1.0 - b1.powi(t));
                let vh = vv[k] / (1.0 - b2.powi(t));
                let step = lr * mh / (vh.sqrt() + 1e-12);
                a[k] = (a[k] + step).clamp(slope, 1.0);
            }
        }
        lr *= 0.95;
    }
    Ok(best)
}

/// Float bounds of the `ns` rows `lam_top` with slopes `alphas`, and their gradients in the
/// slopes (per activation layer, `[rows, units]`; 0 where the slope is not used).
#[allow(clippy::type_complexity)]
fn eval(
    crown: &Crown,
    encl: &[BallVec],
    lam_top: &[f64],
    ns: usize,
    input: &InputSet,
    alphas: &[Option<Vec<f64>>],
) -> (Vec<f64>, Vec<Option<Vec<f64>>>) {
    let st = crown.steps();
    let lens = crown.lens();
    let mut lam = lam_top.to_vec();
    let mut beta = vec![0.0f64; ns];
    let mut rec: Vec<Record> = Vec::with_capacity(st.len());
    for (i, step) in st.iter().enumerate().rev() {
        let (n_in, n_out) = (lens[i], lens[i + 1]);
        let e = &encl[i];
        let r = match step {
            BackSub::Dense { affine, .. } => {
                if let Some(b) = &affine.bias {
                    for s in 0..ns {
                        beta[s] += dot(&lam[s * n_out..(s + 1) * n_out], b);
                    }
                }
                let mut next = vec![0.0; ns * n_in];
                matmul(
                    MatMut::row_major(&mut next, ns, n_in),
                    Accum::Replace,
                    MatRef::row_major(&lam, ns, n_out),
                    MatRef::row_major(&affine.w, n_out, n_in),
                    Par::Seq,
                );
                lam = next;
                Record::None
            }
            BackSub::Conv {
                affine,
                pixels,
                in_len,
                table,
                ..
            } => {
                let (out, fan, pp) = (affine.out, affine.fan_in, *pixels);
                if let Some(b) = &affine.bias {
                    for s in 0..ns {
                        for o in 0..out {
                            let sum: f64 = lam[s * out * pp + o * pp..][..pp].iter().sum();
                            beta[s] += sum * b[o];
                        }
                    }
                }
                let next = conv_transpose(&lam, &affine.w, (out, fan, pp), ns, *in_len, table);
                lam = next;
                Record::None
            }
            BackSub::Pool { win, max, .. } => {
                let plane = win.in_h * win.in_w;
                let pp = win.out_h * win.out_w;
                let window = |o: usize| {
                    let (ch, q) = (o / pp, o % pp);
                    win.taps(q / win.out_w, q % win.out_w)
                        .map(move |(_, t)| ch * plane + t)
                };
                let mut next = vec![0.0; ns * n_in];
                if *max {
                    let mut star = vec![0usize; n_out];
                    let mut umax = vec![0.0; n_out];
                    let mut decided = vec![false; n_out];
                    for o in 0..n_out {
                        let (mut j, mut lj, mut u) =
                            (usize::MAX, f64::NEG_INFINITY, f64::NEG_INFINITY);
                        for i2 in window(o) {
                            if j == usize::MAX || e.lo(i2) > lj {
                                (j, lj) = (i2, e.lo(i2));
                            }
                            u = u.max(e.hi(i2));
                        }
                        star[o] = j;
                        umax[o] = u;
                        decided[o] = window(o).all(|i2| i2 == j || e.hi(i2) <= lj);
                    }
                    let mut route = vec![usize::MAX; ns * n_out];
                    let mut konst = vec![0.0; ns * n_out];
                    for s in 0..ns {
                        for o in 0..n_out {
                            let l = lam[s * n_out + o];
                            if decided[o] || l > 0.0 {
                                next[s * n_in + star[o]] += l;
                                route[s * n_out + o] = star[o];
                            } else {
                                beta[s] += l * umax[o];
                                konst[s * n_out + o] = umax[o];
                            }
                        }
                    }
                    lam = next;
                    Record::Pool { route, konst }
                } else {
                    let kk = (win.k * win.k) as f64;
                    for s in 0..ns {
                        for o in 0..n_out {
                            let q = lam[s * n_out + o] / kk;
                            for i2 in window(o) {
                                next[s * n_in + i2] += q;
                            }
                        }
                    }
                    lam = next;
                    Record::None
                }
            }
            BackSub::Act { slope } => {
                let a = *slope;
                let al = alphas[i].as_deref();
                let mut d = vec![1.0; ns * n_in];
                let mut c = vec![0.0; ns * n_in];
                for k in 0..n_in {
                    let (l, u) = (e.lo(k), e.hi(k));
                    for (s, bs) in beta.iter_mut().enumerate() {
                        let idx = s * n_in + k;
                        let lv = lam[idx];
                        if l >= 0.0 {
                            continue;
                        }
                        if u <= 0.0 {
                            d[idx] = a;
                        } else if lv >= 0.0 {
                            d[idx] = al.map_or(if u >= -l { 1.0 } else { a }, |v| v[idx]);
                        } else {
                            let sl = (u - a * l) / (u - l);
                            d[idx] = sl;
                            c[idx] = -l * (sl - a);
                            *bs += lv * c[idx];
                        }
                    }
                }
                let post = lam.clone();
                for (x, dv) in lam.iter_mut().zip(&d) {
                    *x *= dv;
                }
                Record::Act { d, c, lam: post }
            }
            BackSub::Flatten => Record::None,
        };
        rec.push(r);
    }
    rec.reverse();
    // Concretize: the minimising input x* per row, and the bound.
    let n0 = lens[0];
    let x0 = &encl[0];
    let mut g = vec![0.0; ns * n0];
    let mut f = beta.clone();
    for s in 0..ns {
        let ls = &lam[s * n0..(s + 1) * n0];
        let gs = &mut g[s * n0..(s + 1) * n0];
        match input {
            InputSet::Box => {
                for k in 0..n0 {
                    gs[k] = if ls[k] >= 0.0 { x0.lo(k) } else { x0.hi(k) };
                }
            }
            InputSet::L2 { center, eps } => {
                let norm = ls.iter().map(|v| v * v).sum::<f64>().sqrt();
                for k in 0..n0 {
                    let shift = if norm > 0.0 { eps * ls[k] / norm } else { 0.0 };
                    gs[k] = center.mid[k] - shift;
                }
            }
        }
        f[s] += dot(ls, gs);
    }
    // Forward pass of the relaxed network from x*, collecting the gradients.
    let mut grads: Vec<Option<Vec<f64>>> = vec![None; st.len()];
    for (i, step) in st.iter().enumerate() {
        let (n_in, n_out) = (lens[i], lens[i + 1]);
        g = match (step, &rec[i]) {
            (BackSub::Dense { affine, .. }, _) => {
                let mut y = vec![0.0; ns * n_out];
                matmul(
                    MatMut::row_major(&mut y, ns, n_out),
                    Accum::Replace,
                    MatRef::row_major(&g, ns, n_in),
                    MatRef::row_major(&affine.w, n_out, n_in).transpose(),
                    Par::Seq,
                );
                if let Some(b) = &affine.bias {
                    for s in 0..ns {
                        for (yv, bv) in y[s * n_out..(s + 1) * n_out].iter_mut().zip(b) {
                            *yv += bv;
                        }
                    }
                }
                y
            }
            (
                BackSub::Conv {
                    affine,
                    pixels,
                    table,
                    ..
                },
                _,
            ) => {
                let (out, fan, pp) = (affine.out, affine.fan_in, *pixels);
                let sp = ns * pp;
                let mut cols = vec![0.0; fan * sp];
                for r in 0..fan {
                    let trow = &table[r * pp..(r + 1) * pp];
                    for s in 0..ns {
                        let gs = &g[s * n_in..(s + 1) * n_in];
                        for (p, &t) in trow.iter().enumerate() {
                            if t != u32::MAX {
                                cols[r * sp + s * pp + p] = gs[t as usize];
                            }
                        }
                    }
                }
                let mut z = vec![0.0; out * sp];
                matmul(
                    MatMut::row_major(&mut z, out, sp),
                    Accum::Replace,
                    MatRef::row_major(&affine.w, out, fan),
                    MatRef::row_major(&cols, fan, sp),
                    Par::Seq,
                );
                let mut y = vec![0.0; ns * n_out];
                for s in 0..ns {
                    for o in 0..out {
                        let b = affine.bias.as_ref().map_or(0.0, |b| b[o]);
                        for p in 0..pp {
                            y[s * n_out + o * pp + p] = z[o * sp + s * pp + p] + b;
                        }
                    }
                }
                y
            }
            (BackSub::Pool { win, max, .. }, r) => {
                let mut y = vec![0.0; ns * n_out];
                if let (true, Record::Pool { route, konst }) = (*max, r) {
                    for s in 0..ns {
                        for o in 0..n_out {
                            let idx = s * n_out + o;
                            y[idx] = if route[idx] == usize::MAX {
                                konst[idx]
                            } else {
                                g[s * n_in + route[idx]]
                            };
                        }
                    }
                } else {
                    let plane = win.in_h * win.in_w;
                    let pp = win.out_h * win.out_w;
                    let kk = (win.k * win.k) as f64;
                    for s in 0..ns {
                        for o in 0..n_out {
                            let (ch, q) = (o / pp, o % pp);
                            let sum: f64 = win
                                .taps(q / win.out_w, q % win.out_w)
                                .map(|(_, t)| g[s * n_in + ch * plane + t])
                                .sum();
                            y[s * n_out + o] = sum / kk;
                        }
                    }
                }
                y
            }
            (BackSub::Act { .. }, Record::Act { d, c, lam: post }) => {
                if alphas[i].is_some() {
                    let e = &encl[i];
                    let mut gr = vec![0.0; ns * n_in];
                    for k in 0..n_in {
                        if e.lo(k) < 0.0 && e.hi(k) > 0.0 {
                            for s in 0..ns {
                                let idx = s * n_in + k;
                                if post[idx] >= 0.0 {
                                    gr[idx] = post[idx] * g[idx];
                                }
                            }
                        }
                    }
                    grads[i] = Some(gr);
                }
                g.iter()
                    .zip(d)
                    .zip(c)
                    .map(|((x, dv), cv)| dv * x + cv)
                    .collect()
            }
            _ => g,
        };
    }
    (f, grads)
}

/// Plain dot product.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
