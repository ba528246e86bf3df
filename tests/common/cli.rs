//! Running the `margincert` binary from the tests.

use std::path::Path;
use std::process::{Command, Output};

/// The `margincert` binary built for this test run, without arguments.
pub fn command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_margincert"))
}

/// Runs the binary with 2 worker threads and `args`.
pub fn margincert(args: &[&str]) -> Output {
    command()
        .args(["--threads", "2"])
        .args(args)
        .output()
        .expect("the binary runs")
}

/// stdout followed by stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts a clean failure: non-zero exit, an `error:` line, no panic.
pub fn assert_clean_failure(o: &Output, needle: &str) {
    let t = text(o);
    assert!(!o.status.success(), "should fail: {t}");
    assert!(!t.contains("panicked"), "panicked: {t}");
    assert!(t.contains("error:"), "no error line: {t}");
    assert!(
        t.to_lowercase().contains(&needle.to_lowercase()),
        "error does not mention '{needle}': {t}"
    );
}

/// `train` flags of the small MLP on 100 + 50 embedded images, batch 25 (without `--out`,
/// `--epochs` and the output flags).
pub const SMALL_MLP: [&str; 9] = [
    "train",
    "--model",
    "small-mlp",
    "--train-subset",
    "100",
    "--test-subset",
    "50",
    "--batch",
    "25",
];

/// Trains the small MLP for 4 epochs on 100 embedded images into `dir`.
pub fn train_small(dir: &Path) {
    let mut args = SMALL_MLP.to_vec();
    args.extend(["--epochs", "4", "--quiet", "--out", dir.to_str().unwrap()]);
    let o = margincert(&args);
    assert!(o.status.success(), "{}", text(&o));
}
