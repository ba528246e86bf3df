//! The `margincert` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use margincert::certify::certificate::{Certificate, CertifyOptions, certify};
use margincert::certify::enclosure::Precision;
use margincert::certify::kkt::KktOptions;
use margincert::certify::verify::verify;
use margincert::checkpoint::Checkpoint;
use margincert::config::RunConfig;
use margincert::data::{DataChoice, Dataset};
use margincert::error::{Error, Result};
use margincert::io::write_atomic;
use margincert::loss::LossKind;
use margincert::model::{ModelSpec, Params, presets};
use margincert::run::{RunOptions, run};
use margincert::train::{Schedule, TrainConfig, TrainState};

/// Train homogeneous networks fast in f32, and certify their margins soundly.
///
/// margincert implements the setting of Lyu & Li, "Gradient Descent Maximizes the Margin of
/// Homogeneous Neural Networks" (ICLR 2020): training keeps going after the loss underflows
/// f64 (losses of 1e-800 are normal), and the checker certifies, with outward-rounded interval
/// arithmetic and correctly rounded MPFR, bounds on the exact real-number network that the
/// stored f32 weights define.
#[derive(Parser, Debug)]
#[command(name = "margincert", version, about, long_about)]
struct Cli {
    /// Worker threads (rayon); 0 = all cores. Runs reproduce exactly with the same count.
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The main job on the embedded default: train the paper's bias-free CNN on the embedded
    /// MNIST subset with the loss-based schedule until the loss is below 1e-100, then certify
    /// the trained checkpoint and print the certificate.
    Demo(DemoArgs),
    /// Train a model (preset or spec file) and write checkpoints and per-epoch metrics.
    Train(TrainArgs),
    /// Show a model spec (preset, spec file or checkpoint): layers, shapes, parameter count,
    /// and the structural homogeneity degree with its reasons.
    Inspect(InspectArgs),
    /// Certify a checkpoint on a dataset: enclosures of every margin, a lower bound on
    /// q_min, bounds on the norms, the normalized and smoothed margins, the summed loss (far
    /// below f64 range) and the homogeneity degree, all about the exact real-number network
    /// that the stored f32 weights define, on the exact inputs p/255. Writes the certificate
    /// as JSON and prints a summary.
    Certify(CertifyArgs),
    /// Recompute every claim of a certificate from the checkpoint and the data and confirm
    /// or refute each one; exits non-zero if any claim is refuted.
    Verify(VerifyArgs),
    /// Download a dataset's official files and verify their SHA-256.
    Fetch(FetchArgs),
    /// Audit a checkpoint trained elsewhere (PyTorch safetensors state_dict + spec, ONNX, or a
    /// native checkpoint): certified homogeneity, margins, loss, KKT bounds; writes
    /// audit.json, certificate.json, report.md and margins.svg; exits non-zero when a
    /// --require-* gate is not certified.
    Audit(AuditArgs),
    /// Plot a run's metrics.jsonl: loss.svg (log10 loss) and margin.svg (normalized and
    /// smoothed margins) against epoch. `train` writes them too at the end of a run.
    Plot(PlotArgs),
    /// Certified robustness radii (L2 from the margin and a certified Lipschitz bound, L-inf
    /// by interval bound propagation) next to verified PGD attack radii; writes robust.json,
    /// robust-curve.json and robust.svg and prints a table.
    Robust(RobustArgs),
    /// Reproduce one of the paper's experiments (a bundle of run configs): train each run,
    /// certify its kept checkpoints and final one, and write the Figure-1 curves (constant vs
    /// loss-based step), the Table-1 margin table (Markdown + JSON) and the certified KKT
    /// epsilon/delta bounds against epoch. Bundles: mnist-small (bias-free MNIST CNN on 50
    /// embedded images, minutes on 2 cores), mnist-small-bias (same with biases), mnist (the
    /// paper's size; needs `fetch`),
    /// linear-svm (linear model, logistic loss, MNIST 0 vs 1).
    Reproduce(ReproduceArgs),
}

