//! The structural homogeneity degree of a spec, with a reason per layer.

use serde::{Deserialize, Serialize};

use super::{Layer, ModelSpec};

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
}

#[cfg(test)]
mod tests {
    use crate::model::{Shape, presets};

    #[test]
    fn biases_break_homogeneity_except_first() {
        let s = presets::by_name("mnist-cnn-bias", Shape::new(1, 28, 28), 10).unwrap();
        let h = s.homogeneity();
        assert_eq!(h.degree, None);
        assert_eq!(h.offending_layer, Some(3));
        let s = presets::by_name("mnist-cnn-first-bias", Shape::new(1, 28, 28), 10).unwrap();
        assert_eq!(s.homogeneity().degree, Some(4));
    }
}
