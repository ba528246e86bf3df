//! Run durability: a training run killed at any point and resumed ends with the files of an
//! uninterrupted run (metrics log byte for byte, checkpoints tensor for tensor); one writer
//! per run directory; no mixing of two runs; resume and `--config` keep or refuse settings
//! explicitly; bad flags are refused with a message naming them.
//!
//! The kills are real (`SIGKILL` from the test at seeded random times) or injected at named
//! points of the run loop (`MARGINCERT_FAULT=POINT:EPOCH`, test-only, see
//! `src/run/fault.rs`). docs/RELIABILITY.md records the trial counts.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::common::cli::{assert_clean_failure, command, margincert, text, train_small};
use crate::common::runs::{
    assert_same_run, continue_run, output, spawn, test_command, tiny, tiny_flags,
};

/// The uninterrupted tiny run, into `dir`.
fn reference(dir: &Path) {
    let o = output(tiny(dir, &[], None));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Continues the interrupted run in `dir` to its end, in one process.
fn finish(dir: &Path) {
    let o = output(continue_run(dir, None));
    assert!(
        o.status.success(),
        "resume failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs the tiny run into `dir` (with `extra` flags) until the injected `fault` aborts it.
fn interrupted(dir: &Path, extra: &[&str], fault: &str) {
    let o = output(tiny(dir, extra, Some(fault)));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("MARGINCERT_FAULT: aborting"),
        "{fault} did not fire: {err}"
    );
}

/// Orphaned temporary files of the atomic writer in `dir`.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".margincert-") && n.ends_with(".tmp"))
        .collect()
}

/// A kill at each named point of the run loop (including a torn metrics line and a kill
/// between the metrics write and the checkpoint rename, which used to duplicate an epoch),
/// then a resume: every file equals the uninterrupted run's.
#[test]
fn a_kill_at_each_point_resumes_to_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let want = tmp.path().join("reference");
    reference(&want);
    // Epoch 5 passes the 1e0 threshold (a kept checkpoint); epoch 0 has no checkpoint yet
    // at the first two points.
    let faults = [
        "torn-metrics:0",
        "after-metrics:0",
        "after-checkpoint:0",
        "torn-metrics:3",
        "after-metrics:3",
        "after-metrics:5",
        "after-kept:5",
        "after-checkpoint:7",
        "after-metrics:10",
        "before-plots:10",
    ];
    for fault in faults {
        let dir = tmp.path().join(fault.replace(':', "-"));
        interrupted(&dir, &[], fault);
        finish(&dir);
        assert_same_run(&dir, &want, fault);
    }
}

/// `kills` SIGKILLs at seeded random times over runs of the tiny model, each interrupted
/// run resumed (and killed again) until it ends; every run then equals the uninterrupted
/// one and holds no temporary file. Returns the number of kills that landed (the process
/// was still running).
fn random_kills(seed: u64, runs: usize, kills_per_run: usize) -> usize {
    let tmp = tempfile::tempdir().unwrap();
    let want = tmp.path().join("reference");
    let t0 = Instant::now();
    reference(&want);
    let span = t0.elapsed().as_micros().max(1000) as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut landed = 0;
    for r in 0..runs {
        let dir = tmp.path().join(format!("run{r}"));
        for k in 0..kills_per_run {
            let mut child = spawn(if k == 0 {
                tiny(&dir, &[], None)
            } else {
                continue_run(&dir, None)
            });
            std::thread::sleep(Duration::from_micros(rng.random_range(0..span)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                landed += 1;
            }
            child.wait().unwrap();
        }
        finish(&dir);
        assert_same_run(&dir, &want, &format!("seed {seed}, run {r}"));
        assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
    }
    landed
}

/// A handful of real `kill -9` at random times (seeded), each run resumed to its end.
#[test]
fn random_kills_resume_to_the_uninterrupted_run() {
    random_kills(12, 3, 2);
}

/// The long trial recorded in docs/RELIABILITY.md.
#[test]
#[ignore = "about a minute; run with: cargo test --test suite durability::random_kill_trial -- --ignored --nocapture"]
fn random_kill_trial() {
    let landed = random_kills(2026, 60, 4);
    println!("60 runs, 240 kill attempts, {landed} landed while the process ran");
}

/// Two runs into one directory: the second is refused at once, naming the lock file and the
/// holder, and writes nothing.
#[test]
fn a_second_run_into_a_locked_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let held = margincert::run::RunDir::lock(&dir).unwrap();
    let o = output(tiny(&dir, &[], None));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains(".margincert.lock") && err.contains("in use"),
        "{err}"
    );
    assert!(
        err.contains(&format!("process {}", std::process::id())),
        "{err}"
    );
    assert!(!dir.join("metrics.jsonl").exists());
    drop(held);
    reference(&dir);
}

