//! The datasets margincert knows by name ([`DataKind`]): their names, class names, standard
//! file names and the published SHA-256 of each file, how to find those files in a directory
//! and how to tell which dataset a directory holds.
//!
//! Checksums are of the DECOMPRESSED content: the official uncompressed IDX files and
//! CIFAR-10 `.bin` batches. This makes verification independent of how a file was
//! (re)compressed (Debian's Fashion-MNIST `.gz` files, say, differ from upstream's but
//! decompress to the same bytes) and lets plain and gzipped files be checked alike.
//! Downloading and verifying are in [`crate::fetch`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::io::{read_maybe_gz, sha256_hex};

/// Number of classes of MNIST, Fashion-MNIST and CIFAR-10.
pub const CLASSES: usize = 10;

/// SHA-256 of the official uncompressed MNIST files, by canonical name (the "SHA-256 after
/// gunzip" of `../shared/data/README.md` next to the repository, whose uncompressed files match the published
/// MD5s 6bbc9ace…, a25bea73…, 2646ac64…, 27ae3e4e…).
pub const MNIST_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// SHA-256 of the official uncompressed Fashion-MNIST files, by canonical name. Computed from
/// Debian's `dataset-fashion-mnist` 0.0~git20200523.55506a9-1 after gunzip; those files have
/// the upstream MD5s of the uncompressed files (f4a8712d…, 9018921c…, 8181f547…, 15d48437…).
pub const FASHION_MNIST_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

/// SHA-256 of Fashion-MNIST's decompressed `t10k-labels-idx1-ubyte` (used to tell it from
/// MNIST in [`DataKind::detect`]).
pub const FASHION_T10K_LABELS_SHA256: &str = FASHION_MNIST_SHA256[3].1;

/// SHA-256 of the official CIFAR-10 binary batches (as extracted from
/// `cifar-10-binary.tar.gz`; published MD5s 5dd7e06a…, 5ea93a67…, 942cd6a4…, ae636b3b…,
/// 53f37980…, 803d5f7f…).
pub const CIFAR10_SHA256: [(&str, &str); 6] = [
    (
        "data_batch_1.bin",
        "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    ),
    (
        "data_batch_2.bin",
        "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    ),
    (
        "data_batch_3.bin",
        "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    ),
    (
        "data_batch_4.bin",
        "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    ),
    (
        "data_batch_5.bin",
        "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    ),
    (
        "test_batch.bin",
        "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
    ),
];

/// Name of CIFAR-10's class-name file.
pub const CIFAR10_META: &str = "batches.meta.txt";
/// SHA-256 of the official `batches.meta.txt` (61 bytes: ten names and an empty last line).
pub const CIFAR10_META_SHA256: &str =
    "558e74b5e208382e186da55784b4bac2cd52e558448e1b5800990fdb28ed8033";

/// The datasets margincert knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataKind {
    /// MNIST handwritten digits, IDX files, `[1, 28, 28]`.
    Mnist,
    /// Fashion-MNIST (Zalando), IDX files, `[1, 28, 28]`.
    FashionMnist,
    /// CIFAR-10 binary version, `[3, 32, 32]`.
    Cifar10,
}

impl DataKind {
    /// All kinds.
    pub const ALL: [DataKind; 3] = [DataKind::Mnist, DataKind::FashionMnist, DataKind::Cifar10];

    /// The name used on the command line and in dataset names: `mnist`, `fashion-mnist`,
    /// `cifar10`.
    pub fn name(self) -> &'static str {
        match self {
            DataKind::Mnist => "mnist",
            DataKind::FashionMnist => "fashion-mnist",
            DataKind::Cifar10 => "cifar10",
        }
    }

    /// The published class names, indexed by label.
    pub fn class_names(self) -> [&'static str; CLASSES] {
        match self {
            DataKind::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DataKind::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
            DataKind::Cifar10 => [
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ],
        }
    }

    /// Canonical names (without `.gz`) of the standard files of this kind, in the order
    /// train images, train labels, test images, test labels (IDX) or data_batch_1 ..
    /// data_batch_5, test_batch (CIFAR-10).
    pub fn file_names(self) -> &'static [&'static str] {
        match self {
            DataKind::Mnist | DataKind::FashionMnist => &[
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            ],
            DataKind::Cifar10 => &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
                "test_batch.bin",
            ],
        }
    }

    /// The published SHA-256 of the decompressed content of each standard file of this kind,
    /// by canonical name (the names of [`DataKind::file_names`], same order).
    pub fn expected_sha256(self) -> &'static [(&'static str, &'static str)] {
        match self {
            DataKind::Mnist => &MNIST_SHA256,
            DataKind::FashionMnist => &FASHION_MNIST_SHA256,
            DataKind::Cifar10 => &CIFAR10_SHA256,
        }
    }

    /// Guesses the kind of the dataset in `dir` from the files present: CIFAR-10 batches
    /// (in `dir` or `dir/cifar-10-batches-bin`), else IDX files, which are Fashion-MNIST when
    /// the decompressed test labels are Fashion-MNIST's official ones or the directory's
    /// path mentions "fashion", MNIST otherwise.
    pub fn detect(dir: &Path) -> Result<DataKind> {
        if find_file(DataKind::Cifar10, dir, "data_batch_1.bin").is_ok() {
            return Ok(DataKind::Cifar10);
        }
        if find_file(DataKind::Mnist, dir, "train-images-idx3-ubyte").is_ok() {
            let fashion_path = dir.to_string_lossy().to_lowercase().contains("fashion");
            let fashion_labels = find_file(DataKind::Mnist, dir, "t10k-labels-idx1-ubyte")
                .and_then(|p| read_maybe_gz(&p))
                .is_ok_and(|b| sha256_hex(&b) == FASHION_T10K_LABELS_SHA256);
            return Ok(if fashion_path || fashion_labels {
                DataKind::FashionMnist
            } else {
                DataKind::Mnist
            });
        }
        Err(Error::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no dataset found: looked for CIFAR-10 batches (data_batch_1.bin[.gz], also in \
                 cifar-10-batches-bin/) and IDX files (train-images-idx3-ubyte[.gz], \
                 train-images.idx3-ubyte[.gz])",
            ),
        })
    }
}

