//! All text, Markdown and SVG rendering of what the library computes: the certificate's and
//! the verifier's text summaries ([`Summary`]), the audit's Markdown report and files
//! ([`AuditDocument`]), robustness outputs, and every chart ([`svg`], drawn with plotters).
//!
//! Rendering only reads: nothing here computes a bound, so a report cannot disagree with the
//! certificate it renders. The computing modules (`certify`, `audit`, `robust`) do not
//! depend on this one.

pub mod audit;
pub mod certificate;
pub mod robust;
pub mod svg;

pub use audit::AuditDocument;

/// A readable multi-line text summary (what the CLI prints).
pub trait Summary {
    /// The summary: what is proven, with the numbers.
    fn summary(&self) -> String;
}
