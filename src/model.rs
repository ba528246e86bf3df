//! Model specifications, parameter stores and the structural homogeneity degree.
//!
//! A [`ModelSpec`] is a sequential network: an input shape and a list of [`Layer`]s. It is
//! shared by the fast f32 path ([`crate::nn`]) and the certified path ([`crate::certify`]);
//! the two share the spec and the layer list, never their arithmetic.
//!
//! Layer indices follow PyTorch's `nn.Sequential` convention: every entry of
//! [`ModelSpec::layers`] (activations, pools and flatten included) has an index, and the
//! parameters of weight layer `i` are named `"{i}.weight"` and `"{i}.bias"` — exactly the
//! keys of the `state_dict` of the equivalent `nn.Sequential`. Weight layouts are PyTorch's:
//! dense `[out, in]`, conv `[out, in, kh, kw]`. Activations are stored `[C, H, W]` per example
//! and flatten walks them in that (C-major) order.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::{Error, Result};

/// Shape of one example's activation: channels, height, width. A flat vector of length
/// `n` is `[n, 1, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Shape {
    /// A `[c, h, w]` shape.
    pub const fn new(c: usize, h: usize, w: usize) -> Self {
        Self { c, h, w }
    }
    /// A flat vector of length `n`.
    pub const fn flat(n: usize) -> Self {
        Self { c: n, h: 1, w: 1 }
    }
    /// Number of scalars.
    pub const fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    /// True when the shape holds no scalar.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// True for `[n, 1, 1]`.
    pub const fn is_flat(&self) -> bool {
        self.h == 1 && self.w == 1
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_flat() {
            write!(f, "[{}]", self.c)
        } else {
            write!(f, "[{}, {}, {}]", self.c, self.h, self.w)
        }
    }
}

/// Spatial padding of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// No padding.
    Valid,
    /// TensorFlow's `SAME`: output size `ceil(in / stride)`, padding split with the extra
    /// row/column at the bottom/right.
    Same,
    /// The same number of zero rows/columns on every side (PyTorch's `padding=p`).
    Explicit(usize),
}

