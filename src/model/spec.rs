//! The user-facing description of a network: [`Shape`], [`Padding`], [`Layer`] and
//! [`ModelSpec`] (parsing, serialization). Resolving a spec against its input shape lives in
//! [`super::plan`].

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::{Error, Result};

/// Shape of one example's activation: channels, height, width. A flat vector of length
/// `n` is `[n, 1, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Number of scalars. For a shape from a file, call [`Shape::checked_len`] first (a
    /// resolved plan guarantees it for every shape in it): the product may overflow.
    pub const fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    /// Number of scalars, `None` when `c * h * w` overflows `usize`.
    pub const fn checked_len(&self) -> Option<usize> {
        match self.c.checked_mul(self.h) {
            Some(ch) => ch.checked_mul(self.w),
            None => None,
        }
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
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
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
        match self {
            Layer::Dense { .. } | Layer::Conv2d { .. } => true,
            Layer::MaxPool { .. }
            | Layer::AvgPool { .. }
            | Layer::Flatten
            | Layer::Relu
            | Layer::LeakyRelu { .. } => false,
        }
    }

    /// Whether this weight layer has a bias (false for parameter-free layers).
    pub fn has_bias(&self) -> bool {
        match *self {
            Layer::Dense { bias, .. } | Layer::Conv2d { bias, .. } => bias,
            Layer::MaxPool { .. }
            | Layer::AvgPool { .. }
            | Layer::Flatten
            | Layer::Relu
            | Layer::LeakyRelu { .. } => false,
        }
    }
}

fn bias_tag(b: bool) -> &'static str {
    if b { " +bias" } else { "" }
}

/// A sequential network: input shape and layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Optional human name (presets set it).
    #[serde(default)]
    pub name: String,
    /// Shape of one input example.
    pub input: Shape,
    /// The layers, in order. Indices are `nn.Sequential` indices.
    pub layers: Vec<Layer>,
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

    /// Reads a spec file (`.json` or `.toml`), at most [`crate::limits::TEXT_BYTES`].
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = crate::io::read_text_limited(path, &crate::limits::TEXT_BYTES)?;
        Self::parse(&text)
    }

    /// JSON text of the spec.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a spec always serializes")
    }

    /// Number of weight layers (dense and conv).
    pub fn weight_layers(&self) -> usize {
        self.layers.iter().filter(|l| l.has_weights()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::presets;

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
}
