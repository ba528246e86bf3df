//! The prepared network: a [`CheckedModel`] resolved ONCE into the exact f64 data every
//! certified pass needs (the forward passes in binary64 and double-double, the backward
//! pass, CROWN and the Lipschitz bounds), shared by reference or [`Arc`].
//!
//! `Affine` holds a weight layer's exact f64 copies of the f32 weights and the constants of
//! the a-priori rounding-error bound of proofs/forward.md (§Dense and conv, §4b, §4c); conv
//! layers also get their im2col gather table (`gather_table`), built here once instead of
//! once per call.

use std::sync::Arc;

use crate::certify::ball::BallVec;
use crate::certify::round::{ETA, ONE_PLUS_4U, U, down, exact, gamma_up, up};
use crate::error::{Error, Result};
use crate::model::{CheckedModel, LayerParams, LayerPlan, ModelSpec, Op, Params, Window};

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
    pub(crate) w_abs: Vec<f64>,
    /// Bias per output (exact copies of the f32 values).
    pub(crate) bias: Option<Vec<f64>>,
    /// `c₁ ≥ γ_n (1 + 4u)`: input inflation factor on `|m|`.
    pub(crate) c1: f64,
    /// `F ≥ (1 + 4u) / (1 − γ_n)`: output inflation factor.
    pub(crate) f: f64,
    /// `E`: the absolute (underflow) allowance added to every output radius.
    pub(crate) e: f64,
    /// `≥ Σ_j |w_ij|` per output row (for [`super::RadiusMode::RowSum`]).
    pub(crate) rowsum_up: Vec<f64>,
    /// `≥ D + nη` (for [`super::RadiusMode::RowSum`]).
    pub(crate) dn: f64,
    /// `|W|` in binary32 (exact) when the binary32 radius product applies (`n u₃₂ ≤ 1/2`).
    pub(crate) w_abs32: Option<Vec<f32>>,
    /// `F₃₂ ≥ (1 + 4u)/((1 − γ'_n)(1 − u'))` for the binary32 radius product.
    pub(crate) f32_f: f64,
    /// `E₃₂ ≥ 2(3nη' + nη'·max|w| + D + nη) + η` for the binary32 radius product.
    pub(crate) f32_e: f64,
}

