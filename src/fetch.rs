//! `margincert fetch`: download the official dataset files and verify their SHA-256.
//!
//! The published checksums (of the DECOMPRESSED content, so that plain and gzipped files are
//! checked alike) are [`DataKind::expected_sha256`] in [`crate::data`]; this module holds the
//! network side: where each dataset is served, the download, the verification of files on
//! disk against those checksums, and their atomic installation.
//!
//! Every download goes to a temporary file in the target directory, is verified, and only
//! then renamed to its final name; a mismatch is [`Error::Checksum`] and leaves no file.

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{CIFAR10_META, CIFAR10_META_SHA256, CIFAR10_SHA256, DataKind, find_file};
use crate::error::{Error, Result};
use crate::io::{content_sha256, is_gzip};

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

/// Verifies the standard files of `kind` in `dir` (found as [`find_file`] does, gzipped
/// or plain) against the published checksums of their decompressed content, and, for
/// CIFAR-10, `batches.meta.txt` when present next to `data_batch_1`. Returns `(path, sha256)`
/// of each file checked. A missing file is [`Error::Io`] (`NotFound`), a mismatch
/// [`Error::Checksum`].
pub fn verify_dir(kind: DataKind, dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut first = None;
    for (name, sha) in kind.expected_sha256() {
        let p = find_file(kind, dir, name)?;
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

/// Copies `reader` into a new temporary file in `dir` (removed when dropped), at most
/// [`crate::limits::FILE_BYTES`]: a server that sends more is refused before the disk fills.
fn write_temp(reader: impl Read, dir: &Path) -> Result<tempfile::NamedTempFile> {
    let limit = &crate::limits::FILE_BYTES;
    let max = limit.value()?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".margincert-fetch-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    let copied = io::copy(&mut reader.take(max.saturating_add(1)), tmp.as_file_mut())
        .map_err(|e| Error::io(tmp.path(), e))?;
    limit.check_against(copied, max, "the download")?;
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
    let gz = is_gzip(r.fill_buf().map_err(|e| Error::io(Path::new(source), e))?);
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
/// anything else is downloaded to a temporary file in `dir`, verified against
/// [`DataKind::expected_sha256`] (decompressed content) and renamed into place. A
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
            for (name, sha) in kind.expected_sha256() {
                if let Ok(p) = find_file(kind, dir, name)
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
