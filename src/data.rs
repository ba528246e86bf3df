//! Datasets: IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary loaders, gzipped or not, the
//! embedded default subset, and binary tasks.
//!
//! Pixels are kept as the raw bytes `p` of the files: the f32 training path uses `p / 255`
//! rounded to f32, the certified path encloses the exact rational `p / 255`.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::model::Shape;

/// A labelled image dataset.
///
/// Invariant: `pixels.len() == labels.len() * shape.len()`, every label is `< classes`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Human name, e.g. `mnist-train` or `mnist-train[3 vs 5]`.
    pub name: String,
    /// Shape of one example, `[C, H, W]`.
    pub shape: Shape,
    /// Raw pixel bytes, example-major, each example `C x H x W` (CHW, row-major).
    pub pixels: Vec<u8>,
    /// Class labels.
    pub labels: Vec<u8>,
    /// Number of classes (2 for a binary task, whose labels are 1 = positive, 0 = negative).
    pub classes: usize,
}

impl Dataset {
    /// Builds a dataset, checking the invariant.
    pub fn new(
        name: impl Into<String>,
        shape: Shape,
        pixels: Vec<u8>,
        labels: Vec<u8>,
        classes: usize,
    ) -> Result<Self> {
        let name = name.into();
        if pixels.len() != labels.len() * shape.len() {
            return Err(Error::Shape(format!(
                "{name}: {} pixels for {} examples of shape {shape}",
                pixels.len(),
                labels.len()
            )));
        }
        if let Some(l) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(Error::Invalid(format!(
                "{name}: label {l} out of range for {classes} classes"
            )));
        }
        Ok(Self {
            name,
            shape,
            pixels,
            labels,
            classes,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The raw bytes of example `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.shape.len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// SHA-256 (hex) of the dataset's content: the shape as three little-endian u64, the
    /// class count as u64, then the labels, then the pixels. Certificates record it.
    pub fn sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for v in [self.shape.c, self.shape.h, self.shape.w, self.classes] {
            h.update((v as u64).to_le_bytes());
        }
        h.update(&self.labels);
        h.update(&self.pixels);
        hex::encode(h.finalize())
    }

    /// All pixels as f32 `p / 255` (the correctly rounded quotient).
    pub fn to_f32(&self) -> Vec<f32> {
        self.pixels.iter().map(|&p| p as f32 / 255.0).collect()
    }
}

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;
/// Number of classes of MNIST, Fashion-MNIST and CIFAR-10.
pub const CLASSES: usize = 10;
/// Bytes of one CIFAR-10 record: one label byte, then 3 x 32 x 32 pixel bytes (R, G, B planes).
pub const CIFAR_RECORD: usize = 1 + CIFAR_PIXELS;
/// Pixel bytes of one CIFAR-10 image.
pub const CIFAR_PIXELS: usize = 3 * 32 * 32;

impl Dataset {
    /// The first `n` examples (all of them when `n >= len()`). The name gets `[:n]` when
    /// examples are dropped.
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        let name = if n < self.len() {
            format!("{}[:{n}]", self.name)
        } else {
            self.name.clone()
        };
        Dataset {
            name,
            shape: self.shape,
            pixels: self.pixels[..n * self.shape.len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            classes: self.classes,
        }
    }

    /// The examples at `indices`, in that order (repeats allowed). The name gets
    /// `[k of n]`. Fails when an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let sz = self.shape.len();
        let mut pixels = Vec::with_capacity(indices.len() * sz);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.len() {
                return Err(Error::Invalid(format!(
                    "{}: index {i} out of range for {} examples",
                    self.name,
                    self.len()
                )));
            }
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Ok(Dataset {
            name: format!("{}[{} of {}]", self.name, indices.len(), self.len()),
            shape: self.shape,
            pixels,
            labels,
            classes: self.classes,
        })
    }

    /// The binary task `pos` vs `neg`: keeps only the examples of these two classes, in their
    /// order; label 1 (y = +1) for `pos`, 0 (y = -1) for `neg`; `classes == 2`. The name gets
    /// `[pos vs neg]`. Fails when a class is out of range or `pos == neg`.
    pub fn binary(&self, pos: u8, neg: u8) -> Result<Dataset> {
        for c in [pos, neg] {
            if c as usize >= self.classes {
                return Err(Error::Invalid(format!(
                    "{}: class {c} out of range for {} classes",
                    self.name, self.classes
                )));
            }
        }
        if pos == neg {
            return Err(Error::Invalid(format!(
                "{}: a binary task needs two different classes, got {pos} vs {neg}",
                self.name
            )));
        }
        let sz = self.shape.len();
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for (i, &l) in self.labels.iter().enumerate() {
            if l == pos || l == neg {
                pixels.extend_from_slice(&self.pixels[i * sz..(i + 1) * sz]);
                labels.push(u8::from(l == pos));
            }
        }
        Ok(Dataset {
            name: format!("{}[{pos} vs {neg}]", self.name),
            shape: self.shape,
            pixels,
            labels,
            classes: 2,
        })
    }

    /// Number of examples of each class, indexed by label (length `classes`).
    pub fn label_histogram(&self) -> Vec<usize> {
        let mut h = vec![0usize; self.classes];
        for &l in &self.labels {
            // The invariant makes every label < classes; stay panic-free if a caller broke it
            // through the public fields.
            if let Some(c) = h.get_mut(l as usize) {
                *c += 1;
            }
        }
        h
    }
}

/// A train/test pair.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// Training set.
    pub train: Dataset,
    /// Test set.
    pub test: Dataset,
}

impl Split {
    /// [`Dataset::binary`] on both halves.
    pub fn binary(&self, pos: u8, neg: u8) -> Result<Split> {
        Ok(Split {
            train: self.train.binary(pos, neg)?,
            test: self.test.binary(pos, neg)?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Raw bytes: gzip detection.

/// True when `bytes` start with the gzip magic `1f 8b`.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Largest decompressed size accepted from one gzip file (2 GiB; the largest official file,
/// MNIST's training images, is 47 MB): a guard against decompression bombs.
pub const MAX_DECOMPRESSED: usize = 2 << 30;

/// Appends the content of `bytes` to `out`: gunzipped when `bytes` start with the gzip magic
/// (all members of a multi-member stream, at most [`MAX_DECOMPRESSED`] bytes), copied
/// otherwise. `path` only names the source in errors. Returns the number of bytes appended.
pub fn decode_into(path: &Path, bytes: &[u8], out: &mut Vec<u8>) -> Result<usize> {
    decode_into_limited(path, bytes, out, MAX_DECOMPRESSED)
}

fn decode_into_limited(
    path: &Path,
    bytes: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<usize> {
    if !is_gzip(bytes) {
        out.extend_from_slice(bytes);
        return Ok(bytes.len());
    }
    // The gzip trailer holds the size mod 2^32: a capacity hint only, capped so that a
    // forged trailer cannot make us reserve much.
    if let Some(t) = bytes.len().checked_sub(4).and_then(|s| bytes.get(s..)) {
        let hint = u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize;
        out.reserve(hint.min(256 << 20).min(limit));
    }
    let start = out.len();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(out)
        .map_err(|e| Error::format(path, format!("invalid gzip data: {e}")))?;
    let n = out.len() - start;
    if n > limit {
        out.truncate(start);
        return Err(Error::format(
            path,
            format!("gzip data decompresses to more than {limit} bytes"),
        ));
    }
    Ok(n)
}

/// The content of `bytes`, gunzipped when they start with the gzip magic.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decode_into(path, bytes, &mut out)?;
    Ok(out)
}

/// Reads a file, gunzipping it when its content starts with the gzip magic (whatever its name).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if is_gzip(&bytes) {
        decode(path, &bytes)
    } else {
        Ok(bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// IDX.

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parses an IDX header of unsigned bytes with `ndims` dimensions. Returns the dimensions and
/// the offset of the data, having checked that the data length is exactly the product of the
/// dimensions.
fn idx_header(path: &Path, bytes: &[u8], ndims: u8, what: &str) -> Result<(Vec<usize>, usize)> {
    let header = 4 + 4 * ndims as usize;
    let Some(magic) = be_u32(bytes, 0) else {
        return Err(Error::format(
            path,
            format!(
                "truncated IDX {what} file: {} bytes, shorter than the 4-byte magic number",
                bytes.len()
            ),
        ));
    };
    if magic >> 8 != 0x08 {
        return Err(Error::format(
            path,
            format!(
                "wrong magic number 0x{magic:08x} for an IDX {what} file \
                 (expected 0x{:08x}: unsigned bytes, {ndims} dimension(s))",
                0x0800 | ndims as u32
            ),
        ));
    }
    let found = (magic & 0xff) as u8;
    if found != ndims {
        return Err(Error::format(
            path,
            format!(
                "wrong dimension count {found} in IDX {what} file (magic 0x{magic:08x}), \
                 expected {ndims} (magic 0x{:08x})",
                0x0800 | ndims as u32
            ),
        ));
    }
    if bytes.len() < header {
        return Err(Error::format(
            path,
            format!(
                "truncated IDX {what} file: {} bytes, shorter than its {header}-byte header",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims as usize)
        .map(|d| be_u32(bytes, 4 + 4 * d).unwrap_or(0) as usize)
        .collect();
    let declared = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::format(path, format!("IDX dimensions {dims:?} overflow")))?;
    let actual = bytes.len() - header;
    if actual < declared {
        return Err(Error::format(
            path,
            format!(
                "truncated IDX {what} file: dimensions {dims:?} declare {declared} data bytes, \
                 only {actual} present"
            ),
        ));
    }
    if actual > declared {
        return Err(Error::format(
            path,
            format!(
                "{} trailing bytes after the {declared} data bytes declared by IDX \
                 dimensions {dims:?}",
                actual - declared
            ),
        ));
    }
    Ok((dims, header))
}

/// Parses the (decompressed) bytes of an IDX images file: magic 0x00000803, dimensions
/// `N x rows x cols`. Returns `(shape [1, rows, cols], pixels)`.
pub fn parse_idx_images(path: &Path, mut bytes: Vec<u8>) -> Result<(Shape, usize, Vec<u8>)> {
    let (dims, header) = idx_header(path, &bytes, 3, "images")?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(Error::format(
            path,
            format!(
                "IDX images have an empty image size {}x{}",
                dims[1], dims[2]
            ),
        ));
    }
    bytes.drain(..header);
    Ok((Shape::new(1, dims[1], dims[2]), dims[0], bytes))
}

/// Parses the (decompressed) bytes of an IDX labels file: magic 0x00000801, checking every
/// label is `< classes`.
pub fn parse_idx_labels(path: &Path, mut bytes: Vec<u8>, classes: usize) -> Result<Vec<u8>> {
    let (_, header) = idx_header(path, &bytes, 1, "labels")?;
    bytes.drain(..header);
    if let Some((i, &l)) = bytes
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        return Err(Error::format(
            path,
            format!("label {l} of item {i} out of range for {classes} classes"),
        ));
    }
    Ok(bytes)
}

/// Builds a dataset from the raw (gzipped or plain) bytes of an IDX images file and an IDX
/// labels file. The paths only name the sources in errors.
pub fn idx_from_bytes(
    name: &str,
    images_path: &Path,
    images: &[u8],
    labels_path: &Path,
    labels: &[u8],
    classes: usize,
) -> Result<Dataset> {
    let (shape, n, pixels) = parse_idx_images(images_path, decode(images_path, images)?)?;
    let labels = parse_idx_labels(labels_path, decode(labels_path, labels)?, classes)?;
    if labels.len() != n {
        return Err(Error::format(
            labels_path,
            format!(
                "{} labels for {n} images in {}",
                labels.len(),
                images_path.display()
            ),
        ));
    }
    Dataset::new(name, shape, pixels, labels, classes)
}

/// Loads a dataset from an IDX images file and an IDX labels file, each gzipped or plain.
pub fn load_idx(name: &str, images: &Path, labels: &Path, classes: usize) -> Result<Dataset> {
    let ib = std::fs::read(images).map_err(|e| Error::io(images, e))?;
    let lb = std::fs::read(labels).map_err(|e| Error::io(labels, e))?;
    idx_from_bytes(name, images, &ib, labels, &lb, classes)
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10.

/// Builds a CIFAR-10 dataset (shape `[3, 32, 32]`, 10 classes) from the raw bytes of binary
/// batches, each gzipped or plain, concatenated in the given order. Each batch must be a
/// whole number of 3073-byte records with labels `< 10`.
pub fn cifar_from_bytes(name: &str, batches: &[(PathBuf, Vec<u8>)]) -> Result<Dataset> {
    let mut buf = Vec::new();
    for (path, raw) in batches {
        let start = buf.len();
        let len = decode_into(path, raw, &mut buf)?;
        if len % CIFAR_RECORD != 0 {
            return Err(Error::format(
                path,
                format!(
                    "CIFAR-10 batch of {len} bytes is not a whole number of {CIFAR_RECORD}-byte \
                     records ({} records and {} bytes left over)",
                    len / CIFAR_RECORD,
                    len % CIFAR_RECORD
                ),
            ));
        }
        if let Some((i, &l)) = buf[start..]
            .iter()
            .step_by(CIFAR_RECORD)
            .enumerate()
            .find(|&(_, &l)| l as usize >= CLASSES)
        {
            return Err(Error::format(
                path,
                format!("label {l} of record {i} out of range for {CLASSES} classes"),
            ));
        }
    }
    // Compact in place: record i's pixels move to i * 3072, which never overtakes the unread
    // records (i * 3072 + 3072 <= (i + 1) * 3073).
    let n = buf.len() / CIFAR_RECORD;
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let r = i * CIFAR_RECORD;
        labels.push(buf[r]);
        buf.copy_within(r + 1..r + CIFAR_RECORD, i * CIFAR_PIXELS);
    }
    buf.truncate(n * CIFAR_PIXELS);
    buf.shrink_to_fit();
    Dataset::new(name, Shape::new(3, 32, 32), buf, labels, CLASSES)
}

/// Loads CIFAR-10 binary batch files (each gzipped or plain), concatenated in order.
pub fn load_cifar(name: &str, files: &[PathBuf]) -> Result<Dataset> {
    let mut batches = Vec::with_capacity(files.len());
    for f in files {
        batches.push((f.clone(), std::fs::read(f).map_err(|e| Error::io(f, e))?));
    }
    cifar_from_bytes(name, &batches)
}

/// Reads a class-name list such as CIFAR-10's `batches.meta.txt`: one name per line, empty
/// lines (and surrounding white space) skipped.
pub fn read_class_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Dataset kinds, directories, sources.

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
                .is_ok_and(|b| {
                    crate::fetch::sha256_hex(&b) == crate::fetch::FASHION_T10K_LABELS_SHA256
                });
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
            let meta = files[0].with_file_name("batches.meta.txt");
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

// ---------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------
// The embedded default.

/// Number of training and of test examples in the embedded subset.
pub const EMBEDDED_LEN: usize = 1000;

const EMBEDDED_FILES: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../fixtures/embedded/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../fixtures/embedded/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../fixtures/embedded/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../fixtures/embedded/t10k-labels-idx1-ubyte.gz"),
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

/// Where a dataset comes from.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Six 1 x 1 x 2 examples: example i has pixels [i, 100 + i] and label i % 3.
    fn tiny() -> Dataset {
        let pixels = (0..6u8).flat_map(|i| [i, 100 + i]).collect();
        let labels = (0..6u8).map(|i| i % 3).collect();
        Dataset::new("tiny", Shape::new(1, 1, 2), pixels, labels, 3).unwrap()
    }

    #[test]
    fn take_keeps_the_first_examples() {
        let d = tiny();
        let t = d.take(2);
        assert_eq!(t.name, "tiny[:2]");
        assert_eq!(t.labels, [0, 1]);
        assert_eq!(t.pixels, [0, 100, 1, 101]);
        assert_eq!(d.take(100), d);
        assert!(d.take(0).is_empty());
    }

    #[test]
    fn subset_picks_in_order_and_checks_range() {
        let d = tiny();
        let s = d.subset(&[4, 0, 4]).unwrap();
        assert_eq!(s.labels, [1, 0, 1]);
        assert_eq!(s.pixels, [4, 104, 0, 100, 4, 104]);
        assert_eq!(s.name, "tiny[3 of 6]");
        let e = d.subset(&[6]).unwrap_err().to_string();
        assert!(e.contains("index 6 out of range for 6"), "{e}");
    }

    #[test]
    fn binary_relabels_pos_one_neg_zero() {
        let d = tiny();
        let b = d.binary(2, 0).unwrap();
        assert_eq!(b.name, "tiny[2 vs 0]");
        assert_eq!(b.classes, 2);
        // Examples 0 (class 0), 2 (class 2), 3 (class 0), 5 (class 2).
        assert_eq!(b.labels, [0, 1, 0, 1]);
        assert_eq!(b.pixels, [0, 100, 2, 102, 3, 103, 5, 105]);
        assert_eq!(b.label_histogram(), [2, 2]);
        assert!(d.binary(1, 1).is_err());
        assert!(
            d.binary(3, 0)
                .unwrap_err()
                .to_string()
                .contains("class 3 out of range")
        );
    }

    #[test]
    fn decompression_is_capped() {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut z, &[0u8; 10_000]).unwrap();
        let z = z.finish().unwrap();
        let mut out = vec![7];
        assert_eq!(
            decode_into_limited(Path::new("z"), &z, &mut out, 10_000).unwrap(),
            10_000
        );
        assert_eq!(out.len(), 10_001);
        let mut out = vec![7];
        let e = decode_into_limited(Path::new("z"), &z, &mut out, 9_999).unwrap_err();
        assert!(e.to_string().contains("more than 9999 bytes"), "{e}");
        assert_eq!(out, [7]);
    }

    #[test]
    fn histogram_counts_labels() {
        assert_eq!(tiny().label_histogram(), [2, 2, 2]);
    }

    #[test]
    fn cifar_records_split_into_labels_and_chw_pixels() {
        // Two records in one batch, one in another, one gzipped.
        let rec = |label: u8, seed: u8| {
            let mut r = vec![label];
            r.extend((0..CIFAR_PIXELS).map(|j| (j as u8).wrapping_mul(7).wrapping_add(seed)));
            r
        };
        let b1 = [rec(6, 1), rec(9, 2)].concat();
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut z, &rec(0, 3)).unwrap();
        let b2 = z.finish().unwrap();
        let d = cifar_from_bytes("c", &[("b1".into(), b1), ("b2".into(), b2)]).unwrap();
        assert_eq!(d.labels, [6, 9, 0]);
        assert_eq!(d.shape, Shape::new(3, 32, 32));
        for (i, seed) in [1u8, 2, 3].into_iter().enumerate() {
            assert_eq!(d.image(i), &rec(0, seed)[1..], "record {i}");
        }
    }

    #[test]
    fn cifar_errors_name_file_and_problem() {
        let mut b = vec![3u8; 2 * CIFAR_RECORD + 5];
        let e = cifar_from_bytes("c", &[("bad.bin".into(), b.clone())]).unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::Format { .. }));
        assert!(
            m.starts_with("bad.bin:") && m.contains("2 records and 5 bytes left over"),
            "{m}"
        );
        b.truncate(2 * CIFAR_RECORD);
        b[CIFAR_RECORD] = 10;
        let m = cifar_from_bytes(
            "c",
            &[("ok".into(), vec![1; CIFAR_RECORD]), ("l.bin".into(), b)],
        )
        .unwrap_err()
        .to_string();
        assert!(
            m.starts_with("l.bin:") && m.contains("label 10 of record 1"),
            "{m}"
        );
    }
}
