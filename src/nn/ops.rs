//! Per-layer f32 kernels on batch-major, channels-last activations.
//!
//! Internal layout: example `b`'s activation of shape `[c, h, w]` is stored channels-last,
//! `act[b * len + (y * w + x) * c + ch]`, so that a convolution over a whole chunk of the
//! batch is one matrix product `[pixels, k*k*c_in] · [k*k*c_in, c_out]` whose output is
//! already channels-last. Flat activations (`h = w = 1`) are the same in both layouts; the
//! flatten layer turns channels-last into PyTorch's C-major order.
//!
//! Every kernel overwrites its whole output (no reliance on previous contents), parallel
//! work is split over examples (disjoint outputs, no shared accumulation), and every sum
//! runs in a fixed order: results are bit-identical run to run and independent of how
//! rayon schedules the work.

use rayon::prelude::*;

use super::sgemm::{Mat, sgemm};
use crate::model::Window;

/// Scalars of the im2col buffer per conv chunk (a chunk is a fixed number of examples,
/// chosen from the layer shape only, never from the batch or the thread count).
const CHUNK_FLOATS: usize = 1 << 18;

/// Geometry of a conv layer in the internal layout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvGeom {
    /// Window geometry (kernel, stride, padding, input and output sizes).
    pub win: Window,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
}

impl ConvGeom {
    /// Columns of the im2col matrix: `k * k * cin`, ordered `(ky, kx, ci)`.
    pub fn kdim(&self) -> usize {
        self.win.k * self.win.k * self.cin
    }
    /// Output pixels per example.
    pub fn opix(&self) -> usize {
        self.win.out_h * self.win.out_w
    }
    /// Input scalars per example.
    pub fn in_len(&self) -> usize {
        self.win.in_h * self.win.in_w * self.cin
    }
    /// Output scalars per example.
    pub fn out_len(&self) -> usize {
        self.opix() * self.cout
    }
    /// Examples per im2col chunk.
    pub fn chunk(&self) -> usize {
        (CHUNK_FLOATS / (self.opix() * self.kdim()).max(1)).max(1)
    }
    /// im2col buffer size needed for `batch` examples.
    pub fn cols_len(&self, batch: usize) -> usize {
        self.chunk().min(batch) * self.opix() * self.kdim()
    }
}

/// Reorders a PyTorch conv weight `[cout, cin, k, k]` to `[cout, k, k, cin]` (the im2col
/// column order).
pub(crate) fn weight_to_internal(g: &ConvGeom, w: &[f32], out: &mut [f32]) {
    let (k, cin) = (g.win.k, g.cin);
    for co in 0..g.cout {
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    out[((co * k + ky) * k + kx) * cin + ci] =
                        w[((co * cin + ci) * k + ky) * k + kx];
                }
            }
        }
    }
}

/// Inverse of [`weight_to_internal`].
pub(crate) fn weight_from_internal(g: &ConvGeom, wi: &[f32], out: &mut [f32]) {
    let (k, cin) = (g.win.k, g.cin);
    for co in 0..g.cout {
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    out[((co * cin + ci) * k + ky) * k + kx] =
                        wi[((co * k + ky) * k + kx) * cin + ci];
                }
            }
        }
    }
}

/// The kernel columns `kx` in `[lo, hi)` of output column `ox` that fall inside the input
/// (the rest read zero padding). Input column of `kx` is `ox * stride + kx - pad_left`.
#[inline]
fn kx_range(win: &Window, ox: usize) -> (usize, usize) {
    let start = ox * win.stride;
    let lo = win.pad_left.saturating_sub(start).min(win.k);
    let hi = (win.in_w + win.pad_left).saturating_sub(start).min(win.k);
    (lo, hi.max(lo))
}

