//! `margincert fetch`: download a dataset's official files and verify their SHA-256.

use std::path::PathBuf;

use clap::Args;

use margincert::error::Result;

// `margincert fetch` flags.
#[derive(Args, Debug)]
pub struct FetchArgs {
    /// mnist, fashion-mnist or cifar10.
    pub dataset: String,
    /// Directory to download into.
    #[arg(long, default_value = "data")]
    pub dir: PathBuf,
}

/// `margincert fetch`.
pub fn cmd(a: &FetchArgs) -> Result<()> {
    let kind = a.dataset.parse()?;
    margincert::fetch::fetch(kind, &a.dir, true)?;
    eprintln!("{} verified in {}", a.dataset, a.dir.display());
    Ok(())
}
