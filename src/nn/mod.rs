//! Fast f32 forward and backward passes (im2col + sgemm, parallel over the batch).
//!
//! [`Network`] compiles a resolved plan (from a [`CheckedModel`] or a [`ModelSpec`]) into a
//! list of kernels; [`Workspace`] holds the activations a training step keeps for its backward
//! pass, and scratch buffers, so that a training loop allocates nothing after its first step.
//! Besides the parameter gradient ([`Network::backward`]) the same kernels give the gradient
//! with respect to the input ([`Network::input_gradient`]), which the attacks of
//! [`crate::robust`] follow.
//!
//! ```
//! use margincert::model::{presets, Params};
//! use margincert::nn::{Network, Workspace};
//! let spec = presets::mlp_with(margincert::model::Shape::flat(4), &[8], 3);
//! let net = Network::new(&spec).unwrap();
//! let params = Params::he_normal(&spec, 1).unwrap();
//! let x = vec![0.5f32; 2 * 4];
//! let logits = net.forward(&params, &x, 2).unwrap();
//! let mut ws = Workspace::new(&net, 2);
//! assert_eq!(net.forward_train(&params, &x, 2, &mut ws).unwrap(), &logits[..]);
//! let mut grads = params.zeros_like();
//! net.backward(&params, &mut ws, &vec![1.0; 2 * 3], &mut grads).unwrap();
//! // d(logit 0 of each example)/d(input), `[batch, C*H*W]`.
//! let dx = net.input_gradient(&params, &mut ws, &[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).unwrap();
//! assert_eq!(dx.len(), 2 * 4);
//! ```
//!
//! # Numerics and reproducibility
//!
//! - Inputs are `[batch, C*H*W]` row-major, each example `[C, H, W]` C-major (PyTorch's
//!   layout), pixels `p / 255`. Internally activations are channels-last (see `ops`).
//! - ReLU: derivative 0 at 0. LeakyReLU: derivative `slope` at 0 (the left derivative, as
//!   for ReLU). Max-pool: the whole gradient of a window goes to the FIRST maximum in window
//!   order (top row first, left to right); other tied inputs get none.
//! - A ReLU or LeakyReLU (slope >= 0) followed by a max-pool is run as the max-pool then
//!   the activation, which gives the same values and the same gradients: `f(max x) = max f(x)`
//!   for non-decreasing `f`; for slope > 0 the winner is the same input; for ReLU, when the
//!   window's maximum is positive the winner is the same, and when it is <= 0 both orders
//!   give the window a zero gradient (ReLU'(x) = 0 for x <= 0).
//! - Determinism: with the same inputs and the same rayon thread count, every result is
//!   bit-identical run to run. Parallel work is split over examples with disjoint outputs;
//!   reductions over the batch (weight and bias gradients) run inside one matrix product
//!   (which splits only its output) or in a fixed sequential order, with conv batches cut
//!   into chunks whose size depends only on the layer shape.
//! - [`Network::forward`] and [`Network::forward_train`] run the same kernels and give
//!   bit-identical logits. An example's logits do not depend on the other examples of the
//!   batch, up to the rounding of the matrix product (its blocking may depend on the
//!   batch size).

mod ops;
mod sgemm;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::model::{CheckedModel, LayerPlan, ModelSpec, Op, Params, Shape};
use ops::ConvGeom;
use std::sync::Mutex;

/// One layer as the f32 kernels run it.
///
/// Invariant: `input` is the shape the layer receives in the order the network runs its
/// kernels (see the activation/max-pool swap in [`Network::compile`]), and for a weight layer
/// `slot` is the index of its parameters in [`Params::layers`] (for the other layers, the
/// number of weight layers before it; unused).
#[derive(Clone, Copy, Debug)]
struct Kernel {
    op: Op,
    input: Shape,
    slot: usize,
}

impl Kernel {
    /// The conv geometry in the internal layout, for a conv layer.
    fn conv(&self) -> Option<ConvGeom> {
        match self.op {
            Op::Conv {
                out, c_in, window, ..
            } => Some(ConvGeom {
                win: window,
                cin: c_in,
                cout: out,
            }),
            Op::Dense { .. }
            | Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::Flatten
            | Op::Relu
            | Op::LeakyRelu { .. } => None,
        }
    }

    /// True for an elementwise activation that is non-decreasing (so it commutes with max).
    fn commutes_with_max(&self) -> bool {
        match self.op {
            Op::Relu => true,
            Op::LeakyRelu { slope } => slope >= 0.0,
            Op::Dense { .. }
            | Op::Conv { .. }
            | Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::Flatten => false,
        }
    }
}

