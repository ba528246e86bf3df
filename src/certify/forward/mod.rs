//! The certified forward pass: midpoint-radius enclosures of every layer's output.
//!
//! The real network is the one defined by the stored f32 weights taken as exact reals and
//! by the exact inputs `p / 255` (see `proofs/forward.md`). Every function here returns
//! [`BallVec`]s that provably contain the exact real values, whatever the summation order,
//! FMA use or underflow of the f64 arithmetic that computes them.
//!
//! - [`prepare`]: the [`PreparedNet`] (exact f64 weights and bound constants, built once from
//!   a [`CheckedModel`] and shared by every certified pass);
//! - [`binary64`]: the binary64 kernels (matrix-product speed, proofs/forward.md);
//! - [`dd`]: the double-double kernels for deep nets (proofs/forward-dd.md);
//! - this module: [`CertifiedNet`] (the public API over both, and the [`ForwardMode::Auto`]
//!   dispatch between them), [`forward_enclosures`] and [`logit_enclosures`].

pub mod binary64;
pub mod dd;
pub mod prepare;

use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use self::binary64::RadiusMode;
use self::dd::{DdBallVec, DdOp};
pub use self::prepare::PreparedNet;
use self::prepare::PreparedOp;
use crate::certify::ball::{BallVec, input_enclosure};
use crate::error::{Error, Result};
use crate::model::{CheckedModel, LayerPlan, ModelSpec, Params};

/// A network ready for certified forward evaluation: a shared [`PreparedNet`] plus the
/// radius mode of the binary64 kernels and the [`ForwardMode`] of [`CertifiedNet::logits`].
/// Build it once and evaluate many batches; clones share the prepared weights.
///
/// Invariant: `dd`, when present, is `dd::prepare(&net)` (built by
/// [`CertifiedNet::with_forward_mode`] for the double-double modes).
#[derive(Clone, Debug)]
pub struct CertifiedNet {
    net: Arc<PreparedNet>,
    radius: RadiusMode,
    mode: ForwardMode,
    /// Double-double data per layer (absent unless `mode != F64`).
    dd: Option<Arc<[DdOp]>>,
}

/// Arithmetic of the midpoints of [`CertifiedNet::logits`] (proofs/forward-dd.md); not to
/// be confused with the MPFR precision (bits) of the loss and norm bounds. Serialized as
/// `f64` / `double_double` / `auto` (the certificate's `options.forward`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardMode {
    /// Binary64 midpoints (gemm speed; tight on shallow nets, useless on deep ones).
    #[default]
    F64,
    /// Double-double midpoints for every example (about 2⁻¹⁰⁶ fresh error per operation).
    DoubleDouble,
    /// Binary64 first; examples whose logit enclosures are too wide to decide every pairwise
    /// logit difference to [`AUTO_REL`] relative are recomputed in double-double.
    Auto,
}

/// [`ForwardMode::Auto`] recomputes an example in double-double unless every pairwise logit
/// difference (the logit itself for one output) `m_i − m_j ± (r_i + r_j)` has
/// `r_i + r_j ≤ AUTO_REL · |m_i − m_j|` (decided in sign and relatively tight).
pub const AUTO_REL: f64 = 1e-6;

/// Counts of how [`CertifiedNet::logits_with_stats`] computed its enclosures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardStats {
    /// The forward mode used.
    pub mode: ForwardMode,
    /// Examples evaluated.
    pub examples: usize,
    /// Examples (re)computed in double-double.
    pub dd_examples: usize,
}

/// True when the f64 logit enclosure of one example is too wide for [`ForwardMode::Auto`].
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

impl CertifiedNet {
    /// Checks `params` against `spec` and prepares them for certified evaluation; errors on
    /// a shape mismatch or a non-finite weight.
    pub fn new(spec: &ModelSpec, params: &Params) -> Result<Self> {
        Ok(Self::from_prepared(Arc::new(PreparedNet::from_spec(
            spec, params,
        )?)))
    }

    /// Prepares a checked model (see [`PreparedNet::new`]).
    pub fn from_model(model: CheckedModel) -> Result<Self> {
        Ok(Self::from_prepared(Arc::new(PreparedNet::new(model)?)))
    }

    /// A binary64 forward pass over an already prepared network (shared, not copied).
    pub fn from_prepared(net: Arc<PreparedNet>) -> Self {
        Self {
            net,
            radius: RadiusMode::Gemm,
            mode: ForwardMode::F64,
            dd: None,
        }
    }

    /// The shared prepared network.
    pub fn prepared(&self) -> &Arc<PreparedNet> {
        &self.net
    }

    /// The same network whose [`CertifiedNet::logits`] uses `mode` (the other methods
    /// stay binary64). Errors when a layer's dot products are too long for the
    /// double-double error bound (never for real nets).
    pub fn with_forward_mode(mut self, mode: ForwardMode) -> Result<Self> {
        self.mode = mode;
        self.dd = match mode {
            ForwardMode::F64 => None,
            ForwardMode::DoubleDouble | ForwardMode::Auto => Some(dd::prepare(&self.net)?.into()),
        };
        Ok(self)
    }

    /// The forward mode of [`CertifiedNet::logits`].
    pub fn forward_mode(&self) -> ForwardMode {
        self.mode
    }

    /// The double-double data: the prepared one, or prepared now.
    fn dd_ops(&self) -> Result<Arc<[DdOp]>> {
        match &self.dd {
            Some(ops) => Ok(Arc::clone(ops)),
            None => Ok(dd::prepare(&self.net)?.into()),
        }
    }

