//! The sound checker: certified enclosures of margins, loss, homogeneity and KKT quantities.
//!
//! - [`enclosure`]: the certified forward pass (midpoint-radius enclosures of every layer).
//! - [`backward`]: certified gradient enclosures (Clarke subdifferential boxes).
//! - [`kkt`]: the Euler identity check and certified (epsilon, delta)-KKT bounds of (P).
//! - [`reference`]: exact-rational / MPFR reference evaluation used by the tests.

pub mod backward;
pub mod enclosure;
pub mod kkt;
pub mod reference;

pub use enclosure::{BallVec, CertifiedNet, forward_enclosures, logit_enclosures};
