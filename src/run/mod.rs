//! A training run on disk: per-epoch metrics as JSON lines, a progress bar on a terminal,
//! the latest checkpoint (`last.safetensors`, rewritten atomically after every accepted
//! epoch), checkpoints kept at loss thresholds, the training plots, and resumption.
//!
//! This module sits above [`crate::train`] (the loop in memory), [`crate::checkpoint`] (the
//! file format) and [`crate::config`] (the run file): it is the one place that ties them
//! together, so that none of them depends on another.
//!
//! Durability (docs/RELIABILITY.md): one writer per directory ([`dir::RunDir`], an exclusive
//! lock), metrics lines written whole and synced before the checkpoint they belong to, the
//! log cut back to the checkpoint on resume ([`log`]), orphaned temporary files removed, and
//! no fresh run over a previous one unless asked ([`Start`]). [`fault`] injects the kills
//! the tests resume from.

pub mod dir;
pub mod fault;
pub mod log;

use std::io::IsTerminal;
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
pub use dir::{LAST_FILE, METRICS_FILE, RunDir};
use fault::{Faults, Point};
use log::MetricsLog;

/// Where and how a run reports.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Output directory (created if missing; locked for the whole run, see [`RunDir`]).
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

/// How a run starts in its directory.
#[derive(Clone, Debug, PartialEq)]
pub enum Start {
    /// A new run; refused when the directory holds a previous run's files
    /// ([`RunDir::ensure_fresh`]).
    Fresh,
    /// A new run replacing the previous run's files ([`RunDir::clear_previous`]).
    Overwrite,
    /// The run whose checkpoint holds this state, continued: the metrics log is cut back to
    /// the state's epoch ([`log::MetricsLog::resume`]) and appended to.
    Resume(TrainState),
}

/// Runs (or resumes, when `resume` holds a state) a training run to its end in `opts.out`,
/// which it locks for the whole run ([`RunDir::lock`]). A fresh run into a directory that
/// holds a previous run is refused ([`Start::Fresh`]).
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
    let dir = RunDir::lock(&opts.out)?;
    let start = resume.map_or(Start::Fresh, Start::Resume);
    run_in(&dir, start, spec, params, cfg, train, test, opts)
}

/// Seconds of training: those recorded before a resume plus this process's (or always 0
/// under the test clock of [`fault`]).
struct Clock {
    base: f64,
    started: Instant,
    zero: bool,
}

impl Clock {
    fn seconds(&self) -> f64 {
        if self.zero {
            0.0
        } else {
            self.base + self.started.elapsed().as_secs_f64()
        }
    }
}

