//! The double-double certified forward pass (proofs/forward-dd.md).
//!
//! Every scalar is enclosed as `(hi + lo) ± rad`: an unevaluated sum of two f64 (the
//! midpoint, carrying about 106 bits) and an f64 radius. Dense and conv layers evaluate each
//! dot product of an exact f32 weight row with a double-double vector by the compensated
//! scheme of Ogita, Rump and Oishi ("Accurate sum and dot product", SIAM J. Sci. Comput.
//! 26(6), 2005, Dot2) with error-free [`two_prod`] and [`two_sum`], and bound the residual
//! a posteriori from accumulated absolute values, so the bound holds for the order the
//! kernel uses (eight independent lanes, one dot product per lane, auto-vectorised).
//! Fresh rounding errors per layer are then `~n·2⁻¹⁰⁶` relative instead of `~n·2⁻⁵³`,
//! which keeps deep nets (the 14-layer CIFAR VGG) certifiable where the f64 pass of
//! [`super::binary64`] loses every digit.
//!
//! Soundness does not depend on the midpoint being normalised (`|lo| ≤ ulp(hi)/2`): the
//! enclosure is `x ∈ [hi + lo − rad, hi + lo + rad]` for any finite `hi, lo` and `rad ≥ 0`.

use std::sync::Arc;

use rayon::prelude::*;

use super::prepare::{Affine, PreparedNet, PreparedOp};
use crate::certify::ball::BallVec;
use crate::certify::round::{ETA, U, down, gamma_up, interval_to_ball, up};
use crate::error::{Error, Result};
use crate::model::{LayerPlan, Window};

/// Number of independent accumulator lanes of the dot-product kernels (one dot product per
/// lane; a multiple of the AVX2 width so the lane loops vectorise).
pub const LANES: usize = 8;

/// Double-double enclosures of a vector: component `i` is the real `x_i` with
/// `|x_i − (hi[i] + lo[i])| ≤ rad[i]` (exact real arithmetic on the stored floats).
///
/// Invariant: the three vectors have the same length; every radius is `≥ 0`; when produced
/// by this module every entry is finite (checked after each layer).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DdBallVec {
    /// Leading parts of the midpoints.
    pub hi: Vec<f64>,
    /// Trailing parts of the midpoints (the midpoint is `hi + lo`, unevaluated).
    pub lo: Vec<f64>,
    /// Radii, `≥ 0`.
    pub rad: Vec<f64>,
}

impl DdBallVec {
    /// A vector of `n` exact zeros.
    pub fn zeros(n: usize) -> Self {
        Self {
            hi: vec![0.0; n],
            lo: vec![0.0; n],
            rad: vec![0.0; n],
        }
    }
    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.hi.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.hi.is_empty()
    }
    /// True when the lengths agree, every entry is finite and every radius `≥ 0`.
    pub fn is_valid(&self) -> bool {
        self.hi.len() == self.lo.len()
            && self.hi.len() == self.rad.len()
            && (0..self.hi.len()).fold(true, |ok, i| {
                ok & self.hi[i].is_finite()
                    & self.lo[i].is_finite()
                    & self.rad[i].is_finite()
                    & (self.rad[i] >= 0.0)
            })
    }
    /// The f64 ball `hi ± up(rad + |lo|)` containing the same reals (`|x − hi| ≤
    /// |x − (hi + lo)| + |lo| ≤ rad + |lo|`, rounded up by Lemma 1).
    pub fn to_ball(&self) -> BallVec {
        BallVec {
            mid: self.hi.clone(),
            rad: self
                .rad
                .iter()
                .zip(&self.lo)
                .map(|(&r, &l)| up(r + l.abs()))
                .collect(),
        }
    }
    /// A certified lower bound of component `i`: `≤ hi + lo − rad`.
    pub fn lower(&self, i: usize) -> f64 {
        lower(self.hi[i], self.lo[i], self.rad[i])
    }
    /// A certified upper bound of component `i`: `≥ hi + lo + rad`.
    pub fn upper(&self, i: usize) -> f64 {
        upper(self.hi[i], self.lo[i], self.rad[i])
    }
}

