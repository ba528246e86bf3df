//! The certified forward pass: midpoint-radius enclosures of every layer's output.
//!
//! The real network is the one defined by the stored f32 weights taken as exact reals and
//! by the exact inputs `p / 255` (see `proofs/forward.md`). Every function here returns
//! [`BallVec`]s that provably contain the exact real values, whatever the summation order,
//! FMA use or underflow of the f64 arithmetic that computes them.
//!
//! Dense and conv layers run at matrix-product speed: `W·m` and `|W|·v` are two ordinary
//! f64 matrix products (ndarray / matrixmultiply, any summation order), and the radius is
//! widened by Higham's a-priori bound `|fl(aᵀb) − aᵀb| ≤ γ_n |a|ᵀ|b| + n·η`
//! (`γ_n = nu/(1−nu)`, `u = 2⁻⁵³`, `η = 2⁻¹⁰⁷⁴`). Every upward rounding is done with
//! [`up`] (`f64::next_up` of the round-to-nearest result), which is never below the exact
//! value (Lemma 1 of `proofs/forward.md`).

use ndarray::{ArrayView2, ArrayViewMut2, linalg::general_mat_mul};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::{Layer, LayerPlan, ModelSpec, Params, Window};

/// Unit roundoff of f64 round-to-nearest, `2⁻⁵³`.
pub const U: f64 = 1.0 / 9_007_199_254_740_992.0;
/// Smallest positive subnormal f64, `2⁻¹⁰⁷⁴` (bound on the absolute underflow error of
/// one rounded product or fused multiply-add, with room to spare: the exact bound is half).
pub const ETA: f64 = f64::from_bits(1);

/// Upper bound of a real `a` from its round-to-nearest f64 value `x = RN(a)`:
/// `up(RN(a)) ≥ a` for every real `a` with a finite `RN(a)` (Lemma 1, proofs/forward.md).
#[inline(always)]
pub fn up(x: f64) -> f64 {
    x.next_up()
}

/// Lower bound of a real `a` from `x = RN(a)`: `down(RN(a)) ≤ a` (Lemma 1).
#[inline(always)]
pub fn down(x: f64) -> f64 {
    x.next_down()
}

/// Enclosures of a batch of real vectors in midpoint-radius form.
///
/// Invariant: `mid.len() == rad.len()`; every `rad[i]` is `≥ 0` (or NaN-free and finite
/// when produced by this module), and the real value it encloses lies in
/// `[mid[i] − rad[i], mid[i] + rad[i]]` (exact real endpoints, not rounded ones).
/// Layout is batch-major `[batch, len]`, each example in the spec's `[C, H, W]` order.
#[derive(Clone, Debug, PartialEq)]
pub struct BallVec {
    /// Midpoints.
    pub mid: Vec<f64>,
    /// Radii, `≥ 0`.
    pub rad: Vec<f64>,
}

impl BallVec {
    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.mid.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.mid.is_empty()
    }
    /// A lower bound on the enclosed real `i`: `≤ mid − rad` exactly.
    pub fn lo(&self, i: usize) -> f64 {
        down(self.mid[i] - self.rad[i])
    }
    /// An upper bound on the enclosed real `i`: `≥ mid + rad` exactly.
    pub fn hi(&self, i: usize) -> f64 {
        up(self.mid[i] + self.rad[i])
    }
    /// True when every midpoint and radius is finite and every radius `≥ 0`.
    pub fn is_valid(&self) -> bool {
        self.mid.len() == self.rad.len()
            && self.mid.iter().all(|m| m.is_finite())
            && self.rad.iter().all(|r| r.is_finite() && *r >= 0.0)
    }
    /// Rows `[from, to)` of a batch-major enclosure whose rows have length `len`.
    pub fn rows(&self, len: usize, from: usize, to: usize) -> BallVec {
        BallVec {
            mid: self.mid[from * len..to * len].to_vec(),
            rad: self.rad[from * len..to * len].to_vec(),
        }
    }
}

