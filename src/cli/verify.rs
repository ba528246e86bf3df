//! `margincert verify`: recompute every claim of a certificate and confirm or refute it.

use std::path::PathBuf;

use clap::Args;

use margincert::certify::certificate::Certificate;
use margincert::certify::verify::verify;
use margincert::error::{Error, Result};
use margincert::report::Summary;

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
    /// Which split the certificate is about.
    #[arg(long, value_enum, default_value = "train")]
    pub split: SplitName,
}

/// `margincert verify`: an error when any claim is not confirmed.
pub fn cmd(a: &VerifyArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.certificate).map_err(|e| Error::io(&a.certificate, e))?;
    let cert = Certificate::from_json(&text)?;
    let model = a.model.load(&a.checkpoint)?;
    let (ckpt, digest) = (model.checkpoint, model.sha256);
    // A certificate is a claim about one model file: without its hash it is bound to nothing.
    let Some(want) = &cert.checkpoint_sha256 else {
        return Err(Error::Certify(
            "the certificate records no model file hash (checkpoint_sha256): it is not bound \
             to a model and cannot be verified; certify the model file again"
                .into(),
        ));
    };
    if *want != digest {
        return Err(Error::Checksum {
            what: format!("model file {}", a.checkpoint.display()),
            expected: want.clone(),
            got: digest,
        });
    }
    let data = a.data.load(&ckpt, a.split)?;
    let report = verify(&cert, &ckpt.spec, &ckpt.params, &data)?;
    println!("{}", report.summary());
    if report.ok() {
        Ok(())
    } else {
        Err(Error::Certify("the certificate was refuted".into()))
    }
}
