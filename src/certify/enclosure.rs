//! The certified forward pass: midpoint-radius enclosures of every layer's output.
//!
//! The real network is the one defined by the stored f32 weights taken as exact reals and
//! by the exact inputs `p / 255` (see `proofs/forward.md`). Every function here returns
//! [`BallVec`]s that provably contain the exact real values, whatever the summation order,
//! FMA use or underflow of the f64 arithmetic that computes them.
//!
//! Dense and conv layers run at matrix-product speed: `W·m` and `|W|·v` are two ordinary
//! f64 matrix products (the `gemm` crate, any summation order), and the radius is
//! widened by Higham's a-priori bound `|fl(aᵀb) − aᵀb| ≤ γ_n |a|ᵀ|b| + n·η`
//! (`γ_n = nu/(1−nu)`, `u = 2⁻⁵³`, `η = 2⁻¹⁰⁷⁴`). Every upward rounding is done with
//! [`up`] (`f64::next_up` of the round-to-nearest result), which is never below the exact
//! value (Lemma 1 of `proofs/forward.md`).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::dd::{self, DdBallVec, DdExtra};
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
        // Non-short-circuit `&` so the loop vectorizes.
        self.mid.len() == self.rad.len()
            && self.mid.iter().zip(&self.rad).fold(true, |ok, (m, r)| {
                ok & m.is_finite() & r.is_finite() & (*r >= 0.0)
            })
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

/// `1 + 4u`, exactly representable (`1 + 2⁻⁵¹`): `(1 − u)²(1 + 4u) ≥ 1`.
const ONE_PLUS_4U: f64 = 1.0 + 4.0 * U;

/// A weight layer prepared for certified products: `W` and `|W|` as f64 (exact copies of
/// the f32 weights), plus the constants of the rounding-error bound (proofs/forward.md,
/// §Dense and conv).
#[derive(Clone, Debug)]
pub(crate) struct Affine {
    /// Number of outputs (rows of `W`; output channels of a conv).
    pub(crate) out: usize,
    /// Fan-in `n` (the length of every dot product).
    pub(crate) fan_in: usize,
    /// `W` row-major `[out, n]`, exact copies of the f32 weights.
    pub(crate) w: Vec<f64>,
    w_abs: Vec<f64>,
    /// Bias per output (exact copies of the f32 values).
    pub(crate) bias: Option<Vec<f64>>,
    /// `c₁ ≥ γ_n (1 + 4u)`: input inflation factor on `|m|`.
    c1: f64,
    /// `F ≥ (1 + 4u) / (1 − γ_n)`: output inflation factor.
    f: f64,
    /// `E`: the absolute (underflow) allowance added to every output radius.
    e: f64,
    /// `≥ Σ_j |w_ij|` per output row (for [`RadiusMode::RowSum`]).
    rowsum_up: Vec<f64>,
    /// `≥ D + nη` (for [`RadiusMode::RowSum`]).
    dn: f64,
    /// `|W|` in binary32 (exact) when the binary32 radius product applies (`n u₃₂ ≤ 1/2`).
    w_abs32: Option<Vec<f32>>,
    /// `F₃₂ ≥ (1 + 4u)/((1 − γ'_n)(1 − u'))` for the binary32 radius product.
    f32_f: f64,
    /// `E₃₂ ≥ 2(3nη' + nη'·max|w| + D + nη) + η` for the binary32 radius product.
    f32_e: f64,
}

