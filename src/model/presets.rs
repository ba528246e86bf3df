//! Ready-made specs from the paper and for tests.

use super::{Layer, ModelSpec, Padding, Shape};
use crate::error::{Error, Result};

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

/// The input shape preset `name` was designed for: 3×32×32 (CIFAR-10) for `cifar-vgg`,
/// 1×28×28 (MNIST) for the others; `None` for an unknown name.
pub fn natural_input(name: &str) -> Option<Shape> {
    match name {
        "cifar-vgg" => Some(Shape::new(3, 32, 32)),
        n if NAMES.contains(&n) => Some(Shape::new(1, 28, 28)),
        _ => None,
    }
}

/// [`by_name`] on the preset's [`natural_input`] with 10 classes (what `inspect` shows).
pub fn by_name_natural(name: &str) -> Result<ModelSpec> {
    let input = natural_input(name).ok_or_else(|| {
        Error::Spec(format!(
            "unknown preset '{name}'; known presets: {}",
            NAMES.join(", ")
        ))
    })?;
    by_name(name, input, 10)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every preset builds on its natural input (`inspect cifar-vgg` once failed: the VGG was
    /// built on the MNIST shape, where its fifth pool does not fit).
    #[test]
    fn every_preset_builds_on_its_natural_input() {
        for name in NAMES {
            let spec = by_name_natural(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(spec.plan().is_ok(), "{name}");
        }
        assert_eq!(natural_input("cifar-vgg"), Some(Shape::new(3, 32, 32)));
        assert!(by_name_natural("nope").is_err());
    }
    use crate::model::presets;

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
    fn vgg_degree_and_shape() {
        let s = presets::cifar_vgg();
        assert_eq!(s.homogeneity().degree, Some(14));
        assert_eq!(s.plan().unwrap().last().unwrap().input, Shape::flat(512));
    }
}
