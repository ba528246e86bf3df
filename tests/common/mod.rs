//! Helpers shared by the integration tests (`tests/suite`): one definition each.
// Not every helper is used by every configuration of the suite.
#![allow(dead_code)]

pub mod cli;
pub mod data;
pub mod exact;
pub mod nets;