/// Converts an enclosure `m ± r` to an interval `[lo, hi]` with `lo ≤ m − r` and
/// `hi ≥ m + r` (exact reals), by Lemma 1.
#[inline]
pub fn ball_to_interval(m: f64, r: f64) -> (f64, f64) {
    (down(m - r), up(m + r))
}

/// Converts an interval `[lo, hi]` to a ball `m ± r` containing it: `m = lo/2 + hi/2`
/// (rounded), `r ≥ max(hi − m, m − lo)` (each difference rounded up by Lemma 1).
#[inline]
pub fn interval_to_ball(lo: f64, hi: f64) -> (f64, f64) {
    if lo == hi {
        return (lo, 0.0);
    }
    let m = 0.5 * lo + 0.5 * hi;
    let r = up(hi - m).max(up(m - lo));
    (m, r)
}

/// `n` as f64 (exact for the sizes used here, `n < 2⁵³`).
fn exact(n: usize) -> f64 {
    n as f64
}

/// Upper bound on `γ_n = n u / (1 − n u)`; errors if `n u ≥ 1/2` (never for real nets).
pub fn gamma_up(n: usize) -> Result<f64> {
    // n·u is exact (an integer times a power of two, n < 2⁵³); 1 − n u is exact when
    // n u ≤ 1/2 (Sterbenz); the division is rounded up by Lemma 1.
    let nu = exact(n) * U;
    if nu >= 0.5 {
        return Err(Error::Certify(format!(
            "dot products of length {n} are too long for the a-priori error bound"
        )));
    }
    Ok(up(nu / (1.0 - nu)))
}

/// A weight layer prepared for certified products: `W` and `|W|` as f64 (exact copies of
/// the f32 weights), plus the constants of the rounding-error bound.
#[derive(Clone, Debug)]
struct Affine {
    out: usize,
    /// Fan-in `n` (the length of every dot product).
    fan_in: usize,
    w: Vec<f64>,
    w_abs: Vec<f64>,
    bias: Option<Vec<f64>>,
    /// `≥ γ_n`.
    gamma: f64,
    /// `≥ 1 / (1 − γ_n)`.
    inv_one_minus_gamma: f64,
    /// `n η`, the underflow allowance of one length-n dot product.
    n_eta: f64,
}

impl Affine {
    fn new(weight: &[f32], out: usize, bias: Option<&[f32]>) -> Result<Self> {
        let fan_in = weight.len() / out;
        let gamma = gamma_up(fan_in)?;
        // 1 − γ ≥ 1/2 > 0 as n u ≤ 1/3 in practice; RN(1 − γ) may be above the exact
        // 1 − γ, so take down() of it, then round the quotient up.
        let inv_one_minus_gamma = up(1.0 / down(1.0 - gamma));
        Ok(Self {
            out,
            fan_in,
            w: weight.iter().map(|&v| v as f64).collect(),
            w_abs: weight.iter().map(|&v| (v as f64).abs()).collect(),
            bias: bias.map(|b| b.iter().map(|&v| v as f64).collect()),
            gamma,
            inv_one_minus_gamma,
            // exact: a small integer times 2⁻¹⁰⁷⁴ is a subnormal f64.
            n_eta: exact(fan_in) * ETA,
        })
    }

    /// `v = up(up(γ |m|) + r)`: componentwise `v ≥ r + γ_n |m|` exactly.
    fn inflate_input(&self, mid: &[f64], rad: &[f64], v: &mut [f64]) {
        let g = self.gamma;
        for ((v, &m), &r) in v.iter_mut().zip(mid).zip(rad) {
            *v = up(up(g * m.abs()) + r);
        }
    }

