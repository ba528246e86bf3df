//! `margincert robust`: certified and attack robustness radii of a model (a native checkpoint,
//! a PyTorch state_dict or an ONNX graph, read as `certify` and `audit` read it); writes
//! robust.json, robust-curve.json and robust.svg ([`margincert::report::robust::write`]).

use std::path::PathBuf;

use clap::Args;

use margincert::error::{Error, Result};
use margincert::report::Summary;
use margincert::robust::{AttackKind, AttackOptions, Method, Norm, RobustOptions, RobustSetup};

use super::args::ModelArgs;
use super::data::{OptDataArgs, SplitName};

pub use margincert::robust::DEFAULT_STEPS;

/// `--method` values: which certified L∞ bounds run (the time/tightness knob).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    /// Interval bound propagation only (fastest, loosest).
    Ibp,
    /// IBP, then CROWN with IBP intermediate bounds (CROWN-IBP), then full CROWN
    /// (intermediate bounds by back-substitution), each where the previous does not already
    /// prove the margin positive.
    Crown,
    /// CROWN, then the lower ReLU slopes optimized per unit (alpha-CROWN style; slowest,
    /// tightest).
    Alpha,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Ibp => Method::Ibp,
            MethodArg::Crown => Method::Crown,
            MethodArg::Alpha => Method::Alpha,
        }
    }
}

/// `--attack` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttackArg {
    /// Projected gradient descent on the margin, random restarts, bisection on eps.
    Pgd,
    /// Carlini-Wagner L2 (binary search on the constant, Adam in tanh space); --norm 2 only.
    Cw,
}

// `margincert robust` flags.
#[derive(Args, Debug)]
pub struct RobustArgs {
    /// The model file: a native checkpoint (.safetensors), a PyTorch state_dict (.safetensors,
    /// with --spec) or an ONNX graph (.onnx). The report records its SHA-256.
    pub checkpoint: PathBuf,
    /// How to read the model file (import flags, as for `certify` and `audit`).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Data source and selection; by default the checkpoint's.
    #[command(flatten)]
    pub data: OptDataArgs,
    /// Which split (the default is `certify`'s).
    #[arg(long, value_enum, default_value = "train")]
    pub split: SplitName,
    /// Perturbation norm: 2 or inf.
    #[arg(long)]
    pub norm: Norm,
    /// Largest radius searched (default 3.0 for L2, 0.3 for L-inf); certified radii are
    /// capped at it.
    #[arg(long)]
    pub eps_max: Option<f64>,
    /// Bisection steps on the radius (certified and PGD): resolution eps_max / 2^steps;
    /// at least 1.
    #[arg(long, default_value_t = DEFAULT_STEPS, value_parser = parse_steps)]
    pub steps: usize,
    /// Certified bounds on top of the cheap ones (L-inf: IBP; L2: the global Lipschitz and
    /// margin-only radii): ibp adds nothing more, crown adds CROWN (full, intermediate
    /// bounds by back-substitution), alpha adds optimized ReLU slopes.
    #[arg(long, value_enum, default_value = "crown")]
    pub method: MethodArg,
    /// crown/alpha refine a layer's pre-activations by back-substitution only when it has
    /// at most this many unstable units (the cost knob: larger is tighter and slower; e.g.
    /// on a small CNN, no cap raised half the L-inf radii by up to a third for 1.8x the CPU).
    #[arg(long, default_value_t = margincert::robust::method::DEFAULT_MAX_UNSTABLE)]
    pub max_unstable: usize,
    /// The attack: pgd (L-inf or L2) or cw (Carlini-Wagner, L2 only).
    #[arg(long, value_enum, default_value = "pgd")]
    pub attack: AttackArg,
    /// Run no attack (the attack radii are then unknown, `null`); the attack is most of the
    /// run time.
    #[arg(long, conflicts_with = "attack")]
    pub no_attack: bool,
    /// Gradient steps per restart (PGD; step size eps*max(2.5/steps, 0.1); default 100,
    /// with 10 restarts the paper's L-inf PGD) or Adam steps per constant (CW; default
    /// 1000).
    #[arg(long)]
    pub attack_steps: Option<usize>,
    /// PGD random restarts (the first start is the clean point).
    #[arg(long, default_value_t = 10)]
    pub restarts: usize,
    /// CW binary-search steps on the constant c.
    #[arg(long, default_value_t = 10)]
    pub cw_searches: usize,
    /// Output directory.
    #[arg(long, default_value = "robust-out")]
    pub out: PathBuf,
}

