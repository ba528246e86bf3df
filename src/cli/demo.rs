//! `margincert demo`: train the embedded demo config, then certify its last checkpoint with
//! the default certify options.

use std::path::PathBuf;

use clap::Args;

use margincert::config::RunConfig;
use margincert::error::{Error, Result};

use super::args::parse_stop_loss;
use super::certify::CertifyArgs;
use super::train::Plan;

// `margincert demo` flags.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output directory.
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    /// Stop once the mean training loss is below this level.
    #[arg(long, default_value = "1e-100", value_parser = parse_stop_loss)]
    pub stop_loss: f64,
    /// Maximum epochs.
    #[arg(long, default_value_t = 2000)]
    pub epochs: usize,
    /// Training examples (the first N of the embedded 1,000). With the loss-based schedule
    /// the loss falls by a roughly constant number of decades per epoch, so the demo keeps
    /// the set small to pass 1e-100 in minutes on two cores.
    #[arg(long, default_value_t = 100)]
    pub train_subset: usize,
    /// Test examples (the first N of the embedded 1,000), evaluated after every epoch.
    #[arg(long, default_value_t = 200)]
    pub test_subset: usize,
    /// Minibatch size.
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
}

/// The demo's run config (also in `fixtures/configs/demo.toml`).
const DEMO_CONFIG: &str = include_str!("../../fixtures/configs/demo.toml");

/// `margincert demo`.
pub fn cmd(a: &DemoArgs, nthreads: usize) -> Result<()> {
    let mut c: RunConfig = toml::from_str(DEMO_CONFIG)
        .map_err(|e| Error::Invalid(format!("the embedded demo config: {e}")))?;
    c.data.train_subset = Some(a.train_subset);
    c.data.test_subset = Some(a.test_subset);
    c.train.batch = a.batch;
    c.train.epochs = a.epochs;
    c.train.stop_log10_loss = Some(a.stop_loss);
    Plan::from_config(c)?.execute(&a.out, false, nthreads, true)?;
    super::certify::cmd(&CertifyArgs::defaults_for(a.out.join("last.safetensors"))?)
}