    /// Turns `s = fl(|W| v)` into the output radius in place, then adds the bias exactly
    /// to the midpoint `c = fl(W m)`. `row_of(i)` gives the output feature of entry `i`.
    ///
    /// With `S = |W| v` exact: `S ≤ (s + nη)/(1 − γ_n)` (Higham for non-negative terms),
    /// and the radius of `W x` around `c` is `≤ S + nη`.
    fn finish(&self, c: &mut [f64], s: &mut [f64], feature_of: impl Fn(usize) -> usize) {
        let f = self.inv_one_minus_gamma;
        let ne = self.n_eta;
        for (i, (c, s)) in c.iter_mut().zip(s.iter_mut()).enumerate() {
            // each step rounded up by Lemma 1.
            let mut r = up(up(up(*s + ne) * f) + ne);
            if let Some(b) = &self.bias {
                // c' = RN(c + b): |c' − (c + b)| ≤ u |c'| (Lemma 2), added rounded up.
                let cb = *c + b[feature_of(i)];
                r = up(r + up(U * cb.abs()));
                *c = cb;
            }
            *s = r;
        }
    }
}

/// One step of the certified network.
#[derive(Clone, Debug)]
enum Step {
    Dense(Affine),
    Conv(Affine, Window, usize),
    MaxPool(Window, usize),
    AvgPool(Window, usize),
    Identity,
    Relu,
    Leaky(f64),
}

/// A network prepared for certified evaluation: the spec's plan with exact f64 copies of
/// the weights. Build it once with [`CertifiedNet::new`] and evaluate many batches.
///
/// Invariant: the parameters passed [`Params::check`] against the spec (shapes match and
/// every weight is finite).
#[derive(Clone, Debug)]
pub struct CertifiedNet {
    plan: Vec<LayerPlan>,
    steps: Vec<Step>,
    input_len: usize,
}

impl CertifiedNet {
    /// Prepares `params` for certified evaluation of `spec`; errors on a shape mismatch or a
    /// non-finite weight.
    pub fn new(spec: &ModelSpec, params: &Params) -> Result<Self> {
        params.check(spec)?;
        let plan = spec.plan()?;
        let mut weights = params.layers.iter();
        let mut steps = Vec::with_capacity(plan.len());
        for p in &plan {
            let step = match p.layer {
                Layer::Dense { out, .. } => {
                    let lp = weights.next().expect("checked by Params::check");
                    Step::Dense(Affine::new(&lp.weight, out, lp.bias.as_deref())?)
                }
                Layer::Conv2d { out, .. } => {
                    let lp = weights.next().expect("checked by Params::check");
                    Step::Conv(
                        Affine::new(&lp.weight, out, lp.bias.as_deref())?,
                        p.window.expect("conv has a window"),
                        p.input.c,
                    )
                }
                Layer::MaxPool { .. } => {
                    Step::MaxPool(p.window.expect("pool has a window"), p.input.c)
                }
                Layer::AvgPool { .. } => {
                    Step::AvgPool(p.window.expect("pool has a window"), p.input.c)
                }
                Layer::Flatten => Step::Identity,
                Layer::Relu => Step::Relu,
                Layer::LeakyRelu { slope } => Step::Leaky(slope as f64),
            };
            steps.push(step);
        }
        Ok(Self {
            plan,
            steps,
            input_len: spec.input.len(),
        })
    }

    /// Number of outputs of the network.
    pub fn outputs(&self) -> usize {
        self.plan.last().map_or(self.input_len, |p| p.output.len())
    }

    fn check_pixels(&self, pixels: &[u8], batch: usize) -> Result<()> {
        if pixels.len() != batch * self.input_len {
            return Err(Error::Shape(format!(
                "{} pixels for a batch of {batch} inputs of {} values",
                pixels.len(),
                self.input_len
            )));
        }
        Ok(())
    }

    /// Enclosures of the input and of every layer's output (see [`forward_enclosures`]).
    pub fn forward(&self, pixels: &[u8], batch: usize) -> Result<Vec<BallVec>> {
        self.check_pixels(pixels, batch)?;
        let mut out = vec![input_enclosure(pixels)];
        for (i, step) in self.steps.iter().enumerate() {
            let next = self.apply(i, step, out.last().expect("non-empty"), batch)?;
            out.push(next);
        }
        Ok(out)
    }