/// Activation buffers reused by [`Network::forward`].
#[derive(Debug, Default)]
struct InferBuffers {
    cur: Vec<f32>,
    next: Vec<f32>,
    ws: Workspace,
}

/// A network compiled from a resolved plan: the kernel list and every buffer size.
///
/// Invariant: `plan` is the plan of `spec`; `kernels` runs the layers of `plan` (in plan order
/// except that an activation followed by a max-pool runs after it, see the module docs);
/// `sizes[i]` is the number of scalars per example entering kernel `i` (`sizes[len]` =
/// `outputs`). The network holds no parameters: each call takes them and checks their shapes
/// against `plan` ([`Params::check_shapes`]).
#[derive(Debug)]
pub struct Network {
    spec: ModelSpec,
    plan: Vec<LayerPlan>,
    kernels: Vec<Kernel>,
    sizes: Vec<usize>,
    /// Channels of the input when it must be transposed to channels-last, else `None`.
    input_transpose: Option<(usize, usize)>,
    outputs: usize,
    /// Buffers of [`Network::forward`], reused between calls (contents never carried over:
    /// every kernel overwrites its output).
    cache: Mutex<InferBuffers>,
}

impl Clone for Network {
    fn clone(&self) -> Self {
        Self {
            spec: self.spec.clone(),
            plan: self.plan.clone(),
            kernels: self.kernels.clone(),
            sizes: self.sizes.clone(),
            input_transpose: self.input_transpose,
            outputs: self.outputs,
            cache: Mutex::new(InferBuffers::default()),
        }
    }
}

/// Reusable buffers for training steps: the activations of the last
/// [`Network::forward_train`] (kept for [`Network::backward`] and
/// [`Network::input_gradient`]), conv weights in kernel order, and scratch. Grows on demand;
/// a workspace may be reused across batch sizes but belongs to one network.
///
/// Invariant: after a successful `forward_train` with batch `b`, `batch == Some(b)`,
/// `acts[i]` holds at least `b * sizes[i]` valid scalars for every layer input `i` and
/// the output.
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    acts: Vec<Vec<f32>>,
    /// Conv weights in internal order, per layer (empty for other layers).
    wint: Vec<Vec<f32>>,
    /// Conv weight gradients in internal order (scratch).
    dwint: Vec<f32>,
    cols: Vec<f32>,
    dcols: Vec<f32>,
    grad_a: Vec<f32>,
    grad_b: Vec<f32>,
    /// The last input gradient, C-major (returned by [`Network::input_gradient`]).
    dinput: Vec<f32>,
    /// Batch size of the last successful `forward_train`, and the layer sizes it used.
    batch: Option<usize>,
    sizes: Vec<usize>,
}

impl Workspace {
    /// A workspace for `net`, with buffers sized for batches up to `max_batch` (larger
    /// batches grow it).
    pub fn new(net: &Network, max_batch: usize) -> Self {
        let mut ws = Workspace::default();
        ws.reserve(net, max_batch);
        ws
    }

    fn reserve(&mut self, net: &Network, batch: usize) {
        let n = net.kernels.len();
        self.acts.resize_with(n + 1, Vec::new);
        self.wint.resize_with(n, Vec::new);
        for (i, a) in self.acts.iter_mut().enumerate() {
            ops::grow(a, batch * net.sizes[i]);
        }
        for g in net.kernels.iter().filter_map(Kernel::conv) {
            ops::grow(&mut self.cols, g.cols_len(batch));
        }
    }
}

impl Network {
    /// Compiles `spec`; an invalid spec is an [`Error::Spec`].
    pub fn new(spec: &ModelSpec) -> Result<Self> {
        let plan = spec.plan()?;
        Ok(Self::compile(spec.clone(), plan))
    }

    /// Compiles the plan of a checked model (resolved once, by [`CheckedModel::new`]).
    pub fn from_model(model: &CheckedModel) -> Self {
        Self::compile(model.spec().clone(), model.plan().to_vec())
    }

