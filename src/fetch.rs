//! `margincert fetch`: download the official dataset files and verify their SHA-256.
//!
//! Checksums are of the DECOMPRESSED content: the official uncompressed IDX files and CIFAR-10
//! `.bin` batches. This makes verification independent of how a file was (re)compressed —
//! Debian's Fashion-MNIST `.gz` files, say, differ from upstream's but decompress to the same
//! bytes — and lets the loaders' plain and gzipped files be checked alike.
//!
//! Every download goes to a temporary file in the target directory, is verified, and only
//! then renamed to its final name; a mismatch is [`Error::Checksum`] and leaves no file.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::data::{self, DataKind};
use crate::error::{Error, Result};

/// SHA-256 (lower-case hex) of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of the official uncompressed MNIST files, by canonical name (the "SHA-256 after
/// gunzip" of `/work/shared/data/README.md`, whose uncompressed files match the published
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

/// MNIST mirrors, tried in order; each serves `{name}.gz`.
pub const MNIST_URLS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
];
/// Fashion-MNIST's official location; serves `{name}.gz`.
pub const FASHION_MNIST_URLS: [&str; 1] =
    ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"];
/// CIFAR-10's binary version archive; the batches are in `cifar-10-batches-bin/`.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";

/// The expected SHA-256 of the decompressed content of each standard file of `kind`, by
/// canonical name (the names of [`DataKind::file_names`], same order).
pub fn expected_sha256(kind: DataKind) -> &'static [(&'static str, &'static str)] {
    match kind {
        DataKind::Mnist => &MNIST_SHA256,
        DataKind::FashionMnist => &FASHION_MNIST_SHA256,
        DataKind::Cifar10 => &CIFAR10_SHA256,
    }
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

/// SHA-256 of the content of `reader`, gunzipped (all members) when it starts with the gzip
/// magic. `path` names the source in errors.
fn content_sha256_of(path: &Path, reader: impl Read) -> Result<String> {
    let mut r = BufReader::with_capacity(1 << 16, reader);
    let head = r.fill_buf().map_err(|e| Error::io(path, e))?;
    let gz = data::is_gzip(head);
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

/// Checks that the (decompressed) content of `path` has SHA-256 `expected`; returns it.
pub fn verify_file(path: &Path, expected: &str) -> Result<String> {
    let got = content_sha256(path)?;
    if got != expected {
        return Err(Error::Checksum {
            what: path.display().to_string(),
            expected: expected.to_string(),
            got,
        });
    }
    Ok(got)
}

/// Verifies the standard files of `kind` in `dir` (found as [`data::find_file`] does, gzipped
/// or plain) against the published checksums of their decompressed content, and, for
/// CIFAR-10, `batches.meta.txt` when present next to `data_batch_1`. Returns `(path, sha256)`
/// of each file checked. A missing file is [`Error::Io`] (`NotFound`), a mismatch
/// [`Error::Checksum`].
pub fn verify_dir(kind: DataKind, dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut first = None;
    for (name, sha) in expected_sha256(kind) {
        let p = data::find_file(kind, dir, name)?;
        let got = verify_file(&p, sha)?;
        first.get_or_insert_with(|| p.clone());
        out.push((p.display().to_string(), got));
    }
    if kind == DataKind::Cifar10
        && let Some(meta) = first.map(|p| p.with_file_name(CIFAR10_META))
        && meta.is_file()
    {
        let got = verify_file(&meta, CIFAR10_META_SHA256)?;
        out.push((meta.display().to_string(), got));
    }
    Ok(out)
}

/// Writes `reader` to a temporary file in `dir`, checks the SHA-256 of its decompressed
/// content (see [`content_sha256`]) against `expected`, and renames it atomically to
/// `dir/name`, replacing any file there. On a mismatch ([`Error::Checksum`]) or any other
/// error the temporary file is removed and `dir/name` is untouched.
pub fn install(reader: impl Read, dir: &Path, name: &str, expected: &str) -> Result<PathBuf> {
    let target = dir.join(name);
    let tmp = write_temp(reader, dir)?;
    let got = content_sha256(tmp.path())?;
    if got != expected {
        return Err(Error::Checksum {
            what: target.display().to_string(),
            expected: expected.to_string(),
            got,
        });
    }
    tmp.persist(&target)
        .map_err(|e| Error::io(&target, e.error))?;
    Ok(target)
}

/// Copies `reader` into a new temporary file in `dir` (removed when dropped).
fn write_temp(mut reader: impl Read, dir: &Path) -> Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".margincert-fetch-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    io::copy(&mut reader, tmp.as_file_mut()).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file_mut()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    Ok(tmp)
}