/// `down(RN(h + down(RN(l − r)))) ≤ h + l − r` (Lemma 1 twice, rounding is monotone).
#[inline(always)]
fn lower(h: f64, l: f64, r: f64) -> f64 {
    down(h + down(l - r))
}

/// `up(RN(h + up(RN(l + r)))) ≥ h + l + r` (Lemma 1 twice).
#[inline(always)]
fn upper(h: f64, l: f64, r: f64) -> f64 {
    up(h + up(l + r))
}

/// Knuth's TwoSum: `(s, e)` with `s = RN(a + b)` and `s + e = a + b` exactly, for all
/// finite `a, b` whose sum does not overflow (proofs/forward-dd.md, (D1)).
#[inline(always)]
pub fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let z = s - a;
    (s, (a - (s - z)) + (b - z))
}

/// TwoProduct with a fused multiply-add: `(p, e)` with `p = RN(a b)`,
/// `e = RN(a b − p)` and `|a b − (p + e)| ≤ η/2` (exact unless the remainder underflows;
/// proofs/forward-dd.md, (D2)).
#[inline(always)]
pub fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

/// Double-double enclosure of the exact inputs `p / 255`: `hi = RN(p/255)`, the remainder
/// `p − 255·hi` is computed exactly by one FMA, `lo = RN(rem/255)`, `rad = up(u|lo|)`
/// (proofs/forward-dd.md, §2; checked exactly for all 256 bytes in the unit tests).
pub fn input_dd(pixels: &[u8]) -> DdBallVec {
    let mut x = DdBallVec::zeros(pixels.len());
    for (i, &p) in pixels.iter().enumerate() {
        let (h, l, r) = pixel_dd(p);
        x.hi[i] = h;
        x.lo[i] = l;
        x.rad[i] = r;
    }
    x
}

fn pixel_dd(p: u8) -> (f64, f64, f64) {
    let pf = p as f64;
    let h = pf / 255.0;
    let rem = (-255.0f64).mul_add(h, pf);
    let l = rem / 255.0;
    (h, l, up(U * l.abs()))
}

/// Constants of the a-posteriori dot-product bound for fan-in `n` (proofs/forward-dd.md,
/// Theorem D): `k ≥ 1/(1 − γ_N)`, `gk ≥ γ_N·k` with `N = 3n + 1`, `e = 9nη`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DotConsts {
    k: f64,
    gk: f64,
    e: f64,
}

impl DotConsts {
    fn new(n: usize) -> Result<Self> {
        let g = gamma_up(3 * n + 1)?; // ≥ γ_N, ≤ 1/2 is checked (N u < 1/2)
        let k = up(1.0 / down(1.0 - g));
        // 9n < 2⁵³: 9n·η is an integer times 2⁻¹⁰⁷⁴, exact.
        Ok(Self {
            k,
            gk: up(g * k),
            e: (9 * n) as f64 * ETA,
        })
    }
}

/// Per-lane state of the compensated dot product: `s` the TwoSum chain of the products,
/// `t` the rounded sum of the error terms (`e_j`, `σ_j`, `w_j·lo_j`), `a ≈ Σ|w_j| rad_j`,
/// `b ≈ Σ(|e_j| + |σ_j| + |w_j||lo_j|)`.
#[derive(Clone, Copy)]
struct Acc {
    s: [f64; LANES],
    t: [f64; LANES],
    a: [f64; LANES],
    b: [f64; LANES],
}

impl Acc {
    #[inline(always)]
    fn new(start: [f64; LANES]) -> Self {
        Self {
            s: start,
            t: [0.0; LANES],
            a: [0.0; LANES],
            b: [0.0; LANES],
        }
    }

