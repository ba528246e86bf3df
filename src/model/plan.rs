//! A spec resolved against its input shape: [`Window`] geometry, the resolved layer [`Op`],
//! the per-layer [`LayerPlan`], and [`CheckedModel`] (spec, plan and parameters checked once).

use super::{Layer, LayerParams, ModelSpec, Padding, Params, Shape};
use crate::error::{Error, Result};
use crate::limits;

/// Geometry of a convolution or pooling window applied to a given input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero rows added on top / columns on the left.
    pub pad_top: usize,
    /// Zero columns added on the left.
    pub pad_left: usize,
    /// Input height and width.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
}

impl Window {
    /// Window geometry for kernel `k`, stride `s`, padding `p` on an `h x w` input.
    ///
    /// Every size is computed with checked arithmetic: a geometry whose sizes overflow is an
    /// error, never a wrapped value. Explicit padding may be at most `max(k, h, w)` (more adds
    /// output rows and columns that see nothing but padding, beyond a whole input's worth).
    pub fn new(k: usize, s: usize, p: Padding, h: usize, w: usize) -> Result<Self> {
        if k == 0 || s == 0 {
            return Err(Error::Spec("kernel and stride must be at least 1".into()));
        }
        let overflow = || {
            Error::Spec(format!(
                "the geometry of a {k}x{k} window at stride {s} with padding {p:?} on a \
                 {h}x{w} input overflows"
            ))
        };
        let (pt, pl, oh, ow) = match p {
            Padding::Valid => {
                if h < k || w < k {
                    return Err(Error::Spec(format!(
                        "a {k}x{k} window does not fit a {h}x{w} input"
                    )));
                }
                (0, 0, (h - k) / s + 1, (w - k) / s + 1)
            }
            Padding::Explicit(p) => {
                let most = k.max(h).max(w);
                if p > most {
                    return Err(Error::Spec(format!(
                        "explicit padding {p} is larger than the kernel ({k}) and the input \
                         ({h}x{w}); at most {most} is accepted"
                    )));
                }
                let hp = p.checked_mul(2).and_then(|q| q.checked_add(h));
                let wp = p.checked_mul(2).and_then(|q| q.checked_add(w));
                let (hp, wp) = hp.zip(wp).ok_or_else(overflow)?;
                if hp < k || wp < k {
                    return Err(Error::Spec(format!(
                        "a {k}x{k} window does not fit a {h}x{w} input padded by {p}"
                    )));
                }
                (p, p, (hp - k) / s + 1, (wp - k) / s + 1)
            }
            Padding::Same => {
                let oh = h.div_ceil(s);
                let ow = w.div_ceil(s);
                let span = |o: usize| {
                    o.checked_sub(1)
                        .and_then(|o| o.checked_mul(s))
                        .and_then(|x| x.checked_add(k))
                };
                let (sh, sw) = span(oh).zip(span(ow)).ok_or_else(overflow)?;
                let ph = sh.saturating_sub(h);
                let pw = sw.saturating_sub(w);
                (ph / 2, pw / 2, oh, ow)
            }
        };
        Ok(Self {
            k,
            stride: s,
            pad_top: pt,
            pad_left: pl,
            in_h: h,
            in_w: w,
            out_h: oh,
            out_w: ow,
        })
    }

    /// Input row of output row `oy` and kernel row `ky`, or `None` when it falls in the
    /// padding.
    #[inline]
    pub fn in_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky)
            .checked_sub(self.pad_top)
            .filter(|&r| r < self.in_h)
    }

    /// Input column of output column `ox` and kernel column `kx`, or `None` in the padding.
    #[inline]
    pub fn in_col(&self, ox: usize, kx: usize) -> Option<usize> {
        (ox * self.stride + kx)
            .checked_sub(self.pad_left)
            .filter(|&c| c < self.in_w)
    }

    /// The taps of the window at output position `(oy, ox)` that fall inside the input, in
    /// row-major kernel order: `(kernel index ky * k + kx, input index iy * in_w + ix)`. Taps in
    /// the padding are skipped (they multiply a zero).
    #[inline]
    pub fn taps(&self, oy: usize, ox: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.k).flat_map(move |ky| {
            let row = self.in_row(oy, ky);
            (0..self.k).filter_map(move |kx| {
                let iy = row?;
                let ix = self.in_col(ox, kx)?;
                Some((ky * self.k + kx, iy * self.in_w + ix))
            })
        })
    }
}