/// Two runs started together into one directory (they used to interleave their metrics
/// lines and lose one run's result): exactly one runs, the other is refused (by the lock, or
/// by the first run's files when it starts late), and the directory holds exactly one
/// uninterrupted run.
#[test]
fn two_runs_started_together_leave_one_intact_run() {
    let tmp = tempfile::tempdir().unwrap();
    let want = tmp.path().join("reference");
    reference(&want);
    let dir = tmp.path().join("run");
    let a = spawn(tiny(&dir, &[], None));
    let b = spawn(tiny(&dir, &[], None));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() != b.status.success(),
        "exactly one run succeeds: {:?} {:?}",
        a.status,
        b.status
    );
    let loser = if a.status.success() { &b } else { &a };
    let err = String::from_utf8_lossy(&loser.stderr);
    assert!(
        err.contains("in use") || err.contains("holds a previous run"),
        "{err}"
    );
    assert_same_run(&dir, &want, "two runs");
}

/// A fresh run into a directory holding a run is refused (the old run's files would stay
/// beside the new one's); --overwrite deletes exactly the previous run's files.
#[test]
fn a_fresh_run_over_a_previous_run_needs_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    reference(&dir);
    assert!(dir.join("loss-1e0.safetensors").exists());
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "mine").unwrap();
    let before = std::fs::read(dir.join("metrics.jsonl")).unwrap();
    let short = ["--epochs", "2"];
    let o = output(tiny(&dir, &short, None));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(dir.join("metrics.jsonl")).unwrap(), before);
    let o = output(tiny(&dir, &["--epochs", "2", "--overwrite"], None));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !dir.join("loss-1e0.safetensors").exists(),
        "old threshold kept"
    );
    let log = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "mine");
}

/// Orphaned `.margincert-*.tmp` files of an interrupted write are removed when a run starts
/// in the directory; other files stay.
#[test]
fn orphaned_temp_files_are_removed_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    interrupted(&dir, &[], "after-checkpoint:4");
    let orphan = dir.join(".margincert-Xy12ab.tmp");
    std::fs::write(&orphan, vec![0u8; 319_000]).unwrap();
    let other = dir.join("keep.tmp");
    std::fs::write(&other, "x").unwrap();
    finish(&dir);
    assert!(!orphan.exists(), "orphan left");
    assert!(other.exists());
}

