//! The integration tests, linked into one binary (`cargo test --test suite`): linking one
//! binary instead of twelve is most of the build time of `cargo test`.
//!
//! One module per concern; their names prefix the test names, so
//! `cargo test --test suite kkt::` runs the KKT tests. Helpers shared between modules live in
//! `tests/common` (the CLI runner, random nets, the exact / MPFR reference, the shared-data
//! lookup). Proptest keeps each module's regression seeds in
//! `tests/proptest-regressions/<module>.txt` (its default place for a binary rooted at a
//! `main.rs`).

#[path = "../common/mod.rs"]
mod common;

mod attacks;
mod audit_report;
mod cli;
mod data;
mod deep;
mod direction;
mod durability;
mod forgeries;
mod fuzz;
mod gradients;
mod import;
mod kkt;
mod layers;
mod limits;
mod mutations;
mod pipeline;
mod regression;
mod robust;
mod robust_bounds;
mod robust_report;
mod soundness;
mod theorems;
mod train;
