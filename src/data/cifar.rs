//! CIFAR-10 binary batches: 3073-byte records (a label byte, then the R, G and B planes of a
//! 32 x 32 image), each batch gzipped or plain, and the class-name file `batches.meta.txt`.

use std::path::{Path, PathBuf};

use super::{CLASSES, Dataset};
use crate::error::{Error, Result};
use crate::io::{clamp, decode_into_limited, read_file_limited};
use crate::limits;
use crate::model::Shape;

/// Bytes of one CIFAR-10 record: one label byte, then 3 x 32 x 32 pixel bytes (R, G, B planes).
pub const CIFAR_RECORD: usize = 1 + CIFAR_PIXELS;
/// Pixel bytes of one CIFAR-10 image.
pub const CIFAR_PIXELS: usize = 3 * 32 * 32;

/// Builds a CIFAR-10 dataset (shape `[3, 32, 32]`, 10 classes) from the raw bytes of binary
/// batches, each gzipped or plain, concatenated in the given order. Each batch must be a
/// whole number of 3073-byte records with labels `< 10`. The batches together may hold at
/// most [`limits::DATASET_BYTES`] (decompressed).
pub fn cifar_from_bytes(name: &str, batches: &[(PathBuf, Vec<u8>)]) -> Result<Dataset> {
    cifar_from_bytes_limited(name, batches, limits::DATASET_BYTES.value()?)
}

/// [`cifar_from_bytes`] with an explicit bound on the decompressed bytes of all the batches
/// together.
pub fn cifar_from_bytes_limited(
    name: &str,
    batches: &[(PathBuf, Vec<u8>)],
    limit: u64,
) -> Result<Dataset> {
    let mut buf = Vec::new();
    for (path, raw) in batches {
        append_batch(&mut buf, path, raw, limit)?;
    }
    finish(name, buf)
}

/// Decodes one batch onto `buf` within what is left of `limit` (for all batches together)
/// and checks its records.
fn append_batch(buf: &mut Vec<u8>, path: &Path, raw: &[u8], limit: u64) -> Result<()> {
    let start = buf.len();
    let left = clamp(limit).saturating_sub(start);
    let len = decode_into_limited(path, raw, buf, left).map_err(|e| match e {
        Error::Format { path, msg } if start > 0 => Error::Format {
            path,
            msg: format!("{msg} (with the {start} bytes of the batches before it)"),
        },
        other => other,
    })?;
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
    Ok(())
}

/// Splits the concatenated records into labels and CHW pixels.
fn finish(name: &str, mut buf: Vec<u8>) -> Result<Dataset> {
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

/// Loads CIFAR-10 binary batch files (each gzipped or plain, at most
/// [`limits::FILE_BYTES`] as stored), concatenated in order, one file in memory at a time;
/// all of them together may hold at most [`limits::DATASET_BYTES`] (decompressed).
pub fn load_cifar(name: &str, files: &[PathBuf]) -> Result<Dataset> {
    let limit = limits::DATASET_BYTES.value()?;
    let mut buf = Vec::new();
    for f in files {
        let raw = read_file_limited(f, &limits::FILE_BYTES)?;
        append_batch(&mut buf, f, &raw, limit)?;
    }
    finish(name, buf)
}

/// Reads a class-name list such as CIFAR-10's `batches.meta.txt`: one name per line, empty
/// lines (and surrounding white space) skipped.
pub fn read_class_names(path: &Path) -> Result<Vec<String>> {
    let text = crate::io::read_text_limited(path, &limits::TEXT_BYTES)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
