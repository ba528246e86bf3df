//! `margincert audit`: import a model trained elsewhere, audit it on a dataset, write the
//! report files and fail when a `--require-*` gate is not certified.

use std::path::PathBuf;

use clap::Args;

use margincert::audit::{AuditOptions, RobustAudit, audit};
use margincert::data::DataSource;
use margincert::error::{Error, Result};

use margincert::io::ensure_not_input;
use margincert::report::AuditDocument;

use super::args::{LossArg, ModelArgs, parse_pair};
use super::data::{SplitName, load_source};

/// The library's audit defaults, which the flags' defaults show.
fn defaults() -> AuditOptions {
    AuditOptions::default()
}

// `margincert audit` flags.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The model: .safetensors (PyTorch state_dict or native checkpoint) or .onnx.
    pub model: PathBuf,
    /// Data source (see `train --help`).
    #[arg(long)]
    pub data: String,
    /// How to read the model file.
    #[command(flatten)]
    pub model_args: ModelArgs,
    /// Which split to audit on.
    #[arg(long, value_enum, default_value = "train")]
    pub split: SplitName,
    /// Binary task POS,NEG.
    #[arg(long, value_parser = parse_pair)]
    pub binary: Option<(u8, u8)>,
    /// Use only the first N examples of the split.
    #[arg(long)]
    pub subset: Option<usize>,
    /// The loss to certify.
    #[arg(long, value_enum, default_value_t = LossArg::from(defaults().certify.loss))]
    pub loss: LossArg,
    /// Skip the KKT certificate.
    #[arg(long)]
    pub no_kkt: bool,
    /// Output directory.
    #[arg(long, default_value = "out/audit")]
    pub out: PathBuf,
    /// Require a certified normalized margin q_min/rho^L of at least X.
    #[arg(long)]
    pub require_margin: Option<f64>,
    /// Require proven homogeneity.
    #[arg(long)]
    pub require_homogeneous: bool,
    /// Require a certified KKT epsilon of at most E.
    #[arg(long)]
    pub require_kkt_epsilon: Option<f64>,
    /// Require every audited example's certified L∞ radius to be at least R.
    #[arg(long)]
    pub require_linf: Option<f64>,
    /// Skip the robustness radii (certified and attack).
    #[arg(long, conflicts_with = "require_linf")]
    pub no_robust: bool,
    /// Examples (the first ones of the split) whose robustness radii are computed.
    #[arg(long, default_value_t = RobustAudit::default().examples)]
    pub robust_examples: usize,
}

impl AuditArgs {
    /// The library's defaults overridden by the flags. `--loss` and `--no-kkt` reach the
    /// one certify pass of the audit (its KKT certificate included).
    pub fn options(&self) -> AuditOptions {
        let mut o = defaults();
        o.certify.loss = self.loss.into();
        if self.no_kkt {
            o.certify.kkt = None;
        }
        o.require.margin = self.require_margin;
        o.require.homogeneous = self.require_homogeneous;
        o.require.kkt_epsilon = self.require_kkt_epsilon;
        o.require.linf = self.require_linf;
        o.robust = if self.no_robust {
            None
        } else {
            o.robust.map(|r| RobustAudit {
                examples: self.robust_examples,
                ..r
            })
        };
        o
    }
}

/// `margincert audit`.
pub fn cmd(a: &AuditArgs) -> Result<()> {
    let mut inputs = vec![a.model.clone()];
    inputs.extend(a.model_args.input_files());
    inputs.extend(a.data.parse::<DataSource>()?.input_files());
    ensure_not_input(&a.out, &inputs)?;
    // A native checkpoint keeps its training record; the certificate is bound to the file.
    let model = a.model_args.load(&a.model)?;
    let data = load_source(&a.data, a.binary, a.split, a.subset)?;
    let o = a.options();
    let source = format!("{}", a.model.display());
    let mut report = audit(&model.checkpoint, &data, &source, &model.notes, &o)?;
    if let Some(rb) = &mut report.robust {
        rb.l2.checkpoint_sha256 = Some(model.sha256.clone());
        rb.linf.checkpoint_sha256 = Some(model.sha256.clone());
    }
    report.certificate.checkpoint_sha256 = Some(model.sha256);
    report.write(&a.out, o.bins)?;
    println!("{}", report.markdown());
    eprintln!("audit written to {}", a.out.display());
    let unmet: Vec<String> = report
        .unmet()
        .iter()
        .map(|r| format!("{} ({})", r.requirement, r.detail))
        .collect();
    if unmet.is_empty() {
        Ok(())
    } else {
        Err(Error::Certify(format!(
            "requirements not certified: {}",
            unmet.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use margincert::loss::LossKind;

    #[derive(Parser)]
    struct Only {
        #[command(flatten)]
        args: AuditArgs,
    }

    fn options(argv: &[&str]) -> AuditOptions {
        let all = ["audit", "m.onnx", "--data", "embedded"];
        Only::try_parse_from(all.iter().chain(argv))
            .unwrap()
            .args
            .options()
    }

    #[test]
    fn flag_defaults_are_the_librarys_and_flags_reach_the_certify_pass() {
        assert_eq!(options(&[]), AuditOptions::default());
        let o = options(&["--no-kkt", "--loss", "logistic", "--robust-examples", "3"]);
        assert_eq!(o.certify.kkt, None);
        assert_eq!(o.certify.loss, LossKind::Logistic);
        assert_eq!(o.robust.map(|r| r.examples), Some(3));
        assert_eq!(options(&["--no-robust"]).robust, None);
    }
}
