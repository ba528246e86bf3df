//! The sound checker: certified enclosures of margins, loss, homogeneity and KKT quantities.
//!
//! Every number this module certifies is a claim about the *real* network: the stored f32
//! weights taken as exact reals, evaluated on the exact inputs `p / 255`. The proofs are in
//! `proofs/*.md`; the property tests in `tests/soundness.rs`.
//!
//! - [`enclosure`]: the certified forward pass (midpoint-radius enclosures of every layer),
//!   [`forward_enclosures`] and [`logit_enclosures`] — the foundation of everything else.
//! - [`dd`]: the double-double certified forward pass for deep nets ([`Precision`]).
//! - [`backward`]: certified gradient enclosures containing the Clarke subdifferential.
//! - [`kkt`]: the Euler identity check and certified (epsilon, delta)-KKT bounds of (P).
//! - [`margin`]: per-example margins, `q_min`, support set.
//! - [`norms`]: `||W_i||_F`, `ρ`, `ρ^L`, `∏||W_i||` with directed rounding.
//! - [`loss`]: summed exponential / logistic / cross-entropy loss, smoothed margin, the
//!   theorem's threshold, in MPFR (values far below f64 range).
//! - [`homogeneity`]: structural degree and numeric witness.
//! - [`certificate`]: [`certify`] and the serializable [`Certificate`].
//! - [`verify`](mod@verify): [`verify()`] re-checks every claim of a certificate.
//! - [`bounds`]: `Lower`, `Upper`, `Enclosure`, `Decision`.

pub mod backward;
pub mod bounds;
pub mod certificate;
pub mod dd;
pub mod enclosure;
pub mod homogeneity;
pub mod kkt;
pub mod loss;
pub mod margin;
pub mod norms;
pub mod verify;

pub use bounds::{Decision, Enclosure, Lower, Upper};
pub use certificate::{Certificate, CertifyOptions, certify};
pub use dd::DdBallVec;
pub use enclosure::{
    BallVec, CertifiedNet, Precision, PrecisionStats, forward_enclosures, logit_enclosures,
};
pub use loss::LossKind;
pub use verify::{VerifyReport, verify};
