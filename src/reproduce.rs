//! `margincert reproduce NAME`: the paper's experiments as bundles of run configs. Each run
//! is trained, every kept checkpoint (and the final one) is certified, and the bundle writes
//! the Figure-1 curves (constant vs loss-based step on the same axes), the Table-1 margin
//! table (Markdown + JSON), the certified KKT `ε`/`δ` upper bounds against epoch (SVG), and
//! Figure 8: L2 robust accuracy against ε (certified and attack) of every certified checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::certify::certificate::{CertifyOptions, certify};
use crate::certify::direction::direction_change;
use crate::checkpoint::Checkpoint;
use crate::config::RunConfig;
use crate::data::{DataSource, Dataset};
use crate::error::{Error, Result};
use crate::loss::LossKind;
use crate::report::svg::{Series, line_chart};
use crate::robust::Norm;
use crate::run::{read_metrics, train_from_scratch};

/// A named run config of a bundle: `(run name, TOML text)`.
pub type NamedConfig = (&'static str, &'static str);

/// A named group of runs reproducing one experiment of the paper.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// Name given on the command line.
    pub name: &'static str,
    /// What it reproduces and at which size.
    pub about: &'static str,
    /// The run configs (TOML text, embedded in the binary).
    pub configs: Vec<NamedConfig>,
    /// Examples per split of Figure 8 (0: no Figure 8; the VGG bundles have none, an attack
    /// on the 14-layer net costs hours per checkpoint on a workstation).
    pub figure8_examples: usize,
}