    /// One step of every lane: lane `i` adds `w[i]·(h[i] + l[i] ± r[i])`.
    #[inline(always)]
    fn mac(&mut self, w: &[f64; LANES], h: &[f64; LANES], l: &[f64; LANES], r: &[f64; LANES]) {
        for i in 0..LANES {
            // TwoProduct (D2): w h = p + e (+ η/2).
            let p = w[i] * h[i];
            let e = w[i].mul_add(h[i], -p);
            // TwoSum (D1): s + p = s' + σ exactly.
            let s = self.s[i] + p;
            let z = s - self.s[i];
            let sig = (self.s[i] - (s - z)) + (p - z);
            self.s[i] = s;
            self.t[i] = w[i].mul_add(l[i], (self.t[i] + e) + sig);
            let wa = w[i].abs();
            self.b[i] = wa.mul_add(l[i].abs(), self.b[i] + (e.abs() + sig.abs()));
            self.a[i] = wa.mul_add(r[i], self.a[i]);
        }
    }

    /// The enclosure `(H + L) ± R` of lane `i`'s exact dot product (Theorem D).
    #[inline(always)]
    fn finish(&self, i: usize, c: &DotConsts) -> (f64, f64, f64) {
        let (h, l) = two_sum(self.s[i], self.t[i]);
        let r = up(up(c.k * self.a[i]) + up(up(c.gk * self.b[i]) + c.e));
        (h, l, r)
    }
}

#[inline(always)]
fn lanes(x: &[f64]) -> &[f64; LANES] {
    x.try_into().expect("a chunk of LANES values")
}

/// Enclosure of the exact `Σ_j w_j x_j` for exact float weights `w` and `x` enclosed by
/// `x` (double-double), by the same kernel the dense layers use (Theorem D).
/// Errors when the lengths differ, the product is too long or the result is not finite.
pub fn dot_dd(w: &[f64], x: &DdBallVec) -> Result<(f64, f64, f64)> {
    if w.len() != x.len() || !x.is_valid() || w.iter().any(|v| !v.is_finite()) {
        return Err(Error::Shape(format!(
            "dot product of {} weights with {} (finite) values",
            w.len(),
            x.len()
        )));
    }
    let c = DotConsts::new(w.len())?;
    let mut acc = Acc::new([0.0; LANES]);
    for (j, &wj) in w.iter().enumerate() {
        let mut wl = [0.0; LANES];
        wl[0] = wj;
        acc.mac(
            &wl,
            &[x.hi[j]; LANES],
            &[x.lo[j]; LANES],
            &[x.rad[j]; LANES],
        );
    }
    let out = acc.finish(0, &c);
    if !(out.0.is_finite() && out.1.is_finite() && out.2.is_finite()) {
        return Err(Error::Certify("the dot product overflowed f64".into()));
    }
    Ok(out)
}

/// One layer prepared for the double-double pass: the shared f64 data of its
/// [`PreparedOp`] plus, for weight layers, the constants of the dot-product bound (and for
/// dense layers `W` transposed into blocks of [`LANES`] output rows,
/// `wt[(blk·n + j)·LANES + i] = w[blk·LANES + i, j]`, zero rows past `out`).
///
/// Invariant: built by [`DdOp::new`] from the [`PreparedOp`] of the same layer.
#[derive(Clone, Debug)]
pub(crate) enum DdOp {
    /// Dense layer.
    Dense {
        /// Weights and bias (shared with the f64 pass).
        affine: Arc<Affine>,
        /// `W` in lane blocks.
        wt: Vec<f64>,
        /// Constants of the bound for fan-in `n`.
        c: DotConsts,
    },
    /// Conv layer.
    Conv {
        /// Weights and bias (shared with the f64 pass).
        affine: Arc<Affine>,
        /// Window geometry.
        window: Window,
        /// The im2col gather table (shared with the f64 pass).
        table: Arc<[u32]>,
        /// Constants of the bound for the fan-in.
        c: DotConsts,
    },
    /// Max-pool.
    MaxPool {
        /// Window geometry.
        window: Window,
        /// Channels.
        channels: usize,
    },
    /// Avg-pool.
    AvgPool {
        /// Window geometry.
        window: Window,
        /// Channels.
        channels: usize,
    },
    /// No-op.
    Flatten,
    /// ReLU.
    Relu,
    /// LeakyReLU with the spec's exact slope.
    LeakyRelu {
        /// Slope on the negative side.
        slope: f32,
    },
}