impl Affine {
    fn new(weight: &[f32], out: usize, bias: Option<&[f32]>) -> Result<Self> {
        let fan_in = weight.len() / out;
        let gamma = gamma_up(fan_in)?; // ≥ γ_n, and γ_n ≤ 1/2 so 1/(1 − γ_n) ≤ 2
        // Every step below is rounded up by Lemma 1.
        let c1 = up(gamma * ONE_PLUS_4U);
        let k = up(1.0 / down(1.0 - gamma)); // ≥ 1/(1 − γ_n)
        let f = up(k * ONE_PLUS_4U);
        let max_abs = weight.iter().fold(0.0f64, |a, &w| a.max((w as f64).abs()));
        // n·η is exact (a small integer times 2⁻¹⁰⁷⁴).
        let n_eta = exact(fan_in) * ETA;
        // D ≥ η Σ_j |w_ij| for every row i (the input inflation may fall η short per input).
        let d = up(n_eta * max_abs);
        // E₀ = 3nη + D ≥ nη/(1 − γ) + D + nη;  E ≥ 2E₀ + η.
        let e0 = up(up(3.0 * n_eta) + d);
        let e = up(up(2.0 * e0) + ETA);
        // binary32 radius product (§4b): u' = 2⁻²⁴, η' = 2⁻¹⁴⁹ (normal in f64).
        let (u32_, eta32) = (2f64.powi(-24), 2f64.powi(-149));
        let nu32 = exact(fan_in) * u32_; // exact
        let use32 = nu32 <= 0.5;
        let (f32_f, f32_e) = if use32 {
            let g32 = up(nu32 / (1.0 - nu32)); // 1 − nu' exact (Sterbenz)
            // K' ≥ 1/((1 − γ')(1 − u')), then F' ≥ K'(1 + 4u).
            let k32 = up(1.0 / down(down(1.0 - g32) * (1.0 - u32_)));
            let f32f = up(k32 * ONE_PLUS_4U);
            let n_eta32 = exact(fan_in) * eta32; // exact
            let e1 = up(up(3.0 * n_eta32) + up(n_eta32 * max_abs));
            let e32 = up(up(2.0 * up(up(e1 + d) + n_eta)) + ETA);
            (f32f, e32)
        } else {
            (0.0, 0.0)
        };
        Ok(Self {
            out,
            fan_in,
            w: weight.iter().map(|&v| v as f64).collect(),
            w_abs: weight.iter().map(|&v| (v as f64).abs()).collect(),
            bias: bias.map(|b| b.iter().map(|&v| v as f64).collect()),
            c1,
            f,
            e,
            // Σ_j |w_ij| in f64: a sum of n non-negative floats, so exact ≤ fl·1/(1 − γ_n)
            // ((F2) and induction); rounded up with Lemma 1.
            rowsum_up: weight
                .chunks(fan_in)
                .map(|row| up(row.iter().map(|&w| (w as f64).abs()).sum::<f64>() * k))
                .collect(),
            dn: up(d + n_eta),
            w_abs32: use32.then(|| weight.iter().map(|v| v.abs()).collect()),
            f32_f,
            f32_e,
        })
    }

    /// `v = RN(RN(c₁|m|) + RN((1 + 4u) r))`. Then `v ≥ γ_n|m| + r − η` componentwise
    /// (proofs/forward.md, Lemma 3): products lose at most a factor `(1 − u)` and `η/2`,
    /// sums of non-negative numbers at most a factor `(1 − u)`.
    fn inflate_input(&self, mid: &[f64], rad: &[f64]) -> Vec<f64> {
        let c1 = self.c1;
        mid.iter()
            .zip(rad)
            .map(|(&m, &r)| c1 * m.abs() + ONE_PLUS_4U * r)
            .collect()
    }

    /// `RN₃₂(v)` of [`Self::inflate_input`]'s `v`, computed in one pass (§4b).
    fn inflate_input32(&self, mid: &[f64], rad: &[f64]) -> Vec<f32> {
        let c1 = self.c1;
        mid.iter()
            .zip(rad)
            .map(|(&m, &r)| (c1 * m.abs() + ONE_PLUS_4U * r) as f32)
            .collect()
    }

    /// Turns `s = fl(|W| v)` into the output radius in place, then adds the bias exactly
    /// to the midpoint `c = fl(W m)`. `feature_of(i)` gives the output feature of entry `i`.
    ///
    /// `R = RN(RN(s·F) + E) ≥ (s + nη)/(1 − γ_n) + D + nη`, which bounds `|W x − c|` for
    /// every `x` in the input ball (proofs/forward.md, Theorem 1).
    ///
    /// With `s32 = Some(t)`, `t` is the binary32 product `fl₃₂(|W| RN₃₂(v))` (exactly
    /// widened to f64 on the fly, overwriting `s`) and the constants of §4b are used instead.
    fn finish(
        &self,
        c: &mut [f64],
        s: &mut [f64],
        feature_of: impl Fn(usize) -> usize,
        s32: Option<&[f32]>,
    ) {
        match s32 {
            Some(t) => {
                let (f, e) = (self.f32_f, self.f32_e);
                debug_assert_eq!(t.len(), s.len());
                for (s, &t) in s.iter_mut().zip(t) {
                    // f32 → f64 is exact.
                    *s = t as f64 * f + e;
                }
            }
            None => {
                let (f, e) = (self.f, self.e);
                for s in s.iter_mut() {
                    *s = *s * f + e;
                }
            }
        }
        if let Some(b) = &self.bias {
            for (i, (c, s)) in c.iter_mut().zip(s.iter_mut()).enumerate() {
                // c' = RN(c + b): |c' − (c + b)| ≤ u|c'| (Lemma 2), added rounded up.
                let cb = *c + b[feature_of(i)];
                *s = up(*s + up(U * cb.abs()));
                *c = cb;
            }
        }
    }
}

