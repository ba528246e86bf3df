//! Certified backward pass: enclosures of the gradient of a margin constraint with respect
//! to all parameters, containing the whole Clarke subdifferential.
//!
//! A *constraint function* is a fixed linear functional of the network output,
//! `s(θ) = cᵀ Φ(θ; x)`, with an exact small-integer vector `c` ([`Constraint::adjoint`]):
//! `y·e₀` for a binary model (`q_n = y_n Φ`), `e_y − e_j` for the pairwise multi-class
//! constraint `s_nj = Φ_y − Φ_j`. [`Backward::gradient`] propagates the adjoint `c` from the
//! output to the input through the layers in midpoint-radius arithmetic, using the forward
//! enclosures of [`super::forward`], and returns a [`BallVec`] over all parameters (in
//! [`Params`] order: per weight layer the weight, then the bias) that contains
//! `∂°s(θ)` (proofs/backward.md, Theorem B).
//!
//! Nonsmooth units are handled by interval evaluation over their generalised derivative:
//! a ReLU whose pre-activation enclosure is `> 0` passes the adjoint, one `< 0` blocks it,
//! and one whose enclosure contains 0 multiplies it by the Clarke interval `[0, 1]`
//! (LeakyReLU: `[min(s,1), max(s,1)]`). A max-pool window passes its adjoint to every
//! element that may be the maximum, with coefficient 1 when that element is the only
//! candidate and `[0, 1]` otherwise.
//!
//! Rounding: every sum is computed in f64 round-to-nearest in any order and widened by the
//! a-priori bound of [`finish_rad`] (Lemma B1 of proofs/backward.md); every elementwise step
//! goes through intervals rounded outward with [`up`](crate::certify::round::up)/[`down`](crate::certify::round::down).
//!
//! Sums `Σ_c λ_c ∇s_c` over many constraints are accumulated without storing the
//! individual gradients with [`GradSum`].

mod constraint;
mod kernels;
mod sum;

use std::sync::Arc;

pub use self::constraint::{Constraint, KinkStats};
use self::kernels::{
    avgpool_backward, conv_bias_grad, conv_input_adjoint, conv_weight_grad, dense_input_adjoint,
    dense_weight_grad, leaky_backward, maxpool_backward,
};
pub use self::sum::{GradSum, RadConst, UNIT_ROUNDOFF, dot_with_params, finish_rad, max_radius};
use crate::certify::ball::BallVec;
use crate::certify::forward::prepare::{PreparedNet, PreparedOp};
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params};

/// A network prepared for certified backward passes: the shared [`PreparedNet`] (exact f64
/// weights) and the offset of every layer's parameters in the flat gradient.
///
/// Invariant: `offsets[i]` is, for weight layer `i` of the plan, the offset of its weight in
/// the flat parameter vector (its bias follows); `n_params` is the total length.
#[derive(Clone, Debug)]
pub struct Backward {
    net: Arc<PreparedNet>,
    /// Per plan layer: offset of its parameters (0 for layers without weights).
    offsets: Vec<usize>,
    n_params: usize,
}

/// The output of one certified backward pass.
#[derive(Clone, Debug)]
pub struct GradEnclosure {
    /// Enclosure of every element of `∂°s(θ)`, flat in [`Params`] order.
    pub grad: BallVec,
    /// Nonsmooth points met.
    pub kinks: KinkStats,
}

impl Backward {
    /// Checks `params` against `spec` and prepares them; errors on shape mismatch or
    /// non-finite weights.
    pub fn new(spec: &ModelSpec, params: &Params) -> Result<Self> {
        Ok(Self::from_prepared(Arc::new(PreparedNet::from_spec(
            spec, params,
        )?)))
    }

    /// Backward passes over an already prepared network (shared, not copied).
    pub fn from_prepared(net: Arc<PreparedNet>) -> Self {
        let mut offsets = Vec::with_capacity(net.ops().len());
        let mut off = 0;
        for op in net.ops() {
            offsets.push(off);
            match op {
                PreparedOp::Dense(a) | PreparedOp::Conv { affine: a, .. } => {
                    off += a.w.len() + a.bias.as_ref().map_or(0, Vec::len);
                }
                PreparedOp::MaxPool { .. }
                | PreparedOp::AvgPool { .. }
                | PreparedOp::Flatten
                | PreparedOp::Relu
                | PreparedOp::LeakyRelu { .. } => {}
            }
        }
        Self {
            net,
            offsets,
            n_params: off,
        }
    }

    /// Number of scalar parameters (length of every gradient).
    pub fn n_params(&self) -> usize {
        self.n_params
    }

    /// Number of network outputs.
    pub fn outputs(&self) -> usize {
        self.net.outputs()
    }