/// All bundles. `full` selects the paper-size configs where a bundle has them.
pub fn bundles(full: bool) -> Vec<Bundle> {
    let mnist = if full {
        vec![
            (
                "constant",
                include_str!("../fixtures/configs/mnist-cnn-constant-lr.toml"),
            ),
            (
                "loss-based",
                include_str!("../fixtures/configs/mnist-cnn-paper.toml"),
            ),
        ]
    } else {
        vec![
            (
                "constant",
                include_str!("../fixtures/configs/mnist-small-constant.toml"),
            ),
            (
                "loss-based",
                include_str!("../fixtures/configs/mnist-small-loss-based.toml"),
            ),
        ]
    };
    vec![
        Bundle {
            name: "mnist-small",
            about: "Figure 1 / Table 1 at small size: bias-free MNIST CNN on 50 embedded images, \
                    constant vs loss-based step (with --full: the paper-size configs, needs data)",
            figure8_examples: FIGURE8_EXAMPLES,
            configs: mnist.clone(),
        },
        Bundle {
            name: "mnist",
            about: "Figure 1 / Table 1 at the paper's size (all of MNIST; needs `margincert fetch`)",
            figure8_examples: FIGURE8_EXAMPLES,
            configs: vec![
                (
                    "constant",
                    include_str!("../fixtures/configs/mnist-cnn-constant-lr.toml"),
                ),
                (
                    "loss-based",
                    include_str!("../fixtures/configs/mnist-cnn-paper.toml"),
                ),
            ],
        },
        Bundle {
            name: "mnist-small-bias",
            about: "Figure 1 at small size for the MNIST CNN with biases (not homogeneous: loss \
                    and q_min are certified, the normalized margin and KKT are not; with --full: \
                    the paper-size configs, needs data)",
            figure8_examples: FIGURE8_EXAMPLES,
            configs: if full {
                vec![
                    (
                        "constant",
                        include_str!("../fixtures/configs/mnist-cnn-bias-constant-lr.toml"),
                    ),
                    (
                        "loss-based",
                        include_str!("../fixtures/configs/mnist-cnn-bias-paper.toml"),
                    ),
                ]
            } else {
                vec![
                    (
                        "constant",
                        include_str!("../fixtures/configs/mnist-small-bias-constant.toml"),
                    ),
                    (
                        "loss-based",
                        include_str!("../fixtures/configs/mnist-small-bias-loss-based.toml"),
                    ),
                ]
            },
        },
        Bundle {
            name: "two-layer-relu",
            about: "two-layer bias-free ReLU net (784-100-1), logistic loss, MNIST 0 vs 1 (40 \
                    embedded images): normalized margin increases, KKT bounds decrease",
            figure8_examples: FIGURE8_EXAMPLES,
            configs: vec![(
                "two-layer",
                include_str!("../fixtures/configs/two-layer-relu.toml"),
            )],
        },
        Bundle {
            name: "linear-svm",
            about: "linear model, logistic loss, MNIST 0 vs 1 (40 embedded images): normalized \
                    margin increases towards the hard-margin SVM value",
            figure8_examples: FIGURE8_EXAMPLES,
            configs: vec![(
                "linear",
                include_str!("../fixtures/configs/linear-svm.toml"),
            )],
        },
        Bundle {
            name: "mnist-1k",
            about: "the paper's MNIST CNN (first-layer bias) on 1,000 MNIST training images, \
                    batch 100, constant vs loss-based step, Table 1's thresholds (needs the \
                    MNIST files: `margincert fetch mnist` or --data DIR; about 25 minutes on 2 cores)",
            figure8_examples: FIGURE8_EXAMPLES,
            configs: vec![
                (
                    "constant",
                    include_str!("../fixtures/configs/mnist-cnn-1k-constant.toml"),
                ),
                (
                    "loss-based",
                    include_str!("../fixtures/configs/mnist-cnn-1k-paper.toml"),
                ),
            ],
        },
        Bundle {
            name: "mnist-1k-bias",
            about: "bias control for mnist-1k: the paper's MNIST CNN with a bias in every layer \
                    (not homogeneous: loss and q_min certified, normalized margins logged) on the \
                    same 1,000 images, constant vs loss-based step (needs the MNIST files)",
            figure8_examples: FIGURE8_EXAMPLES,
            configs: vec![
                (
                    "constant",
                    include_str!("../fixtures/configs/mnist-cnn-1k-bias-constant.toml"),
                ),
                (
                    "loss-based",
                    include_str!("../fixtures/configs/mnist-cnn-1k-bias-paper.toml"),
                ),
            ],
        },
        Bundle {
            name: "loss-1e-800",
            about: "the paper's headline at small size: the bias-free MLP 784-100-10 on 100 \
                    embedded MNIST images, loss-based step, trained until the loss passes \
                    1e-800 and certified there (minutes on 2 cores)",
            figure8_examples: FIGURE8_EXAMPLES,
            configs: vec![(
                "loss-based",
                include_str!("../fixtures/configs/mlp-1e-800.toml"),
            )],
        },
        Bundle {
            name: "cifar-vgg-small",
            about: "the paper's bias-free VGG-16 variant on 20 CIFAR-10 training images, \
                    loss-based step, until 1e-20 (needs the CIFAR-10 files; the certified pass \
                    runs in double-double where binary64 is too wide)",
            figure8_examples: 0,
            configs: vec![(
                "loss-based",
                include_str!("../fixtures/configs/cifar-vgg-small.toml"),
            )],
        },
        Bundle {
            name: "cifar",
            about: "the paper's CIFAR-10 experiment at full size (VGG-16 variant, all 50,000 \
                    images; needs the CIFAR-10 files and far more CPU than a workstation)",
            figure8_examples: 0,
            configs: vec![(
                "loss-based",
                include_str!("../fixtures/configs/cifar-vgg-paper.toml"),
            )],
        },
    ]
}

/// One certified checkpoint: the row of the margin table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Run name within the bundle.
    pub run: String,
    /// Checkpoint file name.
    pub checkpoint: String,
    /// Epoch at which it was saved.
    pub epoch: usize,
    /// Certified enclosure of `q_min`.
    pub q_min: [f64; 2],
    /// Certified enclosure of the paper's normalized margin `q_min / ∏ ‖W_i‖_F` (`None`: not
    /// homogeneous).
    pub layer_normalized: Option<[f64; 2]>,
    /// Certified enclosure of the normalized margin `q_min / ρ^L` (`None`: not homogeneous).
    pub normalized: Option<[f64; 2]>,
    /// Certified enclosure of `log10` of the summed loss.
    pub log10_loss: [f64; 2],
    /// Certified KKT `ε` upper bound (paper multipliers), when certified.
    pub kkt_epsilon_upper: Option<f64>,
    /// Certified KKT `δ` upper bound (paper multipliers), when certified.
    pub kkt_delta_upper: Option<f64>,
    /// Certified upper bound on the scale-free `ε/‖θ̃‖` of the paper multipliers (1 is what
    /// `λ = 0` achieves).
    pub kkt_epsilon_relative_upper: Option<f64>,
    /// The same for the NNLS multipliers, when computed.
    pub kkt_nnls_epsilon_relative_upper: Option<f64>,
    /// Certified lower bound on `β` (cosine of `θ` and `−∇Loss` over the active set).
    pub kkt_beta_lower: Option<f64>,
    /// Certified enclosure of the angle (radians) between this checkpoint's direction
    /// `θ/‖θ‖` and the previous kept checkpoint's of the same run (`None` for the first).
    pub angle_to_previous: Option<[f64; 2]>,
    /// Certified enclosure of the angle (radians) between this checkpoint's direction and the
    /// run's last checkpoint's (`[0, 0]` for the last itself).
    pub angle_to_last: Option<[f64; 2]>,
}

