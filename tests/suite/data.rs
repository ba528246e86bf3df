//! Dataset loaders, the embedded default, data sources and checksum verification, on real
//! files where present (skipped with a printed reason otherwise) and on corrupted inputs.

use std::io::Write;
use std::path::{Path, PathBuf};

use margincert::Error;
use margincert::data::{self, DataKind, DataSource, Dataset};
use margincert::{fetch, io};

use crate::common::data::{fixture, shared_data};

/// Debian's Fashion-MNIST (`apt-get install dataset-fashion-mnist`).
fn fashion_dir() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/share/datasets/fashion-mnist");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} absent (apt-get install dataset-fashion-mnist)",
            p.display()
        );
        None
    }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    io::decode(Path::new("test"), bytes).unwrap()
}

/// A plain IDX images file.
fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

/// A plain IDX labels file.
fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// A small valid IDX pair: 5 images of 3 x 4, pixels i * 17 + j (mod 256).
fn small_pair() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..60u32).map(|i| (i * 37 % 256) as u8).collect();
    (idx_images(5, 3, 4, &pixels), idx_labels(&[3, 1, 4, 1, 5]))
}

fn load_pair(images: &[u8], labels: &[u8]) -> margincert::Result<Dataset> {
    data::idx_from_bytes("t", Path::new("img"), images, Path::new("lbl"), labels, 10)
}

