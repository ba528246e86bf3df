//! Where a split comes from: the embedded MNIST subset or a directory of standard files
//! ([`DataSource`]), and what a run used ([`DataChoice`]: a source plus the binary task and
//! subsets applied after loading).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{
    CIFAR10_META, CLASSES, DataKind, Split, find_file, idx_from_bytes, load_cifar, load_idx,
    read_class_names,
};
use crate::error::{Error, Result};

/// Loads the standard train/test files of `kind` from `dir` (located by [`find_file`]).
///
/// IDX: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
/// `t10k-labels-idx1-ubyte`, 10 classes. CIFAR-10: `data_batch_1.bin` ... `data_batch_5.bin`
/// concatenated (train) and `test_batch.bin` (test); `batches.meta.txt`, when present next to
/// `data_batch_1`, must list 10 class names. Datasets are named `{kind}-train` and
/// `{kind}-test`.
pub fn load_dir(kind: DataKind, dir: &Path) -> Result<Split> {
    if !dir.is_dir() {
        return Err(Error::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let files: Vec<PathBuf> = kind
        .file_names()
        .iter()
        .map(|n| find_file(kind, dir, n))
        .collect::<Result<_>>()?;
    match kind {
        DataKind::Mnist | DataKind::FashionMnist => Ok(Split {
            train: load_idx(&format!("{kind}-train"), &files[0], &files[1], CLASSES)?,
            test: load_idx(&format!("{kind}-test"), &files[2], &files[3], CLASSES)?,
        }),
        DataKind::Cifar10 => {
            let meta = files[0].with_file_name(CIFAR10_META);
            if meta.is_file() {
                let names = read_class_names(&meta)?;
                if names.len() != CLASSES {
                    return Err(Error::format(
                        &meta,
                        format!("{} class names, expected {CLASSES}", names.len()),
                    ));
                }
            }
            Ok(Split {
                train: load_cifar("cifar10-train", &files[..5])?,
                test: load_cifar("cifar10-test", &files[5..])?,
            })
        }
    }
}

/// Number of training and of test examples in the embedded subset.
pub const EMBEDDED_LEN: usize = 1000;

const EMBEDDED_FILES: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../../fixtures/embedded/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../../fixtures/embedded/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../../fixtures/embedded/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../../fixtures/embedded/t10k-labels-idx1-ubyte.gz"),
    ),
];

/// The embedded files `(name, gzipped bytes)`: the first [`EMBEDDED_LEN`] training and test
/// examples of the official MNIST as gzipped IDX files (see `fixtures/embedded/README.md`).
pub fn embedded_files() -> &'static [(&'static str, &'static [u8])] {
    &EMBEDDED_FILES
}

/// The embedded default: the first 1000 training and first 1000 test images of the official
/// MNIST, parsed by the same IDX loader as files on disk. Named `mnist-embedded-train` and
/// `mnist-embedded-test`.
pub fn embedded() -> Result<Split> {
    let f = |i: usize| {
        (
            Path::new("<embedded>").join(EMBEDDED_FILES[i].0),
            EMBEDDED_FILES[i].1,
        )
    };
    let ((ti, tib), (tl, tlb), (si, sib), (sl, slb)) = (f(0), f(1), f(2), f(3));
    Ok(Split {
        train: idx_from_bytes("mnist-embedded-train", &ti, tib, &tl, tlb, CLASSES)?,
        test: idx_from_bytes("mnist-embedded-test", &si, sib, &sl, slb, CLASSES)?,
    })
}

/// Where a train/test split is loaded from (the subsets and binary task a run applies on top
/// are [`DataChoice`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// The MNIST subset compiled into the binary ([`embedded`]).
    Embedded,
    /// Standard files of `kind` in `dir` ([`load_dir`]).
    Dir {
        /// Which dataset.
        kind: DataKind,
        /// The directory.
        dir: PathBuf,
    },
}

impl DataSource {
    /// Loads the train/test split.
    pub fn load(&self) -> Result<Split> {
        match self {
            DataSource::Embedded => embedded(),
            DataSource::Dir { kind, dir } => load_dir(*kind, dir),
        }
    }

    /// The files [`DataSource::load`] reads that exist (none for the embedded data): what a
    /// command must never write over.
    pub fn input_files(&self) -> Vec<PathBuf> {
        match self {
            DataSource::Embedded => Vec::new(),
            DataSource::Dir { kind, dir } => {
                let mut files: Vec<PathBuf> = kind
                    .file_names()
                    .iter()
                    .filter_map(|n| find_file(*kind, dir, n).ok())
                    .collect();
                if *kind == DataKind::Cifar10 {
                    files.push(dir.join(CIFAR10_META));
                }
                files.retain(|f| f.is_file());
                files
            }
        }
    }
}

impl FromStr for DataSource {
    type Err = Error;
    /// Parses `embedded`, `KIND:DIR` with KIND one of [`DataKind`]'s names (`mnist:DIR`,
    /// `fashion-mnist:DIR`, `cifar10:DIR`), or a bare `DIR`, whose kind is detected from the
    /// files present ([`DataKind::detect`], which reads the directory).
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("embedded") {
            return Ok(DataSource::Embedded);
        }
        if let Some((k, d)) = s.split_once(':')
            && let Ok(kind) = k.parse::<DataKind>()
        {
            if d.is_empty() {
                return Err(Error::Invalid(format!(
                    "data source {s:?}: missing directory after \"{k}:\""
                )));
            }
            return Ok(DataSource::Dir {
                kind,
                dir: PathBuf::from(d),
            });
        }
        if s.is_empty() {
            return Err(Error::Invalid(
                "empty data source: expected embedded, mnist:DIR, fashion-mnist:DIR, \
                 cifar10:DIR or DIR"
                    .into(),
            ));
        }
        let dir = PathBuf::from(s);
        Ok(DataSource::Dir {
            kind: DataKind::detect(&dir)?,
            dir,
        })
    }
}

impl fmt::Display for DataSource {
    /// `embedded` or `KIND:DIR`; parses back to the same source.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Embedded => f.write_str("embedded"),
            DataSource::Dir { kind, dir } => write!(f, "{kind}:{}", dir.display()),
        }
    }
}

/// The data a run uses, as written in a run config's `[data]` table and recorded in
/// checkpoints: a [`DataSource`] in its text form, then the binary task and the subsets
/// applied after loading (in that order, see [`DataChoice::load`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataChoice {
    /// A data source as text (parsed by [`DataSource`]'s `FromStr`).
    pub source: String,
    /// Use only the first N training examples.
    #[serde(default)]
    pub train_subset: Option<usize>,
    /// Use only the first N test examples.
    #[serde(default)]
    pub test_subset: Option<usize>,
    /// Binary task `(positive, negative)`.
    #[serde(default)]
    pub binary: Option<(u8, u8)>,
}

impl DataChoice {
    /// The data files [`DataChoice::load`] reads ([`DataSource::input_files`]).
    pub fn input_files(&self) -> Result<Vec<PathBuf>> {
        Ok(self.source.parse::<DataSource>()?.input_files())
    }

    /// Loads the data and applies the binary task and the subsets.
    pub fn load(&self) -> Result<Split> {
        let mut split = self.source.parse::<DataSource>()?.load()?;
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
