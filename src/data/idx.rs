//! IDX files (MNIST, Fashion-MNIST): unsigned-byte tensors with a big-endian header, images
//! `N x rows x cols` and labels `N`, each file gzipped or plain.

use std::path::Path;

use super::Dataset;
use crate::error::{Error, Result};
use crate::io::{be_u32, clamp, decode_into_limited, read_file_limited};
use crate::limits;
use crate::model::Shape;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

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
/// labels file, which together may hold at most [`limits::DATASET_BYTES`] (decompressed).
/// The paths only name the sources in errors.
pub fn idx_from_bytes(
    name: &str,
    images_path: &Path,
    images: &[u8],
    labels_path: &Path,
    labels: &[u8],
    classes: usize,
) -> Result<Dataset> {
    let limit = limits::DATASET_BYTES.value()?;
    idx_from_bytes_limited(
        name,
        (images_path, images),
        (labels_path, labels),
        classes,
        limit,
    )
}

/// [`idx_from_bytes`] with an explicit bound on the decompressed bytes of both files
/// together; each file is `(path, raw bytes)`.
pub fn idx_from_bytes_limited(
    name: &str,
    (images_path, images): (&Path, &[u8]),
    (labels_path, labels): (&Path, &[u8]),
    classes: usize,
    limit: u64,
) -> Result<Dataset> {
    let limit = clamp(limit);
    let mut ib = Vec::new();
    decode_into_limited(images_path, images, &mut ib, limit)?;
    let mut lb = Vec::new();
    decode_into_limited(labels_path, labels, &mut lb, limit - ib.len()).map_err(|e| match e {
        Error::Format { path, msg } => Error::Format {
            path,
            msg: format!("{msg} (with the {} bytes of the images)", ib.len()),
        },
        other => other,
    })?;
    let (shape, n, pixels) = parse_idx_images(images_path, ib)?;
    let labels = parse_idx_labels(labels_path, lb, classes)?;
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

/// Loads a dataset from an IDX images file and an IDX labels file, each gzipped or plain
/// (at most [`limits::FILE_BYTES`] as stored, [`limits::DATASET_BYTES`] together
/// decompressed).
pub fn load_idx(name: &str, images: &Path, labels: &Path, classes: usize) -> Result<Dataset> {
    let ib = read_file_limited(images, &limits::FILE_BYTES)?;
    let lb = read_file_limited(labels, &limits::FILE_BYTES)?;
    idx_from_bytes(name, images, &ib, labels, &lb, classes)
}