/// A layer resolved against the shape it receives: what every pass dispatches on.
///
/// Unlike [`Layer`] (the user-facing description), every variant carries the geometry its
/// kernels need, so no pass unwraps an `Option` or falls into a wildcard arm: adding a variant
/// here is a compile error in every pass until it is handled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// `y = W x (+ b)`, `W: [out, inp]`.
    Dense {
        /// Output features.
        out: usize,
        /// Input features.
        inp: usize,
        /// Whether the layer has a bias.
        bias: bool,
    },
    /// Cross-correlation `W: [out, c_in, k, k]` over `window`.
    Conv {
        /// Output channels.
        out: usize,
        /// Input channels.
        c_in: usize,
        /// Window geometry (kernel, stride, padding, input and output sizes).
        window: Window,
        /// Whether the layer has a bias (one per output channel).
        bias: bool,
    },
    /// Max over each window, per channel.
    MaxPool {
        /// Window geometry.
        window: Window,
        /// Channels (unchanged).
        channels: usize,
    },
    /// Mean over each window, per channel.
    AvgPool {
        /// Window geometry.
        window: Window,
        /// Channels (unchanged).
        channels: usize,
    },
    /// `[c, h, w] -> [c*h*w]` (a no-op on the C-major buffer).
    Flatten,
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x >= 0`, `slope * x` otherwise; `slope` is finite.
    LeakyRelu {
        /// Slope on the negative side.
        slope: f32,
    },
}

impl Op {
    /// Shape of the weight tensor (PyTorch layout) of a weight layer; `None` for the others.
    pub fn weight_shape(&self) -> Option<Vec<usize>> {
        match *self {
            Op::Dense { out, inp, .. } => Some(vec![out, inp]),
            Op::Conv {
                out, c_in, window, ..
            } => Some(vec![out, c_in, window.k, window.k]),
            Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::Flatten
            | Op::Relu
            | Op::LeakyRelu { .. } => None,
        }
    }

    /// Number of bias entries of a weight layer with a bias; `None` otherwise.
    pub fn bias_len(&self) -> Option<usize> {
        match *self {
            Op::Dense { out, bias, .. } | Op::Conv { out, bias, .. } => bias.then_some(out),
            Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::Flatten
            | Op::Relu
            | Op::LeakyRelu { .. } => None,
        }
    }

    /// True for dense and conv layers (the layers that hold parameters).
    pub fn has_weights(&self) -> bool {
        self.weight_shape().is_some()
    }
}

/// One layer inside a spec, resolved: its input and output shapes and the [`Op`] every pass
/// dispatches on (conv and pool windows live in the op).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerPlan {
    /// Index of the layer in [`ModelSpec::layers`].
    pub index: usize,
    /// The layer as the spec describes it (for messages; passes dispatch on `op`).
    pub layer: Layer,
    /// Input shape.
    pub input: Shape,
    /// Output shape.
    pub output: Shape,
    /// The layer resolved against its input shape: what passes dispatch on.
    pub op: Op,
}

impl LayerPlan {
    /// Shape of the weight tensor, PyTorch layout, for weight layers.
    pub fn weight_shape(&self) -> Option<Vec<usize>> {
        self.op.weight_shape()
    }
    /// Number of bias entries, for layers with a bias.
    pub fn bias_len(&self) -> Option<usize> {
        self.op.bias_len()
    }
}

impl ModelSpec {
    /// Checks every layer against the shape it receives.
    pub fn validate(&self) -> Result<()> {
        self.plan().map(|_| ())
    }

    /// Resolves shapes and windows of every layer.
    ///
    /// Every size is checked: shapes whose element count overflows are refused, and the
    /// plan is checked against [`crate::limits::LAYERS`], [`crate::limits::PARAM_BYTES`] and
    /// (for one example) [`crate::limits::ACTIVATION_BYTES`] before anything is allocated.
    pub fn plan(&self) -> Result<Vec<LayerPlan>> {
        crate::limits::LAYERS.check(self.layers.len() as u64, "the model spec")?;
        match self.input.checked_len() {
            None => {
                return Err(Error::Spec(format!(
                    "the input shape {}x{}x{} has more elements than fit in memory \
                     (the product overflows)",
                    self.input.c, self.input.h, self.input.w
                )));
            }
            Some(0) => return Err(Error::Spec("the input shape is empty".into())),
            Some(_) => {}
        }
        let mut shape = self.input;
        let mut plans = Vec::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            let ctx = |m: String| Error::Spec(format!("layer {index} ({}): {m}", layer.describe()));
            // Pools have no padding; the stride defaults to the window size.
            let pool_window = |size: usize, stride: Option<usize>| {
                Window::new(
                    size,
                    stride.unwrap_or(size),
                    Padding::Valid,
                    shape.h,
                    shape.w,
                )
                .map_err(|e| ctx(e.to_string()))
            };
            let (output, op) = match *layer {
                Layer::Dense { out, bias } => {
                    if !shape.is_flat() {
                        return Err(ctx(format!("needs a flat input, got {shape}; add flatten")));
                    }
                    if out == 0 {
                        return Err(ctx("zero outputs".into()));
                    }
                    let inp = shape.len();
                    (Shape::flat(out), Op::Dense { out, inp, bias })
                }
                Layer::Conv2d {
                    out,
                    kernel,
                    stride,
                    padding,
                    bias,
                } => {
                    if out == 0 {
                        return Err(ctx("zero output channels".into()));
                    }
                    let window = Window::new(kernel, stride, padding, shape.h, shape.w)
                        .map_err(|e| ctx(e.to_string()))?;
                    let op = Op::Conv {
                        out,
                        c_in: shape.c,
                        window,
                        bias,
                    };
                    (Shape::new(out, window.out_h, window.out_w), op)
                }
                Layer::MaxPool { size, stride } => {
                    let window = pool_window(size, stride)?;
                    let channels = shape.c;
                    let op = Op::MaxPool { window, channels };
                    (Shape::new(channels, window.out_h, window.out_w), op)
                }
                Layer::AvgPool { size, stride } => {
                    let window = pool_window(size, stride)?;
                    let channels = shape.c;
                    let op = Op::AvgPool { window, channels };
                    (Shape::new(channels, window.out_h, window.out_w), op)
                }
                Layer::Flatten => (Shape::flat(shape.len()), Op::Flatten),
                Layer::Relu => (shape, Op::Relu),
                Layer::LeakyRelu { slope } => {
                    if !slope.is_finite() {
                        return Err(ctx("slope must be finite".into()));
                    }
                    (shape, Op::LeakyRelu { slope })
                }
            };
            if output.checked_len().is_none() {
                return Err(ctx(format!(
                    "the output shape {}x{}x{} overflows",
                    output.c, output.h, output.w
                )));
            }
            plans.push(LayerPlan {
                index,
                layer: layer.clone(),
                input: shape,
                output,
                op,
            });
            shape = output;
        }
        if !shape.is_flat() {
            return Err(Error::Spec(format!(
                "the network output must be flat, got {shape}"
            )));
        }
        check_model(&plans)?;
        Ok(plans)
    }

    /// Number of network outputs (1 for a binary model, the class count otherwise).
    pub fn outputs(&self) -> Result<usize> {
        Ok(self
            .plan()?
            .last()
            .map_or(self.input.len(), |p| p.output.len()))
    }

    /// Total number of scalar parameters (bounded by [`crate::limits::PARAM_BYTES`]).
    pub fn num_params(&self) -> Result<usize> {
        let plan = self.plan()?;
        let n = Footprint::of(&plan)
            .params
            .ok_or_else(|| Error::Spec("the parameter count overflows".into()))?;
        usize::try_from(n).map_err(|_| Error::Spec("the parameter count overflows".into()))
    }
}

/// A model ready for every pass: a spec, its resolved plan, and parameters checked against it.
///
/// Invariant: [`Params::check`] succeeded for `(spec, params)` (every weight layer has the
/// shape its plan wants, every value is finite) and `plan` is `spec.plan()`. It is built once,
/// by [`CheckedModel::new`], and every pass (f32, f64, double-double, backward, IBP, CROWN,
/// attacks, Lipschitz) borrows it instead of checking and resolving again.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedModel {
    spec: ModelSpec,
    plan: Vec<LayerPlan>,
    params: Params,
}

impl CheckedModel {
    /// Resolves the plan of `spec` and checks `params` against it, and the activations of
    /// the certified passes (a chunk of [`crate::limits::CERTIFIED_CHUNK`] examples, balls of
    /// two f64) against [`crate::limits::ACTIVATION_BYTES`].
    pub fn new(spec: ModelSpec, params: Params) -> Result<Self> {
        params.check(&spec)?;
        let plan = spec.plan()?;
        check_batch(
            &plan,
            crate::limits::CERTIFIED_CHUNK as usize,
            crate::limits::CERTIFIED_VALUE_BYTES,
            "a certified pass",
        )?;
        Ok(Self { spec, plan, params })
    }

    /// The spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The resolved plan, one entry per layer of the spec.
    pub fn plan(&self) -> &[LayerPlan] {
        &self.plan
    }

    /// The checked parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The spec and the parameters, giving up the checked form.
    pub fn into_parts(self) -> (ModelSpec, Params) {
        (self.spec, self.params)
    }

    /// Each weight layer's plan with its parameters, in layer order.
    pub fn weight_layers(&self) -> impl Iterator<Item = (&LayerPlan, &LayerParams)> {
        self.plan
            .iter()
            .filter(|p| p.op.has_weights())
            .zip(&self.params.layers)
    }

    /// Number of network outputs.
    pub fn outputs(&self) -> usize {
        self.plan
            .last()
            .map_or(self.spec.input.len(), |p| p.output.len())
    }
}

/// What a resolved model needs, computed with checked arithmetic (`None`: overflows u64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Scalar parameters (weights and biases).
    pub params: Option<u64>,
    /// Activation values of one example: the input, every layer's output and each
    /// convolution's im2col columns.
    pub values_per_example: Option<u64>,
}

impl Footprint {
    /// The footprint of a resolved plan whose shapes are already known not to overflow
    /// `usize` (as [`crate::model::ModelSpec::plan`] ensures).
    pub fn of(plan: &[LayerPlan]) -> Self {
        let mut params = Some(0u64);
        let mut values = plan
            .first()
            .map_or(Some(0), |p| p.input.checked_len().map(|n| n as u64));
        for p in plan {
            let layer_params = p.op.weight_shape().map_or(Some(0u64), |s| {
                s.iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
                    .and_then(|w| w.checked_add(p.op.bias_len().unwrap_or(0) as u64))
            });
            params = params.zip(layer_params).and_then(|(a, b)| a.checked_add(b));
            let out = p.output.checked_len().map(|n| n as u64);
            let cols = match p.op {
                Op::Conv { c_in, window, .. } => (window.k as u64)
                    .checked_mul(window.k as u64)
                    .and_then(|x| x.checked_mul(c_in as u64))
                    .and_then(|x| x.checked_mul(window.out_h as u64))
                    .and_then(|x| x.checked_mul(window.out_w as u64)),
                _ => Some(0),
            };
            values = values
                .zip(out)
                .and_then(|(a, b)| a.checked_add(b))
                .zip(cols)
                .and_then(|(a, b)| a.checked_add(b));
        }
        Self {
            params,
            values_per_example: values,
        }
    }

    /// Bytes of the f32 parameters, `None` on overflow.
    pub fn param_bytes(&self) -> Option<u64> {
        self.params.and_then(|p| p.checked_mul(limits::F32_BYTES))
    }

    /// Bytes of the activations of `batch` examples at `value_bytes` bytes per value.
    pub fn activation_bytes(&self, batch: u64, value_bytes: u64) -> Option<u64> {
        self.values_per_example
            .and_then(|v| v.checked_mul(batch))
            .and_then(|v| v.checked_mul(value_bytes))
    }
}

/// Checks a resolved plan against [`limits::PARAM_BYTES`] and, for one f32 example,
/// against [`limits::ACTIVATION_BYTES`].
fn check_model(plan: &[LayerPlan]) -> Result<()> {
    let f = Footprint::of(plan);
    limits::check_amount(&limits::PARAM_BYTES, f.param_bytes(), "the model")?;
    limits::check_amount(
        &limits::ACTIVATION_BYTES,
        f.activation_bytes(1, limits::F32_BYTES),
        "one example through the model (f32)",
    )
}

/// Checks the activations of `batch` examples at `value_bytes` bytes per value against
/// [`limits::ACTIVATION_BYTES`]; `pass` names the pass in the message (e.g. "a training batch").
pub fn check_batch(plan: &[LayerPlan], batch: usize, value_bytes: u64, pass: &str) -> Result<()> {
    let f = Footprint::of(plan);
    limits::check_amount(
        &limits::ACTIVATION_BYTES,
        f.activation_bytes(batch as u64, value_bytes),
        format!("{pass} of {batch} example(s)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_fits_the_default_limits() {
        for name in crate::model::presets::NAMES {
            for input in [Shape::new(1, 28, 28), Shape::new(3, 32, 32)] {
                let Ok(spec) = crate::model::presets::by_name(name, input, 10) else {
                    continue;
                };
                let plan = spec.plan().unwrap();
                let f = Footprint::of(&plan);
                let (p, a) = (f.param_bytes().unwrap(), f.activation_bytes(1, 4).unwrap());
                assert!(p < limits::PARAM_BYTES.default / 8, "{name}: {p}");
                check_batch(&plan, 128, limits::CERTIFIED_VALUE_BYTES, "c").unwrap();
                check_batch(&plan, 1000, 4, "t").unwrap();
                check_batch(&plan, 128, 8, "t").unwrap();
                assert!(a > 0);
            }
        }
    }

    #[test]
    fn the_footprint_counts_params_outputs_and_columns() {
        let spec = ModelSpec {
            name: String::new(),
            input: Shape::new(2, 5, 5),
            layers: vec![
                Layer::conv(3, 3, 1, Padding::Valid, true),
                Layer::Relu,
                Layer::Flatten,
                Layer::dense(4, false),
            ],
        };
        let f = Footprint::of(&spec.plan().unwrap());
        // conv 3*2*3*3 + 3, dense 4*27.
        assert_eq!(f.params, Some(54 + 3 + 108));
        // input 50, conv out 27 + columns 9*2*9 = 162, relu 27, flatten 27, dense 4.
        assert_eq!(f.values_per_example, Some(50 + 27 + 162 + 27 + 27 + 4));
        assert_eq!(spec.num_params().unwrap(), 165);
    }

    #[test]
    fn same_padding_matches_tensorflow() {
        let w = Window::new(5, 1, Padding::Same, 28, 28).unwrap();
        assert_eq!((w.pad_top, w.out_h), (2, 28));
        let w = Window::new(3, 2, Padding::Same, 5, 5).unwrap();
        // TF: out = 3, total pad = (3-1)*2+3-5 = 2 -> top 1.
        assert_eq!((w.pad_top, w.out_h), (1, 3));
    }
}