/// im2col of `nb` examples: row `b * opix + oy * out_w + ox`, column `(ky * k + kx) * cin + ci`.
/// In channels-last layout the valid part of each kernel row is one contiguous input run.
fn im2col(g: &ConvGeom, input: &[f32], nb: usize, cols: &mut [f32]) {
    let (win, cin, kd) = (g.win, g.cin, g.kdim());
    let per = g.opix() * kd;
    let in_len = g.in_len();
    let krow = win.k * cin;
    cols[..nb * per]
        .par_chunks_mut(per)
        .zip(input[..nb * in_len].par_chunks(in_len))
        .for_each(|(c, x)| {
            for oy in 0..win.out_h {
                for ox in 0..win.out_w {
                    let (lo, hi) = kx_range(&win, ox);
                    let row = &mut c[(oy * win.out_w + ox) * kd..][..kd];
                    for ky in 0..win.k {
                        let seg = &mut row[ky * krow..][..krow];
                        let Some(iy) = win.in_row(oy, ky) else {
                            seg.fill(0.0);
                            continue;
                        };
                        seg[..lo * cin].fill(0.0);
                        seg[hi * cin..].fill(0.0);
                        if hi > lo {
                            let ix = ox * win.stride + lo - win.pad_left;
                            let src = &x[(iy * win.in_w + ix) * cin..][..(hi - lo) * cin];
                            for (d, s) in seg[lo * cin..hi * cin].iter_mut().zip(src) {
                                *d = *s;
                            }
                        }
                    }
                }
            }
        });
}

/// col2im of `nb` examples: overwrites `dinput` with the sum of the column gradients that
/// read each input scalar (summed in row order, then kernel order: fixed).
fn col2im(g: &ConvGeom, dcols: &[f32], nb: usize, dinput: &mut [f32]) {
    let (win, cin, kd) = (g.win, g.cin, g.kdim());
    let per = g.opix() * kd;
    let in_len = g.in_len();
    let krow = win.k * cin;
    dinput[..nb * in_len]
        .par_chunks_mut(in_len)
        .zip(dcols[..nb * per].par_chunks(per))
        .for_each(|(dx, c)| {
            dx.fill(0.0);
            for oy in 0..win.out_h {
                for ox in 0..win.out_w {
                    let (lo, hi) = kx_range(&win, ox);
                    if hi == lo {
                        continue;
                    }
                    let row = &c[(oy * win.out_w + ox) * kd..][..kd];
                    let ix = ox * win.stride + lo - win.pad_left;
                    for ky in 0..win.k {
                        let Some(iy) = win.in_row(oy, ky) else {
                            continue;
                        };
                        let d = &mut dx[(iy * win.in_w + ix) * cin..][..(hi - lo) * cin];
                        let s = &row[ky * krow + lo * cin..ky * krow + hi * cin];
                        for (a, b) in d.iter_mut().zip(s) {
                            *a += b;
                        }
                    }
                }
            }
        });
}

/// Adds `bias[c]` to column `c` of every row of `out` (`[rows, bias.len()]`).
fn add_bias(out: &mut [f32], bias: &[f32]) {
    let n = bias.len();
    out.par_chunks_mut(n * 64).for_each(|blk| {
        for row in blk.chunks_exact_mut(n) {
            for (o, b) in row.iter_mut().zip(bias) {
                *o += b;
            }
        }
    });
}