#[derive(Args, Debug)]
struct AuditArgs {
    /// The model: .safetensors (PyTorch state_dict or native checkpoint) or .onnx.
    model: PathBuf,
    /// Data source (see `train --help`).
    #[arg(long)]
    data: String,
    /// Model spec (JSON/TOML) naming the layers of a state_dict.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// safetensors, onnx or auto (by extension, then content).
    #[arg(long, default_value = "auto")]
    format: String,
    /// Tensor map file: spec layer index -> tensor name stem.
    #[arg(long)]
    map: Option<PathBuf>,
    /// Prefix of every tensor name (default: detected).
    #[arg(long)]
    prefix: Option<String>,
    /// Round f64 weights that are not f32 (the certificate is then about the rounded net).
    #[arg(long)]
    round_f64: bool,
    /// Which split to audit on.
    #[arg(long, value_enum, default_value = "train")]
    split: SplitName,
    /// Binary task POS,NEG.
    #[arg(long, value_parser = parse_pair)]
    binary: Option<(u8, u8)>,
    /// Use only the first N examples of the split.
    #[arg(long)]
    subset: Option<usize>,
    /// The loss to certify.
    #[arg(long, value_enum, default_value = "cross-entropy")]
    loss: LossArg,
    /// Skip the KKT certificate.
    #[arg(long)]
    no_kkt: bool,
    /// Output directory.
    #[arg(long, default_value = "out/audit")]
    out: PathBuf,
    /// Require a certified normalized margin q_min/rho^L of at least X.
    #[arg(long)]
    require_margin: Option<f64>,
    /// Require proven homogeneity.
    #[arg(long)]
    require_homogeneous: bool,
    /// Require a certified KKT epsilon of at most E.
    #[arg(long)]
    require_kkt_epsilon: Option<f64>,
    /// Require every audited example's certified L∞ radius to be at least R.
    #[arg(long)]
    require_linf: Option<f64>,
    /// Skip the robustness radii (certified and attack).
    #[arg(long, conflicts_with = "require_linf")]
    no_robust: bool,
    /// Examples (the first ones of the split) whose robustness radii are computed.
    #[arg(long, default_value_t = 16)]
    robust_examples: usize,
}

#[derive(Args, Debug)]
struct ReproduceArgs {
    /// The bundle: mnist-small, mnist-small-bias, mnist, linear-svm.
    name: String,
    /// Output directory.
    #[arg(long, default_value = "reproduce-out")]
    out: PathBuf,
    /// Use the paper-size configs where the bundle has them (needs the full datasets).
    #[arg(long)]
    full: bool,
}

#[derive(Args, Debug)]
struct PlotArgs {
    /// A metrics.jsonl file written by `margincert train`.
    metrics: PathBuf,
    /// Output directory (default: the metrics file's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RobustArgs {
    /// The checkpoint (.safetensors).
    checkpoint: PathBuf,
    /// Data source and selection; by default the checkpoint's.
    #[command(flatten)]
    data: OptDataArgs,
    /// Which split.
    #[arg(long, value_enum, default_value = "test")]
    split: SplitName,
    /// Perturbation norm: 2 or inf.
    #[arg(long)]
    norm: margincert::robust::Norm,
    /// Largest radius searched (default 3.0 for L2, 0.3 for L-inf).
    #[arg(long)]
    eps_max: Option<f64>,
    /// Bisection steps on the radius (certified and attack).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// PGD random restarts.
    #[arg(long, default_value_t = 3)]
    restarts: usize,
    /// Output directory.
    #[arg(long, default_value = "robust-out")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct CertifyArgs {
    /// The checkpoint (.safetensors).
    checkpoint: PathBuf,
    /// Data source and selection; by default the ones the checkpoint was trained on.
    #[command(flatten)]
    data: OptDataArgs,
    /// Which split to certify on.
    #[arg(long, value_enum, default_value = "train")]
    split: SplitName,
    /// The loss to certify; by default the checkpoint's training loss.
    #[arg(long, value_enum)]
    loss: Option<LossArg>,
    /// MPFR precision (bits) of the norm and loss bounds.
    #[arg(long, default_value_t = 128)]
    precision: u32,
    /// Examples used by the numeric homogeneity witness.
    #[arg(long, default_value_t = 16)]
    witness_examples: usize,
    /// Skip the approximate-KKT certificate (the slowest part: one certified backward pass
    /// per active constraint).
    #[arg(long)]
    no_kkt: bool,
    /// At most this many constraints get a nonzero KKT multiplier (highest loss weights).
    #[arg(long, default_value_t = 64)]
    kkt_active: usize,
    /// Where to write the certificate (default: CHECKPOINT with extension .cert.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the certificate JSON on standard output instead of the summary.
    #[arg(long)]
    json: bool,
    /// Midpoint arithmetic of the certified forward pass: f64, dd (double-double, for
    /// deep nets such as the CIFAR VGG) or auto (f64, then dd for the examples whose logit
    /// enclosures are too wide).
    #[arg(long, value_enum, default_value = "auto")]
    precision_mode: PrecisionMode,
}