/// One step of the certified network.
#[derive(Clone, Debug)]
pub(crate) enum Step {
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
    mode: RadiusMode,
    precision: Precision,
    /// Double-double data per step (empty unless `precision != F64`).
    dd: Vec<DdExtra>,
}

/// Arithmetic of the midpoints of [`CertifiedNet::logits`] (proofs/forward-dd.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Binary64 midpoints (gemm speed; tight on shallow nets, useless on deep ones).
    #[default]
    F64,
    /// Double-double midpoints for every example (about 2⁻¹⁰⁶ fresh error per operation).
    DoubleDouble,
    /// Binary64 first; examples whose logit enclosures are too wide to decide every pairwise
    /// logit difference to [`AUTO_REL`] relative are recomputed in double-double.
    Auto,
}

/// [`Precision::Auto`] recomputes an example in double-double unless every pairwise logit
/// difference (the logit itself for one output) `m_i − m_j ± (r_i + r_j)` has
/// `r_i + r_j ≤ AUTO_REL · |m_i − m_j|` (decided in sign and relatively tight).
pub const AUTO_REL: f64 = 1e-6;

/// Counts of how [`CertifiedNet::logits_with_stats`] computed its enclosures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecisionStats {
    /// The precision mode used.
    pub mode: Precision,
    /// Examples evaluated.
    pub examples: usize,
    /// Examples (re)computed in double-double.
    pub dd_examples: usize,
}