/// An unterminated metrics line (a torn write, or the old body-then-newline writes) is cut
/// on resume instead of having the next line appended onto it; `plot` reads such a log.
#[test]
fn an_unterminated_metrics_line_is_cut_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let want = tmp.path().join("reference");
    reference(&want);
    let dir = tmp.path().join("run");
    interrupted(&dir, &[], "after-checkpoint:4");
    // Epoch 5's line without its newline, as a kill between the two old writes left it.
    let line5 = std::fs::read_to_string(want.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .nth(5)
        .unwrap()
        .to_string();
    let log = dir.join("metrics.jsonl");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(line5.as_bytes());
    std::fs::write(&log, &bytes).unwrap();
    let plots = tmp.path().join("plots");
    let o = margincert(&[
        "plot",
        log.to_str().unwrap(),
        "--out",
        plots.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    finish(&dir);
    assert_same_run(&dir, &want, "torn line");
}

/// `--resume` keeps the run's own epoch budget (it used to become the default 100); an
/// explicit `--epochs` replaces it, never below the checkpoint's epoch.
#[test]
fn resume_keeps_the_stored_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    interrupted(&dir, &["--epochs", "6"], "after-checkpoint:3");
    let last = dir.join("last.safetensors");
    let resume = |extra: &[&str]| {
        let mut c = test_command(None);
        c.args(["train", "--quiet", "--resume"])
            .arg(&last)
            .args(extra);
        output(c)
    };
    let o = resume(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = || {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(lines(), 7, "epochs 0..=6");
    let ck = margincert::checkpoint::Checkpoint::load(&last).unwrap();
    assert_eq!(ck.train.unwrap().config.epochs, 6);
    let o = resume(&["--epochs", "4"]);
    assert_clean_failure(&o, "--epochs 4 is below the checkpoint's epoch 6");
    let o = resume(&["--epochs", "8"]);
    assert!(o.status.success());
    assert_eq!(lines(), 9, "extended to 8 epochs");
    // `--stop-loss` replaces the run's stopping loss (to continue a run that stopped at one
    // loss towards a lower one): with 1e9 every loss passes, so the run stops long before
    // its new budget of 20 epochs, and the checkpoint records the new rule.
    let o = resume(&["--epochs", "20", "--stop-loss", "1e9"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        lines() < 21,
        "stopped by the loss, not the budget: {}",
        lines()
    );
    let ck = margincert::checkpoint::Checkpoint::load(&last).unwrap();
    assert_eq!(ck.train.unwrap().config.stop_log10_loss, Some(9.0));
}

/// `--resume` refuses the flags it takes from the checkpoint (they were silently ignored),
/// naming each; the run directory is untouched.
#[test]
fn resume_refuses_conflicting_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    interrupted(&dir, &[], "after-checkpoint:2");
    let last = dir.join("last.safetensors").to_str().unwrap().to_string();
    let before = std::fs::read(dir.join("metrics.jsonl")).unwrap();
    for (flag, value) in [
        ("--model", "linear"),
        ("--lr", "0.5"),
        ("--data", "embedded"),
        ("--loss", "logistic"),
        ("--batch", "5"),
        ("--seed", "3"),
        ("--config", "x.toml"),
    ] {
        let o = margincert(&["train", "--resume", &last, flag, value]);
        assert_clean_failure(&o, flag);
    }
    assert_eq!(std::fs::read(dir.join("metrics.jsonl")).unwrap(), before);
    // Resuming an older checkpoint over the run's later one is refused.
    let older = tmp.path().join("older.safetensors");
    std::fs::copy(&last, &older).unwrap();
    finish(&dir);
    let o = margincert(&[
        "train",
        "--resume",
        older.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "holds a run whose checkpoint is");
}

/// `--config F --epochs 2` runs 2 epochs (`--epochs` used to be ignored); the other setting
/// flags are refused beside `--config`.
#[test]
fn config_takes_epochs_and_refuses_other_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        "description = 'a tiny durability test run'\n[model]\npreset = 'small-mlp'\n\
         [data]\nsource = 'embedded'\ntrain_subset = 50\ntest_subset = 20\n\
         [train]\nloss = 'cross-entropy'\nbatch = 25\nepochs = 40\nseed = 0\n\
         schedule = { type = 'constant', lr = 0.05 }\n",
    )
    .unwrap();
    let out = tmp.path().join("run");
    let (c, o) = (cfg.to_str().unwrap(), out.to_str().unwrap());
    let r = margincert(&[
        "train", "--config", c, "--epochs", "2", "--quiet", "--out", o,
    ]);
    assert!(r.status.success(), "{}", text(&r));
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    for (flag, value) in [("--lr", "0.1"), ("--model", "linear"), ("--batch", "5")] {
        let r = margincert(&[
            "train",
            "--config",
            c,
            flag,
            value,
            "--out",
            o,
            "--overwrite",
        ]);
        assert_clean_failure(&r, flag);
    }
    // A config's settings are checked like the flags.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("lr = 0.05", "lr = -0.5"),
    )
    .unwrap();
    let r = margincert(&["train", "--config", c, "--out", o, "--overwrite"]);
    assert_clean_failure(&r, "learning rate");
}

/// Bad flag values are refused with a message that names them, before anything is written.
#[test]
fn bad_flags_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("never");
    let o = out.to_str().unwrap();
    let cases: [(&[&str], &str); 10] = [
        (&["--lr=-0.5"], "--lr"),
        (&["--lr", "0"], "--lr"),
        (&["--alpha0=-1"], "--alpha0"),
        (&["--alpha0", "nan"], "--alpha0"),
        (&["--stop-loss", "0.001"], "--stop-loss"),
        (&["--stop-loss=-100"], "write the loss level"),
        (&["--save-at", "0.5"], "--save-at"),
        (&["--save-at", "5e-1"], "power of ten"),
        (&["--test-subset", "0"], "--test-subset 0"),
        (&["--train-subset", "0"], "--train-subset 0"),
    ];
    for (flags, needle) in cases {
        let r = margincert(&[&["train", "--model", "small-mlp", "--out", o][..], flags].concat());
        assert_clean_failure(&r, needle);
    }
    assert!(!out.exists(), "a refused run created its directory");
    let r = command()
        .env_remove("MARGINCERT_MAX_THREADS")
        .args(["--threads", "100000", "train", "--out", o])
        .output()
        .unwrap();
    assert_clean_failure(&r, "MARGINCERT_MAX_THREADS");
    // `robust --steps 0` used to report certified accuracy 0 at eps 0.
    let dir = tmp.path().join("trained");
    train_small(&dir);
    let ck = dir.join("last.safetensors");
    let r = margincert(&[
        "robust",
        ck.to_str().unwrap(),
        "--norm",
        "2",
        "--steps",
        "0",
    ]);
    assert_clean_failure(&r, "at least 1 step");
    // `certify --kkt-active 0` used to be refused with a message about the cutoff.
    let r = margincert(&["certify", ck.to_str().unwrap(), "--kkt-active", "0"]);
    assert_clean_failure(&r, "--kkt-active 0");
    // The accepted forms still work and name their files as written.
    let r = output({
        let mut c = test_command(None);
        c.args(tiny_flags())
            .args(["--stop-loss", "5e-1", "--out", o]);
        c
    });
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(out.join("loss-1e0.safetensors").exists());
}
