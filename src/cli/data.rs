//! Data selection flags and their resolution into a [`Dataset`]: from explicit flags
//! ([`DataArgs`], training), or from a checkpoint's training record overridden by flags
//! ([`OptDataArgs`], every command that reads a checkpoint).

use std::path::{Path, PathBuf};

use clap::Args;

use margincert::checkpoint::Checkpoint;
use margincert::data::DataChoice;
use margincert::data::{DataSource, Dataset, Split};
use margincert::error::{Error, Result};
use margincert::io::ensure_not_input;

use super::args::parse_pair;

/// `--split` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitName {
    Train,
    Test,
}

impl SplitName {
    /// The part of `split` this names.
    pub fn pick(self, split: Split) -> Dataset {
        match self {
            SplitName::Train => split.train,
            SplitName::Test => split.test,
        }
    }
}

/// Data selection whose defaults come from a checkpoint's training record.
#[derive(Args, Debug, Clone, Default)]
pub struct OptDataArgs {
    /// Data source (see `train --help`); default: the checkpoint's.
    #[arg(long)]
    pub data: Option<String>,
    /// Binary task POS,NEG; default: the checkpoint's.
    #[arg(long, value_parser = parse_pair)]
    pub binary: Option<(u8, u8)>,
    /// Use only the first N examples of the split.
    #[arg(long)]
    pub subset: Option<usize>,
}

impl OptDataArgs {
    /// The data choice for `ckpt`: the flags, falling back to its training record.
    pub fn choice(&self, ckpt: &Checkpoint) -> Result<DataChoice> {
        let recorded = ckpt.train.as_ref().map(|i| i.data.clone());
        Ok(match (&self.data, recorded) {
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
        })
    }

    /// Resolves the dataset for `ckpt`, falling back to its training record.
    pub fn load(&self, ckpt: &Checkpoint, split: SplitName) -> Result<Dataset> {
        let d = split.pick(self.choice(ckpt)?.load()?);
        Ok(match self.subset {
            Some(n) => d.take(n),
            None => d,
        })
    }

    /// Refuses `out` when it is one of `inputs` (the model file and what describes it) or
    /// one of the data files ([`margincert::io::ensure_not_input`]).
    pub fn guard_out(&self, out: &Path, mut inputs: Vec<PathBuf>, ckpt: &Checkpoint) -> Result<()> {
        inputs.extend(self.choice(ckpt)?.input_files()?);
        ensure_not_input(out, &inputs)
    }
}

// Data selection of a training run (no checkpoint to fall back on).
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Data: `embedded` (1,000 + 1,000 MNIST images shipped with the crate), `mnist:DIR`,
    /// `fashion-mnist:DIR`, `cifar10:DIR`, or a directory (its format is detected).
    #[arg(long, default_value = "embedded")]
    pub data: String,
    /// Binary task: keep two classes POS,NEG (labels become +1 / -1). Needed by the logistic
    /// and exponential losses.
    #[arg(long, value_parser = parse_pair)]
    pub binary: Option<(u8, u8)>,
    /// Use only the first N training examples.
    #[arg(long)]
    pub train_subset: Option<usize>,
    /// Use only the first N test examples.
    #[arg(long)]
    pub test_subset: Option<usize>,
}

impl DataArgs {
    /// The run's data choice (recorded in its checkpoints).
    pub fn choice(&self) -> DataChoice {
        DataChoice {
            source: self.data.clone(),
            train_subset: self.train_subset,
            test_subset: self.test_subset,
            binary: self.binary,
        }
    }
}

/// The dataset of `audit`: `source` (a data source string) restricted to a binary task,
/// one split and its first `subset` examples.
pub fn load_source(
    source: &str,
    binary: Option<(u8, u8)>,
    split: SplitName,
    subset: Option<usize>,
) -> Result<Dataset> {
    let mut s = source.parse::<DataSource>()?.load()?;
    if let Some((p, n)) = binary {
        s = s.binary(p, n)?;
    }
    let d = split.pick(s);
    Ok(match subset {
        Some(n) => d.take(n),
        None => d,
    })
}
