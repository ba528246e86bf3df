//! A run directory seen from the tests: the tiny training run the durability tests kill and
//! resume, and comparisons of two run directories file by file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::cli::{SMALL_MLP, command};

/// The tiny run (small MLP, 100 + 50 embedded images, 10 epochs with roll-backs, a threshold
/// checkpoint at epoch 5) as `train` flags, without `--out` and `--epochs`.
pub fn tiny_flags() -> Vec<&'static str> {
    let mut v = SMALL_MLP.to_vec();
    v.extend(["--save-at", "1e0", "--quiet"]);
    v
}

/// The binary with 2 threads and the stopped clock (`MARGINCERT_TEST_CLOCK=zero`, so that two
/// runs write identical bytes), plus `MARGINCERT_FAULT=fault` when given.
pub fn test_command(fault: Option<&str>) -> Command {
    let mut c = command();
    c.args(["--threads", "2"])
        .env("MARGINCERT_TEST_CLOCK", "zero")
        .env_remove("MARGINCERT_FAULT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(f) = fault {
        c.env("MARGINCERT_FAULT", f);
    }
    c
}

/// The tiny run into `out` (fresh, or with `extra` flags such as `--overwrite`), for 10
/// epochs unless `extra` says `--epochs`.
pub fn tiny(out: &Path, extra: &[&str], fault: Option<&str>) -> Command {
    let mut c = test_command(fault);
    c.args(tiny_flags()).arg("--out").arg(out).args(extra);
    if !extra.contains(&"--epochs") {
        c.args(["--epochs", "10"]);
    }
    c
}

/// Continues the interrupted run in `out`: `--resume out/last.safetensors` when a checkpoint
/// is there, else the tiny run again with `--overwrite` (a run killed before its first
/// checkpoint has nothing to resume).
pub fn continue_run(out: &Path, fault: Option<&str>) -> Command {
    let last = out.join("last.safetensors");
    if last.exists() {
        let mut c = test_command(fault);
        c.args(["train", "--quiet", "--resume"]).arg(&last);
        c
    } else {
        tiny(out, &["--overwrite"], fault)
    }
}

/// Runs `c` to its end.
pub fn output(mut c: Command) -> Output {
    c.output().expect("the binary runs")
}

/// Spawns `c`.
pub fn spawn(mut c: Command) -> Child {
    c.spawn().expect("the binary starts")
}

/// The files of a run directory by name, with their bytes; the lock file is left out.
pub fn run_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p: PathBuf = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name == ".margincert.lock" {
            continue;
        }
        out.insert(name, std::fs::read(&p).unwrap());
    }
    out
}

/// Asserts that run directory `got` holds exactly the files of `want`, with the same content
/// byte for byte (metrics log, plots and checkpoints: a checkpoint's header is written with
/// sorted keys, so the same state gives the same bytes).
pub fn assert_same_run(got: &Path, want: &Path, what: &str) {
    let (g, w) = (run_files(got), run_files(want));
    let names = |m: &BTreeMap<String, _>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&g), names(&w), "{what}: other files");
    for (name, content) in &w {
        assert!(g[name] == *content, "{what}: {name} differs");
    }
}