/// Extracts the CIFAR-10 batches and `batches.meta.txt` from the binary-version archive
/// (`cifar-10-binary.tar.gz`, gzipped or plain tar) into `dir`, each through [`install`]
/// (verified, atomic; stored as plain `.bin` files). `source` names the archive in errors.
/// Fails when a batch is missing from the archive or does not match its checksum; batches
/// installed before the failure stay (they are verified).
pub fn install_cifar_archive(archive: impl Read, source: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut r = BufReader::with_capacity(1 << 16, archive);
    let gz = data::is_gzip(r.fill_buf().map_err(|e| Error::io(Path::new(source), e))?);
    let inner: Box<dyn Read> = if gz {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else {
        Box::new(r)
    };
    let src = Path::new(source);
    let bad = |e: io::Error| Error::format(src, format!("reading tar archive: {e}"));
    let mut tar = tar::Archive::new(inner);
    let mut installed = Vec::new();
    let mut found = [false; 7];
    for entry in tar.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        let (Some(name), Some(parent)) = (path.file_name(), path.parent()) else {
            continue;
        };
        if parent
            .file_name()
            .is_none_or(|p| p != "cifar-10-batches-bin")
        {
            continue;
        }
        let name = name.to_string_lossy();
        let expected = CIFAR10_SHA256
            .iter()
            .chain(std::iter::once(&(CIFAR10_META, CIFAR10_META_SHA256)))
            .position(|(n, _)| *n == name);
        if let Some(i) = expected {
            let sha = if i < 6 {
                CIFAR10_SHA256[i].1
            } else {
                CIFAR10_META_SHA256
            };
            installed.push(install(entry, dir, &name, sha)?);
            found[i] = true;
        }
    }
    let missing: Vec<&str> = CIFAR10_SHA256
        .iter()
        .zip(found)
        .filter(|(_, f)| !f)
        .map(|((n, _), _)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(Error::format(
            src,
            format!(
                "archive lacks cifar-10-batches-bin/{}",
                missing.join(", cifar-10-batches-bin/")
            ),
        ));
    }
    Ok(installed)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

/// Opens `url` for reading, wrapped in `bar` (whose length is set from Content-Length).
fn open_url(agent: &ureq::Agent, url: &str, bar: &ProgressBar) -> Result<impl Read + use<>> {
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| Error::io(Path::new(url), io::Error::other(e)))?;
    let body = resp.into_body();
    match body.content_length() {
        Some(n) => bar.set_length(n),
        None => bar.unset_length(),
    }
    bar.set_position(0);
    Ok(bar.wrap_read(body.into_reader()))
}

fn progress_bar(progress: bool, msg: String) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{msg:32} [{bar:30}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    ProgressBar::new(0).with_style(style).with_message(msg)
}

/// Downloads the official files of `kind` into `dir` (created if needed) and verifies them.
///
/// MNIST: the four `.gz` files from [`MNIST_URLS`] (each file from the first mirror that
/// serves it correctly); Fashion-MNIST: from [`FASHION_MNIST_URLS`]; CIFAR-10: the archive
/// [`CIFAR10_URL`], from which `cifar-10-batches-bin/*.bin` and `batches.meta.txt` are
/// extracted into `dir` as plain files. Files already present and verified are kept;
/// anything else is downloaded to a temporary file in `dir`, verified against the constants
/// of this module ([`expected_sha256`]; decompressed content) and renamed into place. A
/// mismatch is [`Error::Checksum`] and leaves no file. With `progress`, shows a progress bar
/// and notes on standard error.
pub fn fetch(kind: DataKind, dir: &Path, progress: bool) -> Result<()> {
    let urls: &[&str] = match kind {
        DataKind::Mnist => &MNIST_URLS,
        DataKind::FashionMnist => &FASHION_MNIST_URLS,
        DataKind::Cifar10 => &[CIFAR10_URL],
    };
    fetch_from(kind, dir, progress, urls)
}

/// [`fetch`] from other locations: for MNIST and Fashion-MNIST, `urls` are mirrors (base
/// URLs ending in `/`, each serving `{name}.gz`), tried in order for each file; for CIFAR-10,
/// URLs of the binary-version archive, tried in order. The checksums are the same constants.
pub fn fetch_from(kind: DataKind, dir: &Path, progress: bool, urls: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let note = |m: String| {
        if progress {
            eprintln!("{m}");
        }
    };
    if verify_dir(kind, dir).is_ok() {
        note(format!(
            "{kind}: all files in {} present and verified",
            dir.display()
        ));
        return Ok(());
    }
    if urls.is_empty() {
        return Err(Error::Invalid(format!(
            "fetch {kind}: no URL to fetch from"
        )));
    }
    let agent = agent();
    // Tries each URL in turn; returns the first success, else the first checksum mismatch
    // (more telling than a network failure), else the last error.
    let first_success = |label: &str, each: &dyn Fn(&str) -> Result<Vec<PathBuf>>| {
        let mut errors = Vec::new();
        for url in urls {
            let url = if matches!(kind, DataKind::Cifar10) {
                url.to_string()
            } else {
                format!("{url}{label}")
            };
            match each(&url) {
                Ok(paths) => {
                    for p in &paths {
                        note(format!("{}: from {url}, verified", p.display()));
                    }
                    return Ok(());
                }
                Err(e) => {
                    note(format!("{url}: {e}"));
                    errors.push(e);
                }
            }
        }
        let i = errors
            .iter()
            .position(|e| matches!(e, Error::Checksum { .. }))
            .unwrap_or(errors.len() - 1);
        Err(errors.swap_remove(i))
    };
    match kind {
        DataKind::Mnist | DataKind::FashionMnist => {
            for (name, sha) in expected_sha256(kind) {
                if let Ok(p) = data::find_file(kind, dir, name)
                    && verify_file(&p, sha).is_ok()
                {
                    note(format!("{}: present and verified", p.display()));
                    continue;
                }
                let file = format!("{name}.gz");
                first_success(&file, &|url| {
                    let bar = progress_bar(progress, file.clone());
                    let r =
                        open_url(&agent, url, &bar).and_then(|body| install(body, dir, &file, sha));
                    bar.finish_and_clear();
                    r.map(|p| vec![p])
                })?;
            }
        }
        DataKind::Cifar10 => {
            first_success("", &|url| {
                let bar = progress_bar(progress, "cifar-10-binary.tar.gz".into());
                let tmp = open_url(&agent, url, &bar).and_then(|b| write_temp(b, dir));
                bar.finish_and_clear();
                let tmp = tmp?;
                let archive =
                    std::fs::File::open(tmp.path()).map_err(|e| Error::io(tmp.path(), e))?;
                install_cifar_archive(archive, url, dir)
            })?;
        }
    }
    verify_dir(kind, dir).map(|_| ())
}
