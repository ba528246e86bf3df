//! Datasets: IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary loaders, gzipped or not, the
//! embedded default subset, and binary tasks.
//!
//! Pixels are kept as the raw bytes `p` of the files: the f32 training path uses `p / 255`
//! rounded to f32, the certified path encloses the exact rational `p / 255`.

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
