//! `margincert certify`: certify a checkpoint on a dataset and write the certificate.
//!
//! The defaults of every option are the library's ([`CertifyOptions::default`]): the flags'
//! defaults read them, and the options start from them.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser};

use margincert::certify::certificate::{CertifyOptions, certify_run};
use margincert::error::{Error, Result};
use margincert::io::write_atomic;
use margincert::loss::LossKind;
use margincert::report::Summary;

use super::args::{LossArg, ModelArgs, PrecisionMode};
use super::data::{OptDataArgs, SplitName};

/// The library's certify defaults, which the flags' defaults show.
fn defaults() -> CertifyOptions {
    CertifyOptions::default()
}

/// The default `--kkt-active` (the library's KKT default; 0 when it skips KKT).
fn default_kkt_active() -> usize {
    defaults().kkt.map_or(0, |k| k.max_active)
}

// `margincert certify` flags.
#[derive(Args, Debug)]
pub struct CertifyArgs {
    /// The model file: a native checkpoint (.safetensors), a PyTorch state_dict (.safetensors,
    /// with --spec) or an ONNX graph (.onnx). The certificate records its SHA-256.
    pub checkpoint: PathBuf,
    /// How to read the model file (import flags, as for `audit`).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Data source and selection; by default the ones the checkpoint was trained on.
    #[command(flatten)]
    pub data: OptDataArgs,
    /// Which split to certify on.
    #[arg(long, value_enum, default_value = "train")]
    pub split: SplitName,
    /// The loss to certify; by default the checkpoint's training loss.
    #[arg(long, value_enum)]
    pub loss: Option<LossArg>,
    /// MPFR precision (bits) of the norm and loss bounds.
    #[arg(long, default_value_t = defaults().precision)]
    pub precision: u32,
    /// Examples used by the numeric homogeneity witness.
    #[arg(long, default_value_t = defaults().witness_examples)]
    pub witness_examples: usize,
    /// Skip the approximate-KKT certificate (the slowest part: one certified backward pass
    /// per active constraint).
    #[arg(long)]
    pub no_kkt: bool,
    /// At most this many constraints get a nonzero KKT multiplier (highest loss weights).
    #[arg(long, default_value_t = default_kkt_active())]
    pub kkt_active: usize,
    /// Where to write the certificate (default: CHECKPOINT with extension .cert.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the certificate JSON on standard output instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Also record every example's certified margin enclosure `[lo, hi]` of q_n (data
    /// order, from the same pass as the summary), so that one can see which examples are
    /// decided; `verify` re-checks each.
    #[arg(long)]
    pub per_example: bool,
    /// Midpoint arithmetic of the certified forward pass: f64, dd (double-double, for
    /// deep nets such as the CIFAR VGG) or auto (f64, then dd for the examples whose logit
    /// enclosures are too wide).
    #[arg(long, value_enum, default_value_t = PrecisionMode::from(defaults().forward))]
    pub precision_mode: PrecisionMode,
}

impl CertifyArgs {
    /// `certify CHECKPOINT` with every other flag at its default.
    pub fn defaults_for(checkpoint: PathBuf) -> Result<Self> {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: CertifyArgs,
        }
        let argv = [
            OsString::from("certify"),
            OsString::from("--"),
            checkpoint.into_os_string(),
        ];
        Only::try_parse_from(argv)
            .map(|o| o.args)
            .map_err(|e| Error::Invalid(format!("certify defaults: {e}")))
    }

    /// The library's defaults overridden by the flags; the loss falls back on `trained`
    /// (the checkpoint's training loss).
    pub fn options(&self, trained: Option<LossKind>) -> CertifyOptions {
        let d = defaults();
        CertifyOptions {
            loss: self.loss.map(LossKind::from).or(trained).unwrap_or(d.loss),
            witness_examples: self.witness_examples,
            precision: self.precision,
            kkt: if self.no_kkt {
                None
            } else {
                d.kkt.map(|k| margincert::certify::kkt::KktOptions {
                    max_active: self.kkt_active,
                    ..k
                })
            },
            forward: self.precision_mode.into(),
        }
    }
}

/// `margincert certify`.
pub fn cmd(a: &CertifyArgs) -> Result<()> {
    if !a.no_kkt && a.kkt_active == 0 {
        return Err(Error::Invalid(
            "--kkt-active 0 leaves the KKT certificate no constraint: give at least 1, or \
             --no-kkt to skip it"
                .into(),
        ));
    }
    let model = a.model.load(&a.checkpoint)?;
    for n in &model.notes {
        eprintln!("import: {n}");
    }
    let (ckpt, digest) = (model.checkpoint, model.sha256);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.checkpoint.with_extension("cert.json"));
    let mut inputs = vec![a.checkpoint.clone()];
    inputs.extend(a.model.input_files());
    a.data.guard_out(&out, inputs, &ckpt)?;
    let data = a.data.load(&ckpt, a.split)?;
    let opts = a.options(ckpt.train.as_ref().map(|t| t.config.loss));
    eprintln!(
        "certifying {} on {} ({} examples)...",
        a.checkpoint.display(),
        data.name,
        data.len()
    );
    let started = std::time::Instant::now();
    let run = certify_run(&ckpt.spec, &ckpt.params, &data, &opts)?;
    let mut cert = run.certificate;
    if a.per_example {
        cert.per_example = Some(run.margins);
    }
    cert.checkpoint_sha256 = Some(digest);
    write_atomic(&out, cert.to_json().as_bytes())?;
    if a.json {
        println!("{}", cert.to_json());
    } else {
        println!("{}", cert.summary());
    }
    eprintln!(
        "certificate written to {} ({:.1} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_defaults_are_the_librarys() {
        let a = CertifyArgs::defaults_for("x.safetensors".into()).unwrap();
        assert_eq!(a.options(None), CertifyOptions::default());
        assert_eq!(a.options(Some(LossKind::Logistic)).loss, LossKind::Logistic);
    }
}