/// Certifies the checkpoint at `path` on `train` (the run's training split) with `loss` and
/// returns its table row.
pub fn certify_row(run_name: &str, path: &Path, loss: LossKind, train: &Dataset) -> Result<Row> {
    row_of(run_name, path, &Checkpoint::load(path)?, loss, train)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

fn epoch_of(ck: &Checkpoint) -> usize {
    ck.train.as_ref().map_or(0, |t| t.state.epoch)
}

fn row_of(
    run_name: &str,
    path: &Path,
    ck: &Checkpoint,
    loss: LossKind,
    train: &Dataset,
) -> Result<Row> {
    let opts = CertifyOptions {
        loss,
        ..CertifyOptions::default()
    };
    let c = certify(&ck.spec, &ck.params, train, &opts)?;
    Ok(Row {
        run: run_name.to_string(),
        checkpoint: file_name(path),
        epoch: epoch_of(ck),
        q_min: [c.margin.q_min.lo, c.margin.q_min.hi],
        layer_normalized: c
            .normalized
            .as_ref()
            .map(|n| [n.by_layer_product.lo, n.by_layer_product.hi]),
        normalized: c.normalized.as_ref().map(|n| [n.by_rho.lo, n.by_rho.hi]),
        log10_loss: [c.loss.log10.lo, c.loss.log10.hi],
        kkt_epsilon_upper: c.kkt.as_ref().map(|k| k.paper.epsilon_upper),
        kkt_delta_upper: c.kkt.as_ref().map(|k| k.paper.delta_upper),
        kkt_epsilon_relative_upper: c.kkt.as_ref().map(|k| k.paper.epsilon_relative_upper),
        kkt_nnls_epsilon_relative_upper: c
            .kkt
            .as_ref()
            .and_then(|k| k.nnls.as_ref())
            .map(|n| n.epsilon_relative_upper),
        kkt_beta_lower: c.kkt.as_ref().and_then(|k| k.beta_active_lower),
        angle_to_previous: None,
        angle_to_last: None,
    })
}

/// Examples (the first ones of each split) whose robustness is measured for Figure 8: one
/// example is 2 % of a curve.
pub const FIGURE8_EXAMPLES: usize = 50;
/// Largest L2 radius of Figure 8's curves (the paper plots ε up to about 0.5 of its L2
/// attack; our pixels are `p/255`, so distances are in the same units as the paper's).
pub const FIGURE8_EPS_MAX: f64 = 3.0;
/// Largest L∞ radius of Figure 8's L∞ panels (the paper's PGD runs use ε 0.11–0.19).
pub const FIGURE8_LINF_EPS_MAX: f64 = 0.3;
/// Adam steps per constant of Figure 8's Carlini–Wagner L2 attack.
pub const FIGURE8_CW_STEPS: usize = 200;
/// Binary-search steps on the constant of Figure 8's Carlini–Wagner L2 attack.
pub const FIGURE8_CW_SEARCHES: usize = 8;

/// Figure 8 for one checkpoint and norm: robust accuracy against the radius on the first
/// [`Bundle::figure8_examples`] training or test examples, certified (the best proven radius:
/// a lower bound) and empirical (verified attack points — Carlini–Wagner for L2 as in the
/// paper, PGD for L∞: an upper bound).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustCurve {
    /// Run name within the bundle.
    pub run: String,
    /// `train` or `test`: which examples (the paper draws both panels).
    pub split: String,
    /// Checkpoint file name.
    pub checkpoint: String,
    /// Epoch at which it was saved.
    pub epoch: usize,
    /// The perturbation norm (the paper's Figure 8 is L2; it also reports L∞ PGD).
    pub norm: crate::robust::Norm,
    /// The curves.
    pub curve: crate::robust::Curve,
    /// Examples whose certified radius exceeded their attack radius (must be 0).
    pub violations: usize,
}

