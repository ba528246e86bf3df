//! Parameter stores: [`LayerParams`] (one weight layer) and [`Params`] (a whole network),
//! He-normal initialisation and the shape/finiteness check against a spec.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::{LayerPlan, ModelSpec};
use crate::error::{Error, Result};

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
        let plan = spec.plan()?;
        for (p, want, l) in self.weight_layers_of(&plan)? {
            check_layer_shape(p, want, l)?;
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

    /// Checks shapes only (not finiteness) against a resolved `plan` (all layers of a spec, as
    /// [`ModelSpec::plan`] returns them): the part of [`Params::check`] a hot loop that has
    /// already resolved its plan repeats on every call.
    pub fn check_shapes(&self, plan: &[LayerPlan]) -> Result<()> {
        for (p, want, l) in self.weight_layers_of(plan)? {
            check_layer_shape(p, want, l)?;
        }
        Ok(())
    }

    /// Pairs each weight layer of `plan` (with the weight shape it wants) with its parameters;
    /// an error when the counts differ.
    #[allow(clippy::type_complexity)]
    fn weight_layers_of<'a>(
        &'a self,
        plan: &'a [LayerPlan],
    ) -> Result<Vec<(&'a LayerPlan, Vec<usize>, &'a LayerParams)>> {
        let plans: Vec<_> = plan
            .iter()
            .filter_map(|p| p.weight_shape().map(|w| (p, w)))
            .collect();
        if plans.len() != self.layers.len() {
            return Err(Error::Shape(format!(
                "the spec has {} weight layers, the parameters {}",
                plans.len(),
                self.layers.len()
            )));
        }
        Ok(plans
            .into_iter()
            .zip(&self.layers)
            .map(|((p, w), l)| (p, w, l))
            .collect())
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

/// Checks that `l` has the index, weight shape `want` and bias length that plan `p` wants.
fn check_layer_shape(p: &LayerPlan, want: Vec<usize>, l: &LayerParams) -> Result<()> {
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
        (None, None) => Ok(()),
        (Some(n), Some(b)) if b.len() == n => Ok(()),
        (want, got) => Err(Error::Shape(format!(
            "layer {}: the spec wants a bias of length {:?}, found {:?}",
            p.index,
            want,
            got.as_ref().map(|b| b.len())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Shape, presets};

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
