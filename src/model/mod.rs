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
//!
//! - `spec`: the description ([`Shape`], [`Padding`], [`Layer`], [`ModelSpec`]:
//!   parse, validate, JSON);
//! - `plan`: the spec resolved against its input ([`Window`], [`Op`], [`LayerPlan`],
//!   [`ModelSpec::plan`]) and [`CheckedModel`] (spec, plan and parameters checked once);
//! - `homogeneity`: [`Homogeneity`], [`ModelSpec::homogeneity`];
//! - `params`: [`LayerParams`], [`Params`] (He-normal initialisation, checks);
//! - [`presets`]: the paper's networks and small test nets.

mod homogeneity;
mod params;
mod plan;
pub mod presets;
mod spec;

pub use homogeneity::Homogeneity;
pub use params::{LayerParams, Params};
pub use plan::{CheckedModel, Footprint, LayerPlan, Op, Window, check_batch};
pub use spec::{Layer, ModelSpec, Padding, Shape};