    /// Enclosure of `∂°(cᵀΦ)(θ)` at example `b` of a batch of `batch` examples whose
    /// forward enclosures are `acts` (as returned by
    /// [`super::forward::forward_enclosures`]: index 0 the input, index `i + 1` the
    /// output of layer `i`, batch-major). `adjoint` is `c` (exact, length = outputs).
    pub fn gradient(
        &self,
        acts: &[BallVec],
        batch: usize,
        b: usize,
        adjoint: &[f64],
    ) -> Result<GradEnclosure> {
        let plan = self.net.plan();
        if acts.len() != plan.len() + 1 || b >= batch {
            return Err(Error::Shape(format!(
                "backward pass: {} forward enclosures for {} layers, example {b} of {batch}",
                acts.len(),
                plan.len()
            )));
        }
        if adjoint.len() != self.outputs() {
            return Err(Error::Shape(format!(
                "backward pass: adjoint of length {} for {} outputs",
                adjoint.len(),
                self.outputs()
            )));
        }
        let row = |i: usize, len: usize| -> Result<(&[f64], &[f64])> {
            let a = &acts[i];
            if a.mid.len() != batch * len || a.rad.len() != batch * len {
                return Err(Error::Shape(format!(
                    "forward enclosure {i} has {} values, expected {batch} x {len}",
                    a.mid.len()
                )));
            }
            Ok((
                &a.mid[b * len..(b + 1) * len],
                &a.rad[b * len..(b + 1) * len],
            ))
        };
        let mut grad = BallVec {
            mid: vec![0.0; self.n_params],
            rad: vec![0.0; self.n_params],
        };
        let mut kinks = KinkStats::default();
        // current adjoint of the output of layer i: exact c at the top.
        let mut gm = adjoint.to_vec();
        let mut gr = vec![0.0; adjoint.len()];
        let first_weight = self.net.ops().iter().position(PreparedOp::has_weights);
        for (i, (p, op)) in self.net.layers().enumerate().rev() {
            let (il, ol) = (p.input.len(), p.output.len());
            debug_assert_eq!(gm.len(), ol);
            let (xm, xr) = row(i, il)?;
            // Whether anything below layer i depends on the parameters.
            let need_input = first_weight.is_some_and(|f| f < i);
            let (nm, nr) = match op {
                PreparedOp::Dense(a) => {
                    let (w, out) = (&a.w, a.out);
                    let off = self.offsets[i];
                    dense_weight_grad(&gm, &gr, xm, xr, out, il, &mut grad, off)?;
                    if a.bias.is_some() {
                        let bo = off + w.len();
                        grad.mid[bo..bo + out].copy_from_slice(&gm);
                        grad.rad[bo..bo + out].copy_from_slice(&gr);
                    }
                    if need_input {
                        dense_input_adjoint(w, &gm, &gr, out, il)?
                    } else {
                        (vec![], vec![])
                    }
                }
                PreparedOp::Conv {
                    affine: a,
                    window: win,
                    c_in,
                    ..
                } => {
                    let (w, out, c_in) = (&a.w, a.out, *c_in);
                    let off = self.offsets[i];
                    conv_weight_grad(&gm, &gr, xm, xr, out, c_in, win, &mut grad, off)?;
                    if a.bias.is_some() {
                        conv_bias_grad(&gm, &gr, out, win, &mut grad, off + w.len())?;
                    }
                    if need_input {
                        conv_input_adjoint(w, &gm, &gr, out, c_in, win)?
                    } else {
                        (vec![], vec![])
                    }
                }
                PreparedOp::Relu => leaky_backward(&gm, &gr, xm, xr, 0.0, &mut kinks),
                PreparedOp::LeakyRelu { slope } => {
                    leaky_backward(&gm, &gr, xm, xr, *slope as f64, &mut kinks)
                }
                PreparedOp::MaxPool { window, channels } => {
                    maxpool_backward(&gm, &gr, xm, xr, *channels, window, &mut kinks)
                }
                PreparedOp::AvgPool { window, channels } => {
                    avgpool_backward(&gm, &gr, *channels, window)
                }
                PreparedOp::Flatten => (gm, gr),
            };
            if !need_input {
                break;
            }
            gm = nm;
            gr = nr;
            if gm.iter().chain(&gr).any(|v| !v.is_finite()) {
                return Err(Error::Certify(format!(
                    "layer {i} ({}): the gradient enclosure overflowed f64",
                    p.layer.describe()
                )));
            }
        }
        if !grad.is_valid() {
            return Err(Error::Certify(
                "the gradient enclosure overflowed f64".into(),
            ));
        }
        Ok(GradEnclosure { grad, kinks })
    }
}