/// Parses `--steps`: a bisection needs at least one step (with none, every radius is 0 and
/// the table reports nothing certified).
fn parse_steps(t: &str) -> std::result::Result<usize, String> {
    match t.trim().parse::<usize>() {
        Ok(0) => Err(format!(
            "0: the bisection needs at least 1 step ({DEFAULT_STEPS} by default)"
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("'{t}': {e}")),
    }
}

impl RobustArgs {
    /// The library options these flags select.
    pub fn options(&self) -> Result<RobustOptions> {
        let eps_max = self.eps_max.unwrap_or(self.norm.default_eps_max());
        let kind = match (self.no_attack, self.attack) {
            (true, _) => AttackKind::None,
            (false, AttackArg::Pgd) => AttackKind::Pgd,
            (false, AttackArg::Cw) => AttackKind::Cw,
        };
        if kind == AttackKind::Cw && self.norm == Norm::Inf {
            return Err(Error::Invalid(
                "--attack cw is an L2 attack: use --norm 2, or --attack pgd for --norm inf".into(),
            ));
        }
        let attack = match kind {
            AttackKind::Cw => {
                AttackOptions::cw(self.attack_steps.unwrap_or(1000), self.cw_searches)
            }
            _ => AttackOptions {
                kind,
                steps: self.attack_steps.unwrap_or(100),
                restarts: self.restarts,
                ..AttackOptions::default()
            },
        };
        Ok(RobustOptions {
            norm: self.norm,
            eps_max,
            steps: self.steps,
            attack,
        })
    }
}

/// `margincert robust`.
pub fn cmd(a: &RobustArgs) -> Result<()> {
    let opts = a.options()?;
    let model = a.model.load(&a.checkpoint)?;
    for n in &model.notes {
        eprintln!("import: {n}");
    }
    let (ckpt, digest) = (model.checkpoint, model.sha256);
    let mut inputs = vec![a.checkpoint.clone()];
    inputs.extend(a.model.input_files());
    a.data.guard_out(&a.out, inputs, &ckpt)?;
    let data = a.data.load(&ckpt, a.split)?;
    eprintln!(
        "robustness radii of {} on {} ({} examples)...",
        a.checkpoint.display(),
        data.name,
        data.len()
    );
    let started = std::time::Instant::now();
    let mut rep = RobustSetup::new(&ckpt.spec, &ckpt.params, &data)?.run_capped(
        &opts,
        a.method.into(),
        a.max_unstable,
    )?;
    // The report is a claim about this model file: `verify` checks the hash.
    rep.checkpoint_sha256 = Some(digest);
    margincert::report::robust::write(&rep, &a.out)?;
    print!("{}", rep.summary());
    eprintln!(
        "report written to {} ({:.1} s)",
        a.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Only {
        #[command(flatten)]
        args: RobustArgs,
    }

    fn parse(extra: &[&str]) -> RobustArgs {
        let mut argv = vec!["robust", "m.onnx"];
        argv.extend(extra);
        Only::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn defaults_resolve_finer_than_1e4_and_run_the_papers_pgd() {
        let a = parse(&["--norm", "inf"]);
        assert_eq!(a.split, SplitName::Train);
        let o = a.options().unwrap();
        assert!(o.eps_max / 2f64.powi(o.steps as i32) < 1e-4);
        assert_eq!((o.attack.steps, o.attack.restarts), (100, 10));
        assert_eq!(o.attack.kind, AttackKind::Pgd);
        assert_eq!(Method::from(a.method), Method::Crown);
        let n = parse(&["--norm", "2", "--no-attack", "--method", "ibp"]);
        assert_eq!(n.options().unwrap().attack.kind, AttackKind::None);
        let cw = parse(&["--norm", "2", "--attack", "cw"]).options().unwrap();
        assert_eq!((cw.attack.kind, cw.attack.steps), (AttackKind::Cw, 1000));
        assert!(
            parse(&["--norm", "inf", "--attack", "cw"])
                .options()
                .is_err()
        );
        // The PyTorch import flags are there.
        let p = parse(&["--norm", "inf", "--spec", "s.json", "--prefix", "model."]);
        assert_eq!(p.model.prefix.as_deref(), Some("model."));
    }
}