impl DdOp {
    /// Prepares the double-double data of one prepared layer.
    pub(crate) fn new(op: &PreparedOp) -> Result<Self> {
        Ok(match op {
            PreparedOp::Dense(a) => {
                let n = a.fan_in;
                let blocks = a.out.div_ceil(LANES);
                let mut wt = vec![0.0; blocks * n * LANES];
                for o in 0..a.out {
                    let (blk, i) = (o / LANES, o % LANES);
                    for j in 0..n {
                        wt[(blk * n + j) * LANES + i] = a.w[o * n + j];
                    }
                }
                DdOp::Dense {
                    affine: Arc::clone(a),
                    wt,
                    c: DotConsts::new(n)?,
                }
            }
            PreparedOp::Conv {
                affine,
                window,
                table,
                ..
            } => DdOp::Conv {
                affine: Arc::clone(affine),
                window: *window,
                table: Arc::clone(table),
                c: DotConsts::new(affine.fan_in)?,
            },
            PreparedOp::MaxPool { window, channels } => DdOp::MaxPool {
                window: *window,
                channels: *channels,
            },
            PreparedOp::AvgPool { window, channels } => DdOp::AvgPool {
                window: *window,
                channels: *channels,
            },
            PreparedOp::Flatten => DdOp::Flatten,
            PreparedOp::Relu => DdOp::Relu,
            PreparedOp::LeakyRelu { slope } => DdOp::LeakyRelu { slope: *slope },
        })
    }
}

/// The double-double data of every layer of `net`.
pub(crate) fn prepare(net: &PreparedNet) -> Result<Vec<DdOp>> {
    net.ops().iter().map(DdOp::new).collect()
}

/// Applies layer `op` (plan `plan`) to ONE example's enclosure.
pub(crate) fn apply_dd(plan: &LayerPlan, op: &DdOp, x: DdBallVec) -> Result<DdBallVec> {
    let y = match op {
        DdOp::Dense { affine, wt, c } => dense_dd(affine, wt, c, &x),
        DdOp::Conv {
            affine,
            window,
            table,
            c,
        } => conv_dd(affine, window, table, c, &x),
        DdOp::MaxPool { window, channels } => max_pool_dd(window, *channels, &x),
        DdOp::AvgPool { window, channels } => avg_pool_dd(window, *channels, &x)?,
        DdOp::Flatten => x,
        DdOp::Relu => relu_dd(x),
        DdOp::LeakyRelu { slope } => leaky_dd(x, *slope as f64),
    };
    debug_assert_eq!(y.len(), plan.output.len());
    if !y.is_valid() {
        return Err(Error::Certify(format!(
            "layer {} ({}): the double-double enclosure overflowed f64",
            plan.index,
            plan.layer.describe()
        )));
    }
    Ok(y)
}

fn bias_lanes(a: &Affine, from: usize) -> [f64; LANES] {
    let mut s = [0.0; LANES];
    if let Some(b) = &a.bias {
        for (i, v) in s.iter_mut().enumerate() {
            if let Some(&bv) = b.get(from + i) {
                *v = bv;
            }
        }
    }
    s
}

fn dense_dd(a: &Affine, wt: &[f64], c: &DotConsts, x: &DdBallVec) -> DdBallVec {
    let n = a.fan_in;
    let mut y = DdBallVec::zeros(a.out);
    for (blk, wb) in wt.chunks_exact(n * LANES).enumerate() {
        // The bias enters the TwoSum chain exactly as its first term.
        let mut acc = Acc::new(bias_lanes(a, blk * LANES));
        for (j, w) in wb.chunks_exact(LANES).enumerate() {
            acc.mac(
                lanes(w),
                &[x.hi[j]; LANES],
                &[x.lo[j]; LANES],
                &[x.rad[j]; LANES],
            );
        }
        for i in 0..LANES {
            let o = blk * LANES + i;
            if o < a.out {
                (y.hi[o], y.lo[o], y.rad[o]) = acc.finish(i, c);
            }
        }
    }
    y
}

