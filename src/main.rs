//! The `margincert` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use margincert::certify::certificate::{Certificate, CertifyOptions, certify};
use margincert::certify::verify::verify;
use margincert::checkpoint::{Checkpoint, write_atomic};
use margincert::data::{DataSource, Dataset, Split};
use margincert::error::{Error, Result};
use margincert::model::{ModelSpec, Params, presets};
use margincert::train::run::{RunOptions, run};
use margincert::train::{LossKind, Schedule, TrainConfig};

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
    /// Certified robustness radii (L2 from the margin and a certified Lipschitz bound, L-inf
    /// by interval bound propagation) next to verified PGD attack radii; writes robust.json,
    /// robust-curve.json and robust.svg and prints a table.
    Robust(RobustArgs),
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
    loss: Option<LossKind>,
    /// MPFR precision (bits) of the norm and loss bounds.
    #[arg(long, default_value_t = 128)]
    precision: u32,
    /// Examples used by the numeric homogeneity witness.
    #[arg(long, default_value_t = 16)]
    witness_examples: usize,
    /// Where to write the certificate (default: CHECKPOINT with extension .cert.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the certificate JSON on standard output instead of the summary.
    #[arg(long)]
    json: bool,
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
        let info = ckpt.train.as_ref();
        let data = self
            .data
            .clone()
            .or_else(|| info.map(|i| i.data.clone()))
            .ok_or_else(|| {
                Error::Invalid(
                    "the checkpoint does not say what it was trained on: give --data".into(),
                )
            })?;
        let binary = self.binary.or(info.and_then(|i| i.binary));
        let args = DataArgs {
            data,
            binary,
            train_subset: info.and_then(|i| i.train_subset),
            test_subset: None,
        };
        let split_data = args.load()?;
        let d = match split {
            SplitName::Train => split_data.train,
            SplitName::Test => split_data.test,
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
    fn load(&self) -> Result<Split> {
        let src: DataSource = self.data.parse()?;
        let mut split = src.load()?;
        if let Some((p, n)) = self.binary {
            split.train = split.train.binary(p, n)?;
            split.test = split.test.binary(p, n)?;
        }
        if let Some(n) = self.train_subset {
            split.train = split.train.take(n);
        }
        if let Some(n) = self.test_subset {
            split.test = split.test.take(n);
        }
        Ok(split)
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
    loss: LossKind,
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
    /// Resume from a checkpoint written by `margincert train` (same data, same threads).
    #[arg(long)]
    resume: Option<PathBuf>,
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

fn train_cmd(a: &TrainArgs, nthreads: usize) -> Result<()> {
    let split = a.data.load()?;
    let (spec, params, cfg, state) = match &a.resume {
        Some(path) => {
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
            (c.spec, c.params, cfg, Some(info.state))
        }
        None => {
            let spec = a.model.build(&split.train, a.loss.is_binary())?;
            let params = Params::he_normal(&spec, a.seed)?;
            let schedule = match a.lr {
                Some(lr) => Schedule::Constant { lr },
                None => match Schedule::paper_loss_based() {
                    Schedule::LossBased {
                        r_up,
                        r_down,
                        min_alpha,
                        ..
                    } => Schedule::LossBased {
                        alpha0: a.alpha0,
                        r_up,
                        r_down,
                        min_alpha,
                    },
                    constant => constant,
                },
            };
            let cfg = TrainConfig {
                loss: a.loss,
                batch: a.batch,
                epochs: a.epochs,
                seed: a.seed,
                schedule,
                save_at_log10: a.save_at.clone(),
                stop_log10_loss: a.stop_loss,
            };
            (spec, params, cfg, None)
        }
    };
    eprintln!(
        "training {} ({} parameters, {}) on {} ({} train / {} test examples), {} threads",
        spec.name,
        spec.num_params()?,
        match spec.homogeneity().degree {
            Some(l) => format!("{l}-homogeneous"),
            None => "not homogeneous".into(),
        },
        split.train.name,
        split.train.len(),
        split.test.len(),
        nthreads
    );
    let summary = run(
        &spec,
        params,
        cfg,
        &split.train,
        Some(&split.test),
        state,
        &RunOptions {
            out: a.out.clone(),
            data: a.data.data.clone(),
            train_subset: a.data.train_subset,
            binary: a.data.binary,
            threads: nthreads,
            print_epochs: !a.quiet,
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

fn demo_cmd(a: &DemoArgs, nthreads: usize) -> Result<()> {
    let args = TrainArgs {
        model: ModelArgs {
            model: "mnist-cnn".into(),
            spec: None,
        },
        data: DataArgs {
            data: "embedded".into(),
            binary: None,
            train_subset: Some(a.train_subset),
            test_subset: Some(a.test_subset),
        },
        loss: LossKind::CrossEntropy,
        batch: a.batch,
        lr: None,
        alpha0: 0.1,
        epochs: a.epochs,
        stop_loss: Some(a.stop_loss),
        save_at: vec![-10.0, -20.0, -50.0],
        seed: 0,
        out: a.out.clone(),
        resume: None,
        quiet: false,
    };
    train_cmd(&args, nthreads)?;
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
        out: None,
        json: false,
    })
}

fn certify_cmd(a: &CertifyArgs) -> Result<()> {
    let (ckpt, digest) = Checkpoint::load_with_digest(&a.checkpoint)?;
    let data = a.data.load(&ckpt, a.split)?;
    let loss = a
        .loss
        .or(ckpt.train.as_ref().map(|t| t.config.loss))
        .unwrap_or_default();
    let opts = CertifyOptions {
        loss,
        witness_examples: a.witness_examples,
        precision: a.precision,
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
    if let Some(want) = &cert.checkpoint_sha256 {
        if *want != digest {
            return Err(Error::Checksum {
                what: format!("checkpoint {}", a.checkpoint.display()),
                expected: want.clone(),
                got: digest,
            });
        }
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