/// [`RobustCurve`] of checkpoint `ck` (read from `path`) on the first examples of `examples`
/// (split `split`).
fn curve_of(
    run_name: &str,
    path: &Path,
    ck: &Checkpoint,
    examples: &Dataset,
    split: &str,
    (norm, n): (crate::robust::Norm, usize),
) -> Result<RobustCurve> {
    use crate::robust::{AttackOptions, Method, Norm, RobustOptions, RobustSetup};
    let data = examples.take(n.min(examples.len()));
    // L∞: full CROWN. L2: the Lipschitz radii only — CROWN over the ball costs ~45 CPU-s per
    // example on the paper CNN (docs/BENCHMARKS.md), hours per bundle at Figure 8's size;
    // `margincert robust --norm 2` computes it for a checkpoint.
    let relax = match norm {
        Norm::L2 => Method::Ibp,
        Norm::Inf => Method::Crown,
    };
    let rep = RobustSetup::new(&ck.spec, &ck.params, &data)?.run_with(
        &RobustOptions {
            norm,
            eps_max: match norm {
                Norm::L2 => FIGURE8_EPS_MAX,
                Norm::Inf => FIGURE8_LINF_EPS_MAX,
            },
            steps: 10,
            // The paper's L2 attack is Carlini–Wagner; its L∞ attack is PGD.
            attack: match norm {
                Norm::L2 => AttackOptions::cw(FIGURE8_CW_STEPS, FIGURE8_CW_SEARCHES),
                Norm::Inf => AttackOptions {
                    restarts: 2,
                    ..AttackOptions::default()
                },
            },
        },
        relax,
    )?;
    Ok(RobustCurve {
        run: run_name.to_string(),
        split: split.to_string(),
        checkpoint: file_name(path),
        epoch: epoch_of(ck),
        norm,
        curve: rep.curve,
        violations: rep.violations,
    })
}

/// What [`reproduce`] wrote.
#[derive(Clone, Debug)]
pub struct Report {
    /// The certified rows, per run in epoch order.
    pub rows: Vec<Row>,
    /// Figure 8's curves, one per certified checkpoint (same order as `rows`).
    pub robust: Vec<RobustCurve>,
    /// Files written.
    pub files: Vec<PathBuf>,
}

fn write(path: PathBuf, text: &str, files: &mut Vec<PathBuf>) -> Result<()> {
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    files.push(path);
    Ok(())
}

/// `(x(r), log10 f(r))` for the rows whose `f` is positive and finite (a log-scale series).
fn log_points<'r>(
    rows: impl Iterator<Item = &'r Row>,
    x: fn(&Row) -> f64,
    f: fn(&Row) -> Option<f64>,
) -> Vec<(f64, f64)> {
    rows.filter_map(|r| {
        f(r).filter(|v| *v > 0.0 && v.is_finite())
            .map(|v| (x(r), v.log10()))
    })
    .collect()
}

fn fmt_pair(p: [f64; 2]) -> String {
    format!("[{:.6e}, {:.6e}]", p[0], p[1])
}

/// The margin table (Table 1) as Markdown.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| run | checkpoint | epoch | q_min (certified) | q_min/prod ||W_i||_F (paper's, certified) | q_min/rho^L (certified) | log10 loss (certified) | eps/||theta~|| paper (<=) | eps/||theta~|| NNLS (<=) | beta (>=) | KKT eps upper | KKT delta upper | angle to previous (rad) | angle to last (rad) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3e}"));
        let fix = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | [{:.3}, {:.3}] | {} | {} | {} | {} | {} | {} | {} |\n",
            r.run,
            r.checkpoint,
            r.epoch,
            fmt_pair(r.q_min),
            r.layer_normalized.map_or("-".into(), fmt_pair),
            r.normalized.map_or("-".into(), fmt_pair),
            r.log10_loss[0],
            r.log10_loss[1],
            fix(r.kkt_epsilon_relative_upper),
            fix(r.kkt_nnls_epsilon_relative_upper),
            fix(r.kkt_beta_lower),
            opt(r.kkt_epsilon_upper),
            opt(r.kkt_delta_upper),
            r.angle_to_previous.map_or("-".into(), fmt_pair),
            r.angle_to_last.map_or("-".into(), fmt_pair),
        ));
    }
    s
}