fn conv_dd(a: &Affine, w: &Window, table: &[u32], c: &DotConsts, x: &DdBallVec) -> DdBallVec {
    let k = a.fan_in;
    let p = w.out_h * w.out_w;
    let nb = p.div_ceil(LANES);
    // im2col in lane blocks: col[(blk·k + j)·LANES + i] = input of row j at pixel blk·L + i
    // (exact zeros in the padding and past the last pixel).
    let mut col = [
        vec![0.0; nb * k * LANES],
        vec![0.0; nb * k * LANES],
        vec![0.0; nb * k * LANES],
    ];
    for j in 0..k {
        for q in 0..p {
            let g = table[j * p + q];
            if g != u32::MAX {
                let at = ((q / LANES) * k + j) * LANES + q % LANES;
                let g = g as usize;
                col[0][at] = x.hi[g];
                col[1][at] = x.lo[g];
                col[2][at] = x.rad[g];
            }
        }
    }
    let mut y = DdBallVec::zeros(a.out * p);
    for blk in 0..nb {
        let span = blk * k * LANES..(blk + 1) * k * LANES;
        let (ch, cl, cr) = (&col[0][span.clone()], &col[1][span.clone()], &col[2][span]);
        for o in 0..a.out {
            let b0 = a.bias.as_ref().map_or(0.0, |b| b[o]);
            let mut acc = Acc::new([b0; LANES]);
            let row = &a.w[o * k..(o + 1) * k];
            for (((&wj, h), l), r) in row
                .iter()
                .zip(ch.chunks_exact(LANES))
                .zip(cl.chunks_exact(LANES))
                .zip(cr.chunks_exact(LANES))
            {
                acc.mac(&[wj; LANES], lanes(h), lanes(l), lanes(r));
            }
            for i in 0..LANES {
                let q = blk * LANES + i;
                if q < p {
                    let at = o * p + q;
                    (y.hi[at], y.lo[at], y.rad[at]) = acc.finish(i, c);
                }
            }
        }
    }
    y
}

/// ReLU: decided-positive balls are kept, decided-negative ones become `0 ± 0`, a
/// straddling ball becomes a ball holding `[0, up(hi + lo + rad)]` (as in the f64 pass).
fn relu_dd(mut x: DdBallVec) -> DdBallVec {
    for i in 0..x.len() {
        let (h, l, r) = (x.hi[i], x.lo[i], x.rad[i]);
        if lower(h, l, r) >= 0.0 {
            continue;
        }
        let top = upper(h, l, r);
        if top <= 0.0 {
            (x.hi[i], x.lo[i], x.rad[i]) = (0.0, 0.0, 0.0);
            continue;
        }
        let c = 0.5 * top;
        (x.hi[i], x.lo[i], x.rad[i]) = (c, 0.0, up((top - c).max(c)));
    }
    x
}

/// LeakyReLU with exact slope `s`: decided-negative balls map to `s·(hi + lo)` with a
/// TwoProduct and a bounded error; straddling balls to a ball holding the hull of
/// `{s·lower, 0, upper}` (proofs/forward-dd.md, §5).
fn leaky_dd(mut x: DdBallVec, s: f64) -> DdBallVec {
    for i in 0..x.len() {
        let (h, l, r) = (x.hi[i], x.lo[i], x.rad[i]);
        let lo_b = lower(h, l, r);
        if lo_b >= 0.0 {
            continue;
        }
        let hi_b = upper(h, l, r);
        if hi_b <= 0.0 {
            let (p, e) = two_prod(s, h);
            let q = s * l;
            let l1 = e + q;
            let (h2, l2) = two_sum(p, l1);
            let err = up(up(U * up(q.abs() + l1.abs())) + ETA);
            (x.hi[i], x.lo[i], x.rad[i]) = (h2, l2, up(up(s.abs() * r) + err));
        } else {
            let sl = s * lo_b;
            let new_lo = down(sl).min(0.0);
            let new_hi = hi_b.max(up(sl)).max(0.0);
            let (m, rr) = interval_to_ball(new_lo, new_hi);
            (x.hi[i], x.lo[i], x.rad[i]) = (m, 0.0, rr);
        }
    }
    x
}