/// Column sums of `d` (`[rows, n]`) into `out`, summed row by row in order.
fn column_sums(d: &[f32], n: usize, out: &mut [f32]) {
    out.fill(0.0);
    for row in d.chunks_exact(n) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// Conv forward for `batch` examples. `wi` is the weight in internal order `[cout, kdim]`.
pub(crate) fn conv_forward(
    g: &ConvGeom,
    wi: &[f32],
    bias: Option<&[f32]>,
    input: &[f32],
    batch: usize,
    output: &mut [f32],
    cols: &mut Vec<f32>,
) {
    let (kd, opix, chunk) = (g.kdim(), g.opix(), g.chunk());
    grow(cols, g.cols_len(batch));
    let mut b0 = 0;
    while b0 < batch {
        let nb = chunk.min(batch - b0);
        im2col(g, &input[b0 * g.in_len()..], nb, cols);
        let rows = nb * opix;
        sgemm(
            rows,
            g.cout,
            kd,
            Mat::rows(&cols[..rows * kd], kd),
            Mat::t(wi, kd),
            &mut output[b0 * g.out_len()..][..rows * g.cout],
            g.cout,
            false,
        );
        b0 += nb;
    }
    if let Some(b) = bias {
        add_bias(&mut output[..batch * g.out_len()], b);
    }
}

/// Conv backward: when asked, the weight gradient (internal order) into `dwi`, the bias
/// gradient into `db` and the input gradient into `dinput`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_backward(
    g: &ConvGeom,
    wi: &[f32],
    input: &[f32],
    dout: &[f32],
    batch: usize,
    mut dinput: Option<&mut [f32]>,
    mut dwi: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
    cols: &mut Vec<f32>,
    dcols: &mut Vec<f32>,
) {
    let (kd, opix, chunk) = (g.kdim(), g.opix(), g.chunk());
    if dwi.is_some() {
        grow(cols, g.cols_len(batch));
    }
    if dinput.is_some() {
        grow(dcols, g.cols_len(batch));
    }
    let mut b0 = 0;
    while b0 < batch {
        let nb = chunk.min(batch - b0);
        let rows = nb * opix;
        let dy = &dout[b0 * g.out_len()..][..rows * g.cout];
        if let Some(dwi) = dwi.as_deref_mut() {
            im2col(g, &input[b0 * g.in_len()..], nb, cols);
            // dW[cout, kd] (+)= dY^T[cout, rows] · cols[rows, kd]; chunks added in order.
            sgemm(
                g.cout,
                kd,
                rows,
                Mat::t(dy, g.cout),
                Mat::rows(&cols[..rows * kd], kd),
                dwi,
                kd,
                b0 > 0,
            );
        }
        if let Some(dx) = dinput.as_deref_mut() {
            // dcols[rows, kd] = dY[rows, cout] · W[cout, kd].
            sgemm(
                rows,
                kd,
                g.cout,
                Mat::rows(dy, g.cout),
                Mat::rows(wi, kd),
                &mut dcols[..rows * kd],
                kd,
                false,
            );
            col2im(g, dcols, nb, &mut dx[b0 * g.in_len()..]);
        }
        b0 += nb;
    }
    if batch == 0
        && let Some(dwi) = dwi
    {
        dwi.fill(0.0);
    }
    if let Some(db) = db {
        column_sums(&dout[..batch * g.out_len()], g.cout, db);
    }
}

/// Dense forward: `Y[batch, out] = X[batch, inp] · W^T (+ b)`, `W: [out, inp]`.
pub(crate) fn dense_forward(
    w: &[f32],
    bias: Option<&[f32]>,
    inp: usize,
    out: usize,
    input: &[f32],
    batch: usize,
    output: &mut [f32],
) {
    sgemm(
        batch,
        out,
        inp,
        Mat::rows(&input[..batch * inp], inp),
        Mat::t(w, inp),
        &mut output[..batch * out],
        out,
        false,
    );
    if let Some(b) = bias {
        add_bias(&mut output[..batch * out], b);
    }
}

/// Dense backward, each part when asked: `dW = dY^T · X`, `db = column sums of dY`, and
/// `dX = dY · W`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense_backward(
    w: &[f32],
    inp: usize,
    out: usize,
    input: &[f32],
    dout: &[f32],
    batch: usize,
    dinput: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) {
    let dy = &dout[..batch * out];
    if let Some(dw) = dw {
        sgemm(
            out,
            inp,
            batch,
            Mat::t(dy, out),
            Mat::rows(&input[..batch * inp], inp),
            dw,
            inp,
            false,
        );
    }
    if let Some(dx) = dinput {
        sgemm(
            batch,
            inp,
            out,
            Mat::rows(dy, out),
            Mat::rows(w, inp),
            &mut dx[..batch * inp],
            inp,
            false,
        );
    }
    if let Some(db) = db {
        column_sums(dy, out, db);
    }
}

