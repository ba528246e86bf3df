//! A training run on disk: per-epoch metrics as JSON lines, a progress bar on a terminal,
//! the latest checkpoint (`last.safetensors`, rewritten atomically after every accepted
//! epoch), checkpoints kept at loss thresholds, the training plots, and resumption.
//!
//! This module sits above [`crate::train`] (the loop in memory), [`crate::checkpoint`] (the
//! file format) and [`crate::config`] (the run file): it is the one place that ties them
//! together, so that none of them depends on another.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::checkpoint::{Checkpoint, TrainInfo};
use crate::config::RunConfig;
use crate::data::{DataChoice, Dataset, Split};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::model::{ModelSpec, Params};
use crate::train::{EpochMetrics, EpochOutcome, TrainConfig, TrainState, Trainer};

/// Where and how a run reports.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// The data, recorded in checkpoints.
    pub data: DataChoice,
    /// Rayon threads (recorded; resuming reproduces a run exactly with the same count).
    pub threads: usize,
    /// Print one line per accepted epoch on standard output.
    pub print_epochs: bool,
}

/// The file name of the checkpoint kept when the loss first falls below `10^t`.
pub fn threshold_file(t: f64) -> String {
    format!("loss-1e{t}.safetensors")
}

/// What a finished run produced.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Why it stopped.
    pub reason: String,
    /// Metrics after the last accepted epoch (None when no epoch ran).
    pub last: Option<EpochMetrics>,
    /// Path of the final checkpoint.
    pub final_checkpoint: PathBuf,
    /// Checkpoints kept at loss thresholds.
    pub kept: Vec<PathBuf>,
    /// Failed (rolled-back) epoch attempts.
    pub rollbacks: usize,
}

fn checkpoint(
    trainer: &Trainer<'_>,
    opts: &RunOptions,
    metrics: Option<&EpochMetrics>,
) -> Checkpoint {
    Checkpoint {
        spec: trainer.spec().clone(),
        params: trainer.params().clone(),
        train: Some(TrainInfo {
            config: trainer.config().clone(),
            state: trainer.state().clone(),
            data: opts.data.clone(),
            metrics: metrics.cloned(),
            threads: opts.threads,
        }),
    }
}

/// Runs (or resumes, when `resume` holds a state) a training run to its end.
#[allow(clippy::too_many_arguments)]
pub fn run(
    spec: &ModelSpec,
    params: Params,
    cfg: TrainConfig,
    train: &Dataset,
    test: Option<&Dataset>,
    resume: Option<TrainState>,
    opts: &RunOptions,
) -> Result<RunSummary> {
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let metrics_path = opts.out.join("metrics.jsonl");
    let resuming = resume.is_some();
    let mut trainer = Trainer::new(spec, params, cfg.clone(), train, test, resume)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(resuming)
        .write(true)
        .truncate(!resuming)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;
    let started = Instant::now();
    let mut last = None;
    if !resuming {
        let m = trainer.metrics(0.0)?;
        write_line(&mut log, &metrics_path, &m)?;
        if opts.print_epochs {
            println!("{}", m.line());
        }
        last = Some(m);
    }
    let bar = progress_bar(cfg.epochs as u64, trainer.state().epoch as u64);
    let last_path = opts.out.join("last.safetensors");
    let mut kept = Vec::new();
    let mut rollbacks = 0;
    let reason = loop {
        match trainer.step_epoch(started)? {
            EpochOutcome::Done(m) => {
                write_line(&mut log, &metrics_path, &m)?;
                for t in trainer.newly_passed_thresholds() {
                    let p = opts.out.join(threshold_file(t));
                    checkpoint(&trainer, opts, Some(&m)).save(&p)?;
                    kept.push(p);
                }
                checkpoint(&trainer, opts, Some(&m)).save(&last_path)?;
                if opts.print_epochs {
                    bar.suspend(|| println!("{}", m.line()));
                }
                bar.set_position(m.epoch as u64);
                bar.set_message(format!(
                    "log10 loss {:.2}, q_min/rho^L {}",
                    m.log10_loss,
                    m.normalized_margin
                        .map_or("-".into(), |v| format!("{v:.3e}"))
                ));
                last = Some(*m);
            }
            EpochOutcome::RolledBack { reason, lr } => {
                rollbacks += 1;
                bar.set_message(format!("rolled back ({reason}); step now {lr:.3e}"));
            }
            EpochOutcome::Finished(why) => break why,
        }
    };
    bar.finish_and_clear();
    checkpoint(&trainer, opts, last.as_ref()).save(&last_path)?;
    write_plots(&metrics_path, &opts.out)?;
    Ok(RunSummary {
        reason,
        last,
        final_checkpoint: last_path,
        kept,
        rollbacks,
    })
}

/// Trains `cfg` from its He-normal initialisation (seed `cfg.train.seed`) on `split` (the
/// test split is evaluated each epoch) into `out`, quietly, with `threads` workers: the run
/// `margincert train --config` performs.
pub fn train_from_scratch(
    cfg: &RunConfig,
    split: &Split,
    out: &Path,
    threads: usize,
) -> Result<RunSummary> {
    let spec = cfg.spec(split)?;
    run(
        &spec,
        Params::he_normal(&spec, cfg.train.seed)?,
        cfg.train.clone(),
        &split.train,
        Some(&split.test),
        None,
        &RunOptions {
            out: out.to_path_buf(),
            data: cfg.data.clone(),
            threads,
            print_epochs: false,
        },
    )
}

/// Reads a `metrics.jsonl` log (one [`EpochMetrics`] per line).
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::format(path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// Writes `loss.svg` and `margin.svg` (loss and normalized margins against epoch) into
/// `dir` from the metrics log at `metrics`; returns the files written (a chart without a
/// point, e.g. the margins of a run that never separated its data, is not written).
pub fn write_plots(metrics: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let m = read_metrics(metrics)?;
    let (loss, margin) = crate::report::svg::training_curves(&m)?;
    let mut written = Vec::new();
    for (name, svg) in [("loss.svg", loss), ("margin.svg", margin)] {
        if let Some(svg) = svg {
            let p = dir.join(name);
            write_atomic(&p, svg.as_bytes())?;
            written.push(p);
        }
    }
    Ok(written)
}

fn write_line(log: &mut std::fs::File, path: &Path, m: &EpochMetrics) -> Result<()> {
    let line = serde_json::to_string(m).map_err(|e| Error::Invalid(e.to_string()))?;
    writeln!(log, "{line}").map_err(|e| Error::io(path, e))
}

fn progress_bar(len: u64, pos: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_position(pos);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] epoch {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}
