//! Training-loop tests: loss frame far below f64, the loss-based schedule's roll-back,
//! threshold checkpoints, and exact resumption.

use margincert::checkpoint::Checkpoint;
use margincert::loss::LossKind;
use margincert::model::{Params, presets};
use margincert::run::{RunOptions, run};
use margincert::train::{EpochOutcome, Schedule, TrainConfig, Trainer};

use crate::common::data::embedded_train;

fn config(loss: LossKind, batch: usize, epochs: usize) -> TrainConfig {
    TrainConfig {
        loss,
        batch,
        epochs,
        seed: 5,
        schedule: Schedule::paper_loss_based(),
        save_at_log10: vec![],
        stop_log10_loss: None,
    }
}

fn opts(dir: &std::path::Path) -> RunOptions {
    RunOptions {
        out: dir.to_path_buf(),
        data: margincert::data::DataChoice {
            source: "embedded".into(),
            train_subset: None,
            test_subset: None,
            binary: None,
        },
        threads: rayon::current_num_threads(),
        print_epochs: false,
    }
}

/// The loss-based schedule drives a binary linear model's exponential loss far below the
/// smallest f64 (about 1e-308) and keeps going, with finite numbers all the way, while the
/// margin and the normalized margin grow.
#[test]
fn loss_frame_trains_far_below_f64_range() {
    let data = embedded_train(200).binary(0, 1).unwrap();
    let spec = presets::by_name("linear", data.shape, 1).unwrap();
    let params = Params::he_normal(&spec, 1).unwrap();
    let mut cfg = config(LossKind::Exponential, 0, 100_000);
    cfg.stop_log10_loss = Some(-400.0);
    let mut t = Trainer::new(&spec, params, cfg, &data, None, None).unwrap();
    let start = std::time::Instant::now();
    let mut history = Vec::new();
    loop {
        match t.step_epoch(start).unwrap() {
            EpochOutcome::Done(m) => history.push(*m),
            EpochOutcome::RolledBack { lr, .. } => assert!(lr.is_finite() && lr > 0.0),
            EpochOutcome::Finished(why) => {
                assert!(why.contains("below"), "{why}");
                break;
            }
        }
        assert!(history.len() < 20_000, "did not reach 1e-400");
    }
    let last = history.last().unwrap();
    assert!(last.log10_loss < -400.0, "{}", last.log10_loss);
    assert!(
        history
            .iter()
            .all(|m| m.log10_loss.is_finite() && m.q_min.is_finite())
    );
    assert_eq!(last.train_accuracy, 1.0);
    // An accepted epoch never raises the loss (that is what acceptance means).
    for w in history.windows(2) {
        assert!(w[1].log10_loss <= w[0].log10_loss + 1e-12);
    }
    // Past the threshold, the normalized margin of a linear model (L = 1) rises overall.
    let first_sep = history.iter().find(|m| m.q_min > 0.0).unwrap();
    assert!(last.normalized_margin.unwrap() > first_sep.normalized_margin.unwrap());
    // The summed loss equals N times the mean loss.
    let n = data.len() as f64;
    assert!((last.log10_loss_sum - last.log10_loss - n.log10()).abs() < 1e-9);
}

/// A step far too large fails the first epoch: the parameters are restored bit for bit and
/// the step shrinks by r_d; a good epoch grows it by r_u.
#[test]
fn failed_epoch_rolls_back_and_shrinks_the_step() {
    let data = embedded_train(100);
    let spec = presets::by_name("small-mlp", data.shape, 10).unwrap();
    let params = Params::he_normal(&spec, 3).unwrap();
    let mut cfg = config(LossKind::CrossEntropy, 50, 10);
    let (r_up, r_down) = (2f64.powf(0.2), 2f64.powf(0.1));
    cfg.schedule = Schedule::LossBased {
        alpha0: 1e4,
        r_up,
        r_down,
        min_alpha: 1e-50,
    };
    let mut t = Trainer::new(&spec, params.clone(), cfg, &data, None, None).unwrap();
    let start = std::time::Instant::now();
    match t.step_epoch(start).unwrap() {
        EpochOutcome::RolledBack { lr, .. } => assert_eq!(lr, 1e4 / r_down),
        other => panic!("a step of 1e4 should fail, got {other:?}"),
    }
    assert_eq!(
        t.params(),
        &params,
        "the rollback must restore the parameters exactly"
    );
    assert_eq!(t.state().epoch, 0);
    // Keep going: eventually an epoch is accepted, and then the step grows by r_u.
    loop {
        let before = t.state().lr;
        match t.step_epoch(start).unwrap() {
            EpochOutcome::Done(m) => {
                assert_eq!(m.lr, before);
                assert_eq!(t.state().lr, before * r_up);
                break;
            }
            EpochOutcome::RolledBack { lr, .. } => assert_eq!(lr, before / r_down),
            EpochOutcome::Finished(w) => panic!("{w}"),
        }
    }
}