/// Max-pool forward (channels-last): `y = max` over each window, taken in window order
/// (row by row, left to right) with a strict `>`, so the value kept is the FIRST maximum.
pub(crate) fn maxpool_forward(
    win: &Window,
    c: usize,
    input: &[f32],
    batch: usize,
    output: &mut [f32],
) {
    let in_len = win.in_h * win.in_w * c;
    let out_len = win.out_h * win.out_w * c;
    input[..batch * in_len]
        .par_chunks(in_len)
        .zip(output[..batch * out_len].par_chunks_mut(out_len))
        .for_each(|(x, y)| {
            for oy in 0..win.out_h {
                for ox in 0..win.out_w {
                    let o = &mut y[(oy * win.out_w + ox) * c..][..c];
                    let first = (oy * win.stride * win.in_w + ox * win.stride) * c;
                    o.copy_from_slice(&x[first..first + c]);
                    for (_, i) in win.taps(oy, ox) {
                        let i = i * c;
                        for (yv, &xv) in o.iter_mut().zip(&x[i..i + c]) {
                            *yv = if xv > *yv { xv } else { *yv };
                        }
                    }
                }
            }
        });
}

/// Max-pool backward: each output gradient goes to the FIRST input of its window (in
/// window order) equal to the window's maximum, i.e. the input the forward pass kept.
/// (A window whose first value is NaN passes no gradient.)
pub(crate) fn maxpool_backward(
    win: &Window,
    c: usize,
    input: &[f32],
    output: &[f32],
    dout: &[f32],
    batch: usize,
    dinput: &mut [f32],
) {
    let in_len = win.in_h * win.in_w * c;
    let out_len = win.out_h * win.out_w * c;
    dinput[..batch * in_len]
        .par_chunks_mut(in_len)
        .zip(input[..batch * in_len].par_chunks(in_len))
        .zip(output[..batch * out_len].par_chunks(out_len))
        .zip(dout[..batch * out_len].par_chunks(out_len))
        .for_each(|(((dx, x), y), dy)| {
            dx.fill(0.0);
            let mut done = vec![false; c];
            for oy in 0..win.out_h {
                for ox in 0..win.out_w {
                    let o = (oy * win.out_w + ox) * c;
                    let (ys, gs) = (&y[o..o + c], &dy[o..o + c]);
                    done.fill(false);
                    for (_, i) in win.taps(oy, ox) {
                        let i = i * c;
                        // Branch-free so that it vectorises: `hit` is true for the first
                        // input of the window equal to the maximum.
                        let (xs, ds) = (&x[i..i + c], &mut dx[i..i + c]);
                        for ch in 0..c {
                            let hit = (xs[ch] == ys[ch]) & !done[ch];
                            ds[ch] += if hit { gs[ch] } else { 0.0 };
                            done[ch] |= hit;
                        }
                    }
                }
            }
        });
}

/// Average-pool forward: window sum (row by row) divided by `k * k`.
pub(crate) fn avgpool_forward(
    win: &Window,
    c: usize,
    input: &[f32],
    batch: usize,
    output: &mut [f32],
) {
    let in_len = win.in_h * win.in_w * c;
    let out_len = win.out_h * win.out_w * c;
    let area = (win.k * win.k) as f32;
    input[..batch * in_len]
        .par_chunks(in_len)
        .zip(output[..batch * out_len].par_chunks_mut(out_len))
        .for_each(|(x, y)| {
            for oy in 0..win.out_h {
                for ox in 0..win.out_w {
                    let o = &mut y[(oy * win.out_w + ox) * c..][..c];
                    o.fill(0.0);
                    for (_, i) in win.taps(oy, ox) {
                        let i = i * c;
                        for (a, b) in o.iter_mut().zip(&x[i..i + c]) {
                            *a += b;
                        }
                    }
                    for a in o.iter_mut() {
                        *a /= area;
                    }
                }
            }
        });
}

