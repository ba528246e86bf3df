//! The training path feeding the checker: checkpoints with and without biases, on MNIST and
//! (when the shared data is present) CIFAR-10, are certified and verified.

use margincert::certify::certificate::{CertifyOptions, certify};
use margincert::certify::verify::verify;
use margincert::checkpoint::Checkpoint;
use margincert::data::{DataKind, Dataset, load_dir};
use margincert::loss::LossKind;
use margincert::model::{ModelSpec, Params, Shape, presets};
use margincert::report::Summary;
use margincert::run::{RunOptions, run};
use margincert::train::{Schedule, TrainConfig};

use crate::common::data::{embedded_train, shared_data};

/// A small CNN in the paper's shape: conv-relu-pool, conv-relu-pool, dense-relu, dense.
fn small_cnn(input: Shape, biases: [bool; 4]) -> ModelSpec {
    presets::paper_cnn_shape(input, [4, 6, 32], 10, biases)
}

/// Trains `spec` for a few epochs, then certifies the saved checkpoint on the training data
/// and verifies the certificate. Returns the certificate.
fn train_and_certify(
    spec: &ModelSpec,
    train: &Dataset,
) -> margincert::certify::certificate::Certificate {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        loss: LossKind::CrossEntropy,
        batch: 20,
        epochs: 3,
        seed: 1,
        schedule: Schedule::paper_loss_based(),
        save_at_log10: vec![],
        stop_log10_loss: None,
    };
    let params = Params::he_normal(spec, 1).unwrap();
    let opts = RunOptions {
        out: dir.path().to_path_buf(),
        data: margincert::data::DataChoice {
            source: "test".into(),
            train_subset: None,
            test_subset: None,
            binary: None,
        },
        threads: rayon::current_num_threads(),
        print_epochs: false,
    };
    let s = run(spec, params, cfg, train, None, None, &opts).unwrap();
    let ck = Checkpoint::load(&s.final_checkpoint).unwrap();
    let cert = certify(&ck.spec, &ck.params, train, &CertifyOptions::default()).unwrap();
    let report = verify(&cert, &ck.spec, &ck.params, train).unwrap();
    assert!(report.ok(), "{}", report.summary());
    // The certified q_min encloses the f32 training path's own estimate (to f32 accuracy).
    let est = s.last.unwrap().q_min;
    let q = &cert.margin.q_min;
    let slack = 1e-3 * (1.0 + est.abs());
    assert!(
        q.lo - slack <= est && est <= q.hi + slack,
        "{est} vs [{}, {}]",
        q.lo,
        q.hi
    );
    cert
}

#[test]
fn bias_free_and_first_bias_cnns_are_certified_homogeneous() {
    let data = embedded_train(60);
    for biases in [[false; 4], [true, false, false, false]] {
        let cert = train_and_certify(&small_cnn(data.shape, biases), &data);
        assert_eq!(cert.homogeneity.degree, Some(4), "{biases:?}");
        assert!(cert.normalized.is_some());
        if cert.margin.q_min.lo > 0.0 {
            assert!(cert.kkt.is_some(), "{:?}", cert.kkt_omitted);
        }
    }
}

#[test]
fn a_cnn_with_biases_everywhere_is_certified_but_not_homogeneous() {
    let data = embedded_train(60);
    let cert = train_and_certify(&small_cnn(data.shape, [true; 4]), &data);
    assert_eq!(cert.homogeneity.degree, None);
    assert!(cert.normalized.is_none() && cert.kkt.is_none());
    let why = cert.normalized_omitted.unwrap();
    assert!(
        why.contains("3"),
        "the offending layer should be named: {why}"
    );
}

#[test]
fn cifar10_cnn_is_certified_when_the_data_is_present() {
    let Some(dir) = shared_data("cifar-10") else {
        return;
    };
    let data = load_dir(DataKind::Cifar10, &dir).unwrap().test.take(60);
    let cert = train_and_certify(&small_cnn(data.shape, [false; 4]), &data);
    assert_eq!(cert.dataset.size, 60);
    assert_eq!(cert.homogeneity.degree, Some(4));
}
