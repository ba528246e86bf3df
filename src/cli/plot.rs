//! `margincert plot`: the training curves of a run's metrics.jsonl.

use std::path::PathBuf;

use clap::Args;

use margincert::error::Result;

// `margincert plot` flags.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// A metrics.jsonl file written by `margincert train`.
    pub metrics: PathBuf,
    /// Output directory (default: the metrics file's directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `margincert plot`.
pub fn cmd(a: &PlotArgs) -> Result<()> {
    let dir = a.out.clone().unwrap_or_else(|| {
        a.metrics
            .parent()
            .map_or_else(|| PathBuf::from("."), |p| p.to_path_buf())
    });
    for f in margincert::run::write_plots(&a.metrics, &dir)? {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}