/// MPFR precision of the certified direction changes (the angles between kept checkpoints
/// can be 1e-4 rad or less; 256 bits resolve far below that, see proofs/direction.md).
const DIRECTION_PREC: u32 = 256;

/// Fills the certified angles between consecutive checkpoints and to the last one of a run
/// (`certified` in epoch order: each row with the parameters it was certified on).
fn add_direction_changes(certified: &mut [(Row, crate::model::Params)]) -> Result<()> {
    let angle = |a, b| direction_change(a, b, DIRECTION_PREC).map(|d| [d.angle.lo, d.angle.hi]);
    let Some(last) = certified.last().map(|(_, p)| p.clone()) else {
        return Ok(());
    };
    for i in 0..certified.len() {
        if i > 0 {
            certified[i].0.angle_to_previous = Some(angle(&certified[i - 1].1, &certified[i].1)?);
        }
        certified[i].0.angle_to_last = Some(angle(&certified[i].1, &last)?);
    }
    Ok(())
}

/// The checkpoints of a finished run of `cfg` in `dir` (those kept at loss thresholds, then
/// `last.safetensors`), or `None` when `dir` holds no run. The run must come from the same
/// model, data selection and optimizer as `cfg` (loss, batch, seed, schedule); its epoch
/// budget, stopping loss and thresholds may differ, so a run continued with `train --resume`
/// is certified as it stands. Anything else is an error (a run of another config is never
/// certified under this bundle's name).
pub fn reused_run(
    cfg: &RunConfig,
    split: &crate::data::Split,
    dir: &Path,
) -> Result<Option<Vec<PathBuf>>> {
    let last = dir.join("last.safetensors");
    if !last.is_file() {
        return Ok(None);
    }
    let ck = Checkpoint::load(&last)?;
    let differs = |what: &str| {
        Err(Error::Invalid(format!(
            "--reuse: the run in {} has another {what} than the bundle's config: train it \
             again without --reuse (into an empty --out)",
            dir.display()
        )))
    };
    let Some(info) = ck.train.as_ref() else {
        return differs("origin (no training state)");
    };
    if ck.spec != cfg.spec(split)? {
        return differs("model");
    }
    let (a, b) = (&info.config, &cfg.train);
    if a.loss != b.loss || a.batch != b.batch || a.seed != b.seed || a.schedule != b.schedule {
        return differs("optimizer (loss, batch, seed or schedule)");
    }
    let (a, b) = (&info.data, &cfg.data);
    let kind = |s: &str| {
        s.parse::<DataSource>().map(|d| match d {
            DataSource::Embedded => None,
            DataSource::Dir { kind, .. } => Some(kind),
        })
    };
    if (a.train_subset, a.test_subset, a.binary) != (b.train_subset, b.test_subset, b.binary)
        || kind(&a.source)? != kind(&b.source)?
    {
        return differs("data selection");
    }
    // The kept checkpoints in name order (the rows are sorted by epoch once certified);
    // `last` comes after them, so a last checkpoint equal to a kept one is certified once.
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = file_name(&p);
        if name.starts_with("loss-1e") && name.ends_with(".safetensors") {
            all.push(p);
        }
    }
    all.sort();
    all.push(last);
    Ok(Some(all))
}

