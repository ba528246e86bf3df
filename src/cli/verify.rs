//! `margincert verify`: recompute every claim of a certificate and confirm or refute it.

use std::path::PathBuf;

use clap::Args;

use margincert::certify::certificate::Certificate;
use margincert::certify::verify::verify;
use margincert::checkpoint::Checkpoint;
use margincert::error::{Error, Result};
use margincert::report::Summary;

use super::data::{OptDataArgs, SplitName};

// `margincert verify` flags.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The certificate (JSON).
    pub certificate: PathBuf,
    /// The checkpoint it is about.
    pub checkpoint: PathBuf,
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
    let (ckpt, digest) = Checkpoint::load_with_digest(&a.checkpoint)?;
    if let Some(want) = &cert.checkpoint_sha256
        && *want != digest
    {
        return Err(Error::Checksum {
            what: format!("checkpoint {}", a.checkpoint.display()),
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