    /// Builds the kernel list of `plan` (the plan of `spec`).
    fn compile(spec: ModelSpec, plan: Vec<LayerPlan>) -> Self {
        let mut kernels = Vec::with_capacity(plan.len());
        let mut sizes = vec![spec.input.len()];
        let mut slot = 0;
        for p in &plan {
            kernels.push(Kernel {
                op: p.op,
                input: p.input,
                slot,
            });
            if p.op.has_weights() {
                slot += 1;
            }
            sizes.push(p.output.len());
        }
        // An activation with slope >= 0 followed by a max-pool runs after the pool instead:
        // a non-decreasing function commutes with max, so the values are identical, and so
        // are the gradients (see the module docs), on a quarter of the data for 2x2 pools.
        for i in 0..kernels.len().saturating_sub(1) {
            if let Op::MaxPool { window, channels } = kernels[i + 1].op
                && kernels[i].commutes_with_max()
            {
                // The pool now reads what the activation read (same shape); the activation
                // reads the pool's output.
                let (act, pool) = (kernels[i], kernels[i + 1]);
                kernels[i] = Kernel {
                    input: act.input,
                    ..pool
                };
                kernels[i + 1] = Kernel {
                    input: Shape::new(channels, window.out_h, window.out_w),
                    ..act
                };
                sizes[i + 1] = sizes[i + 2];
            }
        }
        let i = spec.input;
        let input_transpose = (i.c > 1 && i.h * i.w > 1).then_some((i.h * i.w, i.c));
        Self {
            spec,
            plan,
            kernels,
            outputs: *sizes.last().expect("sizes starts non-empty"),
            sizes,
            input_transpose,
            cache: Mutex::new(InferBuffers::default()),
        }
    }

    /// The spec this network was compiled from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Logits per example.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// Scalars per input example (`C * H * W`).
    pub fn input_len(&self) -> usize {
        self.sizes[0]
    }

    /// Checks the shapes of `p` against the plan (`what` names it in the error).
    fn check_shapes(&self, p: &Params, what: &str) -> Result<()> {
        p.check_shapes(&self.plan).map_err(|e| match e {
            Error::Shape(m) => Error::Shape(format!("{what}: {m}")),
            other => other,
        })
    }

    fn check_input(&self, x: &[f32], batch: usize) -> Result<()> {
        let need = batch.checked_mul(self.sizes[0]);
        if need != Some(x.len()) {
            return Err(Error::Shape(format!(
                "input has {} values, but a batch of {batch} examples of {} needs {}",
                x.len(),
                self.spec.input,
                batch.saturating_mul(self.sizes[0])
            )));
        }
        Ok(())
    }

    /// Inference: logits `[batch, outputs]` row-major for `x = [batch, C*H*W]`.
    ///
    /// Runs the same kernels as [`Network::forward_train`] (bit-identical logits) but keeps
    /// only two activation buffers, cached in the network between calls (a call made while
    /// another thread holds the cache uses fresh buffers).
    ///
    /// Errors: [`Error::Shape`] when `x.len() != batch * C*H*W` or `params` does not fit.
    pub fn forward(&self, params: &Params, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        self.check_shapes(params, "parameters")?;
        self.check_input(x, batch)?;
        let mut guard = self.cache.try_lock().ok();
        let mut fresh = InferBuffers::default();
        let bufs = match guard.as_deref_mut() {
            Some(b) => b,
            None => &mut fresh,
        };
        let InferBuffers { cur, next, ws } = bufs;
        let n = self.kernels.len();
        ws.wint.resize_with(n, Vec::new);
        ops::grow(cur, x.len());
        match self.input_transpose {
            Some((hw, c)) => ops::chw_to_hwc(hw, c, x, batch, cur),
            None => cur[..x.len()].copy_from_slice(x),
        }
        for i in 0..n {
            ops::grow(next, batch * self.sizes[i + 1]);
            self.kernel_forward(i, params, cur, batch, next, ws);
            std::mem::swap(cur, next);
        }
        Ok(cur[..batch * self.outputs].to_vec())
    }

