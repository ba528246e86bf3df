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
use margincert::run::{RunOptions, run};
use margincert::train::{Schedule, TrainConfig, TrainState};

use super::args::{LossArg, parse_loss_level};
use super::data::DataArgs;

// The model of a training run: a preset or a spec file.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// A preset: mnist-cnn (the paper's, no bias), mnist-cnn-bias (every layer, not
    /// homogeneous), mnist-cnn-first-bias (the paper's "without bias" mode), cifar-vgg, mlp
    /// (784-1000-1000), small-mlp (one hidden layer of 100), linear.
    #[arg(long, default_value = "mnist-cnn", conflicts_with = "spec")]
    pub model: String,
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
                &self.model,
                data.shape,
                if binary { 1 } else { data.classes },
            ),
        }
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
    #[arg(long, value_enum, default_value = "cross-entropy")]
    pub loss: LossArg,
    /// Minibatch size; 0 = full batch (gradient descent).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Use a constant learning rate instead of the paper's loss-based schedule.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Initial step of the loss-based schedule.
    #[arg(long, default_value_t = 0.1)]
    pub alpha0: f64,
    /// Epochs to run (accepted epochs; rolled-back attempts do not count).
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Stop once the mean training loss is below this (e.g. 1e-100; any exponent works).
    #[arg(long, value_parser = parse_loss_level)]
    pub stop_loss: Option<f64>,
    /// Keep checkpoints when the loss first falls below these levels (the paper:
    /// 1e-10,1e-15,1e-20,1e-120).
    #[arg(long, value_delimiter = ',', value_parser = parse_loss_level)]
    pub save_at: Vec<f64>,
    /// Seed of the initialisation and of the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory: metrics.jsonl, last.safetensors, loss-1e*.safetensors.
    #[arg(long, default_value = "out/train")]
    pub out: PathBuf,
    /// Resume from a checkpoint written by `margincert train` (its model, data and settings;
    /// `--epochs` may extend the run). Same thread count = the same bits as an uninterrupted run.
    #[arg(long, conflicts_with = "config")]
    pub resume: Option<PathBuf>,
    /// A run config (TOML, see fixtures/configs/): model, data and training settings in one
    /// file; the model, data and optimizer flags are then ignored.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Do not print a line per epoch.
    #[arg(long)]
    pub quiet: bool,
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
    /// The data (recorded in every checkpoint).
    pub data: DataChoice,
}

impl Plan {
    /// A fresh run of config `c` (He-normal initialisation with the config's seed).
    pub fn from_config(c: RunConfig) -> Result<Self> {
        let split = c.data.load()?;
        let spec = c.spec(&split)?;
        Ok(Plan {
            params: Params::he_normal(&spec, c.train.seed)?,
            spec,
            cfg: c.train,
            state: None,
            data: c.data,
        })
    }

    /// Resumes the run that wrote the checkpoint at `path`, extended to `epochs`.
    fn resume(path: &Path, epochs: usize, nthreads: usize) -> Result<Self> {
        let c = Checkpoint::load(path)?;
        let info = c.train.ok_or_else(|| {
            Error::Invalid(format!(
                "{} has no training state: only checkpoints written by `margincert train` resume",
                path.display()
            ))
        })?;
        let mut cfg = info.config;
        cfg.epochs = epochs.max(info.state.epoch);
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
            data: info.data,
        })
    }

    /// The run `a` describes: a resumed checkpoint, a run config, or the flags.
    pub fn from_args(a: &TrainArgs, nthreads: usize) -> Result<Self> {
        if let Some(path) = &a.resume {
            return Self::resume(path, a.epochs, nthreads);
        }
        if let Some(path) = &a.config {
            return Self::from_config(RunConfig::from_file(path)?);
        }
        let data = a.data.choice();
        let split = data.load()?;
        let loss = LossKind::from(a.loss);
        let spec = a.model.build(&split.train, loss.is_binary())?;
        let schedule = match a.lr {
            Some(lr) => Schedule::Constant { lr },
            None => Schedule::loss_based(a.alpha0),
        };
        Ok(Plan {
            params: Params::he_normal(&spec, a.seed)?,
            spec,
            cfg: TrainConfig {
                loss,
                batch: a.batch,
                epochs: a.epochs,
                seed: a.seed,
                schedule,
                save_at_log10: a.save_at.clone(),
                stop_log10_loss: a.stop_loss,
            },
            state: None,
            data,
        })
    }

    /// Trains into `out`, printing a line per epoch unless `quiet`.
    pub fn execute(self, out: &Path, quiet: bool, nthreads: usize) -> Result<()> {
        margincert::io::ensure_not_input(out, &self.data.input_files()?)?;
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
        let summary = run(
            &self.spec,
            self.params,
            self.cfg,
            &split.train,
            Some(&split.test),
            self.state,
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
    Plan::from_args(a, nthreads)?.execute(&a.out, a.quiet, nthreads)
}