fn format_msg(r: margincert::Result<Dataset>) -> (PathBuf, String) {
    match r {
        Err(Error::Format { path, msg }) => (path, msg),
        other => panic!("expected a format error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// IDX parsing.

#[test]
fn idx_small_pair_parses_plain_and_gzipped() {
    let (im, lb) = small_pair();
    let plain = load_pair(&im, &lb).unwrap();
    assert_eq!(plain.len(), 5);
    assert_eq!(plain.shape, margincert::model::Shape::new(1, 3, 4));
    assert_eq!(plain.labels, vec![3, 1, 4, 1, 5]);
    assert_eq!(plain.image(2), &im[16 + 24..16 + 36]);
    assert_eq!(plain.classes, 10);
    let zipped = load_pair(&gz(&im), &gz(&lb)).unwrap();
    assert_eq!(plain, zipped);
    // Mixed, and a multi-member gzip stream (two members concatenated).
    let mut two = gz(&lb[..6]);
    two.extend(gz(&lb[6..]));
    assert_eq!(load_pair(&im, &two).unwrap(), plain);
}

#[test]
fn idx_errors_name_the_problem() {
    let (im, lb) = small_pair();

    let (p, m) = format_msg(load_pair(&im[..im.len() - 1], &lb));
    assert_eq!(p, Path::new("img"));
    assert!(m.contains("truncated") && m.contains("59"), "{m}");

    let (_, m) = format_msg(load_pair(&im[..10], &lb));
    assert!(m.contains("truncated") && m.contains("header"), "{m}");

    let (_, m) = format_msg(load_pair(&im[..2], &lb));
    assert!(m.contains("truncated") && m.contains("magic"), "{m}");

    let mut trailing = im.clone();
    trailing.extend_from_slice(b"xyz");
    let (_, m) = format_msg(load_pair(&trailing, &lb));
    assert!(m.contains("3 trailing bytes"), "{m}");

    let mut magic = im.clone();
    magic[2] = 9;
    let (_, m) = format_msg(load_pair(&magic, &lb));
    assert!(m.contains("wrong magic number 0x00000903"), "{m}");

    // Labels passed as images: magic 0x801 has one dimension, not three.
    let (_, m) = format_msg(load_pair(&lb, &lb));
    assert!(m.contains("wrong dimension count 1"), "{m}");
    let (p, m) = format_msg(load_pair(&im, &im));
    assert_eq!(p, Path::new("lbl"));
    assert!(m.contains("wrong dimension count 3"), "{m}");

    let (p, m) = format_msg(load_pair(&im, &idx_labels(&[3, 1, 4, 1])));
    assert_eq!(p, Path::new("lbl"));
    assert!(m.contains("4 labels for 5 images"), "{m}");

    let (_, m) = format_msg(load_pair(&im, &idx_labels(&[3, 1, 10, 1, 5])));
    assert!(m.contains("label 10 of item 2 out of range"), "{m}");

    let (_, m) = format_msg(load_pair(&idx_images(0, 0, 4, &[]), &idx_labels(&[])));
    assert!(m.contains("empty image size"), "{m}");

    // Dimensions whose product overflows usize.
    let huge = idx_images(u32::MAX, u32::MAX, u32::MAX, &[]);
    let (_, m) = format_msg(load_pair(&huge, &lb));
    assert!(m.contains("overflow") || m.contains("truncated"), "{m}");

    // Garbage after a valid gzip magic.
    let mut garbage = vec![0x1f, 0x8b];
    garbage.extend_from_slice(b"definitely not deflate data");
    let (_, m) = format_msg(load_pair(&garbage, &lb));
    assert!(m.contains("invalid gzip data"), "{m}");

    // A gzip stream cut short.
    let z = gz(&im);
    let (_, m) = format_msg(load_pair(&z[..z.len() / 2], &lb));
    assert!(m.contains("invalid gzip data"), "{m}");
}

/// Every truncation and every single-bit flip of a small valid file, plain and gzipped, gives
/// a dataset or an error, never a panic; and every truncation of the plain file is an error.
#[test]
fn idx_never_panics_on_truncations_and_bit_flips() {
    let (im, lb) = small_pair();
    for (which, file) in [(0, im.clone()), (1, lb.clone()), (0, gz(&im)), (1, gz(&lb))] {
        let run = |bytes: &[u8]| {
            if which == 0 {
                load_pair(bytes, &lb)
            } else {
                load_pair(&im, bytes)
            }
        };
        for cut in 0..file.len() {
            let r = run(&file[..cut]);
            assert!(r.is_err(), "truncation to {cut} bytes accepted");
        }
        for bit in 0..file.len() * 8 {
            let mut f = file.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            if let Ok(d) = run(&f) {
                // Whatever got through still satisfies the invariant.
                assert_eq!(d.pixels.len(), d.len() * d.shape.len());
                assert!(d.labels.iter().all(|&l| l < 10));
            }
        }
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Arbitrary bytes, raw or behind an IDX header or gzip magic, never panic.
        #[test]
        fn idx_arbitrary_bytes_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..200),
            prefix in 0usize..4,
        ) {
            let bytes: Vec<u8> = match prefix {
                0 => body.clone(),
                1 => [&[0u8, 0, 8, 3][..], &body].concat(),
                2 => [&[0u8, 0, 8, 1][..], &body].concat(),
                _ => [&[0x1fu8, 0x8b][..], &body].concat(),
            };
            let (im, lb) = small_pair();
            let _ = load_pair(&bytes, &lb);
            let _ = load_pair(&im, &bytes);
            let _ = data::cifar_from_bytes("c", &[(PathBuf::from("c"), bytes)]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The embedded default.

#[test]
fn embedded_is_1000_plus_1000_mnist_images() {
    let s = data::embedded().unwrap();
    for (d, name) in [
        (&s.train, "mnist-embedded-train"),
        (&s.test, "mnist-embedded-test"),
    ] {
        assert_eq!(d.name, name);
        assert_eq!(d.len(), data::EMBEDDED_LEN);
        assert_eq!(d.shape, margincert::model::Shape::new(1, 28, 28));
        assert_eq!(d.classes, 10);
        let h = d.label_histogram();
        assert_eq!(h.iter().sum::<usize>(), 1000);
        assert!(h.iter().all(|&c| c > 50), "every digit present: {h:?}");
        assert_eq!(d.pixels.iter().min(), Some(&0));
        assert_eq!(d.pixels.iter().max(), Some(&255));
    }
    // The well-known first labels of MNIST: train 5 0 4 1 9, test 7 2 1 0 4.
    assert_eq!(s.train.labels[..5], [5, 0, 4, 1, 9]);
    assert_eq!(s.test.labels[..5], [7, 2, 1, 0, 4]);
    assert_eq!("embedded".parse::<DataSource>().unwrap().load().unwrap(), s);
}

/// The README next to the embedded files states their SHA-256: it must match the files.
#[test]
fn embedded_readme_states_the_file_checksums() {
    let dir = fixture("embedded");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for (name, bytes) in data::embedded_files() {
        assert_eq!(std::fs::read(dir.join(name)).unwrap(), *bytes);
        let line = readme
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("README.md does not mention {name}"));
        let sum = io::sha256_hex(bytes);
        assert!(
            line.contains(&sum),
            "README line for {name} lacks {sum}: {line}"
        );
    }
}

/// The embedded files, decompressed, are the official files' headers with the count set to
/// 1000, followed by the first 1000 images / labels byte for byte.
#[test]
fn embedded_is_a_prefix_of_official_mnist() {
    let Some(dir) = shared_data("mnist") else {
        return;
    };
    for (name, bytes) in data::embedded_files() {
        let ours = gunzip(bytes);
        let official = io::read_maybe_gz(&dir.join(name)).unwrap();
        let header = if name.contains("images") { 16 } else { 8 };
        assert_eq!(ours[..4], official[..4], "{name}: magic");
        assert_eq!(ours[4..8], 1000u32.to_be_bytes(), "{name}: count");
        assert_eq!(ours[8..header], official[8..header], "{name}: image size");
        let n = ours.len() - header;
        assert_eq!(n, if header == 16 { 1000 * 784 } else { 1000 }, "{name}");
        assert!(
            ours[header..] == official[header..header + n],
            "{name}: data differs"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Directories and sources.

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Plain files under the alternative MNIST names (`train-images.idx3-ubyte`), and plain
/// content under a `.gz` name: gzip is recognized by content, not name.
#[test]
fn load_dir_accepts_plain_files_and_alternative_names() {
    let t = tempfile::tempdir().unwrap();
    let files = data::embedded_files();
    write(t.path(), "train-images.idx3-ubyte", &gunzip(files[0].1));
    write(t.path(), "train-labels.idx1-ubyte", &gunzip(files[1].1));
    write(t.path(), "t10k-images-idx3-ubyte.gz", &gunzip(files[2].1)); // plain, named .gz
    write(t.path(), "t10k-labels-idx1-ubyte", files[3].1); // gzipped, no .gz
    let s = data::load_dir(DataKind::Mnist, t.path()).unwrap();
    let e = data::embedded().unwrap();
    assert_eq!(s.train.name, "mnist-train");
    assert_eq!(s.test.name, "mnist-test");
    assert_eq!(
        (&s.train.pixels, &s.train.labels),
        (&e.train.pixels, &e.train.labels)
    );
    assert_eq!(
        (&s.test.pixels, &s.test.labels),
        (&e.test.pixels, &e.test.labels)
    );

    // A bare directory is detected as MNIST; KIND:DIR forces the kind.
    let src: DataSource = t.path().to_str().unwrap().parse().unwrap();
    assert_eq!(
        src,
        DataSource::Dir {
            kind: DataKind::Mnist,
            dir: t.path().to_path_buf()
        }
    );
    let fm: DataSource = format!("fashion-mnist:{}", t.path().display())
        .parse()
        .unwrap();
    assert_eq!(fm.load().unwrap().train.name, "fashion-mnist-train");
    // Display round-trips.
    assert_eq!(fm.to_string().parse::<DataSource>().unwrap(), fm);
    assert_eq!(DataSource::Embedded.to_string(), "embedded");
}

#[test]
fn missing_files_list_what_was_looked_for() {
    let t = tempfile::tempdir().unwrap();
    let files = data::embedded_files();
    write(t.path(), "train-images-idx3-ubyte.gz", files[0].1);
    let err = data::load_dir(DataKind::Mnist, t.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    );
    assert!(msg.contains("train-labels-idx1-ubyte.gz"), "{msg}");
    assert!(msg.contains("train-labels.idx1-ubyte"), "{msg}");

    let empty = tempfile::tempdir().unwrap();
    let err = data::load_dir(DataKind::Cifar10, empty.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data_batch_1.bin.gz") && err.contains("cifar-10-batches-bin"),
        "{err}"
    );
    let err = empty
        .path()
        .to_str()
        .unwrap()
        .parse::<DataSource>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("no dataset found"), "{err}");
    let err = data::load_dir(DataKind::Mnist, &empty.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn data_source_parsing() {
    for (s, kind, dir) in [
        ("mnist:/a/b", DataKind::Mnist, "/a/b"),
        ("fashion-mnist:rel/dir", DataKind::FashionMnist, "rel/dir"),
        ("cifar10:/x:y", DataKind::Cifar10, "/x:y"),
        ("CIFAR-10:/c", DataKind::Cifar10, "/c"),
    ] {
        let src: DataSource = s.parse().unwrap();
        assert_eq!(
            src,
            DataSource::Dir {
                kind,
                dir: dir.into()
            },
            "{s}"
        );
    }
    assert_eq!(
        "Embedded".parse::<DataSource>().unwrap(),
        DataSource::Embedded
    );
    assert!(
        "mnist:"
            .parse::<DataSource>()
            .unwrap_err()
            .to_string()
            .contains("missing directory")
    );
    assert!("".parse::<DataSource>().is_err());
    assert!(
        "svhn"
            .parse::<DataKind>()
            .unwrap_err()
            .to_string()
            .contains("unknown dataset kind")
    );
    for k in DataKind::ALL {
        assert_eq!(k.to_string().parse::<DataKind>().unwrap(), k);
    }
}

// ---------------------------------------------------------------------------------------------
// Real MNIST and Fashion-MNIST.

const MNIST_TRAIN_HIST: [usize; 10] = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
const MNIST_TEST_HIST: [usize; 10] = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];

#[test]
fn real_mnist_counts_and_histograms() {
    let Some(dir) = shared_data("mnist") else {
        return;
    };
    let src: DataSource = dir.to_str().unwrap().parse().unwrap();
    assert_eq!(
        src,
        DataSource::Dir {
            kind: DataKind::Mnist,
            dir: dir.clone()
        }
    );
    let s = src.load().unwrap();
    assert_eq!((s.train.len(), s.test.len()), (60000, 10000));
    assert_eq!(s.train.label_histogram(), MNIST_TRAIN_HIST);
    assert_eq!(s.test.label_histogram(), MNIST_TEST_HIST);
    for d in [&s.train, &s.test] {
        assert_eq!(d.shape, margincert::model::Shape::new(1, 28, 28));
        assert_eq!(
            (d.pixels.iter().min(), d.pixels.iter().max()),
            (Some(&0), Some(&255))
        );
    }
    let e = data::embedded().unwrap();
    assert_eq!(s.train.take(1000).pixels, e.train.pixels);
    assert_eq!(s.test.take(1000).labels, e.test.labels);
}

#[test]
fn real_fashion_mnist_counts() {
    let Some(dir) = fashion_dir() else { return };
    let src: DataSource = dir.to_str().unwrap().parse().unwrap();
    assert_eq!(
        src,
        DataSource::Dir {
            kind: DataKind::FashionMnist,
            dir: dir.clone()
        }
    );
    let s = src.load().unwrap();
    assert_eq!(s.train.name, "fashion-mnist-train");
    assert_eq!((s.train.len(), s.test.len()), (60000, 10000));
    assert_eq!(s.train.label_histogram(), [6000; 10]);
    assert_eq!(s.test.label_histogram(), [1000; 10]);
    assert_eq!(s.train.pixels.iter().max(), Some(&255));
}

// ---------------------------------------------------------------------------------------------
// Real CIFAR-10.

#[test]
fn real_cifar10_counts_histograms_and_statistics() {
    let Some(dir) = shared_data("cifar-10") else {
        return;
    };
    let src: DataSource = dir.to_str().unwrap().parse().unwrap();
    assert_eq!(
        src,
        DataSource::Dir {
            kind: DataKind::Cifar10,
            dir: dir.clone()
        }
    );
    let s = src.load().unwrap();
    assert_eq!((s.train.len(), s.test.len()), (50000, 10000));
    assert_eq!(s.train.shape, margincert::model::Shape::new(3, 32, 32));
    assert_eq!(s.train.label_histogram(), [5000; 10]);
    assert_eq!(s.test.label_histogram(), [1000; 10]);
    // data_batch_1 comes first.
    assert_eq!(
        s.train.take(10000).label_histogram(),
        [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]
    );
    assert_eq!((s.train.labels[0], s.test.labels[0]), (6, 3));
    // Per-channel means (and train std) of p / 255: the published CIFAR-10 figures, which
    // only come out when the planes are R, G, B in CHW order.
    let stats = |d: &Dataset| {
        let mut sum = [0f64; 3];
        let mut sq = [0f64; 3];
        for img in d.pixels.chunks_exact(3072) {
            for c in 0..3 {
                for &p in &img[c * 1024..(c + 1) * 1024] {
                    let x = p as f64 / 255.0;
                    sum[c] += x;
                    sq[c] += x * x;
                }
            }
        }
        let n = d.len() as f64 * 1024.0;
        let mean = sum.map(|s| s / n);
        let std = [0, 1, 2].map(|c| (sq[c] / n - mean[c] * mean[c]).sqrt());
        (mean, std)
    };
    let (mean, std) = stats(&s.train);
    for (got, want) in mean.iter().zip([0.4914, 0.4822, 0.4465]) {
        assert!((got - want).abs() < 6e-5, "train mean {mean:?}");
    }
    for (got, want) in std.iter().zip([0.2470, 0.2435, 0.2616]) {
        assert!((got - want).abs() < 6e-5, "train std {std:?}");
    }
    let (mean, _) = stats(&s.test);
    for (got, want) in mean.iter().zip([0.4942, 0.4851, 0.4504]) {
        assert!((got - want).abs() < 6e-5, "test mean {mean:?}");
    }
    for d in [&s.train, &s.test] {
        assert_eq!(
            (d.pixels.iter().min(), d.pixels.iter().max()),
            (Some(&0), Some(&255))
        );
    }
    let b = s.test.binary(3, 5).unwrap();
    assert_eq!(
        (b.len(), b.classes, b.label_histogram()),
        (2000, 2, vec![1000, 1000])
    );
}

// ---------------------------------------------------------------------------------------------
// Checksums and installation (no network).

/// Runs `verify_dir` and checks each reported checksum against an in-memory hash of the
/// decompressed file; returns the report.
fn check_verify_dir(kind: DataKind, dir: &Path, extra: usize) -> Vec<(String, String)> {
    let got = fetch::verify_dir(kind, dir).unwrap();
    let expected = kind.expected_sha256();
    assert_eq!(got.len(), expected.len() + extra);
    for ((path, sha), (name, want)) in got.iter().zip(expected) {
        assert!(path.contains(name), "{path} vs {name}");
        assert_eq!(sha, want);
        // Independently: hash the decompressed bytes in memory.
        assert_eq!(
            &io::sha256_hex(&io::read_maybe_gz(Path::new(path)).unwrap()),
            want
        );
    }
    got
}

#[test]
fn verify_dir_real_mnist() {
    let Some(dir) = shared_data("mnist") else {
        return;
    };
    check_verify_dir(DataKind::Mnist, &dir, 0);
    // The MNIST files are not Fashion-MNIST's.
    assert!(matches!(
        fetch::verify_dir(DataKind::FashionMnist, &dir),
        Err(Error::Checksum { .. })
    ));
}

#[test]
fn verify_dir_real_fashion_mnist() {
    let Some(dir) = fashion_dir() else { return };
    check_verify_dir(DataKind::FashionMnist, &dir, 0);
}

#[test]
fn verify_dir_real_cifar10() {
    let Some(dir) = shared_data("cifar-10") else {
        return;
    };
    let got = check_verify_dir(DataKind::Cifar10, &dir, 1);
    assert!(got[6].0.ends_with("batches.meta.txt"));
    assert_eq!(got[6].1, data::CIFAR10_META_SHA256);
    let meta = std::fs::read(dir.join("batches.meta.txt")).unwrap();
    assert_eq!(io::sha256_hex(&meta), data::CIFAR10_META_SHA256);
    let names = data::read_class_names(&dir.join("batches.meta.txt")).unwrap();
    assert_eq!(names, DataKind::Cifar10.class_names());
}

/// A copy of MNIST with one flipped byte in the (plain) training labels fails with
/// `Error::Checksum`; recompressing (another gzip mtime) does not change the verdict.
#[test]
fn verify_dir_detects_one_flipped_byte() {
    let Some(dir) = shared_data("mnist") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    for name in ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"] {
        std::fs::copy(dir.join(name), t.path().join(name)).unwrap();
    }
    let t10k = std::fs::read(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let mut other_mtime = t10k.clone();
    other_mtime[4] ^= 0x55; // gzip header MTIME: same content
    write(t.path(), "t10k-labels-idx1-ubyte.gz", &other_mtime);
    let mut labels = io::read_maybe_gz(&dir.join("train-labels-idx1-ubyte.gz")).unwrap();
    write(t.path(), "train-labels-idx1-ubyte", &labels);
    assert_eq!(
        fetch::verify_dir(DataKind::Mnist, t.path()).unwrap().len(),
        4
    );

    labels[30000] ^= 0x01;
    write(t.path(), "train-labels-idx1-ubyte", &labels);
    match fetch::verify_dir(DataKind::Mnist, t.path()) {
        Err(Error::Checksum {
            what,
            expected,
            got,
        }) => {
            assert!(what.ends_with("train-labels-idx1-ubyte"), "{what}");
            assert_eq!(expected, data::MNIST_SHA256[1].1);
            assert_eq!(got, io::sha256_hex(&labels));
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    // A flipped byte inside the deflate data: the gzip CRC or the checksum catches it.
    let mut bad = t10k.clone();
    bad[t10k.len() / 2] ^= 0x01;
    assert!(
        fetch::verify_file(
            &{
                let p = t.path().join("bad.gz");
                std::fs::write(&p, &bad).unwrap();
                p
            },
            data::MNIST_SHA256[3].1
        )
        .is_err()
    );
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn install_verifies_then_renames_and_leaves_nothing_on_mismatch() {
    let t = tempfile::tempdir().unwrap();
    let content = b"some decompressed content".to_vec();
    let zipped = gz(&content);
    let sha = io::sha256_hex(&content);

    let wrong = io::sha256_hex(b"other");
    let err = fetch::install(&zipped[..], t.path(), "f.gz", &wrong).unwrap_err();
    assert!(
        matches!(&err, Error::Checksum { expected, got, .. } if *expected == wrong && *got == sha),
        "{err:?}"
    );
    assert!(
        dir_entries(t.path()).is_empty(),
        "{:?}",
        dir_entries(t.path())
    );

    // The right checksum of the decompressed content: installed under its name, nothing else.
    let p = fetch::install(&zipped[..], t.path(), "f.gz", &sha).unwrap();
    assert_eq!(p, t.path().join("f.gz"));
    assert_eq!(std::fs::read(&p).unwrap(), zipped);
    assert_eq!(dir_entries(t.path()), ["f.gz"]);
    // A later mismatch leaves the verified file as it was.
    assert!(fetch::install(&b"junk"[..], t.path(), "f.gz", &sha).is_err());
    assert_eq!(std::fs::read(&p).unwrap(), zipped);
    assert_eq!(dir_entries(t.path()), ["f.gz"]);
    // Garbage behind a gzip magic is a format error, and leaves nothing either.
    let err = fetch::install(&[0x1f, 0x8b, 1, 2, 3][..], t.path(), "g.gz", &sha).unwrap_err();
    assert!(err.to_string().contains("invalid gzip data"), "{err}");
    assert_eq!(dir_entries(t.path()), ["f.gz"]);
}

fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, *bytes).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn cifar_archive_with_wrong_or_missing_batches_fails() {
    let t = tempfile::tempdir().unwrap();
    let fake = vec![1u8; 3073];
    let archive = gz(&tar_of(&[
        ("cifar-10-batches-bin/readme.html", b"<html>"),
        ("cifar-10-batches-bin/data_batch_1.bin", &fake),
    ]));
    match fetch::install_cifar_archive(&archive[..], "a.tar.gz", t.path()) {
        Err(Error::Checksum { what, .. }) => assert!(what.ends_with("data_batch_1.bin")),
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert!(dir_entries(t.path()).is_empty());

    let archive = tar_of(&[("other/data_batch_1.bin", &fake)]);
    let err = fetch::install_cifar_archive(&archive[..], "a.tar", t.path()).unwrap_err();
    let m = err.to_string();
    assert!(
        m.starts_with("a.tar: archive lacks cifar-10-batches-bin/data_batch_1.bin"),
        "{m}"
    );
    assert!(m.contains("test_batch.bin"), "{m}");
    assert!(dir_entries(t.path()).is_empty());

    let err = fetch::install_cifar_archive(&[0x1f, 0x8b, 0, 0][..], "z", t.path()).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
}

/// The official archive layout rebuilt from the shared batches (a plain tar) installs and
/// verifies, and loads to the same data as the gzipped originals.
#[test]
fn cifar_archive_from_real_batches_installs() {
    let Some(dir) = shared_data("cifar-10") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let mut bins = Vec::new();
    for (name, _) in data::CIFAR10_SHA256 {
        bins.push((
            name,
            io::read_maybe_gz(&dir.join(format!("{name}.gz"))).unwrap(),
        ));
    }
    let meta = std::fs::read(dir.join("batches.meta.txt")).unwrap();
    let mut entries: Vec<(String, &[u8])> = vec![
        ("cifar-10-batches-bin/readme.html".into(), b"<html>"),
        ("cifar-10-batches-bin/batches.meta.txt".into(), &meta),
    ];
    for (name, b) in &bins {
        entries.push((format!("cifar-10-batches-bin/{name}"), b));
    }
    let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let archive = tar_of(&refs);
    drop(bins);
    let installed = fetch::install_cifar_archive(&archive[..], "real.tar", t.path()).unwrap();
    assert_eq!(installed.len(), 7);
    let mut want: Vec<String> = data::CIFAR10_SHA256
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    want.push("batches.meta.txt".into());
    want.sort();
    assert_eq!(dir_entries(t.path()), want);
    assert_eq!(
        fetch::verify_dir(DataKind::Cifar10, t.path())
            .unwrap()
            .len(),
        7
    );
    let ours = data::load_dir(DataKind::Cifar10, t.path()).unwrap();
    let theirs = data::load_dir(DataKind::Cifar10, &dir).unwrap();
    assert_eq!(ours, theirs);
}

// ---------------------------------------------------------------------------------------------
// fetch end to end, against a loopback HTTP server on 127.0.0.1 (no outside network).

/// Serves `files` (URL path -> body) over HTTP/1.1 on 127.0.0.1, 404 for anything else;
/// returns the base URL and a counter of requests served.
fn serve(
    files: std::collections::HashMap<String, Vec<u8>>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line == "\r\n" => break,
                    Ok(_) => {}
                }
            }
            c.fetch_add(1, Ordering::SeqCst);
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let (status, body) = match files.get(&path) {
                Some(b) => ("200 OK", b.as_slice()),
                None => ("404 Not Found", &b"not here"[..]),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    (base, count)
}

#[test]
fn fetch_mnist_from_loopback_mirrors() {
    use std::sync::atomic::Ordering;
    let Some(dir) = shared_data("mnist") else {
        return;
    };
    let mut files = std::collections::HashMap::new();
    for (name, _) in data::MNIST_SHA256 {
        let f = format!("{name}.gz");
        files.insert(format!("/good/{f}"), std::fs::read(dir.join(&f)).unwrap());
    }
    // The first mirror serves a corrupted (then recompressed) training-label file, and
    // nothing else.
    let mut labels = io::read_maybe_gz(&dir.join("train-labels-idx1-ubyte.gz")).unwrap();
    labels[100] ^= 0x80;
    files.insert("/bad/train-labels-idx1-ubyte.gz".into(), gz(&labels));
    let (base, count) = serve(files);
    let bad = format!("{base}/bad/");
    let good = format!("{base}/good/");

    // Only the bad mirror: the checksum mismatch is reported and leaves no file.
    let t = tempfile::tempdir().unwrap();
    let err = fetch::fetch_from(DataKind::Mnist, t.path(), false, &[&bad]).unwrap_err();
    assert!(
        matches!(err, Error::Io { .. }),
        "404 for train-images first: {err:?}"
    );
    assert!(dir_entries(t.path()).is_empty());
    std::fs::copy(
        dir.join("train-images-idx3-ubyte.gz"),
        t.path().join("train-images-idx3-ubyte.gz"),
    )
    .unwrap();
    match fetch::fetch_from(DataKind::Mnist, t.path(), false, &[&bad]) {
        Err(Error::Checksum { what, got, .. }) => {
            assert!(what.ends_with("train-labels-idx1-ubyte.gz"), "{what}");
            assert_eq!(got, io::sha256_hex(&labels));
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert_eq!(dir_entries(t.path()), ["train-images-idx3-ubyte.gz"]);

    // Bad mirror first, good second: every file ends up verified, nothing else left.
    let t = tempfile::tempdir().unwrap();
    fetch::fetch_from(DataKind::Mnist, t.path(), false, &[&bad, &good]).unwrap();
    let mut want: Vec<String> = data::MNIST_SHA256
        .iter()
        .map(|(n, _)| format!("{n}.gz"))
        .collect();
    want.sort();
    assert_eq!(dir_entries(t.path()), want);
    check_verify_dir(DataKind::Mnist, t.path(), 0);
    for w in &want {
        assert_eq!(
            std::fs::read(t.path().join(w)).unwrap(),
            std::fs::read(dir.join(w)).unwrap()
        );
    }
    // Already complete: no request at all.
    let before = count.load(Ordering::SeqCst);
    fetch::fetch_from(DataKind::Mnist, t.path(), false, &[&bad, &good]).unwrap();
    assert_eq!(count.load(Ordering::SeqCst), before);
}

#[test]
fn fetch_cifar_archive_with_wrong_content_leaves_nothing() {
    let fake = vec![0u8; 3073];
    let archive = gz(&tar_of(&[("cifar-10-batches-bin/data_batch_1.bin", &fake)]));
    let mut files = std::collections::HashMap::new();
    files.insert("/cifar-10-binary.tar.gz".to_string(), archive);
    let (base, _) = serve(files);
    let t = tempfile::tempdir().unwrap();
    let urls = [
        format!("{base}/missing.tar.gz"),
        format!("{base}/cifar-10-binary.tar.gz"),
    ];
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    match fetch::fetch_from(DataKind::Cifar10, t.path(), false, &urls) {
        Err(Error::Checksum { what, .. }) => assert!(what.ends_with("data_batch_1.bin")),
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert!(
        dir_entries(t.path()).is_empty(),
        "{:?}",
        dir_entries(t.path())
    );
}

/// A bare directory of Fashion-MNIST files whose path does not say "fashion" is still
/// detected, from its test labels' checksum.
#[test]
fn detect_fashion_mnist_by_content() {
    let Some(dir) = fashion_dir() else { return };
    let t = tempfile::tempdir().unwrap();
    assert!(
        !t.path()
            .to_string_lossy()
            .to_lowercase()
            .contains("fashion")
    );
    for (name, _) in data::FASHION_MNIST_SHA256 {
        let f = format!("{name}.gz");
        std::os::unix::fs::symlink(dir.join(&f), t.path().join(&f)).unwrap();
    }
    assert_eq!(DataKind::detect(t.path()).unwrap(), DataKind::FashionMnist);
    let m = tempfile::tempdir().unwrap();
    for (name, bytes) in data::embedded_files() {
        write(m.path(), name, bytes);
    }
    assert_eq!(DataKind::detect(m.path()).unwrap(), DataKind::Mnist);
}

/// Small fake CIFAR-10 batches in `cifar-10-batches-bin/`, plain: found, concatenated in
/// batch order; `batches.meta.txt` must hold 10 names (empty lines skipped).
#[test]
fn cifar_dir_layout_and_meta() {
    let t = tempfile::tempdir().unwrap();
    let sub = t.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&sub).unwrap();
    for (b, (name, _)) in data::CIFAR10_SHA256.iter().enumerate() {
        // Batch b: b + 1 records with label b, pixels all b.
        let rec = [vec![b as u8], vec![b as u8; 3072]].concat();
        write(&sub, name, &rec.repeat(b + 1));
    }
    let s: DataSource = t.path().to_str().unwrap().parse().unwrap();
    assert_eq!(
        s,
        DataSource::Dir {
            kind: DataKind::Cifar10,
            dir: t.path().to_path_buf()
        }
    );
    let split = s.load().unwrap();
    assert_eq!(
        split.train.labels,
        [0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4]
    );
    assert_eq!(split.test.labels, [5; 6]);
    assert!(split.train.image(14).iter().all(|&p| p == 4));
    assert_eq!(split.train.name, "cifar10-train");

    let names = DataKind::Cifar10.class_names();
    write(
        &sub,
        "batches.meta.txt",
        format!("{}\n\n", names.join("\n")).as_bytes(),
    );
    assert_eq!(data::load_dir(DataKind::Cifar10, t.path()).unwrap(), split);
    write(&sub, "batches.meta.txt", names[..9].join("\n").as_bytes());
    let err = data::load_dir(DataKind::Cifar10, t.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batches.meta.txt: 9 class names, expected 10"),
        "{err}"
    );
    // The fake batches do not verify.
    std::fs::remove_file(sub.join("batches.meta.txt")).unwrap();
    assert!(matches!(
        fetch::verify_dir(DataKind::Cifar10, t.path()),
        Err(Error::Checksum { .. })
    ));
}
