//! Fast f32 forward and backward passes (im2col + sgemm, parallel over the batch).
//!
//! [`Network`] compiles a [`ModelSpec`] into a list of kernel steps; [`Workspace`] holds
//! the activations a training step keeps for its backward pass, and scratch buffers, so
//! that a training loop allocates nothing after its first step.
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

use crate::error::{Error, Result};
use crate::model::{Layer, ModelSpec, Params, Window};
use ops::ConvGeom;
use std::sync::Mutex;

/// One compiled layer.
#[derive(Clone, Debug)]
enum Step {
    Dense {
        inp: usize,
        out: usize,
        slot: usize,
    },
    Conv {
        g: ConvGeom,
        slot: usize,
    },
    MaxPool {
        win: Window,
        c: usize,
    },
    AvgPool {
        win: Window,
        c: usize,
    },
    /// Channels-last `[h*w, c]` to C-major.
    Flatten {
        hw: usize,
        c: usize,
    },
    /// ReLU (slope 0) or LeakyReLU.
    Leaky {
        slope: f32,
    },
}

/// Activation buffers reused by [`Network::forward`].
#[derive(Debug, Default)]
struct InferBuffers {
    cur: Vec<f32>,
    next: Vec<f32>,
    ws: Workspace,
}

/// A network compiled from a [`ModelSpec`]: the kernel plan and every buffer size.
///
/// Invariant: `spec` is valid, `steps[i]` is layer `i` of `spec`, `sizes[i]` is the number
/// of scalars per example entering layer `i` (`sizes[len]` = `outputs`), and
/// `weight_shapes[j]` / `bias_lens[j]` describe weight layer `j` in `spec` order.
#[derive(Debug)]
pub struct Network {
    spec: ModelSpec,
    steps: Vec<Step>,
    sizes: Vec<usize>,
    /// Per weight layer: (spec index, weight shape, bias length).
    weights: Vec<(usize, Vec<usize>, Option<usize>)>,
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
            steps: self.steps.clone(),
            sizes: self.sizes.clone(),
            weights: self.weights.clone(),
            input_transpose: self.input_transpose,
            outputs: self.outputs,
            cache: Mutex::new(InferBuffers::default()),
        }
    }
}

/// Reusable buffers for training steps: the activations of the last
/// [`Network::forward_train`] (kept for [`Network::backward`]), conv weights in kernel
/// order, and scratch. Grows on demand; a workspace may be reused across
/// batch sizes but belongs to one network.
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
        let n = net.steps.len();
        self.acts.resize_with(n + 1, Vec::new);
        self.wint.resize_with(n, Vec::new);
        for (i, a) in self.acts.iter_mut().enumerate() {
            ops::grow(a, batch * net.sizes[i]);
        }
        for s in &net.steps {
            if let Step::Conv { g, .. } = s {
                ops::grow(&mut self.cols, g.cols_len(batch));
            }
        }
    }
}