impl fmt::Display for DataKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataKind {
    type Err = Error;
    /// Accepts `mnist`, `fashion-mnist` (also `fashion_mnist`, `fashionmnist`, `fmnist`),
    /// `cifar10` (also `cifar-10`, `cifar_10`), in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mnist" => Ok(DataKind::Mnist),
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" | "fmnist" => {
                Ok(DataKind::FashionMnist)
            }
            "cifar10" | "cifar-10" | "cifar_10" => Ok(DataKind::Cifar10),
            _ => Err(Error::Invalid(format!(
                "unknown dataset kind {s:?}: expected mnist, fashion-mnist or cifar10"
            ))),
        }
    }
}

/// Finds the standard file `name` (one of [`DataKind::file_names`]) of `kind` in `dir`.
///
/// Looks for `name.gz`, then `name`; IDX files also under the spelling with a dot
/// (`train-images.idx3-ubyte[.gz]`), CIFAR-10 batches also in `dir/cifar-10-batches-bin/`.
/// Whether a file is gzipped is decided by its content when it is read, not by its name.
/// A missing file is an [`Error::Io`] of kind `NotFound` listing every path looked at.
pub fn find_file(kind: DataKind, dir: &Path, name: &str) -> Result<PathBuf> {
    let mut dirs = vec![dir.to_path_buf()];
    let mut stems = vec![name.to_string()];
    match kind {
        DataKind::Mnist | DataKind::FashionMnist => {
            let dotted = name.replacen("-idx", ".idx", 1);
            if dotted != name {
                stems.push(dotted);
            }
        }
        DataKind::Cifar10 => dirs.push(dir.join("cifar-10-batches-bin")),
    }
    let candidates: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| {
            stems
                .iter()
                .flat_map(move |s| [d.join(format!("{s}.gz")), d.join(s)])
        })
        .collect();
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(Error::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no {kind} file {name}; looked for {}", looked.join(", ")),
        ),
    })
}