/// `--precision-mode` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum PrecisionMode {
    /// Binary64 midpoints (fast; tight on shallow nets).
    F64,
    /// Double-double midpoints for every example (deep nets).
    Dd,
    /// Binary64, then double-double for the examples whose logits are too wide.
    Auto,
}

impl From<PrecisionMode> for Precision {
    fn from(m: PrecisionMode) -> Self {
        match m {
            PrecisionMode::F64 => Precision::F64,
            PrecisionMode::Dd => Precision::DoubleDouble,
            PrecisionMode::Auto => Precision::Auto,
        }
    }
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// The certificate (JSON).
    certificate: PathBuf,
    /// The checkpoint it is about.
    checkpoint: PathBuf,
    /// Data source and selection; by default the checkpoint's.
    #[command(flatten)]
    data: OptDataArgs,
    /// Which split the certificate is about.
    #[arg(long, value_enum, default_value = "train")]
    split: SplitName,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SplitName {
    Train,
    Test,
}

/// The command-line names of [`LossKind`] (the library's loss type does not depend on clap).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LossArg {
    /// Softmax cross-entropy, `log(1 + Σ_{j≠y} e^{-(z_y - z_j)})` (multi-class; for a
    /// one-output model the certifier reads it as the logistic loss).
    CrossEntropy,
    /// Logistic, `log(1 + e^{-q})`, `q = y z` (binary, one output).
    Logistic,
    /// Exponential, `e^{-q}` (binary, one output).
    Exponential,
}

impl From<LossArg> for LossKind {
    fn from(a: LossArg) -> Self {
        match a {
            LossArg::CrossEntropy => LossKind::CrossEntropy,
            LossArg::Logistic => LossKind::Logistic,
            LossArg::Exponential => LossKind::Exponential,
        }
    }
}

/// Data selection whose defaults come from a checkpoint's training record.
#[derive(Args, Debug, Clone)]
struct OptDataArgs {
    /// Data source (see `train --help`); default: the checkpoint's.
    #[arg(long)]
    data: Option<String>,
    /// Binary task POS,NEG; default: the checkpoint's.
    #[arg(long, value_parser = parse_pair)]
    binary: Option<(u8, u8)>,
    /// Use only the first N examples of the split.
    #[arg(long)]
    subset: Option<usize>,
}

impl OptDataArgs {
    /// Resolves the dataset for `ckpt`, falling back to its training record.
    fn load(&self, ckpt: &Checkpoint, split: SplitName) -> Result<Dataset> {
        let recorded = ckpt.train.as_ref().map(|i| i.data.clone());
        let choice = match (&self.data, recorded) {
            (Some(source), _) => DataChoice {
                source: source.clone(),
                train_subset: None,
                test_subset: None,
                binary: self.binary,
            },
            (None, Some(mut d)) => {
                d.binary = self.binary.or(d.binary);
                d
            }
            (None, None) => {
                return Err(Error::Invalid(
                    "the checkpoint does not say what it was trained on: give --data".into(),
                ));
            }
        };
        let loaded = choice.load()?;
        let d = match split {
            SplitName::Train => loaded.train,
            SplitName::Test => loaded.test,
        };
        Ok(match self.subset {
            Some(n) => d.take(n),
            None => d,
        })
    }
}

