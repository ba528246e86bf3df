//! `margincert train`: resolve a run (from flags, a run config, or a checkpoint to resume) into
//! a [`Plan`], then execute it.

use std::path::{Path, PathBuf};

use clap::Args;

use margincert::checkpoint::Checkpoint;
use margincert::config::RunConfig;
use margincert::data::DataChoice;
use margincert::data::Dataset;
use margincert::error::{Error, Result};
use margincert::loss::LossKind;
use margincert::model::{ModelSpec, Params, presets};
use margincert::run::{RunDir, RunOptions, Start, run_in};
use margincert::train::{Schedule, TrainConfig, TrainState};

use super::args::{LossArg, parse_save_at, parse_stop_loss};
use super::data::DataArgs;

/// The run flags that `--resume` takes from the checkpoint and `--config` from its file:
/// given with either, they are refused (a flag never silently loses to another source).
const RUN_SETTINGS: [&str; 12] = [
    "model",
    "spec",
    "data",
    "binary",
    "train_subset",
    "test_subset",
    "loss",
    "batch",
    "lr",
    "alpha0",
    "save_at",
    "seed",
];

/// The preset trained when neither `--model` nor `--spec` is given.
const DEFAULT_MODEL: &str = "mnist-cnn";
/// Epochs of a fresh run without `--epochs`.
const DEFAULT_EPOCHS: usize = 100;
/// Minibatch size without `--batch`.
const DEFAULT_BATCH: usize = 100;
/// Initial step of the loss-based schedule without `--alpha0`.
const DEFAULT_ALPHA0: f64 = 0.1;
/// Output directory of a fresh run without `--out`.
const DEFAULT_OUT: &str = "out/train";

// The model of a training run: a preset or a spec file.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// A preset: mnist-cnn (the paper's, no bias), mnist-cnn-bias (every layer, not
    /// homogeneous), mnist-cnn-first-bias (the paper's "without bias" mode), cifar-vgg, mlp
    /// (784-1000-1000), small-mlp (one hidden layer of 100), linear. [default: mnist-cnn]
    #[arg(long, conflicts_with = "spec")]
    pub model: Option<String>,
    /// A model spec file (JSON or TOML) instead of a preset.
    #[arg(long)]
    pub spec: Option<PathBuf>,
}

impl ModelArgs {
    /// The spec: the file, or the preset sized for `data` (one output when `binary`).
    fn build(&self, data: &Dataset, binary: bool) -> Result<ModelSpec> {
        match &self.spec {
            Some(p) => ModelSpec::from_file(p),
            None => presets::by_name(
                self.model.as_deref().unwrap_or(DEFAULT_MODEL),
                data.shape,
                if binary { 1 } else { data.classes },
            ),
        }
    }
}

/// Parses a learning rate or initial step: a finite number > 0 (a step of 0 never moves, a
/// negative one climbs the loss).
fn parse_step(t: &str) -> std::result::Result<f64, String> {
    let v: f64 = t.trim().parse().map_err(|e| format!("'{t}': {e}"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!(
            "'{t}': a step size must be a finite number > 0, e.g. 0.1"
        ))
    }
}

// `margincert train` flags.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Loss (summed in the theory; the optimizer uses the mean, as the paper's code).
    /// [default: cross-entropy]
    #[arg(long, value_enum)]
    pub loss: Option<LossArg>,
    /// Minibatch size; 0 = full batch (gradient descent). [default: 100]
    #[arg(long)]
    pub batch: Option<usize>,
    /// Use this constant learning rate (finite, > 0) instead of the paper's loss-based
    /// schedule.
    #[arg(long, value_parser = parse_step, conflicts_with = "alpha0")]
    pub lr: Option<f64>,
    /// Initial step of the loss-based schedule (finite, > 0). [default: 0.1]
    #[arg(long, value_parser = parse_step)]
    pub alpha0: Option<f64>,
    /// Epochs to run (accepted epochs; rolled-back attempts do not count). [default: 100]
    /// With --resume: the run's own budget unless given (then it replaces the budget, e.g.
    /// to extend the run; it may not be below the checkpoint's epoch). With --config: replaces
    /// the file's.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop once the mean training loss is below this value, written MeN (e.g. 1e-100, 5e-3;
    /// any exponent works). A plain number such as 0.001 is refused. With --resume or
    /// --config: replaces the run's stopping loss (e.g. to continue a run that stopped at
    /// 1e-25 towards 1e-120).
    #[arg(long, value_parser = parse_stop_loss)]
    pub stop_loss: Option<f64>,
    /// Keep checkpoints loss-1eN.safetensors when the loss first falls below these powers of
    /// ten, written 1eN (the paper: 1e-10,1e-15,1e-20,1e-120).
    #[arg(long, value_delimiter = ',', value_parser = parse_save_at)]
    pub save_at: Vec<f64>,
    /// Seed of the initialisation and of the data order. [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output directory: metrics.jsonl, last.safetensors, loss-1e*.safetensors, plots.
    /// One run at a time (it is locked while a run writes). [default: out/train; with
    /// --resume, the checkpoint's directory]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the previous run in --out: delete its metrics.jsonl, checkpoints and plots
    /// (only the files a run writes) before starting. Without it a fresh run into a
    /// directory holding a run is refused.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Resume from a checkpoint written by `margincert train`: its model, data, settings and
    /// epoch budget (--epochs may change the budget; the model, data and optimizer flags are
    /// refused). The metrics log is cut back to the checkpoint's epoch, so an interrupted run
    /// resumed with the same thread count ends with the same files as an uninterrupted one.
    #[arg(long, conflicts_with = "config", conflicts_with_all = RUN_SETTINGS)]
    pub resume: Option<PathBuf>,
    /// A run config (TOML, see fixtures/configs/): model, data and training settings in one
    /// file. --epochs replaces its budget; the model, data and optimizer flags are refused.
    #[arg(long, conflicts_with_all = RUN_SETTINGS)]
    pub config: Option<PathBuf>,
    /// Do not print a line per epoch.
    #[arg(long)]
    pub quiet: bool,
}