    /// Enclosure of the logits of every real input in the box `x` (`[batch, input_len]`,
    /// any reals, not only pixels `p / 255`): used for interval bound propagation by
    /// `robust`. Errors on a shape mismatch, an invalid box or an overflow.
    pub fn logits_of_ball(&self, x: &BallVec, batch: usize) -> Result<BallVec> {
        if x.len() != batch * self.input_len || !x.is_valid() {
            return Err(Error::Shape(format!(
                "an input box of {} values for a batch of {batch} inputs of {} values (or a \
                 non-finite box)",
                x.len(),
                self.input_len
            )));
        }
        let mut x = x.clone();
        for (i, step) in self.steps.iter().enumerate() {
            x = self.apply_seq(i, step, &x, batch)?;
        }
        Ok(x)
    }

    /// Like [`CertifiedNet::logits_of_ball`] but returns the box and every layer's output
    /// enclosure (index `i + 1` = output of layer `i`), sequentially.
    pub fn forward_of_ball(&self, x: &BallVec, batch: usize) -> Result<Vec<BallVec>> {
        if x.len() != batch * self.input_len || !x.is_valid() {
            return Err(Error::Shape(format!(
                "an input box of {} values for a batch of {batch} inputs of {} values",
                x.len(),
                self.input_len
            )));
        }
        let mut out = vec![x.clone()];
        for (i, step) in self.steps.iter().enumerate() {
            let next = self.apply_seq(i, step, out.last().expect("non-empty"), batch)?;
            out.push(next);
        }
        Ok(out)
    }

    /// Enclosure of the logits only (see [`logit_enclosures`]).
    pub fn logits(&self, pixels: &[u8], batch: usize) -> Result<BallVec> {
        self.check_pixels(pixels, batch)?;
        const CHUNK: usize = 64;
        let n_out = self.outputs();
        let parts: Vec<Result<BallVec>> = pixels
            .par_chunks(CHUNK * self.input_len.max(1))
            .map(|px| {
                let b = px.len() / self.input_len.max(1);
                let mut x = input_enclosure(px);
                for (i, step) in self.steps.iter().enumerate() {
                    x = self.apply_seq(i, step, &x, b)?;
                }
                Ok(x)
            })
            .collect();
        let mut mid = Vec::with_capacity(batch * n_out);
        let mut rad = Vec::with_capacity(batch * n_out);
        for p in parts {
            let p = p?;
            mid.extend_from_slice(&p.mid);
            rad.extend_from_slice(&p.rad);
        }
        Ok(BallVec { mid, rad })
    }

    /// Applies step `i` to a batch, parallel over examples.
    fn apply(&self, i: usize, step: &Step, x: &BallVec, batch: usize) -> Result<BallVec> {
        let p = &self.plan[i];
        let (il, ol) = (p.input.len(), p.output.len());
        if batch == 0 {
            return Ok(BallVec {
                mid: vec![],
                rad: vec![],
            });
        }
        let rows = (batch / (2 * rayon::current_num_threads())).clamp(1, 64);
        let parts: Vec<Result<BallVec>> = (0..batch)
            .step_by(rows)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|from| {
                let to = (from + rows).min(batch);
                self.apply_seq(i, step, &x.rows(il, from, to), to - from)
            })
            .collect();
        let mut mid = Vec::with_capacity(batch * ol);
        let mut rad = Vec::with_capacity(batch * ol);
        for part in parts {
            let part = part?;
            mid.extend_from_slice(&part.mid);
            rad.extend_from_slice(&part.rad);
        }
        Ok(BallVec { mid, rad })
    }

    /// Applies step `i` to a batch sequentially; checks the result is finite.
    fn apply_seq(&self, i: usize, step: &Step, x: &BallVec, batch: usize) -> Result<BallVec> {
        let p = &self.plan[i];
        let (il, ol) = (p.input.len(), p.output.len());
        debug_assert_eq!(x.len(), batch * il);
        let y = match step {
            Step::Dense(a) => dense(a, x, batch, il),
            Step::Conv(a, w, c_in) => conv(a, w, *c_in, x, batch),
            Step::MaxPool(w, c) => pool(w, *c, x, batch, true),
            Step::AvgPool(w, c) => pool(w, *c, x, batch, false),
            Step::Identity => x.clone(),
            Step::Relu => relu(x),
            Step::Leaky(s) => leaky(x, *s),
        };
        debug_assert_eq!(y.len(), batch * ol);
        if !y.is_valid() {
            return Err(Error::Certify(format!(
                "layer {i} ({}): the enclosure overflowed f64 (weights or activations too large \
                 to certify in f64)",
                p.layer.describe()
            )));
        }
        Ok(y)
    }
}