    /// Runs kernel `i` forward from `input` into `output`.
    fn kernel_forward(
        &self,
        i: usize,
        params: &Params,
        input: &[f32],
        batch: usize,
        output: &mut [f32],
        ws: &mut Workspace,
    ) {
        let (ni, no) = (batch * self.sizes[i], batch * self.sizes[i + 1]);
        let (input, output) = (&input[..ni], &mut output[..no]);
        let k = &self.kernels[i];
        match k.op {
            Op::Dense { inp, out, .. } => {
                let l = &params.layers[k.slot];
                ops::dense_forward(&l.weight, l.bias.as_deref(), inp, out, input, batch, output);
            }
            Op::Conv {
                out, c_in, window, ..
            } => {
                let g = ConvGeom {
                    win: window,
                    cin: c_in,
                    cout: out,
                };
                let l = &params.layers[k.slot];
                let wi = &mut ws.wint[i];
                ops::grow(wi, l.weight.len());
                ops::weight_to_internal(&g, &l.weight, wi);
                ops::conv_forward(
                    &g,
                    wi,
                    l.bias.as_deref(),
                    input,
                    batch,
                    output,
                    &mut ws.cols,
                );
            }
            Op::MaxPool { window, channels } => {
                ops::maxpool_forward(&window, channels, input, batch, output)
            }
            Op::AvgPool { window, channels } => {
                ops::avgpool_forward(&window, channels, input, batch, output)
            }
            Op::Flatten => {
                let s = k.input;
                ops::hwc_to_chw(s.h * s.w, s.c, input, batch, output)
            }
            Op::Relu => ops::leaky_forward(0.0, input, output),
            Op::LeakyRelu { slope } => ops::leaky_forward(slope, input, output),
        }
    }