/// A run split in two by a checkpoint and resumed reproduces the uninterrupted run exactly:
/// same parameters bit for bit, same metrics. Threshold checkpoints are kept when the loss
/// first falls below each level.
#[test]
fn resume_reproduces_the_uninterrupted_run_exactly() {
    let data = embedded_train(120);
    let spec = presets::by_name("small-mlp", data.shape, 10).unwrap();
    let mut cfg = config(LossKind::CrossEntropy, 40, 8);
    cfg.save_at_log10 = vec![0.2, 0.0, -30.0];
    let full_dir = tempfile::tempdir().unwrap();
    let params = Params::he_normal(&spec, 9).unwrap();
    let full = run(
        &spec,
        params.clone(),
        cfg.clone(),
        &data,
        None,
        None,
        &opts(full_dir.path()),
    )
    .unwrap();

    let part_dir = tempfile::tempdir().unwrap();
    let mut half = cfg.clone();
    half.epochs = 4;
    run(
        &spec,
        params,
        half,
        &data,
        None,
        None,
        &opts(part_dir.path()),
    )
    .unwrap();
    let ck = Checkpoint::load(&part_dir.path().join("last.safetensors")).unwrap();
    let info = ck.train.unwrap();
    assert_eq!(info.state.epoch, 4);
    let mut rest = info.config.clone();
    rest.epochs = 8;
    let resumed = run(
        &ck.spec,
        ck.params,
        rest,
        &data,
        None,
        Some(info.state),
        &opts(part_dir.path()),
    )
    .unwrap();

    let a = Checkpoint::load(&full.final_checkpoint).unwrap();
    let b = Checkpoint::load(&resumed.final_checkpoint).unwrap();
    assert_eq!(a.params, b.params, "resumed parameters differ");
    let (ma, mb) = (full.last.unwrap(), resumed.last.unwrap());
    assert_eq!(ma.log10_loss, mb.log10_loss);
    assert_eq!(ma.q_min, mb.q_min);
    // The metrics logs agree epoch by epoch (seconds aside).
    let read = |d: &std::path::Path| -> Vec<(usize, f64)> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["epoch"].as_u64().unwrap() as usize,
                    v["log10_loss"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(read(full_dir.path()), read(part_dir.path()));

    // Threshold checkpoints: each one's loss is below its level; the level -30 is not reached.
    let final_loss = ma.log10_loss;
    assert!(
        final_loss < 0.0,
        "the run should pass both levels: {final_loss}"
    );
    for (level, name) in [
        (0.2, "loss-1e0.2.safetensors"),
        (0.0, "loss-1e0.safetensors"),
    ] {
        let p = full_dir.path().join(name);
        assert!(full.kept.contains(&p), "{name} not kept: {:?}", full.kept);
        let c = Checkpoint::load(&p).unwrap();
        let m = c.train.unwrap().metrics.unwrap();
        assert!(m.log10_loss < level, "{name}: {}", m.log10_loss);
    }
    assert!(!full_dir.path().join("loss-1e-30.safetensors").exists());
}

/// Model, data and loss must fit together: clear errors, not panics.
#[test]
fn mismatches_are_errors() {
    let data = embedded_train(50);
    let spec = presets::by_name("small-mlp", data.shape, 10).unwrap();
    let params = Params::he_normal(&spec, 1).unwrap();
    // A binary loss on a ten-class model.
    let e = Trainer::new(
        &spec,
        params.clone(),
        config(LossKind::Logistic, 10, 1),
        &data,
        None,
        None,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("binary"), "{e}");
    // A model for another input shape.
    let other =
        presets::by_name("small-mlp", margincert::model::Shape::new(3, 32, 32), 10).unwrap();
    let p2 = Params::he_normal(&other, 1).unwrap();
    let e = Trainer::new(
        &other,
        p2,
        config(LossKind::CrossEntropy, 10, 1),
        &data,
        None,
        None,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("shape"), "{e}");
    // NaN weights.
    let mut bad = params;
    bad.layers[0].weight[0] = f32::NAN;
    assert!(
        Trainer::new(
            &spec,
            bad,
            config(LossKind::CrossEntropy, 10, 1),
            &data,
            None,
            None
        )
        .is_err()
    );
}