impl TrainArgs {
    /// The output directory: `--out`, else the resumed checkpoint's directory, else
    /// [`DEFAULT_OUT`].
    fn out_dir(&self) -> PathBuf {
        if let Some(o) = &self.out {
            return o.clone();
        }
        match self.resume.as_deref().map(Path::parent) {
            Some(Some(p)) if !p.as_os_str().is_empty() => p.to_path_buf(),
            Some(_) => PathBuf::from("."),
            None => PathBuf::from(DEFAULT_OUT),
        }
    }

    /// Checks the values clap cannot: subset sizes of at least one example.
    fn validate(&self) -> Result<()> {
        for (flag, v) in [
            ("--train-subset", self.data.train_subset),
            ("--test-subset", self.data.test_subset),
        ] {
            if v == Some(0) {
                return Err(Error::Invalid(format!(
                    "{flag} 0 selects no examples: give N >= 1, or leave the flag out for the \
                     whole split"
                )));
            }
        }
        Ok(())
    }
}

/// A run ready to start: what `train` resolved from its flags, a config or a checkpoint.
pub struct Plan {
    /// The model.
    pub spec: ModelSpec,
    /// Initial (or resumed) parameters.
    pub params: Params,
    /// Training settings.
    pub cfg: TrainConfig,
    /// The optimizer state to resume from, if any.
    pub state: Option<TrainState>,
    /// The checkpoint the state comes from, when resuming.
    pub resumed_from: Option<PathBuf>,
    /// The data (recorded in every checkpoint).
    pub data: DataChoice,
}

impl Plan {
    /// A fresh run of config `c` (He-normal initialisation with the config's seed).
    pub fn from_config(c: RunConfig) -> Result<Self> {
        c.train.validate()?;
        let split = c.data.load()?;
        let spec = c.spec(&split)?;
        Ok(Plan {
            params: Params::he_normal(&spec, c.train.seed)?,
            spec,
            cfg: c.train,
            state: None,
            resumed_from: None,
            data: c.data,
        })
    }

    /// Resumes the run that wrote the checkpoint at `path` with its own settings and budget,
    /// or the budget `epochs` when given.
    fn resume(
        path: &Path,
        epochs: Option<usize>,
        stop_log10_loss: Option<f64>,
        nthreads: usize,
    ) -> Result<Self> {
        let c = Checkpoint::load(path)?;
        let info = c.train.ok_or_else(|| {
            Error::Invalid(format!(
                "{} has no training state: only checkpoints written by `margincert train` resume",
                path.display()
            ))
        })?;
        let mut cfg = info.config;
        if let Some(e) = epochs {
            if e < info.state.epoch {
                return Err(Error::Invalid(format!(
                    "--epochs {e} is below the checkpoint's epoch {}: the budget counts all the \
                     run's epochs; give at least {0}, or leave --epochs out to keep the run's \
                     budget of {}",
                    info.state.epoch, cfg.epochs
                )));
            }
            if e != cfg.epochs {
                eprintln!(
                    "note: the run's budget changes from {} to {e} epochs",
                    cfg.epochs
                );
            }
            cfg.epochs = e;
        }
        if let Some(s) = stop_log10_loss {
            eprintln!(
                "note: the run's stopping loss changes from {} to 1e{s}",
                cfg.stop_log10_loss
                    .map_or_else(|| "none".to_string(), |o| format!("1e{o}"))
            );
            cfg.stop_log10_loss = Some(s);
        }
        if info.threads != nthreads {
            eprintln!(
                "note: the run used {} threads, this one {nthreads}: the result may differ in the last bits",
                info.threads
            );
        }
        Ok(Plan {
            spec: c.spec,
            params: c.params,
            cfg,
            state: Some(info.state),
            resumed_from: Some(path.to_path_buf()),
            data: info.data,
        })
    }