/// Enclosure of the exact inputs `p / 255`: `mid = RN(p/255)`, `rad = 2⁻⁵⁴` unless
/// `p ∈ {0, 255}` (exact). For `0 < p/255 < 1`, `ulp ≤ 2⁻⁵³`, so the correctly rounded
/// quotient is within `2⁻⁵⁴` (proofs/forward.md, §Inputs).
pub fn input_enclosure(pixels: &[u8]) -> BallVec {
    const HALF_ULP_BELOW_ONE: f64 = 1.0 / 18_014_398_509_481_984.0; // 2⁻⁵⁴
    BallVec {
        mid: pixels.iter().map(|&p| p as f64 / 255.0).collect(),
        rad: pixels
            .iter()
            .map(|&p| {
                if p == 0 || p == 255 {
                    0.0
                } else {
                    HALF_ULP_BELOW_ONE
                }
            })
            .collect(),
    }
}

/// `C = A · Bᵀ` for row-major `a: [m, k]`, `b: [n, k]`, into `c: [m, n]` (plain f64, any
/// summation order — the error bound does not depend on it).
fn mat_abt(a: &[f64], b: &[f64], c: &mut [f64], m: usize, n: usize, k: usize) {
    let a = ArrayView2::from_shape((m, k), a).expect("shape");
    let b = ArrayView2::from_shape((n, k), b).expect("shape");
    let mut c = ArrayViewMut2::from_shape((m, n), c).expect("shape");
    general_mat_mul(1.0, &a, &b.t(), 0.0, &mut c);
}

/// `C = A · B` for row-major `a: [m, k]`, `b: [k, n]`.
fn mat_ab(a: &[f64], b: &[f64], c: &mut [f64], m: usize, n: usize, k: usize) {
    let a = ArrayView2::from_shape((m, k), a).expect("shape");
    let b = ArrayView2::from_shape((k, n), b).expect("shape");
    let mut c = ArrayViewMut2::from_shape((m, n), c).expect("shape");
    general_mat_mul(1.0, &a, &b, 0.0, &mut c);
}

fn dense(a: &Affine, x: &BallVec, batch: usize, il: usize) -> BallVec {
    let mut v = vec![0.0; x.len()];
    a.inflate_input(&x.mid, &x.rad, &mut v);
    let mut c = vec![0.0; batch * a.out];
    let mut s = vec![0.0; batch * a.out];
    mat_abt(&x.mid, &a.w, &mut c, batch, a.out, il);
    mat_abt(&v, &a.w_abs, &mut s, batch, a.out, il);
    let out = a.out;
    a.finish(&mut c, &mut s, |i| i % out);
    BallVec { mid: c, rad: s }
}

/// im2col of one example `[c_in, h, w]` into `[c_in·k·k, oh·ow]` (zeros in the padding).
fn im2col(x: &[f64], w: &Window, c_in: usize, col: &mut [f64]) {
    let p = w.out_h * w.out_w;
    let mut row = 0;
    for c in 0..c_in {
        let plane = &x[c * w.in_h * w.in_w..(c + 1) * w.in_h * w.in_w];
        for ky in 0..w.k {
            for kx in 0..w.k {
                let dst = &mut col[row * p..(row + 1) * p];
                for oy in 0..w.out_h {
                    let iy = w.in_row(oy, ky);
                    for ox in 0..w.out_w {
                        dst[oy * w.out_w + ox] = match (iy, w.in_col(ox, kx)) {
                            (Some(iy), Some(ix)) => plane[iy * w.in_w + ix],
                            _ => 0.0,
                        };
                    }
                }
                row += 1;
            }
        }
    }
}