/// True when the f64 logit enclosure of one example is too wide for [`Precision::Auto`].
fn needs_dd(mid: &[f64], rad: &[f64]) -> bool {
    // NaN-safe: `tight` is false when a comparison is unordered, asking for double-double.
    let tight = |r: f64, m: f64| r <= AUTO_REL * m.abs();
    if mid.len() == 1 {
        return !tight(rad[0], mid[0]);
    }
    for i in 0..mid.len() {
        for j in i + 1..mid.len() {
            if !tight(rad[i] + rad[j], mid[i] - mid[j]) {
                return true;
            }
        }
    }
    false
}

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
            mode: RadiusMode::Gemm,
            precision: Precision::F64,
            dd: Vec::new(),
        })
    }

    /// The same network whose [`CertifiedNet::logits`] uses `precision` (the other methods
    /// stay binary64). Errors when a layer's dot products are too long for the
    /// double-double error bound (never for real nets).
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        self.precision = precision;
        self.dd = match precision {
            Precision::F64 => Vec::new(),
            _ => self.steps.iter().map(dd::prepare).collect::<Result<_>>()?,
        };
        Ok(self)
    }

    /// The precision mode of [`CertifiedNet::logits`].
    pub fn precision(&self) -> Precision {
        self.precision
    }

    fn dd_extra(&self) -> Result<Vec<DdExtra>> {
        if self.dd.len() == self.steps.len() {
            Ok(self.dd.clone())
        } else {
            self.steps.iter().map(dd::prepare).collect()
        }
    }

    /// Double-double enclosures of the input and of every layer's output of every example
    /// (whatever [`CertifiedNet::precision`]): entry `[b][i]` is example `b`'s enclosure
    /// after `i` steps (`[b][0]` the input `p/255`). Sequential per example, parallel over
    /// examples (proofs/forward-dd.md).
    pub fn forward_dd(&self, pixels: &[u8], batch: usize) -> Result<Vec<Vec<DdBallVec>>> {
        self.check_pixels(pixels, batch)?;
        let extra = self.dd_extra()?;
        dd::run_examples(
            &self.plan,
            &self.steps,
            &extra,
            pixels,
            self.input_len,
            true,
        )
    }

    /// Double-double enclosures of the logits of every example, `[batch]` vectors of
    /// [`CertifiedNet::outputs`] entries (whatever [`CertifiedNet::precision`]).
    pub fn logits_dd(&self, pixels: &[u8], batch: usize) -> Result<Vec<DdBallVec>> {
        self.check_pixels(pixels, batch)?;
        let extra = if self.dd.len() == self.steps.len() {
            None
        } else {
            Some(self.dd_extra()?)
        };
        let extra = extra.as_deref().unwrap_or(&self.dd);
        Ok(dd::run_examples(
            &self.plan,
            &self.steps,
            extra,
            pixels,
            self.input_len,
            false,
        )?
        .into_iter()
        .map(|mut v| v.pop().expect("one entry per example"))
        .collect())
    }

    /// [`CertifiedNet::logits`] with the counts of examples computed in double-double.
    pub fn logits_with_stats(
        &self,
        pixels: &[u8],
        batch: usize,
    ) -> Result<(BallVec, PrecisionStats)> {
        let mut stats = PrecisionStats {
            mode: self.precision,
            examples: batch,
            dd_examples: 0,
        };
        let n_out = self.outputs();
        let replace = |ball: &mut BallVec, idx: &[usize]| -> Result<()> {
            let mut px = Vec::with_capacity(idx.len() * self.input_len);
            for &b in idx {
                px.extend_from_slice(&pixels[b * self.input_len..(b + 1) * self.input_len]);
            }
            let dd = self.logits_dd(&px, idx.len())?;
            for (&b, d) in idx.iter().zip(&dd) {
                let d = d.to_ball();
                for i in 0..n_out {
                    // Both balls contain the exact logit: keep the narrower one.
                    let k = b * n_out + i;
                    if d.rad[i] < ball.rad[k] {
                        ball.mid[k] = d.mid[i];
                        ball.rad[k] = d.rad[i];
                    }
                }
            }
            Ok(())
        };
        let out = match self.precision {
            Precision::F64 => self.logits_f64(pixels, batch)?,
            Precision::DoubleDouble => {
                self.check_pixels(pixels, batch)?;
                let mut ball = BallVec {
                    mid: vec![0.0; batch * n_out],
                    rad: vec![f64::INFINITY; batch * n_out],
                };
                let all: Vec<usize> = (0..batch).collect();
                replace(&mut ball, &all)?;
                stats.dd_examples = batch;
                ball
            }
            Precision::Auto => {
                // An overflow in binary64 is retried in double-double (same range, but
                // the error is the first layer's to report if it persists).
                let mut ball = match self.logits_f64(pixels, batch) {
                    Ok(b) => b,
                    Err(_) => BallVec {
                        mid: vec![0.0; batch * n_out],
                        rad: vec![f64::INFINITY; batch * n_out],
                    },
                };
                let idx: Vec<usize> = (0..batch)
                    .filter(|&b| {
                        let r = b * n_out..(b + 1) * n_out;
                        needs_dd(&ball.mid[r.clone()], &ball.rad[r])
                    })
                    .collect();
                if !idx.is_empty() {
                    replace(&mut ball, &idx)?;
                }
                stats.dd_examples = idx.len();
                ball
            }
        };
        Ok((out, stats))
    }

    /// The same network with another [`RadiusMode`].
    pub fn with_radius_mode(mut self, mode: RadiusMode) -> Self {
        self.mode = mode;
        self
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
            x = self.apply_seq(i, step, x, batch)?;
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
            let next = self.apply(i, step, out.last().expect("non-empty"), batch)?;
            out.push(next);
        }
        Ok(out)
    }

    /// Enclosure of the logits only (see [`logit_enclosures`]), `[batch, outputs]`, in the
    /// net's [`Precision`] (binary64 by default).
    pub fn logits(&self, pixels: &[u8], batch: usize) -> Result<BallVec> {
        Ok(self.logits_with_stats(pixels, batch)?.0)
    }

    /// The binary64 logit enclosures (chunks of 128 examples in parallel).
    fn logits_f64(&self, pixels: &[u8], batch: usize) -> Result<BallVec> {
        self.check_pixels(pixels, batch)?;
        const CHUNK: usize = 128;
        let n_out = self.outputs();
        let parts: Vec<Result<BallVec>> = pixels
            .par_chunks(CHUNK * self.input_len.max(1))
            .map(|px| {
                let b = px.len() / self.input_len.max(1);
                let mut x = input_enclosure(px);
                for (i, step) in self.steps.iter().enumerate() {
                    x = self.apply_seq(i, step, x, b)?;
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
                self.apply_seq(i, step, x.rows(il, from, to), to - from)
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
    fn apply_seq(&self, i: usize, step: &Step, x: BallVec, batch: usize) -> Result<BallVec> {
        let p = &self.plan[i];
        let (il, ol) = (p.input.len(), p.output.len());
        debug_assert_eq!(x.len(), batch * il);
        // Max-pool and flatten map finite balls to finite balls exactly (no arithmetic);
        // every other step (ReLU rounds `m + r` up) needs the finiteness check.

        let (y, check) = match step {
            Step::Dense(a) if self.mode == RadiusMode::RowSum => {
                (rowsum_layer(a, None, &x, batch, il), true)
            }
            Step::Conv(a, w, c_in) if self.mode == RadiusMode::RowSum => {
                (rowsum_layer(a, Some((w, *c_in)), &x, batch, il), true)
            }
            Step::Dense(a) => (dense(a, &x, batch, il), true),
            Step::Conv(a, w, c_in) => (conv(a, w, *c_in, &x, batch), true),
            Step::MaxPool(w, c) => (pool(w, *c, &x, batch, true), false),
            Step::AvgPool(w, c) => (pool(w, *c, &x, batch, false), true),
            Step::Identity => (x, false),
            Step::Relu => (relu(x), true),
            Step::Leaky(s) => (leaky(x, *s), true),
        };
        debug_assert_eq!(y.len(), batch * ol);
        if check && !y.is_valid() {
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

/// `C[m, n] = A · B` through the `gemm` crate, on the calling thread, with `a` read at
/// `a[i·ars + p·acs]`, `b` at `b[p·brs + j·bcs]` and `C` row-major (stride `n`).
///
/// `gemm` is a classical blocked (BLIS-style) product: every output entry is a sum of
/// exactly its `k` products `a_ip b_pj`, each rounded once (or fused into an FMA), in some
/// order; no Strassen-like scheme and no reduced-precision accumulation for `f32`/`f64`
/// (proofs/forward.md, "What is assumed"). Higham's bound holds for any such order.
#[allow(clippy::too_many_arguments)]
fn gemm_into<T: Copy + 'static + num_one::One>(
    a: &[T],
    ars: usize,
    acs: usize,
    b: &[T],
    brs: usize,
    bcs: usize,
    c: &mut [T],
    m: usize,
    n: usize,
    k: usize,
) {
    let fits = |d: &[T], rs: usize, cs: usize, r: usize, cc: usize| {
        r == 0 || cc == 0 || (r - 1) * rs + (cc - 1) * cs < d.len()
    };
    assert!(fits(a, ars, acs, m, k) && fits(b, brs, bcs, k, n) && c.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(T::zero());
        return;
    }
    // SAFETY: the assert above proves every element read, `a[i·ars + p·acs]` (i < m, p < k)
    // and `b[p·brs + j·bcs]` (p < k, j < n), and every element written, `c[i·n + j]`,
    // lies inside its slice; `c` is borrowed mutably so it aliases neither input. With
    // `read_dst == false` gemm never reads `c`. Strides index existing slices, so they fit
    // in isize.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            acs as isize,
            ars as isize,
            b.as_ptr(),
            bcs as isize,
            brs as isize,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The scalars the certified products run in (binary32 and binary64 only).
mod num_one {
    /// `0` and `1` of a float type (both exact).
    pub trait One: Sized {
        /// Zero.
        fn zero() -> Self;
        /// One.
        fn one() -> Self;
    }
    impl One for f32 {
        fn zero() -> Self {
            0.0
        }
        fn one() -> Self {
            1.0
        }
    }
    impl One for f64 {
        fn zero() -> Self {
            0.0
        }
        fn one() -> Self {
            1.0
        }
    }
}

/// `C = A · Bᵀ` for row-major `a: [m, k]`, `b: [n, k]`, into `c: [m, n]` (any summation
/// order — the error bound does not depend on it).
fn mat_abt<T: Copy + 'static + num_one::One>(
    a: &[T],
    b: &[T],
    c: &mut [T],
    m: usize,
    n: usize,
    k: usize,
) {
    gemm_into(a, k, 1, b, 1, k, c, m, n, k);
}

/// `C = A · B` for row-major `a: [m, k]`, `b: [k, n]`.
fn mat_ab<T: Copy + 'static + num_one::One>(
    a: &[T],
    b: &[T],
    c: &mut [T],
    m: usize,
    n: usize,
    k: usize,
) {
    gemm_into(a, k, 1, b, n, 1, c, m, n, k);
}

/// `C = A · B` in binary64 for row-major `a: [m, k]`, `b: [k, n]` into `c: [m, n]`, with the
/// guarantees of the certified products (each of the `k` products rounded once or fused, any
/// summation order): for `robust::crown`'s back-substitution.
pub(crate) fn mat_ab_f64(a: &[f64], b: &[f64], c: &mut [f64], m: usize, n: usize, k: usize) {
    mat_ab(a, b, c, m, n, k);
}

/// `C = Aᵀ · B` in binary64 for row-major `a: [k, m]`, `b: [k, n]` into `c: [m, n]` (same
/// guarantees as [`mat_ab_f64`]).
pub(crate) fn mat_atb_f64(a: &[f64], b: &[f64], c: &mut [f64], m: usize, n: usize, k: usize) {
    gemm_into(a, 1, m, b, n, 1, c, m, n, k);
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
    conv: Option<(&Window, usize)>,
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
        Some((w, c_in)) => {
            let p = w.out_h * w.out_w;
            let k = a.fan_in;
            let table = gather_table(w, c_in);
            let mut col = vec![0.0; k * p];
            let mut c = vec![0.0; batch * a.out * p];
            for b in 0..batch {
                im2col(&x.mid[b * il..(b + 1) * il], &table, &mut col);
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

/// The im2col gather table of a window: for row `(c, ky, kx)` and output pixel `(oy, ox)`,
/// the input index `(c·h + iy)·w + ix`, or `u32::MAX` in the zero padding.
pub(crate) fn gather_table(w: &Window, c_in: usize) -> Vec<u32> {
    let p = w.out_h * w.out_w;
    let mut t = Vec::with_capacity(c_in * w.k * w.k * p);
    for c in 0..c_in {
        for ky in 0..w.k {
            for kx in 0..w.k {
                for oy in 0..w.out_h {
                    let iy = w.in_row(oy, ky);
                    for ox in 0..w.out_w {
                        t.push(match (iy, w.in_col(ox, kx)) {
                            (Some(iy), Some(ix)) => ((c * w.in_h + iy) * w.in_w + ix) as u32,
                            _ => u32::MAX,
                        });
                    }
                }
            }
        }
    }
    t
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

fn conv(a: &Affine, w: &Window, c_in: usize, x: &BallVec, batch: usize) -> BallVec {
    let il = c_in * w.in_h * w.in_w;
    let p = w.out_h * w.out_w;
    let k = a.fan_in;
    let ol = a.out * p;
    let mut v: Option<Vec<f64>> = None; // binary64 inflation, only if a fallback needs it
    let mut mid = vec![0.0; batch * ol];
    let mut rad = vec![0.0; batch * ol];
    let table = gather_table(w, c_in);
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
        im2col(&x.mid[b * il..(b + 1) * il], &table, &mut col_m);
        let c = &mut mid[b * ol..(b + 1) * ol];
        let s = &mut rad[b * ol..(b + 1) * ol];
        mat_ab(&a.w, &col_m, c, a.out, p, k);
        let mut single = false;
        if let Some(w32) = &a.w_abs32 {
            // |W|·v in binary32 (proofs/forward.md §4b); fall back to f64 on overflow.
            im2col(&v32[b * il..(b + 1) * il], &table, &mut col_v32);
            mat_ab(w32, &col_v32, &mut s32, a.out, p, k);
            single = s32.iter().fold(true, |ok, x| ok & x.is_finite());
        }
        if !single {
            let v = v.get_or_insert_with(|| a.inflate_input(&x.mid, &x.rad));
            col_v.resize(k * p, 0.0);
            im2col(&v[b * il..(b + 1) * il], &table, &mut col_v);
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
/// 128 examples in parallel (memory-light; for the full training set).
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
