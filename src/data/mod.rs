//! Datasets: the labelled images a run trains and certifies on, where they come from, and
//! the file formats they are read from.
//!
//! The names, from the bytes up:
//! - [`Dataset`]: one labelled set of images in memory (pixels as raw bytes, labels, class
//!   count), and [`Split`]: a train/test pair of them.
//! - [`DataKind`]: WHICH known dataset (MNIST, Fashion-MNIST, CIFAR-10): its file names,
//!   class names and published checksums, and how to recognise it in a directory.
//! - [`DataSource`]: WHERE a split is loaded from: the embedded MNIST subset, or the files of
//!   a [`DataKind`] in a directory (written `embedded`, `KIND:DIR` or `DIR`).
//! - [`DataChoice`]: WHAT a run used: a source as written, plus the binary task and the
//!   subsets applied after loading. Run configs and checkpoints record it, so that a run's
//!   data can be loaded again.
//!
//! The file formats: IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary batches, each gzipped or
//! not (the gzip handling is in [`crate::io`]).
//!
//! Pixels are kept as the raw bytes `p` of the files: the f32 training path uses `p / 255`
//! rounded to f32, the certified path encloses the exact rational `p / 255`.

mod cifar;
mod idx;
mod kind;
mod source;

pub use cifar::{
    CIFAR_PIXELS, CIFAR_RECORD, cifar_from_bytes, cifar_from_bytes_limited, load_cifar,
    read_class_names,
};
pub use idx::{
    IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, idx_from_bytes, idx_from_bytes_limited, load_idx,
    parse_idx_images, parse_idx_labels,
};
pub use kind::{
    CIFAR10_META, CIFAR10_META_SHA256, CIFAR10_SHA256, CLASSES, DataKind, FASHION_MNIST_SHA256,
    FASHION_T10K_LABELS_SHA256, MNIST_SHA256, find_file,
};
pub use source::{DataChoice, DataSource, EMBEDDED_LEN, embedded, embedded_files, load_dir};

use crate::error::{Error, Result};
use crate::io::sha256_hex_of_parts;
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
        let header: Vec<u8> = [self.shape.c, self.shape.h, self.shape.w, self.classes]
            .into_iter()
            .flat_map(|v| (v as u64).to_le_bytes())
            .collect();
        sha256_hex_of_parts([&header[..], &self.labels, &self.pixels])
    }

    /// All pixels as f32 `p / 255` (the correctly rounded quotient).
    pub fn to_f32(&self) -> Vec<f32> {
        self.pixels.iter().map(|&p| p as f32 / 255.0).collect()
    }
}

impl Dataset {
    /// The first `n` examples (all of them when `n >= len()`). The name gets `[:n]` when
    /// examples are dropped.
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        // A prefix of a prefix is a prefix of the original: `x[:40]` taken to 5 is `x[:5]`,
        // the name loading `x` with `--subset 5` gives (a certificate names its data).
        let name = if n < self.len() {
            let base = prefix_base(&self.name).unwrap_or(&self.name);
            format!("{base}[:{n}]")
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

/// `x` when `name` is `x[:N]` (a prefix taken by [`Dataset::take`]).
fn prefix_base(name: &str) -> Option<&str> {
    let open = name.rfind("[:")?;
    let digits = name[open + 2..].strip_suffix(']')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| &name[..open])
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
        // A prefix of a prefix names the original's prefix.
        assert_eq!(d.take(4).take(2).name, "tiny[:2]");
        assert_eq!(d.take(4).take(2), t);
        assert_eq!(prefix_base("a[:12]"), Some("a"));
        assert_eq!(prefix_base("a[3 of 6]"), None);
        assert_eq!(prefix_base("a[:]"), None);
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
    fn histogram_counts_labels() {
        assert_eq!(tiny().label_histogram(), [2, 2, 2]);
    }
}