/// Runs bundle `name` into `out`: trains each config, certifies the kept and final
/// checkpoints, writes `table.md`, `table.json`, `figure1-loss.svg`,
/// `figure1-normalized-margin.svg` (the paper's `q_min/∏‖W_i‖`), `figure1-normalized-margin-rho.svg` (`q_min/ρ^L`), `kkt.svg` (against epoch, with the
/// scale-free `ε/‖θ̃‖`), `kkt-vs-loss.svg` (`ε/‖θ̃‖` against the certified loss),
/// `direction.svg` / `direction-vs-loss.svg` (the certified angle between consecutive kept
/// checkpoints, against epoch and loss; also in the table), and Figure 8 (`figure8.json`,
/// `figure8-attack.svg`, `figure8-certified.svg`: L2 robust accuracy against ε of every
/// certified checkpoint on the first [`FIGURE8_EXAMPLES`] training examples; the same on the
/// first test examples in `figure8-attack-test.svg`, `figure8-certified-test.svg`; the L∞
/// panels in `figure8-linf-*.svg`; none for bundles without Figure 8, see
/// [`Bundle::figure8_examples`]).
///
/// `data`: the directory of the dataset files for the bundles that read files (MNIST,
/// CIFAR-10), replacing the configs' `data/<name>` (where `margincert fetch` puts them).
/// `reuse`: certify the runs already in `out` (see [`reused_run`]) instead of training them
/// again; a run that is not there is trained.
pub fn reproduce(
    name: &str,
    out: &Path,
    full: bool,
    data: Option<&Path>,
    threads: usize,
    reuse: bool,
) -> Result<Report> {
    let all = bundles(full);
    let bundle = all.iter().find(|b| b.name == name).ok_or_else(|| {
        Error::Invalid(format!(
            "unknown bundle '{name}'; known: {}",
            all.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
        ))
    })?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut rows = Vec::new();
    let mut files = Vec::new();
    let mut loss_series = Vec::new();
    let mut margin_series = Vec::new();
    let mut paper_margin_series = Vec::new();
    let mut eps_series = Vec::new();
    let mut delta_series = Vec::new();
    let mut robust = Vec::new();
    for (run_name, text) in &bundle.configs {
        let mut cfg: RunConfig = toml::from_str(text)
            .map_err(|e| Error::Invalid(format!("bundle config '{run_name}': {e}")))?;
        if let DataSource::Dir { kind, dir } = cfg.data.source.parse::<DataSource>()? {
            let dir = data.map_or(dir, Path::to_path_buf);
            if !dir.is_dir() {
                return Err(Error::Invalid(format!(
                    "bundle '{name}' needs the {kind} files in {}: run `margincert fetch {kind}` \
                     (which puts them there) or pass --data DIR",
                    dir.display()
                )));
            }
            cfg.data.source = DataSource::Dir { kind, dir }.to_string();
        }
        let split = cfg.data.load()?;
        let dir = out.join(run_name);
        let checkpoints = match reuse.then(|| reused_run(&cfg, &split, &dir)).transpose()? {
            Some(Some(found)) => {
                println!("{run_name}: reusing the run in {}", dir.display());
                found
            }
            _ => {
                let summary = train_from_scratch(&cfg, &split, &dir, threads)?;
                println!("{run_name}: stopped ({})", summary.reason);
                let mut all = summary.kept;
                all.push(summary.final_checkpoint);
                all
            }
        };
        // Each certified row with the parameters it was certified on (for the direction
        // changes between them).
        let mut certified: Vec<(Row, crate::model::Params)> = Vec::new();
        for p in &checkpoints {
            let ck = Checkpoint::load(p)?;
            // A run that stops at a threshold ends on the checkpoint it kept there: the last
            // one is the same network, certified once (under the threshold's name).
            if file_name(p) == "last.safetensors"
                && certified.iter().any(|(r, _)| r.epoch == epoch_of(&ck))
            {
                continue;
            }
            let r = row_of(run_name, p, &ck, cfg.train.loss, &split.train)?;
            println!(
                "  {} epoch {}: normalized margin {}",
                r.checkpoint,
                r.epoch,
                r.normalized.map_or("-".into(), fmt_pair)
            );
            let n = bundle.figure8_examples;
            for (name, examples) in [("train", &split.train), ("test", &split.test)] {
                if examples.is_empty() || n == 0 {
                    continue;
                }
                for norm in [Norm::L2, Norm::Inf] {
                    let rc = curve_of(run_name, p, &ck, examples, name, (norm, n))?;
                    if rc.violations > 0 {
                        return Err(Error::Certify(format!(
                            "{} ({name}, {norm:?}): a certified radius exceeded a verified \
                             attack radius on {} examples",
                            rc.checkpoint, rc.violations
                        )));
                    }
                    robust.push(rc);
                }
            }
            certified.push((r, ck.params));
        }
        certified.sort_by_key(|(r, _)| r.epoch);
        add_direction_changes(&mut certified)?;
        let run_rows: Vec<Row> = certified.into_iter().map(|(r, _)| r).collect();
        let metrics = read_metrics(&dir.join("metrics.jsonl"))?;
        loss_series.push(Series {
            label: run_name.to_string(),
            points: metrics
                .iter()
                .map(|m| (m.epoch as f64, m.log10_loss))
                .collect(),
        });
        // Normalized margins span decades: log10 of the positive values.
        let lg = |v: Option<f64>| v.filter(|&x| x > 0.0).map(f64::log10);
        margin_series.push(Series {
            label: run_name.to_string(),
            points: metrics
                .iter()
                .filter_map(|m| lg(m.normalized_margin).map(|v| (m.epoch as f64, v)))
                .collect(),
        });
        paper_margin_series.push(Series {
            label: run_name.to_string(),
            points: metrics
                .iter()
                .filter_map(|m| lg(m.paper_normalized_margin()).map(|v| (m.epoch as f64, v)))
                .collect(),
        });
        let kkt = |f: fn(&Row) -> Option<f64>| log_points(run_rows.iter(), |r| r.epoch as f64, f);
        eps_series.push(Series {
            label: format!("{run_name}: log10 eps"),
            points: kkt(|r| r.kkt_epsilon_upper),
        });
        delta_series.push(Series {
            label: format!("{run_name}: log10 delta"),
            points: kkt(|r| r.kkt_delta_upper),
        });
        eps_series.push(Series {
            label: format!("{run_name}: log10 eps/||theta~|| (scale-free)"),
            points: kkt(|r| r.kkt_epsilon_relative_upper),
        });
        rows.extend(run_rows);
    }
    write(out.join("table.md"), &markdown_table(&rows), &mut files)?;
    let json = serde_json::to_string_pretty(&rows)
        .map_err(|e| Error::Invalid(format!("serializing the table: {e}")))?;
    write(out.join("table.json"), &json, &mut files)?;
    let svg = line_chart("log10 training loss", "epoch", "log10 loss", &loss_series)?;
    write(out.join("figure1-loss.svg"), &svg, &mut files)?;
    // The paper's normalization (q_min / prod ||W_i||_F) first, then q_min / rho^L.
    for (series, title, file) in [
        (
            &paper_margin_series,
            "normalized margin q_min / prod ||W_i||_F (the paper's)",
            "figure1-normalized-margin.svg",
        ),
        (
            &margin_series,
            "normalized margin q_min / rho^L",
            "figure1-normalized-margin-rho.svg",
        ),
    ] {
        if series.iter().any(|s| !s.points.is_empty()) {
            let svg = line_chart(title, "epoch", "log10 normalized margin", series)?;
            write(out.join(file), &svg, &mut files)?;
        }
    }
    let kkt_series: Vec<Series> = eps_series
        .into_iter()
        .chain(delta_series)
        .filter(|s| !s.points.is_empty())
        .collect();
    if kkt_series.is_empty() {
        println!("KKT: no checkpoint had a certified KKT bound; kkt.svg not written");
    } else {
        let svg = line_chart(
            "certified KKT upper bounds (paper multipliers)",
            "epoch",
            "log10 bound",
            &kkt_series,
        )?;
        write(out.join("kkt.svg"), &svg, &mut files)?;
    }
    // The scale-free KKT figures against the certified loss (upper end of log10 loss):
    // a researcher reads convergence off the loss axis the theorems are stated in.
    let mut scale_free = Vec::new();
    for run in bundle.configs.iter().map(|c| c.0) {
        let pts = |f: fn(&Row) -> Option<f64>| {
            log_points(rows.iter().filter(|r| r.run == run), |r| r.log10_loss[1], f)
        };
        scale_free.push(Series {
            label: format!("{run}: paper multipliers"),
            points: pts(|r| r.kkt_epsilon_relative_upper),
        });
        scale_free.push(Series {
            label: format!("{run}: NNLS multipliers"),
            points: pts(|r| r.kkt_nnls_epsilon_relative_upper),
        });
    }
    scale_free.retain(|s| !s.points.is_empty());
    if !scale_free.is_empty() {
        let svg = line_chart(
            "certified eps/||theta~|| against the loss (0 = lambda = 0's value 1)",
            "log10 summed loss (certified upper end)",
            "log10 eps/||theta~||",
            &scale_free,
        )?;
        write(out.join("kkt-vs-loss.svg"), &svg, &mut files)?;
    }
    // The direction change between consecutive kept checkpoints (certified upper end of the
    // angle), against epoch and against the certified loss: Theorem 4.4's convergence of
    // θ/‖θ‖ shows as an angle per checkpoint that shrinks.
    for (x_label, file, x_of) in [
        (
            "epoch",
            "direction.svg",
            (|r: &Row| r.epoch as f64) as fn(&Row) -> f64,
        ),
        (
            "log10 summed loss (certified upper end)",
            "direction-vs-loss.svg",
            |r: &Row| r.log10_loss[1],
        ),
    ] {
        let series: Vec<Series> = bundle
            .configs
            .iter()
            .map(|c| Series {
                label: format!("{}: angle to the previous checkpoint", c.0),
                points: log_points(rows.iter().filter(|r| r.run == c.0), x_of, |r| {
                    r.angle_to_previous.map(|a| a[1])
                }),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if !series.is_empty() {
            let svg = line_chart(
                "certified direction change between kept checkpoints",
                x_label,
                "log10 angle (rad, upper end)",
                &series,
            )?;
            write(out.join(file), &svg, &mut files)?;
        }
    }
    robust.sort_by(|a, b| (&a.split, &a.run, a.epoch).cmp(&(&b.split, &b.run, b.epoch)));
    let json = serde_json::to_string_pretty(&robust)
        .map_err(|e| Error::Invalid(format!("serializing Figure 8: {e}")))?;
    write(out.join("figure8.json"), &json, &mut files)?;
    // The paper's two panels (training and test set), each as an attack curve (an upper
    // bound) and a certified curve (a lower bound).
    type Pick = fn(&crate::robust::Curve) -> &[f64];
    let kinds: [(&str, &str, Pick); 2] = [
        (
            "attack",
            "robust accuracy (verified attack: upper bound)",
            |c| &c.empirical,
        ),
        (
            "certified",
            "certified robust accuracy (lower bound)",
            |c| &c.certified,
        ),
    ];
    let panels = [("train", "", "training"), ("test", "-test", "test")]
        .into_iter()
        .flat_map(|p| {
            [
                (Norm::L2, "", "L2 (CW attack)", p),
                (Norm::Inf, "-linf", "L-inf (PGD attack)", p),
            ]
        });
    for (norm, norm_file, norm_name, (split, suffix, set)) in panels {
        for (kind, title, pick) in kinds {
            let series: Vec<Series> = robust
                .iter()
                .filter(|r| r.split == split && r.norm == norm)
                .map(|r| Series {
                    label: format!("{} epoch {}", r.run, r.epoch),
                    points: r
                        .curve
                        .eps
                        .iter()
                        .copied()
                        .zip(pick(&r.curve).iter().copied())
                        .collect(),
                })
                .collect();
            if series.is_empty() {
                continue;
            }
            let svg = line_chart(
                &format!("{norm_name} {title}, {set} set"),
                &format!("eps ({})", if norm == Norm::L2 { "L2" } else { "L-inf" }),
                "robust accuracy",
                &series,
            )?;
            write(
                out.join(format!("figure8{norm_file}-{kind}{suffix}.svg")),
                &svg,
                &mut files,
            )?;
        }
    }
    Ok(Report {
        rows,
        robust,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundle_config_parses_and_names_are_unique() {
        for full in [false, true] {
            let bs = bundles(full);
            for (i, b) in bs.iter().enumerate() {
                assert!(bs[..i].iter().all(|o| o.name != b.name));
                for (run, text) in &b.configs {
                    let c: RunConfig =
                        toml::from_str(text).unwrap_or_else(|e| panic!("{}/{run}: {e}", b.name));
                    assert!(!c.description.is_empty(), "{}/{run}", b.name);
                }
            }
        }
    }

    #[test]
    fn every_fixture_config_file_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/configs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                RunConfig::from_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 9, "only {n} configs");
    }

    #[test]
    fn unknown_bundle_is_a_clear_error() {
        let out = std::env::temp_dir().join("margincert-reproduce-unknown");
        match reproduce("no-such-bundle", &out, false, None, 1, false) {
            Err(Error::Invalid(m)) => {
                assert!(m.contains("no-such-bundle") && m.contains("linear-svm"))
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}