    /// Training forward: like [`Network::forward`] (bit-identical logits) but keeps in `ws`
    /// what [`Network::backward`] and [`Network::input_gradient`] need. Returns the logits
    /// `[batch, outputs]`.
    pub fn forward_train<'a>(
        &self,
        params: &Params,
        x: &[f32],
        batch: usize,
        ws: &'a mut Workspace,
    ) -> Result<&'a [f32]> {
        self.check_shapes(params, "parameters")?;
        self.check_input(x, batch)?;
        ws.batch = None;
        ws.reserve(self, batch);
        match self.input_transpose {
            Some((hw, c)) => ops::chw_to_hwc(hw, c, x, batch, &mut ws.acts[0]),
            None => ws.acts[0][..x.len()].copy_from_slice(x),
        }
        for i in 0..self.kernels.len() {
            let mut input = std::mem::take(&mut ws.acts[i]);
            let mut output = std::mem::take(&mut ws.acts[i + 1]);
            self.kernel_forward(i, params, &input, batch, &mut output, ws);
            std::mem::swap(&mut ws.acts[i], &mut input);
            std::mem::swap(&mut ws.acts[i + 1], &mut output);
        }
        ws.batch = Some(batch);
        ws.sizes = self.sizes.clone();
        let n = self.kernels.len();
        Ok(&ws.acts[n][..batch * self.outputs])
    }

    /// Backward from `dlogits = dL/dlogits` (`[batch, outputs]`) of the last
    /// [`Network::forward_train`] on `ws`; OVERWRITES `grads` (same shapes as `params`,
    /// biases included) with `dL/dparams`.
    ///
    /// Errors: [`Error::Shape`] when `ws` holds no forward pass of this network, when
    /// `dlogits` has the wrong length, or when `params`/`grads` do not fit the network.
    /// `params` must be the parameters of that forward pass.
    pub fn backward(
        &self,
        params: &Params,
        ws: &mut Workspace,
        dlogits: &[f32],
        grads: &mut Params,
    ) -> Result<()> {
        self.check_shapes(grads, "gradients")?;
        self.backprop(params, ws, dlogits, Some(grads)).map(|_| ())
    }

    /// The gradient with respect to the INPUT of a per-example linear combination of the
    /// logits of the last [`Network::forward_train`] on `ws`: row `b` of the result
    /// (`[batch, C*H*W]`, the input's C-major layout) is `d/dx_b sum_k dlogits[b, k] *
    /// logits[b, k]`. With `dlogits` = `e_y - e_j` it is the gradient of the margin
    /// `z_y - z_j`. Runs the kernels of [`Network::backward`] (same subgradient conventions,
    /// see the module docs) without the parameter gradients.
    ///
    /// Errors: as [`Network::backward`]. `params` must be the parameters of that forward pass.
    pub fn input_gradient<'a>(
        &self,
        params: &Params,
        ws: &'a mut Workspace,
        dlogits: &[f32],
    ) -> Result<&'a [f32]> {
        let batch = self.backprop(params, ws, dlogits, None)?;
        let n = batch * self.sizes[0];
        ops::grow(&mut ws.dinput, n);
        match self.input_transpose {
            Some((hw, c)) => ops::hwc_to_chw(hw, c, &ws.grad_a, batch, &mut ws.dinput),
            None => ws.dinput[..n].copy_from_slice(&ws.grad_a[..n]),
        }
        Ok(&ws.dinput[..n])
    }

    /// Runs the kernels backward from `dlogits` over the activations in `ws`; returns the
    /// batch size. With `grads`, overwrites them with the parameter gradients (and skips the
    /// input gradient of layer 0, never needed for training); without, computes input
    /// gradients only, down to the network input, left channels-last in `ws.grad_a`.
    fn backprop(
        &self,
        params: &Params,
        ws: &mut Workspace,
        dlogits: &[f32],
        mut grads: Option<&mut Params>,
    ) -> Result<usize> {
        self.check_shapes(params, "parameters")?;
        let batch = match ws.batch {
            Some(b) if ws.sizes == self.sizes && ws.acts.len() == self.kernels.len() + 1 => b,
            _ => {
                return Err(Error::Shape(
                    "backward needs a workspace filled by forward_train of this network".into(),
                ));
            }
        };
        if dlogits.len() != batch * self.outputs {
            return Err(Error::Shape(format!(
                "dlogits has {} values, the last forward pass needs {batch} x {}",
                dlogits.len(),
                self.outputs
            )));
        }
        let mut dcur = std::mem::take(&mut ws.grad_a);
        let mut dnext = std::mem::take(&mut ws.grad_b);
        ops::grow(&mut dcur, dlogits.len());
        dcur[..dlogits.len()].copy_from_slice(dlogits);
        for i in (0..self.kernels.len()).rev() {
            // For training, input gradients of layer 0 are never needed (except for a
            // parameter-free layer, which costs little and keeps the code uniform).
            let need_dx = i > 0 || grads.is_none();
            let (ni, no) = (batch * self.sizes[i], batch * self.sizes[i + 1]);
            if need_dx {
                ops::grow(&mut dnext, ni);
            }
            let input = &ws.acts[i][..ni];
            let dy = &dcur[..no];
            let dx = if need_dx {
                Some(&mut dnext[..ni])
            } else {
                None
            };
            let k = &self.kernels[i];
            match k.op {
                Op::Dense { inp, out, .. } => {
                    let l = &params.layers[k.slot];
                    let (dw, db) = match grads.as_deref_mut() {
                        Some(g) => {
                            let gl = &mut g.layers[k.slot];
                            (Some(&mut gl.weight[..]), gl.bias.as_deref_mut())
                        }
                        None => (None, None),
                    };
                    ops::dense_backward(&l.weight, inp, out, input, dy, batch, dx, dw, db);
                }
                Op::Conv {
                    out, c_in, window, ..
                } => {
                    let g = ConvGeom {
                        win: window,
                        cin: c_in,
                        cout: out,
                    };
                    let wi = &ws.wint[i];
                    match grads.as_deref_mut() {
                        Some(gr) => {
                            let gl = &mut gr.layers[k.slot];
                            ops::grow(&mut ws.dwint, gl.weight.len());
                            let dwi = &mut ws.dwint[..gl.weight.len()];
                            let db = gl.bias.as_deref_mut();
                            let (cols, dcols) = (&mut ws.cols, &mut ws.dcols);
                            ops::conv_backward(
                                &g,
                                wi,
                                input,
                                dy,
                                batch,
                                dx,
                                Some(dwi),
                                db,
                                cols,
                                dcols,
                            );
                            ops::weight_from_internal(&g, dwi, &mut gl.weight);
                        }
                        None => {
                            let (cols, dcols) = (&mut ws.cols, &mut ws.dcols);
                            ops::conv_backward(
                                &g, wi, input, dy, batch, dx, None, None, cols, dcols,
                            );
                        }
                    }
                }
                Op::MaxPool { window, channels } => {
                    if let Some(dx) = dx {
                        let output = &ws.acts[i + 1][..no];
                        ops::maxpool_backward(&window, channels, input, output, dy, batch, dx);
                    }
                }
                Op::AvgPool { window, channels } => {
                    if let Some(dx) = dx {
                        ops::avgpool_backward(&window, channels, dy, batch, dx);
                    }
                }
                Op::Flatten => {
                    if let Some(dx) = dx {
                        let s = k.input;
                        ops::chw_to_hwc(s.h * s.w, s.c, dy, batch, dx);
                    }
                }
                Op::Relu => {
                    if let Some(dx) = dx {
                        ops::leaky_backward(0.0, input, dy, dx);
                    }
                }
                Op::LeakyRelu { slope } => {
                    if let Some(dx) = dx {
                        ops::leaky_backward(slope, input, dy, dx);
                    }
                }
            }
            if need_dx {
                std::mem::swap(&mut dcur, &mut dnext);
            }
        }
        ws.grad_a = dcur;
        ws.grad_b = dnext;
        Ok(batch)
    }
}