impl Network {
    /// Compiles `spec`; an invalid spec is an [`Error::Spec`].
    pub fn new(spec: &ModelSpec) -> Result<Self> {
        let plans = spec.plan()?;
        let mut steps = Vec::with_capacity(plans.len());
        let mut sizes = vec![spec.input.len()];
        let mut weights = Vec::new();
        for p in &plans {
            let step = match p.layer {
                Layer::Dense { out, bias } => {
                    weights.push((p.index, vec![out, p.input.len()], bias.then_some(out)));
                    Step::Dense {
                        inp: p.input.len(),
                        out,
                        slot: weights.len() - 1,
                    }
                }
                Layer::Conv2d {
                    out, kernel, bias, ..
                } => {
                    let win = p.window.expect("conv plans carry a window");
                    weights.push((
                        p.index,
                        vec![out, p.input.c, kernel, kernel],
                        bias.then_some(out),
                    ));
                    Step::Conv {
                        g: ConvGeom {
                            win,
                            cin: p.input.c,
                            cout: out,
                        },
                        slot: weights.len() - 1,
                    }
                }
                Layer::MaxPool { .. } => Step::MaxPool {
                    win: p.window.expect("pool plans carry a window"),
                    c: p.input.c,
                },
                Layer::AvgPool { .. } => Step::AvgPool {
                    win: p.window.expect("pool plans carry a window"),
                    c: p.input.c,
                },
                Layer::Flatten => Step::Flatten {
                    hw: p.input.h * p.input.w,
                    c: p.input.c,
                },
                Layer::Relu => Step::Leaky { slope: 0.0 },
                Layer::LeakyRelu { slope } => Step::Leaky { slope },
            };
            steps.push(step);
            sizes.push(p.output.len());
        }
        // An activation with slope >= 0 followed by a max-pool runs after the pool instead:
        // a non-decreasing function commutes with max, so the values are identical, and so
        // are the gradients (see the module docs), on a quarter of the data for 2x2 pools.
        for i in 0..steps.len().saturating_sub(1) {
            if let (Step::Leaky { slope }, Step::MaxPool { .. }) = (&steps[i], &steps[i + 1])
                && *slope >= 0.0
            {
                steps.swap(i, i + 1);
                sizes[i + 1] = sizes[i + 2];
            }
        }
        let i = spec.input;
        let input_transpose = (i.c > 1 && i.h * i.w > 1).then_some((i.h * i.w, i.c));
        Ok(Self {
            spec: spec.clone(),
            steps,
            outputs: *sizes.last().expect("sizes starts non-empty"),
            sizes,
            weights,
            input_transpose,
            cache: Mutex::new(InferBuffers::default()),
        })
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

    /// Checks `p` against the compiled shapes (`what` names it in the error).
    fn check_params(&self, p: &Params, what: &str) -> Result<()> {
        if p.layers.len() != self.weights.len() {
            return Err(Error::Shape(format!(
                "{what}: the network has {} weight layers, got {}",
                self.weights.len(),
                p.layers.len()
            )));
        }
        for ((idx, shape, bias), l) in self.weights.iter().zip(&p.layers) {
            let n: usize = shape.iter().product();
            if l.index != *idx || &l.weight_shape != shape || l.weight.len() != n {
                return Err(Error::Shape(format!(
                    "{what}: layer {idx} needs a weight of shape {shape:?}, got layer {} with \
                     shape {:?} and {} values",
                    l.index,
                    l.weight_shape,
                    l.weight.len()
                )));
            }
            let got = l.bias.as_ref().map(Vec::len);
            if got != *bias {
                return Err(Error::Shape(format!(
                    "{what}: layer {idx} needs a bias of length {bias:?}, got {got:?}"
                )));
            }
        }
        Ok(())
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
        self.check_params(params, "parameters")?;
        self.check_input(x, batch)?;
        let mut guard = self.cache.try_lock().ok();
        let mut fresh = InferBuffers::default();
        let bufs = match guard.as_deref_mut() {
            Some(b) => b,
            None => &mut fresh,
        };
        let InferBuffers { cur, next, ws } = bufs;
        let n = self.steps.len();
        ws.wint.resize_with(n, Vec::new);
        ops::grow(cur, x.len());
        match self.input_transpose {
            Some((hw, c)) => ops::chw_to_hwc(hw, c, x, batch, cur),
            None => cur[..x.len()].copy_from_slice(x),
        }
        for i in 0..n {
            ops::grow(next, batch * self.sizes[i + 1]);
            self.step_forward(i, params, cur, batch, next, ws);
            std::mem::swap(cur, next);
        }
        Ok(cur[..batch * self.outputs].to_vec())
    }

    /// Runs layer `i` forward from `input` into `output`.
    #[allow(clippy::too_many_arguments)]
    fn step_forward(
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
        match &self.steps[i] {
            Step::Dense { inp, out, slot } => {
                let l = &params.layers[*slot];
                ops::dense_forward(
                    &l.weight,
                    l.bias.as_deref(),
                    *inp,
                    *out,
                    input,
                    batch,
                    output,
                );
            }
            Step::Conv { g, slot } => {
                let l = &params.layers[*slot];
                let wi = &mut ws.wint[i];
                ops::grow(wi, l.weight.len());
                ops::weight_to_internal(g, &l.weight, wi);
                ops::conv_forward(g, wi, l.bias.as_deref(), input, batch, output, &mut ws.cols);
            }
            Step::MaxPool { win, c } => ops::maxpool_forward(win, *c, input, batch, output),
            Step::AvgPool { win, c } => ops::avgpool_forward(win, *c, input, batch, output),
            Step::Flatten { hw, c } => ops::hwc_to_chw(*hw, *c, input, batch, output),
            Step::Leaky { slope } => ops::leaky_forward(*slope, input, output),
        }
    }

    /// Training forward: like [`Network::forward`] (bit-identical logits) but keeps in `ws`
    /// what [`Network::backward`] needs. Returns the logits `[batch, outputs]`.
    pub fn forward_train<'a>(
        &self,
        params: &Params,
        x: &[f32],
        batch: usize,
        ws: &'a mut Workspace,
    ) -> Result<&'a [f32]> {
        self.check_params(params, "parameters")?;
        self.check_input(x, batch)?;
        ws.batch = None;
        ws.reserve(self, batch);
        match self.input_transpose {
            Some((hw, c)) => ops::chw_to_hwc(hw, c, x, batch, &mut ws.acts[0]),
            None => ws.acts[0][..x.len()].copy_from_slice(x),
        }
        for i in 0..self.steps.len() {
            let mut input = std::mem::take(&mut ws.acts[i]);
            let mut output = std::mem::take(&mut ws.acts[i + 1]);
            self.step_forward(i, params, &input, batch, &mut output, ws);
            std::mem::swap(&mut ws.acts[i], &mut input);
            std::mem::swap(&mut ws.acts[i + 1], &mut output);
        }
        ws.batch = Some(batch);
        ws.sizes = self.sizes.clone();
        let n = self.steps.len();
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
        self.check_params(params, "parameters")?;
        self.check_params(grads, "gradients")?;
        let batch = match ws.batch {
            Some(b) if ws.sizes == self.sizes && ws.acts.len() == self.steps.len() + 1 => b,
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
        for i in (0..self.steps.len()).rev() {
            // Input gradients of layer 0 are never needed (except for a parameter-free layer,
            // which costs little and keeps the code uniform).
            let need_dx = i > 0;
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
            match &self.steps[i] {
                Step::Dense { inp, out, slot } => {
                    let l = &params.layers[*slot];
                    let gl = &mut grads.layers[*slot];
                    ops::dense_backward(
                        &l.weight,
                        *inp,
                        *out,
                        input,
                        dy,
                        batch,
                        dx,
                        &mut gl.weight,
                        gl.bias.as_deref_mut(),
                    );
                }
                Step::Conv { g, slot } => {
                    let gl = &mut grads.layers[*slot];
                    ops::grow(&mut ws.dwint, gl.weight.len());
                    let dwi = &mut ws.dwint[..gl.weight.len()];
                    ops::conv_backward(
                        g,
                        &ws.wint[i],
                        input,
                        dy,
                        batch,
                        dx,
                        dwi,
                        gl.bias.as_deref_mut(),
                        &mut ws.cols,
                        &mut ws.dcols,
                    );
                    ops::weight_from_internal(g, dwi, &mut gl.weight);
                }
                Step::MaxPool { win, c } => {
                    if let Some(dx) = dx {
                        let output = &ws.acts[i + 1][..no];
                        ops::maxpool_backward(win, *c, input, output, dy, batch, dx);
                    }
                }
                Step::AvgPool { win, c } => {
                    if let Some(dx) = dx {
                        ops::avgpool_backward(win, *c, dy, batch, dx);
                    }
                }
                Step::Flatten { hw, c } => {
                    if let Some(dx) = dx {
                        ops::chw_to_hwc(*hw, *c, dy, batch, dx);
                    }
                }
                Step::Leaky { slope } => {
                    if let Some(dx) = dx {
                        ops::leaky_backward(*slope, input, dy, dx);
                    }
                }
            }
            if need_dx {
                std::mem::swap(&mut dcur, &mut dnext);
            }
        }
        ws.grad_a = dcur;
        ws.grad_b = dnext;
        Ok(())
    }
}
