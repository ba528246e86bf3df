//! margincert: train homogeneous networks fast in f32, and certify their margins soundly.
//!
//! The path data takes: [`data`] → [`model`] spec + [`model::Params`] → [`train`] (with the
//! f32 kernels of [`nn`] and the losses of [`loss`]), run on disk by [`run`] → [`checkpoint`]
//! → [`certify`] → certificate. The certified path shares the model spec with the f32 path,
//! never its arithmetic. [`io`] (atomic writes, hashes, gzip) is the lowest layer.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod audit;
pub mod certify;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod fetch;
pub mod import;
pub mod io;
pub mod limits;
pub mod linalg;
pub mod loss;
pub mod model;
pub mod nn;
pub mod report;
pub mod reproduce;
pub mod robust;
pub mod run;
pub mod train;

pub use error::{Error, Result};