impl Affine {
    /// Prepares `weight` (`[out, n]` row-major, exact f32 values) and `bias`; errors when the
    /// dot products are too long for the a-priori bound (`n u ≥ 1/2`, never for real nets).
    pub(crate) fn new(weight: &[f32], out: usize, bias: Option<&[f32]>) -> Result<Self> {
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
    pub(crate) fn inflate_input(&self, mid: &[f64], rad: &[f64]) -> Vec<f64> {
        let c1 = self.c1;
        mid.iter()
            .zip(rad)
            .map(|(&m, &r)| c1 * m.abs() + ONE_PLUS_4U * r)
            .collect()
    }

    /// `RN₃₂(v)` of [`Self::inflate_input`]'s `v`, computed in one pass (§4b).
    pub(crate) fn inflate_input32(&self, mid: &[f64], rad: &[f64]) -> Vec<f32> {
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
    pub(crate) fn finish(
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

/// One layer of a [`PreparedNet`]: the layer's [`Op`] with the prepared data its certified
/// kernels need. Built from `LayerPlan::op` by one exhaustive match
/// ([`PreparedOp::new`]), so a new layer kind is a compile error here first and then in
/// every pass that matches on this type.
#[derive(Clone, Debug)]
pub(crate) enum PreparedOp {
    /// Dense `y = W x (+ b)`.
    Dense(Arc<Affine>),
    /// Conv: `W: [out, c_in·k·k]` over `window`, with its im2col gather table.
    Conv {
        /// Weights, bias and bound constants.
        affine: Arc<Affine>,
        /// Window geometry.
        window: Window,
        /// Input channels.
        c_in: usize,
        /// [`gather_table`] of `(window, c_in)`.
        table: Arc<[u32]>,
    },
    /// Max over each window, per channel.
    MaxPool {
        /// Window geometry.
        window: Window,
        /// Channels.
        channels: usize,
    },
    /// Mean over each window, per channel.
    AvgPool {
        /// Window geometry.
        window: Window,
        /// Channels.
        channels: usize,
    },
    /// No-op on the values.
    Flatten,
    /// `max(x, 0)`.
    Relu,
    /// `max(x, 0) + slope·min(x, 0)` with the spec's exact f32 slope.
    LeakyRelu {
        /// Slope on the negative side (finite).
        slope: f32,
    },
}

impl PreparedOp {
    /// Prepares layer `p`; `weights` yields the parameters of the weight layers in order.
    fn new<'a>(p: &LayerPlan, weights: &mut impl Iterator<Item = &'a LayerParams>) -> Result<Self> {
        let mut next = || {
            weights
                .next()
                .expect("CheckedModel invariant: one LayerParams per weight layer")
        };
        Ok(match p.op {
            Op::Dense { out, .. } => {
                let lp = next();
                PreparedOp::Dense(Arc::new(Affine::new(&lp.weight, out, lp.bias.as_deref())?))
            }
            Op::Conv {
                out, c_in, window, ..
            } => {
                let lp = next();
                PreparedOp::Conv {
                    affine: Arc::new(Affine::new(&lp.weight, out, lp.bias.as_deref())?),
                    window,
                    c_in,
                    table: gather_table(&window, c_in).into(),
                }
            }
            Op::MaxPool { window, channels } => PreparedOp::MaxPool { window, channels },
            Op::AvgPool { window, channels } => PreparedOp::AvgPool { window, channels },
            Op::Flatten => PreparedOp::Flatten,
            Op::Relu => PreparedOp::Relu,
            Op::LeakyRelu { slope } => PreparedOp::LeakyRelu { slope },
        })
    }

    /// True for dense and conv layers.
    pub(crate) fn has_weights(&self) -> bool {
        match self {
            PreparedOp::Dense(_) | PreparedOp::Conv { .. } => true,
            PreparedOp::MaxPool { .. }
            | PreparedOp::AvgPool { .. }
            | PreparedOp::Flatten
            | PreparedOp::Relu
            | PreparedOp::LeakyRelu { .. } => false,
        }
    }
}

/// A network prepared once for every certified pass: the checked model and, per layer, its
/// `PreparedOp` (exact f64 weights, bound constants, gather tables). Share it with an
/// [`Arc`] between [`super::CertifiedNet`] (binary64 and double-double),
/// [`crate::certify::backward::Backward`] and [`crate::robust::crown::Crown`] (each has a
/// `from_prepared` constructor); [`crate::robust::lipschitz::lipschitz_of`] reads
/// [`PreparedNet::model`].
///
/// Invariant: `ops[i]` is layer `i` of `model.plan()` prepared from `model.params()` (which
/// passed [`Params::check`]).
#[derive(Clone, Debug)]
pub struct PreparedNet {
    model: CheckedModel,
    ops: Vec<PreparedOp>,
}

impl PreparedNet {
    /// Prepares a checked model; errors only when a layer's dot products are too long for
    /// the a-priori error bound (never for real nets).
    pub fn new(model: CheckedModel) -> Result<Self> {
        let mut weights = model.params().layers.iter();
        let ops = model
            .plan()
            .iter()
            .map(|p| PreparedOp::new(p, &mut weights))
            .collect::<Result<_>>()?;
        Ok(Self { model, ops })
    }

    /// Checks `params` against `spec` and prepares them (copies both).
    pub fn from_spec(spec: &ModelSpec, params: &Params) -> Result<Self> {
        Self::new(CheckedModel::new(spec.clone(), params.clone())?)
    }

    /// The checked model (spec, plan, f32 parameters).
    pub fn model(&self) -> &CheckedModel {
        &self.model
    }

    /// The resolved plan, one entry per layer.
    pub fn plan(&self) -> &[LayerPlan] {
        self.model.plan()
    }

    /// Length of one input example.
    pub fn input_len(&self) -> usize {
        self.model.spec().input.len()
    }

    /// Checks an input box (any reals, not only pixels) for `batch` inputs: `batch ·
    /// input_len` entries, every midpoint and radius finite.
    pub fn check_box(&self, x: &BallVec, batch: usize) -> Result<()> {
        if x.len() != batch * self.input_len() || !x.is_valid() {
            return Err(Error::Shape(format!(
                "an input box of {} values for a batch of {batch} inputs of {} values (or a \
                 non-finite box)",
                x.len(),
                self.input_len()
            )));
        }
        Ok(())
    }

    /// Number of network outputs.
    pub fn outputs(&self) -> usize {
        self.model.outputs()
    }

    /// The prepared layers, one per plan entry.
    pub(crate) fn ops(&self) -> &[PreparedOp] {
        &self.ops
    }

    /// Each layer's plan with its prepared op, in order.
    pub(crate) fn layers(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&LayerPlan, &PreparedOp)> + ExactSizeIterator {
        self.model.plan().iter().zip(&self.ops)
    }
}