    /// The run `a` describes: a resumed checkpoint, a run config, or the flags.
    pub fn from_args(a: &TrainArgs, nthreads: usize) -> Result<Self> {
        a.validate()?;
        if let Some(path) = &a.resume {
            return Self::resume(path, a.epochs, a.stop_loss, nthreads);
        }
        if let Some(path) = &a.config {
            let mut c = RunConfig::from_file(path)?;
            if let Some(e) = a.epochs {
                c.train.epochs = e;
            }
            if a.stop_loss.is_some() {
                c.train.stop_log10_loss = a.stop_loss;
            }
            return Self::from_config(c);
        }
        let data = a.data.choice();
        let split = data.load()?;
        let loss = a.loss.map_or(LossKind::default(), LossKind::from);
        let spec = a.model.build(&split.train, loss.is_binary())?;
        let schedule = match a.lr {
            Some(lr) => Schedule::Constant { lr },
            None => Schedule::loss_based(a.alpha0.unwrap_or(DEFAULT_ALPHA0)),
        };
        let seed = a.seed.unwrap_or(0);
        let cfg = TrainConfig {
            loss,
            batch: a.batch.unwrap_or(DEFAULT_BATCH),
            epochs: a.epochs.unwrap_or(DEFAULT_EPOCHS),
            seed,
            schedule,
            save_at_log10: a.save_at.clone(),
            stop_log10_loss: a.stop_loss,
        };
        cfg.validate()?;
        Ok(Plan {
            params: Params::he_normal(&spec, seed)?,
            spec,
            cfg,
            state: None,
            resumed_from: None,
            data,
        })
    }

    /// Trains into `out`, printing a line per epoch unless `quiet`. `out` is locked for the
    /// run (a second run into it is refused before anything is written); a fresh run replaces
    /// a previous run there only when `overwrite` is set, and a resumed one continues only
    /// the run whose checkpoint it is ([`RunDir::ensure_resumable_from`]).
    pub fn execute(self, out: &Path, quiet: bool, nthreads: usize, overwrite: bool) -> Result<()> {
        margincert::io::ensure_not_input(out, &self.data.input_files()?)?;
        let dir = RunDir::lock(out)?;
        let start = match (self.state, &self.resumed_from, overwrite) {
            (Some(s), from, _) => {
                if let Some(ckpt) = from {
                    dir.ensure_resumable_from(ckpt)?;
                }
                Start::Resume(s)
            }
            (None, _, true) => Start::Overwrite,
            (None, _, false) => {
                dir.ensure_fresh()?;
                Start::Fresh
            }
        };
        let split = self.data.load()?;
        eprintln!(
            "training {} ({} parameters, {}) on {} ({} train / {} test examples), {} threads",
            self.spec.name,
            self.spec.num_params()?,
            match self.spec.homogeneity().degree {
                Some(l) => format!("{l}-homogeneous"),
                None => "not homogeneous".into(),
            },
            split.train.name,
            split.train.len(),
            split.test.len(),
            nthreads
        );
        let summary = run_in(
            &dir,
            start,
            &self.spec,
            self.params,
            self.cfg,
            &split.train,
            Some(&split.test),
            &RunOptions {
                out: out.to_path_buf(),
                data: self.data,
                threads: nthreads,
                print_epochs: !quiet,
            },
        )?;
        eprintln!(
            "stopped: {}; {} rolled-back attempts; checkpoint {}",
            summary.reason,
            summary.rollbacks,
            summary.final_checkpoint.display()
        );
        for k in &summary.kept {
            eprintln!("kept {}", k.display());
        }
        Ok(())
    }
}

/// `margincert train`.
pub fn cmd(a: &TrainArgs, nthreads: usize) -> Result<()> {
    Plan::from_args(a, nthreads)?.execute(&a.out_dir(), a.quiet, nthreads, a.overwrite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_levels_have_one_form() {
        assert_eq!(parse_stop_loss("1e-800").unwrap(), -800.0);
        assert!((parse_stop_loss("5e-3").unwrap() - 5e-3f64.log10()).abs() < 1e-12);
        assert_eq!(parse_save_at("1E-10").unwrap(), -10.0);
        assert_eq!(parse_save_at("1e0").unwrap(), 0.0);
        for bad in [
            "0.001", "-100", "0.5", "1e0.5", "0e5", "-1e-3", "nane3", "1e",
        ] {
            assert!(parse_stop_loss(bad).is_err(), "{bad}");
        }
        assert!(parse_save_at("5e-1").is_err());
        assert_eq!(threshold_file_of("1e-10"), "loss-1e-10.safetensors");
    }

    fn threshold_file_of(t: &str) -> String {
        margincert::run::threshold_file(parse_save_at(t).unwrap())
    }

    #[test]
    fn steps_are_finite_and_positive() {
        assert_eq!(parse_step("0.25").unwrap(), 0.25);
        for bad in ["0", "-0.5", "nan", "inf", "x"] {
            assert!(parse_step(bad).is_err(), "{bad}");
        }
    }
}
