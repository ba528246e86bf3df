//! `margincert fetch`: download a dataset's official files and verify their SHA-256.

use std::path::PathBuf;

use clap::Args;

use margincert::data::DataKind;
use margincert::error::Result;

// `margincert fetch` flags.
#[derive(Args, Debug)]
pub struct FetchArgs {
    /// mnist, fashion-mnist or cifar10.
    pub dataset: String,
    /// Directory to download into; by default data/DATASET (data/mnist, data/cifar10, ...),
    /// where the paper configs and `reproduce` look for it.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// `margincert fetch`.
pub fn cmd(a: &FetchArgs) -> Result<()> {
    let kind: DataKind = a.dataset.parse()?;
    let dir = a
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("data").join(kind.to_string()));
    margincert::fetch::fetch(kind, &dir, true)?;
    eprintln!("{} verified in {}", a.dataset, dir.display());
    Ok(())
}