#[derive(Args, Debug, Clone)]
struct DataArgs {
    /// Data: `embedded` (1,000 + 1,000 MNIST images shipped with the crate), `mnist:DIR`,
    /// `fashion-mnist:DIR`, `cifar10:DIR`, or a directory (its format is detected).
    #[arg(long, default_value = "embedded")]
    data: String,
    /// Binary task: keep two classes POS,NEG (labels become +1 / -1). Needed by the logistic
    /// and exponential losses.
    #[arg(long, value_parser = parse_pair)]
    binary: Option<(u8, u8)>,
    /// Use only the first N training examples.
    #[arg(long)]
    train_subset: Option<usize>,
    /// Use only the first N test examples.
    #[arg(long)]
    test_subset: Option<usize>,
}

fn parse_pair(s: &str) -> std::result::Result<(u8, u8), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| "expected POS,NEG, e.g. 3,5".to_string())?;
    let p = |t: &str| t.trim().parse::<u8>().map_err(|e| format!("'{t}': {e}"));
    let (a, b) = (p(a)?, p(b)?);
    if a == b {
        return Err("the two classes must differ".into());
    }
    Ok((a, b))
}

/// Parses `1e-100` (possibly below f64 range) or `-100` into a log10 level.
fn parse_loss_level(t: &str) -> std::result::Result<f64, String> {
    if let Some((m, e)) = t.split_once(['e', 'E']) {
        let m: f64 = m.parse().map_err(|e| format!("'{t}': {e}"))?;
        let e: f64 = e.parse().map_err(|e| format!("'{t}': {e}"))?;
        if m <= 0.0 {
            return Err(format!("'{t}': a loss level must be positive"));
        }
        Ok(m.log10() + e)
    } else {
        t.parse().map_err(|e| format!("'{t}': {e}"))
    }
}

impl DataArgs {
    fn choice(&self) -> DataChoice {
        DataChoice {
            source: self.data.clone(),
            train_subset: self.train_subset,
            test_subset: self.test_subset,
            binary: self.binary,
        }
    }
}

#[derive(Args, Debug)]
struct ModelArgs {
    /// A preset: mnist-cnn (the paper's, no bias), mnist-cnn-bias (every layer, not
    /// homogeneous), mnist-cnn-first-bias (the paper's "without bias" mode), cifar-vgg, mlp
    /// (784-1000-1000), small-mlp (one hidden layer of 100), linear.
    #[arg(long, default_value = "mnist-cnn", conflicts_with = "spec")]
    model: String,
    /// A model spec file (JSON or TOML) instead of a preset.
    #[arg(long)]
    spec: Option<PathBuf>,
}

impl ModelArgs {
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

#[derive(Args, Debug)]
struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Loss (summed in the theory; the optimizer uses the mean, as the paper's code).
    #[arg(long, value_enum, default_value = "cross-entropy")]
    loss: LossArg,
    /// Minibatch size; 0 = full batch (gradient descent).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Use a constant learning rate instead of the paper's loss-based schedule.
    #[arg(long)]
    lr: Option<f64>,
    /// Initial step of the loss-based schedule.
    #[arg(long, default_value_t = 0.1)]
    alpha0: f64,
    /// Epochs to run (accepted epochs; rolled-back attempts do not count).
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// Stop once the mean training loss is below this (e.g. 1e-100; any exponent works).
    #[arg(long, value_parser = parse_loss_level)]
    stop_loss: Option<f64>,
    /// Keep checkpoints when the loss first falls below these levels (the paper:
    /// 1e-10,1e-15,1e-20,1e-120).
    #[arg(long, value_delimiter = ',', value_parser = parse_loss_level)]
    save_at: Vec<f64>,
    /// Seed of the initialisation and of the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory: metrics.jsonl, last.safetensors, loss-1e*.safetensors.
    #[arg(long, default_value = "out/train")]
    out: PathBuf,
    /// Resume from a checkpoint written by `margincert train` (its model, data and settings;
    /// `--epochs` may extend the run). Same thread count = the same bits as an uninterrupted run.
    #[arg(long, conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// A run config (TOML, see fixtures/configs/): model, data and training settings in one
    /// file; the model, data and optimizer flags are then ignored.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Do not print a line per epoch.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Output directory.
    #[arg(long, default_value = "out/demo")]
    out: PathBuf,
    /// Stop once the mean training loss is below this level.
    #[arg(long, default_value = "1e-100", value_parser = parse_loss_level)]
    stop_loss: f64,
    /// Maximum epochs.
    #[arg(long, default_value_t = 2000)]
    epochs: usize,
    /// Training examples (the first N of the embedded 1,000). With the loss-based schedule
    /// the loss falls by a roughly constant number of decades per epoch, so the demo keeps
    /// the set small to pass 1e-100 in minutes on two cores.
    #[arg(long, default_value_t = 100)]
    train_subset: usize,
    /// Test examples (the first N of the embedded 1,000), evaluated after every epoch.
    #[arg(long, default_value_t = 200)]
    test_subset: usize,
    /// Minibatch size.
    #[arg(long, default_value_t = 10)]
    batch: usize,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// A preset name, a spec file, or a checkpoint (.safetensors).
    target: String,
    /// Print the spec as JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct FetchArgs {
    /// mnist, fashion-mnist or cifar10.
    dataset: String,
    /// Directory to download into.
    #[arg(long, default_value = "data")]
    dir: PathBuf,
}

fn threads(n: usize) -> Result<usize> {
    let n = if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::Invalid(format!("thread pool: {e}")))?;
    Ok(n)
}

