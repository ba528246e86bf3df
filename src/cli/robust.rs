//! `margincert robust`: certified and attack robustness radii of a checkpoint; writes
//! robust.json, robust-curve.json and robust.svg ([`margincert::report::robust::write`]).

use std::path::PathBuf;

use clap::Args;

use margincert::checkpoint::Checkpoint;
use margincert::error::Result;
use margincert::report::Summary;
use margincert::robust::{self, AttackOptions, Norm, RobustOptions};

use super::data::{OptDataArgs, SplitName};

// `margincert robust` flags.
#[derive(Args, Debug)]
pub struct RobustArgs {
    /// The checkpoint (.safetensors).
    pub checkpoint: PathBuf,
    /// Data source and selection; by default the checkpoint's.
    #[command(flatten)]
    pub data: OptDataArgs,
    /// Which split.
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitName,
    /// Perturbation norm: 2 or inf.
    #[arg(long)]
    pub norm: Norm,
    /// Largest radius searched (default 3.0 for L2, 0.3 for L-inf).
    #[arg(long)]
    pub eps_max: Option<f64>,
    /// Bisection steps on the radius (certified and attack); at least 1.
    #[arg(long, default_value_t = 10, value_parser = parse_steps)]
    pub steps: usize,
    /// PGD random restarts.
    #[arg(long, default_value_t = 3)]
    pub restarts: usize,
    /// Output directory.
    #[arg(long, default_value = "robust-out")]
    pub out: PathBuf,
}

/// Parses `--steps`: a bisection needs at least one step (with none, every radius is 0 and
/// the table reports nothing certified).
fn parse_steps(t: &str) -> std::result::Result<usize, String> {
    match t.trim().parse::<usize>() {
        Ok(0) => Err("0: the bisection needs at least 1 step (10 by default)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("'{t}': {e}")),
    }
}

/// `margincert robust`.
pub fn cmd(a: &RobustArgs) -> Result<()> {
    let (ckpt, digest) = Checkpoint::load_with_digest(&a.checkpoint)?;
    a.data
        .guard_out(&a.out, vec![a.checkpoint.clone()], &ckpt)?;
    let data = a.data.load(&ckpt, a.split)?;
    let eps_max = a.eps_max.unwrap_or(match a.norm {
        Norm::L2 => 3.0,
        Norm::Inf => 0.3,
    });
    let opts = RobustOptions {
        norm: a.norm,
        eps_max,
        steps: a.steps,
        attack: AttackOptions {
            restarts: a.restarts,
            ..Default::default()
        },
    };
    let mut rep = robust::run(&ckpt.spec, &ckpt.params, &data, &opts)?;
    // The report is a claim about this model file: `verify` checks the hash.
    rep.checkpoint_sha256 = Some(digest);
    margincert::report::robust::write(&rep, &a.out)?;
    print!("{}", rep.summary());
    Ok(())
}