    /// Double-double enclosures of the input and of every layer's output of every example
    /// (whatever [`CertifiedNet::forward_mode`]): entry `[b][i]` is example `b`'s enclosure
    /// after `i` steps (`[b][0]` the input `p/255`). Sequential per example, parallel over
    /// examples (proofs/forward-dd.md).
    pub fn forward_dd(&self, pixels: &[u8], batch: usize) -> Result<Vec<Vec<DdBallVec>>> {
        self.check_pixels(pixels, batch)?;
        let ops = self.dd_ops()?;
        dd::run_examples(self.net.plan(), &ops, pixels, self.input_len(), true)
    }

    /// Double-double enclosures of the logits of every example, `[batch]` vectors of
    /// [`CertifiedNet::outputs`] entries (whatever [`CertifiedNet::forward_mode`]).
    pub fn logits_dd(&self, pixels: &[u8], batch: usize) -> Result<Vec<DdBallVec>> {
        self.check_pixels(pixels, batch)?;
        let ops = self.dd_ops()?;
        Ok(
            dd::run_examples(self.net.plan(), &ops, pixels, self.input_len(), false)?
                .into_iter()
                .map(|mut v| v.pop().expect("one entry per example"))
                .collect(),
        )
    }

    /// [`CertifiedNet::logits`] with the counts of examples computed in double-double.
    pub fn logits_with_stats(
        &self,
        pixels: &[u8],
        batch: usize,
    ) -> Result<(BallVec, ForwardStats)> {
        let mut stats = ForwardStats {
            mode: self.mode,
            examples: batch,
            dd_examples: 0,
        };
        let n_out = self.outputs();
        let replace = |ball: &mut BallVec, idx: &[usize]| -> Result<()> {
            let il = self.input_len();
            let mut px = Vec::with_capacity(idx.len() * il);
            for &b in idx {
                px.extend_from_slice(&pixels[b * il..(b + 1) * il]);
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
        let out = match self.mode {
            ForwardMode::F64 => self.logits_f64(pixels, batch)?,
            ForwardMode::DoubleDouble => {
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
            ForwardMode::Auto => {
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
        self.radius = mode;
        self
    }

    /// Number of outputs of the network.
    pub fn outputs(&self) -> usize {
        self.net.outputs()
    }

    fn input_len(&self) -> usize {
        self.net.input_len()
    }

    fn check_pixels(&self, pixels: &[u8], batch: usize) -> Result<()> {
        if pixels.len() != batch * self.input_len() {
            return Err(Error::Shape(format!(
                "{} pixels for a batch of {batch} inputs of {} values",
                pixels.len(),
                self.input_len()
            )));
        }
        Ok(())
    }

    /// Enclosures of the input and of every layer's output (see [`forward_enclosures`]).
    pub fn forward(&self, pixels: &[u8], batch: usize) -> Result<Vec<BallVec>> {
        self.check_pixels(pixels, batch)?;
        let mut out = vec![input_enclosure(pixels)];
        for (p, op) in self.net.layers() {
            let next = self.apply(p, op, out.last().expect("non-empty"), batch)?;
            out.push(next);
        }
        Ok(out)
    }

    /// Enclosure of the logits of every real input in the box `x` (`[batch, input_len]`,
    /// any reals, not only pixels `p / 255`): used for interval bound propagation by
    /// `robust`. Errors on a shape mismatch, an invalid box or an overflow.
    pub fn logits_of_ball(&self, x: &BallVec, batch: usize) -> Result<BallVec> {
        self.prepared().check_box(x, batch)?;
        let mut x = x.clone();
        for (p, op) in self.net.layers() {
            x = binary64::apply(p, op, self.radius, x, batch)?;
        }
        Ok(x)
    }

    /// Like [`CertifiedNet::logits_of_ball`] but returns the box and every layer's output
    /// enclosure (index `i + 1` = output of layer `i`), sequentially.
    pub fn forward_of_ball(&self, x: &BallVec, batch: usize) -> Result<Vec<BallVec>> {
        self.prepared().check_box(x, batch)?;
        let mut out = vec![x.clone()];
        for (p, op) in self.net.layers() {
            let next = self.apply(p, op, out.last().expect("non-empty"), batch)?;
            out.push(next);
        }
        Ok(out)
    }

    /// Enclosure of the logits only (see [`logit_enclosures`]), `[batch, outputs]`, in the
    /// net's [`ForwardMode`] (binary64 by default).
    pub fn logits(&self, pixels: &[u8], batch: usize) -> Result<BallVec> {
        Ok(self.logits_with_stats(pixels, batch)?.0)
    }

    /// The binary64 logit enclosures (chunks of 128 examples in parallel).
    fn logits_f64(&self, pixels: &[u8], batch: usize) -> Result<BallVec> {
        self.check_pixels(pixels, batch)?;
        const CHUNK: usize = 128;
        let n_out = self.outputs();
        let il = self.input_len().max(1);
        let parts: Vec<Result<BallVec>> = pixels
            .par_chunks(CHUNK * il)
            .map(|px| {
                let b = px.len() / il;
                let mut x = input_enclosure(px);
                for (p, op) in self.net.layers() {
                    x = binary64::apply(p, op, self.radius, x, b)?;
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

    /// Applies layer `op` (plan `p`) to a batch, parallel over examples.
    fn apply(&self, p: &LayerPlan, op: &PreparedOp, x: &BallVec, batch: usize) -> Result<BallVec> {
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
                binary64::apply(p, op, self.radius, x.rows(il, from, to), to - from)
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
