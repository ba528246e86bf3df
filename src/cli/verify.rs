//! `margincert verify`: recompute every claim of a certificate (`certify`, `audit`) or of a
//! robustness report (`robust.json`) and confirm or refute it.

use std::path::PathBuf;

use clap::Args;

use margincert::certify::certificate::{Certificate, parse_json};
use margincert::certify::verify::{Status, check_binding, check_hash, verify};
use margincert::error::{Error, Result};
use margincert::report::Summary;
use margincert::robust::RobustReport;

use super::args::ModelArgs;
use super::data::{OptDataArgs, SplitName};

// `margincert verify` flags.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The certificate (JSON).
    pub certificate: PathBuf,
    /// The model file it is about (native checkpoint, PyTorch state_dict with --spec, or ONNX):
    /// its SHA-256 must be the one the certificate records.
    pub checkpoint: PathBuf,
    /// How to read the model file (import flags, as for `certify` and `audit`).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Data source and selection; by default the checkpoint's.
    #[command(flatten)]
    pub data: OptDataArgs,
    /// Which split the certificate or robustness report is about (default: train, as
    /// `certify`, `audit` and `robust` default).
    #[arg(long, value_enum)]
    pub split: Option<SplitName>,
}

/// `margincert verify`: an error when any claim is not confirmed.
pub fn cmd(a: &VerifyArgs) -> Result<()> {
    // Bounded: a certificate is text of at most limits::TEXT_BYTES.
    let text = margincert::io::read_text_limited(&a.certificate, &margincert::limits::TEXT_BYTES)?;
    let value = parse_json(&text, "certificate")?;
    // A robustness report (`robust.json`) has a Lipschitz bound; a certificate does not.
    let robust = value.get("lipschitz").is_some();
    let model = a.model.load(&a.checkpoint)?;
    let (ckpt, digest) = (model.checkpoint, model.sha256);
    let what = format!("model file {}", a.checkpoint.display());
    let report = if robust {
        let rep = RobustReport::from_value(value)?;
        // A report is a claim about one model file: without its hash it is bound to nothing.
        check_hash(rep.checkpoint_sha256.as_deref(), &digest, &what)?;
        let data = a.data.load(&ckpt, a.split.unwrap_or(SplitName::Train))?;
        margincert::robust::verify::verify(&rep, &ckpt.spec, &ckpt.params, &data)?
    } else {
        let cert = Certificate::from_value(value)?;
        check_binding(&cert, &digest, &what)?;
        let data = a.data.load(&ckpt, a.split.unwrap_or(SplitName::Train))?;
        verify(&cert, &ckpt.spec, &ckpt.params, &data)?
    };
    println!("{}", report.summary());
    if report.ok() {
        Ok(())
    } else {
        let refuted = report
            .checks
            .iter()
            .filter(|c| c.status == Status::Refuted)
            .count();
        Err(Error::Certify(if refuted > 0 {
            format!("the certificate was refuted: {refuted} claims are false (listed above)")
        } else {
            "the certificate is not confirmed: some claims are tighter than the recomputation \
             can prove (listed above); none was shown false"
                .into()
        }))
    }
}