/// Max-pool: around the candidate `b` with the largest midpoint, radius
/// `max(R_b, max_i up(up(up(H_i − H_b) + up(L_i − L_b)) + R_i))` (proofs/forward-dd.md §5).
fn max_pool_dd(w: &Window, c: usize, x: &DdBallVec) -> DdBallVec {
    let p = w.out_h * w.out_w;
    let plane = w.in_h * w.in_w;
    let mut y = DdBallVec::zeros(c * p);
    for ch in 0..c {
        let base_in = ch * plane;
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                // Valid pooling: every tap is inside the plane, the first one is (0, 0).
                let window = move || w.taps(oy, ox).map(move |(_, t)| base_in + t);
                let mut b = base_in + oy * w.stride * w.in_w + ox * w.stride;
                for i in window() {
                    if x.hi[i] > x.hi[b] || (x.hi[i] == x.hi[b] && x.lo[i] > x.lo[b]) {
                        b = i;
                    }
                }
                let mut r = x.rad[b];
                for i in window() {
                    if i != b {
                        let d = up(up(x.hi[i] - x.hi[b]) + up(x.lo[i] - x.lo[b]));
                        r = r.max(up(d + x.rad[i]));
                    }
                }
                let o = ch * p + oy * w.out_w + ox;
                (y.hi[o], y.lo[o], y.rad[o]) = (x.hi[b], x.lo[b], r);
            }
        }
    }
    y
}

/// Avg-pool: the window sum by a TwoSum chain with a bounded compensation, then a
/// double-double division by `k²` (proofs/forward-dd.md §5).
fn avg_pool_dd(w: &Window, c: usize, x: &DdBallVec) -> Result<DdBallVec> {
    let kk = w.k * w.k;
    let g = gamma_up(2 * kk)?;
    let k = up(1.0 / down(1.0 - g));
    let gk = up(g * k);
    let d = kk as f64;
    let p = w.out_h * w.out_w;
    let plane = w.in_h * w.in_w;
    let mut y = DdBallVec::zeros(c * p);
    for ch in 0..c {
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                let (mut s, mut t, mut babs, mut rs) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
                for (_, tap) in w.taps(oy, ox) {
                    let i = ch * plane + tap;
                    let (s2, sig) = two_sum(s, x.hi[i]);
                    s = s2;
                    t = (t + sig) + x.lo[i];
                    babs += sig.abs() + x.lo[i].abs();
                    rs += x.rad[i];
                }
                let (h1, l1) = two_sum(s, t);
                let r1 = up(up(k * rs) + up(gk * babs));
                let q = h1 / d;
                let rem = (-d).mul_add(q, h1);
                let v = rem + l1;
                let l2 = v / d;
                let err = up(U * up(up(l2.abs() + rem.abs()) + v.abs()));
                let r = up(up(r1 / d) + up(err + ETA));
                let (h, l) = two_sum(q, l2);
                let o = ch * p + oy * w.out_w + ox;
                (y.hi[o], y.lo[o], y.rad[o]) = (h, l, r);
            }
        }
    }
    Ok(y)
}

/// Evaluates the double-double pass on every example of `pixels` (parallel over examples),
/// returning each example's enclosures after every layer when `all_layers`, else only the
/// last. Used by [`super::CertifiedNet`].
pub(crate) fn run_examples(
    plan: &[LayerPlan],
    ops: &[DdOp],
    pixels: &[u8],
    input_len: usize,
    all_layers: bool,
) -> Result<Vec<Vec<DdBallVec>>> {
    pixels
        .par_chunks(input_len.max(1))
        .map(|px| {
            let mut x = input_dd(px);
            let mut out = Vec::new();
            for (p, op) in plan.iter().zip(ops) {
                if all_layers {
                    out.push(x.clone());
                }
                x = apply_dd(p, op, x)?;
            }
            out.push(x);
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests;