/// Average-pool backward: each output gradient, divided by `k * k`, goes to every input of
/// its window.
pub(crate) fn avgpool_backward(
    win: &Window,
    c: usize,
    dout: &[f32],
    batch: usize,
    dinput: &mut [f32],
) {
    let in_len = win.in_h * win.in_w * c;
    let out_len = win.out_h * win.out_w * c;
    let area = (win.k * win.k) as f32;
    dinput[..batch * in_len]
        .par_chunks_mut(in_len)
        .zip(dout[..batch * out_len].par_chunks(out_len))
        .for_each(|(dx, dy)| {
            dx.fill(0.0);
            for oy in 0..win.out_h {
                for ox in 0..win.out_w {
                    let g = &dy[(oy * win.out_w + ox) * c..][..c];
                    for (_, i) in win.taps(oy, ox) {
                        let i = i * c;
                        for (a, b) in dx[i..i + c].iter_mut().zip(g) {
                            *a += b / area;
                        }
                    }
                }
            }
        });
}

/// Channels-last `[h, w, c]` to C-major `[c, h, w]`, per example (`hw = h * w`).
pub(crate) fn hwc_to_chw(hw: usize, c: usize, input: &[f32], batch: usize, output: &mut [f32]) {
    let n = hw * c;
    input[..batch * n]
        .par_chunks(n)
        .zip(output[..batch * n].par_chunks_mut(n))
        .for_each(|(x, y)| {
            for p in 0..hw {
                for ch in 0..c {
                    y[ch * hw + p] = x[p * c + ch];
                }
            }
        });
}

/// C-major `[c, h, w]` to channels-last `[h, w, c]`, per example.
pub(crate) fn chw_to_hwc(hw: usize, c: usize, input: &[f32], batch: usize, output: &mut [f32]) {
    let n = hw * c;
    input[..batch * n]
        .par_chunks(n)
        .zip(output[..batch * n].par_chunks_mut(n))
        .for_each(|(x, y)| {
            for ch in 0..c {
                for p in 0..hw {
                    y[p * c + ch] = x[ch * hw + p];
                }
            }
        });
}

/// Elementwise block size for parallel activations.
const ELEM_BLOCK: usize = 1 << 14;

/// LeakyReLU with slope `slope` (ReLU when `slope == 0`): `x` for `x > 0`, `slope * x`
/// otherwise (so ReLU maps -0.0 and 0.0 to +0.0 and -0.0·0 = ±0, both equal to zero).
pub(crate) fn leaky_forward(slope: f32, input: &[f32], output: &mut [f32]) {
    output
        .par_chunks_mut(ELEM_BLOCK)
        .zip(input.par_chunks(ELEM_BLOCK))
        .for_each(|(y, x)| {
            if slope == 0.0 {
                for (a, &b) in y.iter_mut().zip(x) {
                    *a = if b > 0.0 { b } else { 0.0 };
                }
            } else {
                for (a, &b) in y.iter_mut().zip(x) {
                    *a = if b > 0.0 { b } else { slope * b };
                }
            }
        });
}

/// Backward of [`leaky_forward`]: derivative 1 for `x > 0`, `slope` for `x <= 0` (so the
/// ReLU derivative at 0 is 0).
pub(crate) fn leaky_backward(slope: f32, input: &[f32], dout: &[f32], dinput: &mut [f32]) {
    dinput
        .par_chunks_mut(ELEM_BLOCK)
        .zip(input.par_chunks(ELEM_BLOCK))
        .zip(dout.par_chunks(ELEM_BLOCK))
        .for_each(|((dx, x), dy)| {
            if slope == 0.0 {
                for ((a, &xv), &g) in dx.iter_mut().zip(x).zip(dy) {
                    *a = if xv > 0.0 { g } else { 0.0 };
                }
            } else {
                for ((a, &xv), &g) in dx.iter_mut().zip(x).zip(dy) {
                    *a = if xv > 0.0 { g } else { slope * g };
                }
            }
        });
}

/// Resizes `v` to at least `n` scalars (contents unspecified; kernels overwrite).
pub(crate) fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}
