//! Helpers shared by the integration tests (`tests/suite`): one definition each.

pub mod cli;
pub mod data;
pub mod exact;
pub mod nets;
pub mod onnx;
pub mod runs;
