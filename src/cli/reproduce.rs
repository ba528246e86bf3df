//! `margincert reproduce`: one of the paper's experiments.

use std::path::PathBuf;

use clap::Args;

use margincert::error::Result;

// `margincert reproduce` flags.
#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// The bundle: mnist-small, mnist-small-bias, two-layer-relu, linear-svm, mnist-1k, mnist-1k-bias, loss-1e-800, cifar-vgg-small, mnist, cifar.
    pub name: String,
    /// Output directory.
    #[arg(long, default_value = "reproduce-out")]
    pub out: PathBuf,
    /// Use the paper-size configs where the bundle has them (needs the full datasets).
    #[arg(long)]
    pub full: bool,
    /// Directory of the dataset files for bundles that read files (mnist, --full), e.g.
    /// ../shared/data/mnist; by default data/<dataset>, where `margincert fetch` puts them.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Certify the runs already in --out instead of training them again (a run continued
    /// with `train --resume` is certified as it stands; a run of another model, data or
    /// optimizer is refused). Runs not there are trained.
    #[arg(long)]
    pub reuse: bool,
}

/// `margincert reproduce`.
pub fn cmd(a: &ReproduceArgs, nthreads: usize) -> Result<()> {
    let r = margincert::reproduce::reproduce(
        &a.name,
        &a.out,
        a.full,
        a.data.as_deref(),
        nthreads,
        a.reuse,
    )?;
    for f in r.files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}