fn conv(a: &Affine, w: &Window, c_in: usize, x: &BallVec, batch: usize) -> BallVec {
    let il = c_in * w.in_h * w.in_w;
    let p = w.out_h * w.out_w;
    let k = a.fan_in;
    let ol = a.out * p;
    let mut v = vec![0.0; x.len()];
    a.inflate_input(&x.mid, &x.rad, &mut v);
    let mut mid = vec![0.0; batch * ol];
    let mut rad = vec![0.0; batch * ol];
    let mut col_m = vec![0.0; k * p];
    let mut col_v = vec![0.0; k * p];
    for b in 0..batch {
        // Padding entries are exact zeros with radius 0.
        im2col(&x.mid[b * il..(b + 1) * il], w, c_in, &mut col_m);
        im2col(&v[b * il..(b + 1) * il], w, c_in, &mut col_v);
        let c = &mut mid[b * ol..(b + 1) * ol];
        let s = &mut rad[b * ol..(b + 1) * ol];
        mat_ab(&a.w, &col_m, c, a.out, p, k);
        mat_ab(&a.w_abs, &col_v, s, a.out, p, k);
        a.finish(c, s, |i| i / p);
    }
    BallVec { mid, rad }
}

/// ReLU on balls. Comparisons are exact, so the three cases are decided exactly:
/// `m ≥ r` (all inputs ≥ 0: identity), `−m ≥ r` (all ≤ 0: exact 0), else the output lies
/// in `[0, up(m + r)]`.
fn relu(x: &BallVec) -> BallVec {
    let mut mid = x.mid.clone();
    let mut rad = x.rad.clone();
    for (m, r) in mid.iter_mut().zip(rad.iter_mut()) {
        if *m >= *r {
            continue;
        }
        if -*m >= *r {
            (*m, *r) = (0.0, 0.0);
        } else {
            (*m, *r) = interval_to_ball(0.0, up(*m + *r));
        }
    }
    BallVec { mid, rad }
}

/// LeakyReLU `x ↦ x (x ≥ 0), s·x (x < 0)` with an exact slope `s` (an f32).
/// On the negative side `s·x ∈ RN(s m) ± up(|s| r + u|RN(s m)| + η)`; on a ball that
/// straddles 0 the image lies in the hull of `{s·lo, 0, hi}`.
fn leaky(x: &BallVec, s: f64) -> BallVec {
    let mut mid = x.mid.clone();
    let mut rad = x.rad.clone();
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
    let mut los = Vec::with_capacity(kk);
    for b in 0..batch {
        for ch in 0..c {
            for oy in 0..w.out_h {
                for ox in 0..w.out_w {
                    let o = b * ol + ch * p + oy * w.out_w + ox;
                    let idx = |ky: usize, kx: usize| {
                        // valid pooling: every window position is inside the input.
                        let iy = oy * w.stride + ky;
                        let ix = ox * w.stride + kx;
                        b * il + ch * w.in_h * w.in_w + iy * w.in_w + ix
                    };
                    if max {
                        los.clear();
                        let (mut best, mut best_lo, mut max_hi) =
                            (0, f64::NEG_INFINITY, f64::NEG_INFINITY);
                        for ky in 0..w.k {
                            for kx in 0..w.k {
                                let i = idx(ky, kx);
                                let (lo, hi) = ball_to_interval(x.mid[i], x.rad[i]);
                                if lo > best_lo {
                                    best_lo = lo;
                                    best = i;
                                }
                                max_hi = max_hi.max(hi);
                                los.push((i, hi));
                            }
                        }
                        let dominated = los.iter().all(|&(i, hi)| i == best || hi <= best_lo);
                        if dominated {
                            mid[o] = x.mid[best];
                            rad[o] = x.rad[best];
                        } else {
                            (mid[o], rad[o]) = interval_to_ball(best_lo, max_hi);
                        }
                    } else {
                        let (mut s, mut a, mut t) = (0.0f64, 0.0f64, 0.0f64);
                        for ky in 0..w.k {
                            for kx in 0..w.k {
                                let i = idx(ky, kx);
                                s += x.mid[i];
                                a += x.mid[i].abs();
                                t += x.rad[i];
                            }
                        }
                        // Exact Σ r ≤ t/(1−γ) and |s − Σ m| ≤ γ Σ|m| ≤ γ a/(1−γ) (sums of
                        // floats underflow exactly, no η needed).
                        let sum_rad = up(up(up(up(g * a) + t)) * inv_one_minus_g);
                        let m = s / kkf;
                        // |RN(s/k²) − s/k²| ≤ u|m| + η.
                        let r = up(up(sum_rad / kkf) + up(up(U * m.abs()) + ETA));
                        mid[o] = m;
                        rad[o] = r;
                    }
                }
            }
        }
    }
    BallVec { mid, rad }
}

