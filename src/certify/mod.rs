//! The sound checker: certified enclosures of margins, loss, homogeneity and KKT quantities.
//!
//! Every number this module certifies is a claim about the *real* network: the stored f32
//! weights taken as exact reals, evaluated on the exact inputs `p / 255`. The proofs are in
//! `proofs/*.md`; the property tests in `tests/suite/soundness.rs`.
//!
//! - [`round`]: directed rounding (`up`, `down`, `γ_n`), ball/interval conversions.
//! - [`ball`]: [`BallVec`] and the input enclosure of `p / 255`.
//! - [`forward`]: the certified forward pass — the [`PreparedNet`] every certified pass
//!   shares, the binary64 and double-double kernels, [`CertifiedNet`] and its
//!   [`ForwardMode`], [`forward_enclosures`] and [`logit_enclosures`] — the foundation of
//!   everything else.
//! - [`backward`]: certified gradient enclosures containing the Clarke subdifferential.
//! - [`kkt`]: the Euler identity check and certified (epsilon, delta)-KKT bounds of (P).
//! - [`margin`]: per-example margins, `q_min`, support set.
//! - [`norms`]: `||W_i||_F`, `ρ`, `ρ^L`, `∏||W_i||` with directed rounding.
//! - [`direction`]: the certified angle between the directions of two checkpoints.
//! - [`loss`]: summed exponential / logistic / cross-entropy loss, smoothed margin, the
//!   theorem's threshold, in MPFR (values far below f64 range).
//! - [`homogeneity`]: structural degree and numeric witness.
//! - [`certificate`]: [`certify`] and the serializable [`Certificate`].
//! - [`verify`](mod@verify): [`verify()`] re-checks every claim of a certificate.
//! - [`bounds`]: `Lower`, `Upper`, `Enclosure`, `Decision`.

pub mod backward;
pub mod ball;
pub mod bounds;
pub mod certificate;
pub mod direction;
pub mod forward;
pub mod homogeneity;
pub mod kkt;
pub mod loss;
pub mod margin;
pub mod norms;
pub mod round;
pub mod verify;

pub use ball::BallVec;
pub use bounds::{Decision, Enclosure, Lower, Upper};
pub use certificate::{Certificate, CertifyOptions, certify};
pub use forward::dd::DdBallVec;
pub use forward::{
    CertifiedNet, ForwardMode, ForwardStats, PreparedNet, RadiusMode, forward_enclosures,
    logit_enclosures,
};
pub use loss::LossKind;
pub use verify::{VerifyReport, verify};