/// A run ready to start: what `train` resolved from its flags, a config or a checkpoint.
struct Plan {
    spec: ModelSpec,
    params: Params,
    cfg: TrainConfig,
    state: Option<TrainState>,
    data: DataChoice,
}

fn plan(a: &TrainArgs, nthreads: usize) -> Result<Plan> {
    if let Some(path) = &a.resume {
        let c = Checkpoint::load(path)?;
        let info = c.train.ok_or_else(|| {
            Error::Invalid(format!(
                "{} has no training state: only checkpoints written by `margincert train` resume",
                path.display()
            ))
        })?;
        let mut cfg = info.config;
        cfg.epochs = a.epochs.max(info.state.epoch);
        if info.threads != nthreads {
            eprintln!(
                "note: the run used {} threads, this one {nthreads}: the result may differ in the last bits",
                info.threads
            );
        }
        return Ok(Plan {
            spec: c.spec,
            params: c.params,
            cfg,
            state: Some(info.state),
            data: info.data,
        });
    }
    if let Some(path) = &a.config {
        let c = RunConfig::from_file(path)?;
        let split = c.data.load()?;
        let spec = c.spec(&split)?;
        return Ok(Plan {
            params: Params::he_normal(&spec, c.train.seed)?,
            spec,
            cfg: c.train,
            state: None,
            data: c.data,
        });
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

fn execute(p: Plan, out: &std::path::Path, quiet: bool, nthreads: usize) -> Result<()> {
    let split = p.data.load()?;
    eprintln!(
        "training {} ({} parameters, {}) on {} ({} train / {} test examples), {} threads",
        p.spec.name,
        p.spec.num_params()?,
        match p.spec.homogeneity().degree {
            Some(l) => format!("{l}-homogeneous"),
            None => "not homogeneous".into(),
        },
        split.train.name,
        split.train.len(),
        split.test.len(),
        nthreads
    );
    let summary = run(
        &p.spec,
        p.params,
        p.cfg,
        &split.train,
        Some(&split.test),
        p.state,
        &RunOptions {
            out: out.to_path_buf(),
            data: p.data,
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

fn reproduce_cmd(a: &ReproduceArgs, nthreads: usize) -> Result<()> {
    let r = margincert::reproduce::reproduce(&a.name, &a.out, a.full, nthreads)?;
    for f in r.files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}

fn train_cmd(a: &TrainArgs, nthreads: usize) -> Result<()> {
    execute(plan(a, nthreads)?, &a.out, a.quiet, nthreads)
}

/// The demo's run config (also in `fixtures/configs/demo.toml`).
const DEMO_CONFIG: &str = include_str!("../fixtures/configs/demo.toml");

fn demo_cmd(a: &DemoArgs, nthreads: usize) -> Result<()> {
    let mut c: RunConfig = toml::from_str(DEMO_CONFIG)
        .map_err(|e| Error::Invalid(format!("the embedded demo config: {e}")))?;
    c.data.train_subset = Some(a.train_subset);
    c.data.test_subset = Some(a.test_subset);
    c.train.batch = a.batch;
    c.train.epochs = a.epochs;
    c.train.stop_log10_loss = Some(a.stop_loss);
    let split = c.data.load()?;
    let spec = c.spec(&split)?;
    let p = Plan {
        params: Params::he_normal(&spec, c.train.seed)?,
        spec,
        cfg: c.train,
        state: None,
        data: c.data,
    };
    execute(p, &a.out, false, nthreads)?;
    certify_cmd(&CertifyArgs {
        checkpoint: a.out.join("last.safetensors"),
        data: OptDataArgs {
            data: None,
            binary: None,
            subset: None,
        },
        split: SplitName::Train,
        loss: None,
        precision: 128,
        witness_examples: 16,
        no_kkt: false,
        kkt_active: 64,
        out: None,
        json: false,
        precision_mode: PrecisionMode::Auto,
    })
}

fn certify_cmd(a: &CertifyArgs) -> Result<()> {
    let (ckpt, digest) = Checkpoint::load_with_digest(&a.checkpoint)?;
    let data = a.data.load(&ckpt, a.split)?;
    let loss = a
        .loss
        .map(LossKind::from)
        .or(ckpt.train.as_ref().map(|t| t.config.loss))
        .unwrap_or_default();
    let defaults = CertifyOptions::default();
    let opts = CertifyOptions {
        loss,
        witness_examples: a.witness_examples,
        precision: a.precision,
        kkt: if a.no_kkt {
            None
        } else {
            defaults.kkt.map(|k| KktOptions {
                max_active: a.kkt_active,
                ..k
            })
        },
        forward: a.precision_mode.into(),
    };
    eprintln!(
        "certifying {} on {} ({} examples)...",
        a.checkpoint.display(),
        data.name,
        data.len()
    );
    let started = std::time::Instant::now();
    let mut cert = certify(&ckpt.spec, &ckpt.params, &data, &opts)?;
    cert.checkpoint_sha256 = Some(digest);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.checkpoint.with_extension("cert.json"));
    write_atomic(&out, cert.to_json().as_bytes())?;
    if a.json {
        println!("{}", cert.to_json());
    } else {
        println!("{}", cert.summary());
    }
    eprintln!(
        "certificate written to {} ({:.1} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn verify_cmd(a: &VerifyArgs) -> Result<bool> {
    let text = std::fs::read_to_string(&a.certificate).map_err(|e| Error::io(&a.certificate, e))?;
    let cert = Certificate::from_json(&text)?;
    let (ckpt, digest) = Checkpoint::load_with_digest(&a.checkpoint)?;
    if let Some(want) = &cert.checkpoint_sha256
        && *want != digest
    {
        return Err(Error::Checksum {
            what: format!("checkpoint {}", a.checkpoint.display()),
            expected: want.clone(),
            got: digest,
        });
    }
    let data = a.data.load(&ckpt, a.split)?;
    let report = verify(&cert, &ckpt.spec, &ckpt.params, &data)?;
    println!("{}", report.summary());
    Ok(report.ok())
}

fn inspect_cmd(a: &InspectArgs) -> Result<()> {
    let path = PathBuf::from(&a.target);
    let (spec, params) = if a.target.ends_with(".safetensors") {
        let c = Checkpoint::load(&path)?;
        (c.spec, Some(c.params))
    } else if path.exists() {
        (ModelSpec::from_file(&path)?, None)
    } else {
        (
            presets::by_name(&a.target, presets::mnist_cnn().input, 10)?,
            None,
        )
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&spec).expect("serializes")
        );
        return Ok(());
    }
    println!("model {} — input {}", spec.name, spec.input);
    for p in spec.plan()? {
        println!(
            "  {:>3}  {:<40} {} -> {}",
            p.index,
            p.layer.describe(),
            p.input,
            p.output
        );
    }
    println!("parameters: {}", spec.num_params()?);
    let h = spec.homogeneity();
    match h.degree {
        Some(l) => println!("homogeneous of degree L = {l} (structural proof):"),
        None => println!("NOT homogeneous:"),
    }
    for r in &h.reasons {
        println!("  - {r}");
    }
    if let Some(p) = params {
        println!("rho = ||theta|| = {:.6e} (f64 estimate)", p.norm());
    }
    Ok(())
}

fn fetch_cmd(a: &FetchArgs) -> Result<()> {
    let kind = a.dataset.parse()?;
    margincert::fetch::fetch(kind, &a.dir, true)?;
    eprintln!("{} verified in {}", a.dataset, a.dir.display());
    Ok(())
}

fn audit_cmd(a: &AuditArgs) -> Result<()> {
    use margincert::audit::{AuditOptions, Requirements, audit};
    use margincert::import::{Format, ImportOptions, TensorMap, load};
    let spec = a.spec.as_deref().map(ModelSpec::from_file).transpose()?;
    let opts = ImportOptions {
        prefix: a.prefix.clone(),
        map: a.map.as_deref().map(TensorMap::from_file).transpose()?,
        round_f64: a.round_f64,
    };
    let imp = load(
        &a.model,
        Format::parse_cli(&a.format)?,
        spec.as_ref(),
        &opts,
    )?;
    let mut split = a.data.parse::<margincert::data::DataSource>()?.load()?;
    if let Some((p, n)) = a.binary {
        split = split.binary(p, n)?;
    }
    let data = match a.split {
        SplitName::Train => split.train,
        SplitName::Test => split.test,
    };
    let data = a.subset.map_or(data.clone(), |n| data.take(n));
    let mut o = AuditOptions::default();
    o.certify.loss = a.loss.into();
    if a.no_kkt {
        o.kkt = None;
    }
    o.require = Requirements {
        margin: a.require_margin,
        homogeneous: a.require_homogeneous,
        kkt_epsilon: a.require_kkt_epsilon,
        linf: a.require_linf,
    };
    o.robust = if a.no_robust {
        None
    } else {
        o.robust.map(|r| margincert::audit::RobustAudit {
            examples: a.robust_examples,
            ..r
        })
    };
    let source = format!("{}", a.model.display());
    let report = audit(&imp.checkpoint, &data, &source, &imp.notes, &o)?;
    report.write(&a.out, o.bins)?;
    println!("{}", report.markdown());
    eprintln!("audit written to {}", a.out.display());
    let unmet: Vec<String> = report
        .unmet()
        .iter()
        .map(|r| format!("{} ({})", r.requirement, r.detail))
        .collect();
    if unmet.is_empty() {
        Ok(())
    } else {
        Err(Error::Certify(format!(
            "requirements not certified: {}",
            unmet.join("; ")
        )))
    }
}

fn robust_cmd(a: &RobustArgs) -> Result<()> {
    use margincert::robust::{self, Norm, RobustOptions};
    let ckpt = Checkpoint::load(&a.checkpoint)?;
    let data = a.data.load(&ckpt, a.split)?;
    let eps_max = a.eps_max.unwrap_or(match a.norm {
        Norm::L2 => 3.0,
        Norm::Inf => 0.3,
    });
    let opts = RobustOptions {
        norm: a.norm,
        eps_max,
        steps: a.steps,
        attack: robust::AttackOptions {
            restarts: a.restarts,
            ..Default::default()
        },
    };
    let rep = robust::run(&ckpt.spec, &ckpt.params, &data, &opts)?;
    robust::write_outputs(&rep, &a.out)?;
    print!("{}", rep.table());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = threads(cli.threads).and_then(|n| match &cli.command {
        Command::Demo(a) => demo_cmd(a, n),
        Command::Train(a) => train_cmd(a, n),
        Command::Inspect(a) => inspect_cmd(a),
        Command::Certify(a) => certify_cmd(a),
        Command::Verify(a) => verify_cmd(a).and_then(|ok| {
            if ok {
                Ok(())
            } else {
                Err(Error::Certify("the certificate was refuted".into()))
            }
        }),
        Command::Fetch(a) => fetch_cmd(a),
        Command::Audit(a) => audit_cmd(a),
        Command::Reproduce(a) => reproduce_cmd(a, n),
        Command::Plot(a) => {
            let dir = a.out.clone().unwrap_or_else(|| {
                a.metrics
                    .parent()
                    .map_or_else(|| PathBuf::from("."), |p| p.to_path_buf())
            });
            margincert::run::write_plots(&a.metrics, &dir).map(|files| {
                for f in files {
                    eprintln!("wrote {}", f.display());
                }
            })
        }
        Command::Robust(a) => robust_cmd(a),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
