//! The sound checker: certified enclosures of margins, loss, homogeneity and KKT quantities.
//!
//! - [`enclosure`]: the certified forward pass (midpoint-radius enclosures of every layer).
//! - [`reference`]: exact-rational / MPFR reference evaluation used by the tests.

pub mod enclosure;
pub mod reference;

pub use enclosure::{BallVec, CertifiedNet, forward_enclosures, logit_enclosures};
