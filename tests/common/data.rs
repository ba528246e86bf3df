//! Where the tests find data: the committed fixtures, the embedded MNIST subset, and the
//! shared folder of real data sets (used when present, skipped with a printed reason when
//! not). Every lookup of the shared folder goes through [`shared_data`].

use std::io::Read;
use std::path::{Path, PathBuf};

use margincert::data::{DataSource, Dataset};
use margincert::model::Shape;

/// Environment variable that overrides the shared data folder.
pub const SHARED_DATA_VAR: &str = "MARGINCERT_SHARED_DATA";

/// The crate root (the directory holding `Cargo.toml`).
pub fn crate_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `fixtures/<rel>` under the crate root.
pub fn fixture(rel: &str) -> PathBuf {
    crate_root().join("fixtures").join(rel)
}

/// The shared data folder: `$MARGINCERT_SHARED_DATA` when set, else `../shared/data`
/// relative to the crate root. It may not exist.
pub fn shared_root() -> PathBuf {
    match std::env::var_os(SHARED_DATA_VAR) {
        Some(p) => PathBuf::from(p),
        None => crate_root().join("../shared/data"),
    }
}

/// `<shared data folder>/<rel>` (a file or a folder) when it exists; otherwise prints why the
/// calling test skips and returns `None`.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let root = shared_root();
    let p = root.join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} does not exist (the shared data folder is ${SHARED_DATA_VAR}, else \
             ../shared/data next to the crate; here {})",
            p.display(),
            root.display()
        );
        None
    }
}

/// The first `n` training images of the embedded MNIST subset.
pub fn embedded_train(n: usize) -> Dataset {
    let split = "embedded".parse::<DataSource>().unwrap().load().unwrap();
    split.train.take(n)
}

/// The first `n` MNIST training images and labels from the shared folder (gzipped IDX),
/// read without the crate's loaders; `None` when the files are absent.
pub fn mnist_head(n: usize) -> Option<Dataset> {
    let dir = shared_data("mnist")?;
    let read = |f: &str| -> Option<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(dir.join(f)).ok()?)
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    };
    let img = read("train-images-idx3-ubyte.gz")?;
    let lab = read("train-labels-idx1-ubyte.gz")?;
    Dataset::new(
        "mnist-train-head",
        Shape::new(1, 28, 28),
        img[16..16 + n * 784].to_vec(),
        lab[8..8 + n].to_vec(),
        10,
    )
    .ok()
}