/// [`run`] in a directory already locked by the caller (`dir`, which must be `opts.out`):
/// the caller can then refuse a second run before loading any data.
///
/// Per accepted epoch, in this order: the metrics line is appended and synced; the threshold
/// checkpoints are written; `last.safetensors` is replaced atomically and the directory
/// synced. A fresh run writes its epoch-0 line and checkpoint the same way before the first
/// epoch, so that an interrupted run always has a checkpoint to resume from. See
/// [`log`] for why a kill at any point then resumes to the uninterrupted run's files.
#[allow(clippy::too_many_arguments)]
pub fn run_in(
    dir: &RunDir,
    start: Start,
    spec: &ModelSpec,
    params: Params,
    cfg: TrainConfig,
    train: &Dataset,
    test: Option<&Dataset>,
    opts: &RunOptions,
) -> Result<RunSummary> {
    if dir.path() != opts.out {
        return Err(Error::Invalid(format!(
            "the locked directory {} is not the run's output {}",
            dir.path().display(),
            opts.out.display()
        )));
    }
    let faults = Faults::from_env()?;
    let metrics_path = dir.path().join(METRICS_FILE);
    let last_path = dir.path().join(LAST_FILE);
    let resuming = matches!(start, Start::Resume(_));
    let resume = match start {
        Start::Fresh => {
            dir.ensure_fresh()?;
            None
        }
        Start::Overwrite => {
            dir.clear_previous()?;
            None
        }
        Start::Resume(s) => Some(s),
    };
    let mut trainer = Trainer::new(spec, params, cfg.clone(), train, test, resume)?;
    let mut clock = Clock {
        base: 0.0,
        started: Instant::now(),
        zero: faults.zero_clock(),
    };
    let (mut log, mut last) = if resuming {
        let epoch = trainer.state().epoch;
        let (log, last, dropped) = MetricsLog::resume(&metrics_path, epoch)?;
        if dropped > 0 {
            eprintln!(
                "note: cut {dropped} bytes off {} after epoch {epoch} (written after the \
                 checkpoint by the interrupted run; they are recomputed)",
                metrics_path.display()
            );
        }
        if let Some(m) = &last {
            clock.base = m.seconds;
        }
        (log, last)
    } else {
        let mut log = MetricsLog::create(&metrics_path)?;
        let m = trainer.metrics(0.0)?;
        log.append(&m, &faults)?;
        faults.hit(Point::AfterMetrics, 0);
        if opts.print_epochs {
            println!("{}", m.line());
        }
        checkpoint(&trainer, opts, Some(&m)).save(&last_path)?;
        dir.sync()?;
        faults.hit(Point::AfterCheckpoint, 0);
        (log, Some(m))
    };
    let bar = progress_bar(cfg.epochs as u64, trainer.state().epoch as u64);
    let mut kept = Vec::new();
    let mut rollbacks = 0;
    let reason = loop {
        match trainer.step_epoch(clock.started)? {
            EpochOutcome::Done(mut m) => {
                let epoch = m.epoch;
                m.seconds = clock.seconds();
                log.append(&m, &faults)?;
                faults.hit(Point::AfterMetrics, epoch);
                for t in trainer.newly_passed_thresholds() {
                    let p = dir.path().join(threshold_file(t));
                    checkpoint(&trainer, opts, Some(&m)).save(&p)?;
                    kept.push(p);
                }
                faults.hit(Point::AfterKept, epoch);
                checkpoint(&trainer, opts, Some(&m)).save(&last_path)?;
                dir.sync()?;
                faults.hit(Point::AfterCheckpoint, epoch);
                if opts.print_epochs {
                    bar.suspend(|| println!("{}", m.line()));
                }
                bar.set_position(epoch as u64);
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
    dir.sync()?;
    faults.hit(Point::BeforePlots, trainer.state().epoch);
    write_plots(log.path(), dir.path())?;
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
/// `margincert reproduce` performs for each of its configs. A previous run's files in `out`
/// are replaced ([`Start::Overwrite`]).
pub fn train_from_scratch(
    cfg: &RunConfig,
    split: &Split,
    out: &Path,
    threads: usize,
) -> Result<RunSummary> {
    let spec = cfg.spec(split)?;
    let dir = RunDir::lock(out)?;
    run_in(
        &dir,
        Start::Overwrite,
        &spec,
        Params::he_normal(&spec, cfg.train.seed)?,
        cfg.train.clone(),
        &split.train,
        Some(&split.test),
        &RunOptions {
            out: out.to_path_buf(),
            data: cfg.data.clone(),
            threads,
            print_epochs: false,
        },
    )
}

/// Reads a `metrics.jsonl` log (one [`EpochMetrics`] per line). An unterminated last line
/// that does not parse is a write cut short by an interruption and is skipped; any other bad
/// line is an error.
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text = crate::io::read_text_limited(path, &crate::limits::FILE_BYTES)?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(l) {
            Ok(m) => out.push(m),
            Err(_) if i + 1 == lines.len() && !l.ends_with('\n') => {}
            Err(e) => return Err(Error::format(path, format!("line {}: {e}", i + 1))),
        }
    }
    Ok(out)
}

/// Writes `loss.svg` and `margin.svg` (loss and normalized margins against epoch) into
/// `dir` from the metrics log at `metrics`; returns the files written (a chart without a
/// point, e.g. the margins of a run that never separated its data, is not written).
pub fn write_plots(metrics: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let m = read_metrics(metrics)?;
    let (loss, margin) = crate::report::svg::training_curves(&m)?;
    let mut written = Vec::new();
    for (name, svg) in dir::PLOT_FILES.into_iter().zip([loss, margin]) {
        if let Some(svg) = svg {
            let p = dir.join(name);
            write_atomic(&p, svg.as_bytes())?;
            written.push(p);
        }
    }
    Ok(written)
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