/// Enclosures of every layer of `spec` with parameters `params` on the exact inputs
/// `pixels[i] / 255`.
///
/// `pixels` holds `batch` examples, each `spec.input.len()` bytes in `[C, H, W]` order.
/// The result has `spec.layers.len() + 1` entries: index 0 is the input enclosure of
/// `p / 255`, index `i + 1` the enclosure of the OUTPUT of layer `i` (so for a dense or
/// conv layer the pre-activation values), each batch-major `[batch, len]`.
///
/// Errors: shape mismatch between `params` and `spec` or `pixels` and `batch`, non-finite
/// weights, or an enclosure that overflows f64.
pub fn forward_enclosures(
    spec: &ModelSpec,
    params: &Params,
    pixels: &[u8],
    batch: usize,
) -> Result<Vec<BallVec>> {
    CertifiedNet::new(spec, params)?.forward(pixels, batch)
}

/// Enclosure of the network output (logits) only, `[batch, outputs]`, computed in chunks of
/// 64 examples in parallel (memory-light; for the full training set).
pub fn logit_enclosures(
    spec: &ModelSpec,
    params: &Params,
    pixels: &[u8],
    batch: usize,
) -> Result<BallVec> {
    CertifiedNet::new(spec, params)?.logits(pixels, batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lemma1_up_down_bracket_rounded_results() {
        // 1/3 is not a float: RN(1/3) is on one side; up/down must bracket it.
        let x = 1.0 / 3.0;
        assert!(down(x) < x && x < up(x));
        // subnormal range: up of the smallest subnormal is the next one.
        assert_eq!(up(0.0), ETA);
        assert!(gamma_up(10).unwrap() >= 10.0 * U);
        assert!(gamma_up(1 << 52).is_err());
    }

    #[test]
    fn input_enclosure_contains_p_over_255() {
        let e = input_enclosure(&[0, 1, 128, 254, 255]);
        assert_eq!((e.mid[0], e.rad[0]), (0.0, 0.0));
        assert_eq!((e.mid[4], e.rad[4]), (1.0, 0.0));
        for (k, p) in [1u32, 128, 254].into_iter().enumerate() {
            let q = rug::Rational::from((p, 255u32));
            let m = rug::Rational::from_f64(e.mid[k + 1]).unwrap();
            let r = rug::Rational::from_f64(e.rad[k + 1]).unwrap();
            assert!((q - m).abs() <= r, "p = {p}");
        }
    }

    #[test]
    fn interval_ball_round_trip_contains() {
        for (lo, hi) in [(0.0, 1.0), (-3.0, 1e-300), (1e-310, 3e-310), (2.0, 2.0)] {
            let (m, r) = interval_to_ball(lo, hi);
            let (m, r) = (
                rug::Rational::from_f64(m).unwrap(),
                rug::Rational::from_f64(r).unwrap(),
            );
            assert!(m.clone() - r.clone() <= lo && m + r >= hi);
        }
    }
}