/// One layer of a sequential network.
///
/// Invariant (checked by [`ModelSpec::validate`]): every kernel, stride and pool size is
/// at least 1, LeakyReLU slopes are finite, and every layer fits the shape it receives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Layer {
    /// Fully connected `y = W x (+ b)`, `W: [out, in]`. Needs a flat input.
    Dense {
        /// Output features.
        out: usize,
        /// Whether the layer has a bias.
        #[serde(default)]
        bias: bool,
    },
    /// 2-D cross-correlation, `W: [out, in, k, k]` (square kernels).
    Conv2d {
        /// Output channels.
        out: usize,
        /// Kernel height and width.
        kernel: usize,
        /// Stride (both directions).
        #[serde(default = "one")]
        stride: usize,
        /// Zero padding.
        #[serde(default = "valid")]
        padding: Padding,
        /// Whether the layer has a bias (one per output channel).
        #[serde(default)]
        bias: bool,
    },
    /// Max-pooling over `size x size` windows (no padding; trailing rows dropped).
    MaxPool {
        /// Window size.
        size: usize,
        /// Stride; defaults to the window size.
        #[serde(default)]
        stride: Option<usize>,
    },
    /// Average-pooling over `size x size` windows (no padding; trailing rows dropped).
    AvgPool {
        /// Window size.
        size: usize,
        /// Stride; defaults to the window size.
        #[serde(default)]
        stride: Option<usize>,
    },
    /// `[c, h, w] -> [c*h*w]`, C-major.
    Flatten,
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x >= 0`, `slope * x` otherwise.
    LeakyRelu {
        /// Slope on the negative side.
        slope: f32,
    },
}

fn one() -> usize {
    1
}
fn valid() -> Padding {
    Padding::Valid
}

impl Layer {
    /// A 2-D convolution layer.
    pub const fn conv(
        out: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
        bias: bool,
    ) -> Self {
        Layer::Conv2d {
            out,
            kernel,
            stride,
            padding,
            bias,
        }
    }

    /// A dense layer.
    pub const fn dense(out: usize, bias: bool) -> Self {
        Layer::Dense { out, bias }
    }

    /// Short human name, e.g. `conv2d 5x5x32`.
    pub fn describe(&self) -> String {
        match self {
            Layer::Dense { out, bias } => format!("dense {out}{}", bias_tag(*bias)),
            Layer::Conv2d {
                out,
                kernel,
                stride,
                padding,
                bias,
            } => format!(
                "conv2d {kernel}x{kernel}x{out} stride {stride} {padding:?}{}",
                bias_tag(*bias)
            ),
            Layer::MaxPool { size, stride } => {
                format!("maxpool {size}x{size}/{}", stride.unwrap_or(*size))
            }
            Layer::AvgPool { size, stride } => {
                format!("avgpool {size}x{size}/{}", stride.unwrap_or(*size))
            }
            Layer::Flatten => "flatten".into(),
            Layer::Relu => "relu".into(),
            Layer::LeakyRelu { slope } => format!("leaky_relu {slope}"),
        }
    }

    /// True for dense and conv layers (the layers that hold parameters).
    pub fn has_weights(&self) -> bool {
        matches!(self, Layer::Dense { .. } | Layer::Conv2d { .. })
    }

    /// Whether this weight layer has a bias (false for parameter-free layers).
    pub fn has_bias(&self) -> bool {
        matches!(
            self,
            Layer::Dense { bias: true, .. } | Layer::Conv2d { bias: true, .. }
        )
    }
}

fn bias_tag(b: bool) -> &'static str {
    if b { " +bias" } else { "" }
}

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
    pub fn new(k: usize, s: usize, p: Padding, h: usize, w: usize) -> Result<Self> {
        if k == 0 || s == 0 {
            return Err(Error::Spec("kernel and stride must be at least 1".into()));
        }
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
                if h + 2 * p < k || w + 2 * p < k {
                    return Err(Error::Spec(format!(
                        "a {k}x{k} window does not fit a {h}x{w} input padded by {p}"
                    )));
                }
                (p, p, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1)
            }
            Padding::Same => {
                let oh = h.div_ceil(s);
                let ow = w.div_ceil(s);
                let ph = ((oh - 1) * s + k).saturating_sub(h);
                let pw = ((ow - 1) * s + k).saturating_sub(w);
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
            Op::MaxPool { .. } | Op::AvgPool { .. } | Op::Flatten | Op::Relu | Op::LeakyRelu { .. } => {
                None
            }
        }
    }

    /// Number of bias entries of a weight layer with a bias; `None` otherwise.
    pub fn bias_len(&self) -> Option<usize> {
        match *self {
            Op::Dense { out, bias, .. } | Op::Conv { out, bias, .. } => bias.then_some(out),
            Op::MaxPool { .. } | Op::AvgPool { .. } | Op::Flatten | Op::Relu | Op::LeakyRelu { .. } => {
                None
            }
        }
    }

    /// True for dense and conv layers (the layers that hold parameters).
    pub fn has_weights(&self) -> bool {
        self.weight_shape().is_some()
    }
}

/// A sequential network: input shape and layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Optional human name (presets set it).
    #[serde(default)]
    pub name: String,
    /// Shape of one input example.
    pub input: Shape,
    /// The layers, in order. Indices are `nn.Sequential` indices.
    pub layers: Vec<Layer>,
}

/// The resolved geometry of one layer inside a spec: its input and output shapes and, for
/// conv and pool layers, the window.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerPlan {
    /// Index of the layer in [`ModelSpec::layers`].
    pub index: usize,
    /// The layer.
    pub layer: Layer,
    /// Input shape.
    pub input: Shape,
    /// Output shape.
    pub output: Shape,
    /// Window geometry for conv and pool layers (also inside [`LayerPlan::op`]).
    pub window: Option<Window>,
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

/// Why a spec is or is not homogeneous, layer by layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Homogeneity {
    /// `Some(L)` when the network output is positively L-homogeneous in the parameters.
    pub degree: Option<u32>,
    /// One line per layer: what it does to the degree and why.
    pub reasons: Vec<String>,
    /// Index of the first layer that breaks homogeneity, if any.
    pub offending_layer: Option<usize>,
}

impl ModelSpec {
    /// Parses a spec from JSON or TOML text (chosen by the first non-blank character:
    /// `{` means JSON).
    pub fn parse(text: &str) -> Result<Self> {
        let spec: ModelSpec = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| Error::Spec(format!("invalid JSON spec: {e}")))?
        } else {
            toml::from_str(text).map_err(|e| Error::Spec(format!("invalid TOML spec: {e}")))?
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Reads a spec file (`.json` or `.toml`).
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text)
    }

    /// JSON text of the spec.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a spec always serializes")
    }

    /// Checks every layer against the shape it receives.
    pub fn validate(&self) -> Result<()> {
        self.plan().map(|_| ())
    }

    /// Resolves shapes and windows of every layer.
    pub fn plan(&self) -> Result<Vec<LayerPlan>> {
        if self.input.is_empty() {
            return Err(Error::Spec("the input shape is empty".into()));
        }
        let mut shape = self.input;
        let mut plans = Vec::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            let ctx = |m: String| Error::Spec(format!("layer {index} ({}): {m}", layer.describe()));
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
                Layer::MaxPool { size, stride } | Layer::AvgPool { size, stride } => {
                    let window = Window::new(
                        size,
                        stride.unwrap_or(size),
                        Padding::Valid,
                        shape.h,
                        shape.w,
                    )
                    .map_err(|e| ctx(e.to_string()))?;
                    let channels = shape.c;
                    let op = if matches!(layer, Layer::MaxPool { .. }) {
                        Op::MaxPool { window, channels }
                    } else {
                        Op::AvgPool { window, channels }
                    };
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
            let window = match op {
                Op::Conv { window, .. } | Op::MaxPool { window, .. } | Op::AvgPool { window, .. } => {
                    Some(window)
                }
                Op::Dense { .. } | Op::Flatten | Op::Relu | Op::LeakyRelu { .. } => None,
            };
            plans.push(LayerPlan {
                index,
                layer: layer.clone(),
                input: shape,
                output,
                window,
                op,
            });
            shape = output;
        }
        if !shape.is_flat() {
            return Err(Error::Spec(format!(
                "the network output must be flat, got {shape}"
            )));
        }
        Ok(plans)
    }

    /// Number of network outputs (1 for a binary model, the class count otherwise).
    pub fn outputs(&self) -> Result<usize> {
        Ok(self
            .plan()?
            .last()
            .map_or(self.input.len(), |p| p.output.len()))
    }

    /// Number of weight layers (dense and conv).
    pub fn weight_layers(&self) -> usize {
        self.layers.iter().filter(|l| l.has_weights()).count()
    }

    /// The structural homogeneity degree.
    ///
    /// Dense and conv layers without bias add one to the degree; ReLU, LeakyReLU, max-pool,
    /// avg-pool and flatten keep it (they are positively 1-homogeneous in their input). A bias
    /// in the first weight layer keeps homogeneity when no nonlinearity precedes it: it is a
    /// weight on a constant input 1, so `W1 x + b1 = [W1 b1][x; 1]`. A bias in any later
    /// layer adds a degree-0 term to a degree-k signal and breaks homogeneity.
    pub fn homogeneity(&self) -> Homogeneity {
        let mut reasons = Vec::new();
        let mut degree = 0u32;
        let mut seen_weight = false;
        for (i, layer) in self.layers.iter().enumerate() {
            let d = layer.describe();
            match layer {
                Layer::Dense { bias, .. } | Layer::Conv2d { bias, .. } => {
                    if *bias && seen_weight {
                        reasons.push(format!(
                            "layer {i} ({d}): the bias adds a degree-0 term to a degree-{degree} \
                             signal, so the output is not homogeneous"
                        ));
                        return Homogeneity {
                            degree: None,
                            reasons,
                            offending_layer: Some(i),
                        };
                    }
                    degree += 1;
                    let why = if *bias {
                        "linear in (weight, bias) jointly: the bias is a weight on a constant input 1"
                    } else {
                        "linear in its weights and in its input"
                    };
                    reasons.push(format!("layer {i} ({d}): degree +1, {why}; now {degree}"));
                    seen_weight = true;
                }
                Layer::Relu | Layer::LeakyRelu { .. } => reasons.push(format!(
                    "layer {i} ({d}): keeps the degree (positively 1-homogeneous)"
                )),
                Layer::MaxPool { .. } => reasons.push(format!(
                    "layer {i} ({d}): keeps the degree (max of positively scaled inputs)"
                )),
                Layer::AvgPool { .. } | Layer::Flatten => {
                    reasons.push(format!("layer {i} ({d}): keeps the degree (linear)"))
                }
            }
        }
        if degree == 0 {
            reasons.push("no weight layer: the output does not depend on the parameters".into());
            return Homogeneity {
                degree: None,
                reasons,
                offending_layer: None,
            };
        }
        Homogeneity {
            degree: Some(degree),
            reasons,
            offending_layer: None,
        }
    }

    /// Total number of scalar parameters.
    pub fn num_params(&self) -> Result<usize> {
        Ok(self
            .plan()?
            .iter()
            .map(|p| p.weight_shape().map_or(0, |s| s.iter().product()) + p.bias_len().unwrap_or(0))
            .sum())
    }
}

/// Ready-made specs from the paper and for tests.
pub mod presets {
    use super::*;

    /// Names accepted by [`by_name`].
    pub const NAMES: &[&str] = &[
        "mnist-cnn",
        "mnist-cnn-bias",
        "mnist-cnn-first-bias",
        "cifar-vgg",
        "mlp",
        "small-mlp",
        "linear",
    ];

    /// A CNN of the paper's shape with chosen widths: conv 5x5x`widths[0]` SAME + ReLU,
    /// maxpool 2, conv 3x3x`widths[1]` SAME + ReLU, maxpool 2, flatten, dense `widths[2]` +
    /// ReLU, dense `classes`; `biases` per weight layer.
    pub fn paper_cnn_shape(
        input: Shape,
        widths: [usize; 3],
        classes: usize,
        biases: [bool; 4],
    ) -> ModelSpec {
        let conv = |out, kernel, bias| Layer::conv(out, kernel, 1, Padding::Same, bias);
        let pool = Layer::MaxPool {
            size: 2,
            stride: None,
        };
        ModelSpec {
            name: "mnist-cnn".into(),
            input,
            layers: vec![
                conv(widths[0], 5, biases[0]),
                Layer::Relu,
                pool.clone(),
                conv(widths[1], 3, biases[1]),
                Layer::Relu,
                pool,
                Layer::Flatten,
                Layer::Dense {
                    out: widths[2],
                    bias: biases[2],
                },
                Layer::Relu,
                Layer::Dense {
                    out: classes,
                    bias: biases[3],
                },
            ],
        }
    }

    /// The paper's MNIST CNN (L = 4), `bias` chosen per layer: conv 5x5x32 SAME + ReLU,
    /// maxpool 2, conv 3x3x64 SAME + ReLU, maxpool 2, flatten, dense 1024 + ReLU, dense 10.
    pub fn mnist_cnn_with(biases: [bool; 4], classes: usize, input: Shape) -> ModelSpec {
        paper_cnn_shape(input, [32, 64, 1024], classes, biases)
    }

    /// The paper's bias-free MNIST CNN (homogeneous, L = 4).
    pub fn mnist_cnn() -> ModelSpec {
        mnist_cnn_with([false; 4], 10, Shape::new(1, 28, 28))
    }

    /// The paper's CIFAR-10 VGG-16 variant (L = 14, no bias, no batch-norm).
    pub fn cifar_vgg() -> ModelSpec {
        let mut layers = Vec::new();
        for block in [
            &[64, 64][..],
            &[128, 128],
            &[256, 256, 256],
            &[512, 512, 512],
            &[512, 512, 512],
        ] {
            for &out in block {
                layers.push(Layer::Conv2d {
                    out,
                    kernel: 3,
                    stride: 1,
                    padding: Padding::Same,
                    bias: false,
                });
                layers.push(Layer::Relu);
            }
            layers.push(Layer::MaxPool {
                size: 2,
                stride: None,
            });
        }
        layers.push(Layer::Flatten);
        layers.push(Layer::Dense {
            out: 10,
            bias: false,
        });
        ModelSpec {
            name: "cifar-vgg".into(),
            input: Shape::new(3, 32, 32),
            layers,
        }
    }

    /// A bias-free ReLU MLP `input -> hidden... -> outputs`.
    pub fn mlp_with(input: Shape, hidden: &[usize], outputs: usize) -> ModelSpec {
        let mut layers = vec![Layer::Flatten];
        for &h in hidden {
            layers.push(Layer::Dense {
                out: h,
                bias: false,
            });
            layers.push(Layer::Relu);
        }
        layers.push(Layer::Dense {
            out: outputs,
            bias: false,
        });
        ModelSpec {
            name: "mlp".into(),
            input,
            layers,
        }
    }

    /// The anchor's bias-free MLP 784-1000-1000-10.
    pub fn mlp() -> ModelSpec {
        mlp_with(Shape::new(1, 28, 28), &[1000, 1000], 10)
    }

    /// Looks a preset up by name. `classes` sets the output count (1 for a binary task).
    pub fn by_name(name: &str, input: Shape, classes: usize) -> Result<ModelSpec> {
        let mut spec = match name {
            "mnist-cnn" => mnist_cnn_with([false; 4], classes, input),
            "mnist-cnn-bias" => mnist_cnn_with([true; 4], classes, input),
            "mnist-cnn-first-bias" => mnist_cnn_with([true, false, false, false], classes, input),
            "cifar-vgg" => {
                let mut s = cifar_vgg();
                s.input = input;
                if let Some(Layer::Dense { out, .. }) = s.layers.last_mut() {
                    *out = classes;
                }
                s
            }
            "mlp" => mlp_with(input, &[1000, 1000], classes),
            "small-mlp" => mlp_with(input, &[100], classes),
            "linear" => mlp_with(input, &[], classes),
            other => {
                return Err(Error::Spec(format!(
                    "unknown preset '{other}'; known presets: {}",
                    NAMES.join(", ")
                )));
            }
        };
        spec.name = name.to_string();
        spec.validate()?;
        Ok(spec)
    }
}

/// The parameters of one weight layer, PyTorch layout, f32.
///
/// Invariant: `weight.len()` is the product of `weight_shape`, and `bias`, when present,
/// has one entry per output.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerParams {
    /// Index of the layer in the spec.
    pub index: usize,
    /// Weight shape: `[out, in]` or `[out, in, k, k]`.
    pub weight_shape: Vec<usize>,
    /// Weights, row-major in `weight_shape`.
    pub weight: Vec<f32>,
    /// Bias, one per output, if the layer has one.
    pub bias: Option<Vec<f32>>,
}

impl LayerParams {
    /// Number of outputs (rows of the weight).
    pub fn out(&self) -> usize {
        self.weight_shape[0]
    }
    /// Fan-in: number of weights per output.
    pub fn fan_in(&self) -> usize {
        self.weight_shape[1..].iter().product()
    }
    /// Squared Frobenius norm of weight and bias, in f64 (an estimate, not a bound).
    pub fn sq_norm(&self) -> f64 {
        let w: f64 = self.weight.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let b: f64 = self
            .bias
            .iter()
            .flatten()
            .map(|&v| (v as f64) * (v as f64))
            .sum();
        w + b
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
    /// Resolves the plan of `spec` and checks `params` against it.
    pub fn new(spec: ModelSpec, params: Params) -> Result<Self> {
        params.check(&spec)?;
        let plan = spec.plan()?;
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

/// All parameters of a network: one [`LayerParams`] per weight layer, in layer order.
///
/// Invariant: matches the spec it was made for (shapes checked by [`Params::check`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Per weight layer, in order.
    pub layers: Vec<LayerParams>,
}

impl Params {
    /// He-normal initialisation as in the paper's code (TensorFlow 1 `he_normal`: a normal
    /// of standard deviation `sqrt(2 / fan_in) / 0.8796…` truncated at two standard
    /// deviations), biases zero. Deterministic in `seed`.
    pub fn he_normal(spec: &ModelSpec, seed: u64) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let plans = spec.plan()?;
        let mut layers = Vec::new();
        for p in plans.iter() {
            let Some(shape) = p.weight_shape() else {
                continue;
            };
            let n: usize = shape.iter().product();
            let fan_in: usize = shape[1..].iter().product();
            let std = (2.0 / fan_in as f64).sqrt() / 0.879_625_661_034_239_8;
            let normal = Normal::new(0.0, std).expect("std is finite and positive");
            let weight = (0..n)
                .map(|_| {
                    loop {
                        let v: f64 = normal.sample(&mut rng);
                        if v.abs() <= 2.0 * std {
                            break v as f32;
                        }
                    }
                })
                .collect();
            layers.push(LayerParams {
                index: p.index,
                weight_shape: shape,
                weight,
                bias: p.bias_len().map(|b| vec![0.0; b]),
            });
        }
        Ok(Self { layers })
    }

    /// All-zero parameters of the right shapes (gradient accumulators).
    pub fn zeros_like(&self) -> Self {
        Self {
            layers: self
                .layers
                .iter()
                .map(|l| LayerParams {
                    index: l.index,
                    weight_shape: l.weight_shape.clone(),
                    weight: vec![0.0; l.weight.len()],
                    bias: l.bias.as_ref().map(|b| vec![0.0; b.len()]),
                })
                .collect(),
        }
    }

    /// Checks shapes against `spec` and that every value is finite.
    pub fn check(&self, spec: &ModelSpec) -> Result<()> {
        let plans: Vec<_> = spec
            .plan()?
            .into_iter()
            .filter(|p| p.layer.has_weights())
            .collect();
        if plans.len() != self.layers.len() {
            return Err(Error::Shape(format!(
                "the spec has {} weight layers, the parameters {}",
                plans.len(),
                self.layers.len()
            )));
        }
        for (p, l) in plans.iter().zip(&self.layers) {
            let want = p.weight_shape().expect("weight layer");
            if p.index != l.index || want != l.weight_shape {
                return Err(Error::Shape(format!(
                    "layer {}: the spec wants weight {}.weight of shape {:?}, found {}.weight of shape {:?}",
                    p.index, p.index, want, l.index, l.weight_shape
                )));
            }
            if l.weight.len() != want.iter().product::<usize>() {
                return Err(Error::Shape(format!(
                    "layer {}: weight has {} values for shape {:?}",
                    p.index,
                    l.weight.len(),
                    want
                )));
            }
            match (p.bias_len(), &l.bias) {
                (None, None) => {}
                (Some(n), Some(b)) if b.len() == n => {}
                (want, got) => {
                    return Err(Error::Shape(format!(
                        "layer {}: the spec wants a bias of length {:?}, found {:?}",
                        p.index,
                        want,
                        got.as_ref().map(|b| b.len())
                    )));
                }
            }
            let bad = l
                .weight
                .iter()
                .chain(l.bias.iter().flatten())
                .position(|v| !v.is_finite());
            if let Some(pos) = bad {
                return Err(Error::NonFinite(format!(
                    "layer {}: parameter {pos} is not finite",
                    p.index
                )));
            }
        }
        Ok(())
    }

    /// Frobenius norm of each weight layer (weight and bias together), f64 estimates.
    pub fn layer_norms(&self) -> Vec<f64> {
        self.layers.iter().map(|l| l.sq_norm().sqrt()).collect()
    }

    /// `rho = ||theta||_2`, f64 estimate.
    pub fn norm(&self) -> f64 {
        self.layers
            .iter()
            .map(LayerParams::sq_norm)
            .sum::<f64>()
            .sqrt()
    }

    /// Iterates over every scalar parameter mutably (weights then bias, layer by layer).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut f32> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.weight.iter_mut().chain(l.bias.iter_mut().flatten()))
    }

    /// Iterates over every scalar parameter (weights then bias, layer by layer).
    pub fn values(&self) -> impl Iterator<Item = &f32> {
        self.layers
            .iter()
            .flat_map(|l| l.weight.iter().chain(l.bias.iter().flatten()))
    }

    /// Number of scalars.
    pub fn len(&self) -> usize {
        self.values().count()
    }

    /// True when there is no parameter.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_cnn_shapes_and_degree() {
        let s = presets::mnist_cnn();
        let plan = s.plan().unwrap();
        assert_eq!(plan[6].output, Shape::flat(3136));
        assert_eq!(s.outputs().unwrap(), 10);
        assert_eq!(s.homogeneity().degree, Some(4));
        let n = s.num_params().unwrap();
        assert_eq!(n, 32 * 25 + 64 * 32 * 9 + 3136 * 1024 + 1024 * 10);
    }

    #[test]
    fn biases_break_homogeneity_except_first() {
        let s = presets::by_name("mnist-cnn-bias", Shape::new(1, 28, 28), 10).unwrap();
        let h = s.homogeneity();
        assert_eq!(h.degree, None);
        assert_eq!(h.offending_layer, Some(3));
        let s = presets::by_name("mnist-cnn-first-bias", Shape::new(1, 28, 28), 10).unwrap();
        assert_eq!(s.homogeneity().degree, Some(4));
    }

    #[test]
    fn vgg_degree_and_shape() {
        let s = presets::cifar_vgg();
        assert_eq!(s.homogeneity().degree, Some(14));
        assert_eq!(s.plan().unwrap().last().unwrap().input, Shape::flat(512));
    }

    #[test]
    fn spec_round_trips_json_and_toml() {
        let s = presets::mnist_cnn();
        assert_eq!(ModelSpec::parse(&s.to_json()).unwrap(), s);
        let t = toml::to_string(&s).unwrap();
        assert_eq!(ModelSpec::parse(&t).unwrap(), s);
    }

    #[test]
    fn bad_specs_are_errors() {
        assert!(
            ModelSpec::parse(
                "{\"input\":{\"c\":1,\"h\":4,\"w\":4},\"layers\":[{\"type\":\"dense\",\"out\":3}]}"
            )
            .is_err()
        );
        assert!(
            ModelSpec::parse(
                "{\"input\":{\"c\":1,\"h\":4,\"w\":4},\"layers\":[{\"type\":\"softmax\"}]}"
            )
            .is_err()
        );
        assert!(ModelSpec::parse("{\"input\":{\"c\":1,\"h\":2,\"w\":2},\"layers\":[{\"type\":\"conv2d\",\"out\":3,\"kernel\":3},{\"type\":\"flatten\"}]}").is_err());
    }

    #[test]
    fn same_padding_matches_tensorflow() {
        let w = Window::new(5, 1, Padding::Same, 28, 28).unwrap();
        assert_eq!((w.pad_top, w.out_h), (2, 28));
        let w = Window::new(3, 2, Padding::Same, 5, 5).unwrap();
        // TF: out = 3, total pad = (3-1)*2+3-5 = 2 -> top 1.
        assert_eq!((w.pad_top, w.out_h), (1, 3));
    }

    #[test]
    fn he_normal_is_deterministic_and_scaled() {
        let s = presets::mlp();
        let a = Params::he_normal(&s, 7).unwrap();
        let b = Params::he_normal(&s, 7).unwrap();
        assert_eq!(a, b);
        a.check(&s).unwrap();
        let l0 = &a.layers[0];
        let var = l0.sq_norm() / l0.weight.len() as f64;
        // Truncated at 2 sd, the variance of the TF he_normal is exactly 2 / fan_in.
        assert!((var * 784.0 / 2.0 - 1.0).abs() < 0.02, "{var}");
    }

    #[test]
    fn check_rejects_nan_and_shape() {
        let s = presets::mlp_with(Shape::flat(3), &[2], 2);
        let mut p = Params::he_normal(&s, 1).unwrap();
        p.layers[1].weight[0] = f32::NAN;
        assert!(matches!(p.check(&s), Err(Error::NonFinite(_))));
        p.layers[1].weight.pop();
        assert!(matches!(p.check(&s), Err(Error::Shape(_))));
    }
}
