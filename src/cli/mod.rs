//! The command line: the clap types (one module per command, each with its flags and its
//! `cmd` function) and the dispatch. Everything a command computes comes from the library;
//! this layer parses flags, resolves data and files, and prints.

mod args;
mod audit;
mod certify;
mod data;
mod demo;
mod fetch;
mod inspect;
mod plot;
mod reproduce;
mod robust;
mod train;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use margincert::error::{Error, Result};

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
    Demo(demo::DemoArgs),
    /// Train a model (preset or spec file) and write checkpoints and per-epoch metrics.
    Train(train::TrainArgs),
    /// Show a model spec (preset, spec file or checkpoint): layers, shapes, parameter count,
    /// and the structural homogeneity degree with its reasons.
    Inspect(inspect::InspectArgs),
    /// Certify a checkpoint on a dataset: enclosures of every margin, a lower bound on
    /// q_min, bounds on the norms, the normalized and smoothed margins, the summed loss (far
    /// below f64 range) and the homogeneity degree, all about the exact real-number network
    /// that the stored f32 weights define, on the exact inputs p/255. Writes the certificate
    /// as JSON and prints a summary.
    Certify(certify::CertifyArgs),
    /// Recompute every claim of a certificate from the checkpoint and the data and confirm
    /// or refute each one; exits non-zero if any claim is refuted.
    Verify(verify::VerifyArgs),
    /// Download a dataset's official files and verify their SHA-256.
    Fetch(fetch::FetchArgs),
    /// Audit a checkpoint trained elsewhere (PyTorch safetensors state_dict + spec, ONNX, or a
    /// native checkpoint): certified homogeneity, margins, loss, KKT bounds; writes
    /// audit.json, certificate.json, report.md and margins.svg; exits non-zero when a
    /// --require-* gate is not certified.
    Audit(audit::AuditArgs),
    /// Plot a run's metrics.jsonl: loss.svg (log10 loss) and margin.svg (normalized and
    /// smoothed margins) against epoch. `train` writes them too at the end of a run.
    Plot(plot::PlotArgs),
    /// Certified robustness radii (L2: the margin over certified global Lipschitz bounds;
    /// L-inf: interval bound propagation and CROWN with IBP intermediate bounds, CROWN-IBP),
    /// the best per example, next to verified attack radii (PGD or Carlini-Wagner L2); writes
    /// robust.json, robust-curve.json and robust.svg and prints a table.
    Robust(robust::RobustArgs),
    /// Reproduce one of the paper's experiments (a bundle of run configs): train each run,
    /// certify its kept checkpoints and final one, and write the Figure-1 curves (constant vs
    /// loss-based step), the Table-1 margin table (Markdown + JSON: the paper's
    /// q_min/prod||W_i|| first, the scale-free KKT figures eps/||theta~|| and beta beside the
    /// absolute eps/delta) and the certified KKT bounds against epoch. Bundles: mnist-small
    /// (bias-free MNIST CNN on 50 embedded images, minutes on 2 cores), mnist-small-bias (same
    /// with biases), two-layer-relu, linear-svm (linear model, logistic loss, MNIST 0 vs 1),
    /// mnist-1k (the paper's CNN on 1,000 MNIST images; needs the MNIST files), mnist-1k-bias
    /// (its bias control), loss-1e-800 (an MLP trained below 1e-800 and certified there),
    /// cifar-vgg-small (the VGG on 20 CIFAR-10 images), mnist and cifar (the paper's size;
    /// days to months of CPU). With --reuse, finished runs in --out are certified again
    /// instead of trained again.
    Reproduce(reproduce::ReproduceArgs),
}

/// Most worker threads per available core (more only adds switching: 2,000 threads made a
/// tiny epoch take a minute); `MARGINCERT_MAX_THREADS` raises the cap.
const THREADS_PER_CORE: usize = 4;

/// Builds the global thread pool with `n` threads (0: all cores); returns the count. Refuses
/// more than [`THREADS_PER_CORE`] per available core unless `MARGINCERT_MAX_THREADS` allows it.
fn threads(n: usize) -> Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = if n == 0 { cores } else { n };
    let (cap, why) = match std::env::var("MARGINCERT_MAX_THREADS") {
        Ok(v) => (
            v.trim().parse::<usize>().map_err(|_| {
                Error::Invalid(format!(
                    "MARGINCERT_MAX_THREADS={v}: expected a number of threads"
                ))
            })?,
            "MARGINCERT_MAX_THREADS".to_string(),
        ),
        Err(_) => (
            THREADS_PER_CORE * cores,
            format!("{THREADS_PER_CORE} per available core, {cores} cores"),
        ),
    };
    if n > cap {
        return Err(Error::Invalid(format!(
            "--threads {n} is more than {cap} ({why}): oversubscribed threads only slow every \
             epoch down. Use --threads {cores}, or set MARGINCERT_MAX_THREADS={n} to allow it"
        )));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::Invalid(format!("thread pool: {e}")))?;
    Ok(n)
}

/// Parses the command line, runs the command, prints its error if any.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = threads(cli.threads).and_then(|n| match &cli.command {
        Command::Demo(a) => demo::cmd(a, n),
        Command::Train(a) => train::cmd(a, n),
        Command::Inspect(a) => inspect::cmd(a),
        Command::Certify(a) => certify::cmd(a),
        Command::Verify(a) => verify::cmd(a),
        Command::Fetch(a) => fetch::cmd(a),
        Command::Audit(a) => audit::cmd(a),
        Command::Reproduce(a) => reproduce::cmd(a, n),
        Command::Plot(a) => plot::cmd(a),
        Command::Robust(a) => robust::cmd(a),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
