//! Byte-level input and output shared by every module above it: atomic file writes, SHA-256
//! digests, gzip detection and size-limited decoding, big-endian integers (IDX headers) and
//! little-endian floats (safetensors, ONNX).
//!
//! This is the lowest layer of the crate: it imports nothing but [`crate::error`], so that
//! the data loaders, the checkpoint format, the downloader and the reports can all use it
//! without depending on each other.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::limits::{self, Amount, Limit};

// ---------------------------------------------------------------------------------------------
// Never write over an input.

/// Refuses to write `out` when it is one of `inputs`: the same file through any path, symlink
/// or hard link (`same_file` compares device and inode). Writing it would destroy the input
/// (e.g. `certify model.safetensors --out model.safetensors`). Paths that do not exist are
/// never the same file.
pub fn ensure_not_input(out: &Path, inputs: &[PathBuf]) -> Result<()> {
    for input in inputs {
        if same_file::is_same_file(out, input).unwrap_or(false) {
            return Err(Error::Invalid(format!(
                "refusing to write {}: it is the input {} (the same file); choose another --out",
                out.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Atomic writes.

/// Name prefix of [`write_atomic`]'s temporary files.
const TEMP_PREFIX: &str = ".margincert-";
/// Name suffix of [`write_atomic`]'s temporary files.
const TEMP_SUFFIX: &str = ".tmp";

/// True for the name of a temporary file of [`write_atomic`] (`.margincert-*.tmp`): one
/// left behind is the orphan of an interrupted write.
pub fn is_temp_file(name: &str) -> bool {
    name.len() > TEMP_PREFIX.len() + TEMP_SUFFIX.len()
        && name.starts_with(TEMP_PREFIX)
        && name.ends_with(TEMP_SUFFIX)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory (created if
/// missing; named as [`is_temp_file`] recognises), flushed and synced, then renamed over
/// `path`, so that a crash never leaves a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SHA-256.

/// SHA-256 (lower-case hex) of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 (lower-case hex) of the concatenation of `parts`, hashed as they come.
pub fn sha256_hex_of_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// An `io::Write` that hashes what it is given.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// SHA-256 (hex) of the content of `reader`, gunzipped (all members) when it starts with the
/// gzip magic. Streams; `path` names the source in errors.
fn content_sha256_of(path: &Path, reader: impl Read) -> Result<String> {
    let mut r = BufReader::with_capacity(1 << 16, reader);
    let head = r.fill_buf().map_err(|e| Error::io(path, e))?;
    let gz = is_gzip(head);
    let mut h = HashWriter(Sha256::new());
    if gz {
        io::copy(&mut flate2::bufread::MultiGzDecoder::new(r), &mut h)
            .map_err(|e| Error::format(path, format!("invalid gzip data: {e}")))?;
    } else {
        io::copy(&mut r, &mut h).map_err(|e| Error::io(path, e))?;
    }
    Ok(hex::encode(h.0.finalize()))
}

/// SHA-256 (hex) of a file's content, gunzipped when it starts with the gzip magic (whatever
/// its name). Streams the file.
pub fn content_sha256(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    content_sha256_of(path, f)
}

// ---------------------------------------------------------------------------------------------
// Gzip.

/// True when `bytes` start with the gzip magic `1f 8b`.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Largest decompressed size [`decode_into`] and [`decode`] accept by default: the default
/// of [`limits::DATASET_BYTES`] (a dataset's loader passes what is left of the dataset's
/// budget to [`decode_into_limited`] instead).
pub const MAX_DECOMPRESSED: usize = limits::DATASET_BYTES.default as usize;

/// Appends the content of `bytes` to `out`: gunzipped when `bytes` start with the gzip magic
/// (all members of a multi-member stream, at most [`MAX_DECOMPRESSED`] bytes), copied
/// otherwise. `path` only names the source in errors. Returns the number of bytes appended.
pub fn decode_into(path: &Path, bytes: &[u8], out: &mut Vec<u8>) -> Result<usize> {
    decode_into_limited(path, bytes, out, MAX_DECOMPRESSED)
}

/// [`decode_into`] with a `limit` on the bytes appended (decompressed, or copied) instead
/// of [`MAX_DECOMPRESSED`]; when the content exceeds it, `out` is restored to its length on
/// entry and the error names [`limits::DATASET_BYTES`]. Decompression stops one byte past
/// the limit: a bomb never inflates further.
pub fn decode_into_limited(
    path: &Path,
    bytes: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<usize> {
    let too_much = |need: Amount| {
        Error::format(
            path,
            limits::DATASET_BYTES
                .exceeded(need, limit as u64, "the data")
                .to_string(),
        )
    };
    if !is_gzip(bytes) {
        if bytes.len() > limit {
            return Err(too_much(Amount::Exact(bytes.len() as u64)));
        }
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
    let res = flate2::read::MultiGzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(out);
    if let Err(e) = res {
        out.truncate(start);
        return Err(Error::format(path, format!("invalid gzip data: {e}")));
    }
    let n = out.len() - start;
    if n > limit {
        out.truncate(start);
        out.shrink_to(start);
        return Err(too_much(Amount::AtLeast(limit as u64)));
    }
    Ok(n)
}

/// The content of `bytes`, gunzipped when they start with the gzip magic.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decode_into(path, bytes, &mut out)?;
    Ok(out)
}

/// Reads a file (at most [`limits::FILE_BYTES`]), gunzipping it when its content starts
/// with the gzip magic (whatever its name), to at most [`limits::DATASET_BYTES`].
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_file_limited(path, &limits::FILE_BYTES)?;
    if is_gzip(&bytes) {
        let mut out = Vec::new();
        let limit = limits::DATASET_BYTES.value()?;
        decode_into_limited(path, &bytes, &mut out, clamp(limit))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// Bounded reads.

/// A `u64` limit as a `usize` (saturating on 32-bit targets).
pub fn clamp(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Reads a whole file, refusing one larger than the value of `limit` in force
/// ([`Limit::value`]). See [`read_file_max`].
pub fn read_file_limited(path: &Path, limit: &Limit) -> Result<Vec<u8>> {
    read_file_max(path, limit, limit.value()?)
}

/// Reads a whole file of at most `max` bytes. A regular file's size is taken from its
/// metadata and refused before anything is read; anything else (a pipe, a character device
/// such as `/dev/zero`) is read through a reader that stops one byte past `max`. The error
/// names `limit` (its variable) and the size found.
pub fn read_file_max(path: &Path, limit: &Limit, max: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "is a directory, not a file"),
        ));
    }
    let subject = format!("reading {}", path.display());
    let mut out = Vec::new();
    if meta.is_file() {
        limit
            .check_against(meta.len(), max, &subject)
            .map_err(|e| Error::format(path, e.to_string()))?;
        out.reserve_exact(clamp(meta.len()));
    }
    // Also bounds a regular file that grows while being read.
    f.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| Error::io(path, e))?;
    if out.len() as u64 > max {
        return Err(Error::format(
            path,
            limit
                .exceeded(Amount::AtLeast(max), max, &subject)
                .to_string(),
        ));
    }
    Ok(out)
}

/// Reads a UTF-8 text file of at most the value of `limit` in force (see [`read_file_max`]).
pub fn read_text_limited(path: &Path, limit: &Limit) -> Result<String> {
    let bytes = read_file_limited(path, limit)?;
    String::from_utf8(bytes).map_err(|e| Error::format(path, format!("not UTF-8 text: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Numbers in bytes.

/// The big-endian `u32` at byte offset `at` of `b`; `None` when fewer than 4 bytes are there.
pub fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Little-endian f32 bytes → f32 (a trailing partial value is ignored).
pub fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Little-endian f64 bytes → f64 (a trailing partial value is ignored).
pub fn le_f64(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

/// f32 values → their little-endian bytes (the inverse of [`le_f32`]).
pub fn f32_le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            e.to_string().contains("more than 9.8 KB (9999 bytes)"),
            "{e}"
        );
        assert_eq!(out, [7]);
    }

    #[test]
    fn hashes_agree() {
        let whole = sha256_hex(b"abcdef");
        assert_eq!(sha256_hex_of_parts([&b"ab"[..], b"cd", b"ef"]), whole);
        assert_eq!(
            content_sha256_of(Path::new("x"), &b"abcdef"[..]).unwrap(),
            whole
        );
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut z, b"abcdef").unwrap();
        let z = z.finish().unwrap();
        assert_eq!(content_sha256_of(Path::new("z"), &z[..]).unwrap(), whole);
        assert_eq!(decode(Path::new("z"), &z).unwrap(), b"abcdef");
    }

    #[test]
    fn little_endian_floats_round_trip() {
        let v = [1.5f32, -0.0, f32::MIN_POSITIVE, 3.0e38];
        let b = f32_le_bytes(&v);
        assert_eq!(b.len(), 16);
        assert_eq!(le_f32(&b), v);
        assert_eq!(le_f32(&b[..7]), [1.5]);
        let d: Vec<u8> = [0.1f64, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(le_f64(&d), [0.1, -2.0]);
    }

    #[test]
    fn big_endian_reads_stay_in_bounds() {
        let b = [0, 0, 8, 3, 1];
        assert_eq!(be_u32(&b, 0), Some(0x0803));
        assert_eq!(be_u32(&b, 1), Some(0x0008_0301));
        assert_eq!(be_u32(&b, 2), None);
        assert_eq!(be_u32(&b, usize::MAX), None);
    }
}
