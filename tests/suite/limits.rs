//! Inputs that cannot exhaust the machine (issue 12): every "Found" case of the bounded-input
//! slice as a regression test. Each size a file declares is checked before allocation, with
//! an error that names the limit, the amount needed and the variable that raises it
//! (`margincert::limits`); sizes are computed with checked arithmetic; ONNX graphs get the
//! checks of `onnx.checker` that matter for import; the checkpoint `format` is checked.

use std::path::Path;
use std::time::{Duration, Instant};

use margincert::checkpoint::{Checkpoint, FORMAT};
use margincert::data::{CIFAR_RECORD, cifar_from_bytes_limited, idx_from_bytes_limited};
use margincert::import;
use margincert::loss::LossKind;
use margincert::model::{CheckedModel, Layer, ModelSpec, Padding, Params, Shape};
use margincert::train::{Schedule, TrainConfig, Trainer};
use onnx_protobuf::{Message, ModelProto};

use crate::common::cli::{assert_clean_failure, margincert};
use crate::common::data::{embedded_train, fixture};
use crate::common::onnx::{self as ob, initializer, int_attr, ints_attr, node};

fn err_of<T: std::fmt::Debug>(r: margincert::Result<T>) -> String {
    r.unwrap_err().to_string()
}

/// `dense out = 1e9` on MNIST-sized input: 784e9 parameters (2.9 TB of f32). It used to be
/// accepted and abort with "memory allocation failed" when the parameters were allocated.
#[test]
fn a_dense_layer_of_1e9_outputs_is_refused_naming_the_parameter_limit() {
    let text = "input = { c = 1, h = 28, w = 28 }\n\
                layers = [ { type = \"flatten\" }, { type = \"dense\", out = 1000000000 } ]\n";
    let e = err_of(ModelSpec::parse(text));
    assert!(e.contains("the model needs 2.9 TB"), "{e}");
    assert!(e.contains("of parameters; the limit is 4.0 GB"), "{e}");
    assert!(e.contains("MARGINCERT_MAX_PARAM_BYTES="), "{e}");
    // The same spec built in code: initialisation refuses before allocating.
    let spec = ModelSpec {
        name: String::new(),
        input: Shape::new(1, 28, 28),
        layers: vec![Layer::Flatten, Layer::dense(1_000_000_000, false)],
    };
    assert!(err_of(Params::he_normal(&spec, 1)).contains("parameters"));
    assert!(err_of(spec.num_params()).contains("parameters"));
}

/// A 1x1 convolution to 65536 channels on 28 x 28, pooled to 1 x 1 and classified: few
/// parameters (196 608), but 51 million activations per example. Importing it is fine (one
/// f32 example needs 206 MB); every pass over batches must refuse before allocating.
fn wide_conv_onnx() -> ModelProto {
    let c = 65536;
    ob::model(
        &[1, 1, 28, 28],
        vec![
            node("Conv", &["x", "w0"], "c", vec![]),
            node(
                "MaxPool",
                &["c"],
                "p",
                vec![
                    ints_attr("kernel_shape", &[28, 28]),
                    ints_attr("strides", &[28, 28]),
                ],
            ),
            node("Flatten", &["p"], "f", vec![int_attr("axis", 1)]),
            node("Gemm", &["f", "w1"], "y", vec![int_attr("transB", 1)]),
        ],
        vec![
            initializer("w0", &[c, 1, 1, 1], &vec![0.25; c]),
            initializer("w1", &[2, c], &vec![0.5; 2 * c]),
        ],
        &[1, 2],
    )
}

/// The ONNX 1x1 conv to 65536 channels used to abort (SIGABRT, "memory allocation failed")
/// in certify; now the certified passes and training refuse it with the amount needed.
#[test]
fn an_onnx_conv_to_65536_channels_is_an_error_not_an_abort() {
    let imp = import::onnx::from_bytes(
        &ob::bytes(&wide_conv_onnx()),
        Path::new("wide.onnx"),
        &Default::default(),
    )
    .unwrap();
    let (spec, params) = (imp.checkpoint.spec, imp.checkpoint.params);
    let e = err_of(CheckedModel::new(spec.clone(), params.clone()));
    assert!(
        e.contains("a certified pass of 128 example(s) needs 98.3 GB"),
        "{e}"
    );
    assert!(e.contains("of activations; the limit is 16.0 GB"), "{e}");
    assert!(e.contains("MARGINCERT_MAX_ACTIVATION_BYTES="), "{e}");
    // Certification goes through the checked model.
    let data = embedded_train(20).binary(0, 1).unwrap();
    let opts = margincert::certify::certificate::CertifyOptions::default();
    let e = err_of(margincert::certify::certificate::certify(
        &spec, &params, &data, &opts,
    ));
    assert!(e.contains("activations"), "{e}");
    // Training: the batch and the 1000-example evaluation chunk are checked first.
    let cfg = TrainConfig {
        loss: LossKind::CrossEntropy,
        batch: 2,
        epochs: 1,
        seed: 1,
        schedule: Schedule::Constant { lr: 0.1 },
        save_at_log10: vec![],
        stop_log10_loss: None,
    };
    let e = err_of(Trainer::new(&spec, params, cfg, &data, None, None).map(|_| ()));
    // The command that aborted: a clean error naming the variable.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("wide.onnx");
    std::fs::write(&f, ob::bytes(&wide_conv_onnx())).unwrap();
    let o = margincert(&[
        "certify",
        f.to_str().unwrap(),
        "--data",
        "embedded",
        "--binary",
        "0,1",
        "--subset",
        "20",
        "--out",
        dir.path().join("c.json").to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "MARGINCERT_MAX_ACTIVATION_BYTES");
    assert!(
        e.contains("an evaluation chunk of 1000 example(s) needs 191.9 GB"),
        "{e}"
    );
}

/// An input whose `c * h * w` wraps around 2^64 to 784 was accepted (and in a debug build
/// the multiplication panicked).
#[test]
fn an_input_whose_size_wraps_to_784_is_refused() {
    // 16 * (2^60 + 49) = 2^64 + 784.
    let h = (1usize << 60) + 49;
    let json = format!(
        r#"{{"input":{{"c":1,"h":{h},"w":16}},"layers":[{{"type":"flatten"}},{{"type":"dense","out":10}}]}}"#
    );
    let e = err_of(ModelSpec::parse(&json));
    assert!(e.contains("overflows"), "{e}");
    // Overflow in a later layer's output (a conv widening a huge input).
    let json = format!(
        r#"{{"input":{{"c":1,"h":{},"w":4}},"layers":[{{"type":"conv2d","out":{},"kernel":1}},{{"type":"flatten"}}]}}"#,
        1usize << 40,
        1usize << 40
    );
    assert!(ModelSpec::parse(&json).is_err());
}

/// Explicit padding 2^63: `h + 2p` wrapped, and the conv trained on padding alone. Padding
/// is now at most `max(kernel, h, w)`, and the geometry is computed with checked arithmetic.
#[test]
fn explicit_padding_of_2_pow_63_is_refused() {
    let spec = |p: usize, k: usize| ModelSpec {
        name: String::new(),
        input: Shape::new(1, 4, 5),
        layers: vec![
            Layer::conv(2, k, 1, Padding::Explicit(p), false),
            Layer::Flatten,
            Layer::dense(2, false),
        ],
    };
    let e = err_of(spec(1 << 63, 3).validate());
    assert!(
        e.contains("explicit padding 9223372036854775808 is larger"),
        "{e}"
    );
    let e = err_of(spec(6, 3).validate());
    assert!(e.contains("at most 5 is accepted"), "{e}");
    // Padding wider than the kernel but within the input stays valid (tested elsewhere
    // for every pass).
    spec(3, 2).validate().unwrap();
    spec(5, 2).validate().unwrap();
    // SAME padding with a kernel near usize::MAX: the span overflows.
    let same = ModelSpec {
        name: String::new(),
        input: Shape::new(1, 4, 4),
        layers: vec![
            Layer::conv(1, usize::MAX, 1, Padding::Same, false),
            Layer::Flatten,
        ],
    };
    assert!(same.validate().is_err());
}

fn fixture_onnx(name: &str) -> ModelProto {
    ModelProto::parse_from_bytes(&std::fs::read(fixture("import").join(name)).unwrap()).unwrap()
}

fn import_err(m: &ModelProto) -> String {
    err_of(import::onnx::from_bytes(
        &ob::bytes(m),
        Path::new("t.onnx"),
        &Default::default(),
    ))
}

/// What `onnx.checker` refuses used to be imported without a word; each is now an error
/// naming the problem. `cnn_first_bias.onnx`: node 0 Conv, 1 Relu, 2 MaxPool, 3 Flatten,
/// 4 Gemm.
#[test]
fn onnx_files_the_checker_rejects_are_refused() {
    let base = fixture_onnx("cnn_first_bias.onnx");
    // The fixture itself imports.
    import::onnx::from_bytes(&ob::bytes(&base), Path::new("t.onnx"), &Default::default()).unwrap();

    // A duplicate initializer (the last one used to win).
    let mut m = base.clone();
    let g = m.graph.as_mut().unwrap();
    let mut dup = g.initializer[0].clone();
    dup.raw_data.iter_mut().for_each(|b| *b = 0);
    g.initializer.push(dup);
    let e = import_err(&m);
    assert!(e.contains("duplicate initializer"), "{e}");

    // A duplicate attribute (margincert took the first, the ONNX reference the last).
    let mut m = base.clone();
    let n = &mut m.graph.as_mut().unwrap().node[4];
    n.attribute.push(int_attr("transB", 1));
    n.attribute.push(int_attr("transB", 0));
    let e = import_err(&m);
    assert!(e.contains("duplicate attribute 'transB'"), "{e}");
    assert!(e.contains("node 4"), "{e}");

    // Gemm with 4 inputs.
    let mut m = base.clone();
    let gemm = &mut m.graph.as_mut().unwrap().node[4];
    while gemm.input.len() < 4 {
        gemm.input.push(format!("extra{}", gemm.input.len()));
    }
    let e = import_err(&m);
    assert!(
        e.contains("Gemm takes 2 to 3 input(s), this node has 4"),
        "{e}"
    );

    // Relu with 2 inputs.
    let mut m = base.clone();
    let w = m.graph.as_ref().unwrap().initializer[0].name.clone();
    m.graph.as_mut().unwrap().node[1].input.push(w);
    let e = import_err(&m);
    assert!(e.contains("Relu takes 1 input(s), this node has 2"), "{e}");

    // A uint8 graph input.
    let mut m = base.clone();
    let g = m.graph.as_mut().unwrap();
    let inits: Vec<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    let input = g
        .input
        .iter_mut()
        .find(|i| !inits.contains(&i.name))
        .unwrap();
    input.type_.as_mut().unwrap().mut_tensor_type().elem_type = 2; // UINT8
    let e = import_err(&m);
    assert!(e.contains("element type 2; only FLOAT"), "{e}");
}

/// 20 000 chained Relu nodes took 47 s (each layer re-planned the whole chain); the import
/// is now linear. In a debug build: 21 s before the fix, 0.08 s after (whole test).
#[test]
fn onnx_import_is_linear_in_the_node_count() {
    let bytes = ob::bytes(&ob::relu_chain(20_000));
    let start = Instant::now();
    let imp =
        import::onnx::from_bytes(&bytes, Path::new("chain.onnx"), &Default::default()).unwrap();
    let took = start.elapsed();
    assert_eq!(imp.checkpoint.spec.layers.len(), 20_001);
    assert!(took < Duration::from_secs(2), "20 000 nodes took {took:?}");
}

/// More nodes than the limit: refused before the graph is walked.
#[test]
fn onnx_node_count_is_limited() {
    let bytes = ob::bytes(&ob::relu_chain(100_000));
    let e = err_of(import::onnx::from_bytes(
        &bytes,
        Path::new("chain.onnx"),
        &Default::default(),
    ));
    assert!(
        e.contains("the ONNX graph needs 100001 of ONNX nodes; the limit is 100000"),
        "{e}"
    );
    assert!(e.contains("MARGINCERT_MAX_ONNX_NODES=200000"), "{e}");
}

/// A native checkpoint's bytes with the metadata `format` replaced (`None`: removed).
fn with_format(format: Option<&str>) -> Vec<u8> {
    let good = std::fs::read(fixture("expected").join("tiny-cnn-last.safetensors")).unwrap();
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&good[8..8 + n]).unwrap();
    let meta = header
        .get_mut("__metadata__")
        .unwrap()
        .as_object_mut()
        .unwrap();
    assert_eq!(meta["format"], FORMAT);
    match format {
        Some(f) => meta.insert("format".into(), f.into()),
        None => meta.remove("format"),
    };
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&good[8 + n..]);
    out
}

/// The `format` metadata was never checked.
#[test]
fn the_checkpoint_format_is_checked() {
    let p = Path::new("c.safetensors");
    Checkpoint::from_bytes(&with_format(Some(FORMAT)), p).unwrap();
    let e = err_of(Checkpoint::from_bytes(
        &with_format(Some("margincert-checkpoint/2")),
        p,
    ));
    assert!(
        e.contains(
            "metadata 'format' is \"margincert-checkpoint/2\", expected \"margincert-checkpoint/1\""
        ),
        "{e}"
    );
    let e = err_of(Checkpoint::from_bytes(&with_format(None), p));
    assert!(e.contains("no 'format' key in the metadata"), "{e}");
    // The import of a safetensors file taking its spec from the metadata checks it too.
    let torch = |b: &[u8]| import::torch::from_bytes(b, p, None, &Default::default());
    torch(&with_format(Some(FORMAT))).unwrap();
    let e = err_of(torch(&with_format(Some("other/1"))));
    assert!(e.contains("metadata 'format' is \"other/1\""), "{e}");
    // Every committed native checkpoint carries the right value.
    for dir in ["expected", "import"] {
        for f in std::fs::read_dir(fixture(dir)).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".safetensors")
                && (dir == "expected" || name.ends_with(".native.safetensors"))
            {
                Checkpoint::load(&f).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }
}

/// A checkpoint padded with 3 GiB of zeros was read whole before it was refused. The file
/// here is sparse (no disk space used): refusing it must take well under the time reading
/// 3 GiB would.
#[test]
fn a_checkpoint_padded_with_3_gib_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("padded.safetensors");
    let good = std::fs::read(fixture("expected").join("tiny-cnn-last.safetensors")).unwrap();
    std::fs::write(&p, &good).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(good.len() as u64 + (3 << 30)).unwrap();
    drop(f);
    let start = Instant::now();
    let e = err_of(Checkpoint::load(&p));
    assert!(e.contains("the header declares a file of"), "{e}");
    let e2 = err_of(import::read_model_file(&p));
    assert!(e2.contains("the header declares a file of"), "{e2}");
    let o = margincert(&["certify", p.to_str().unwrap()]);
    assert_clean_failure(&o, "the header declares");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// `/dev/zero` as a checkpoint read until memory ran out.
#[cfg(unix)]
#[test]
fn dev_zero_as_a_checkpoint_is_refused_at_once() {
    let start = Instant::now();
    let z = Path::new("/dev/zero");
    let e = err_of(Checkpoint::load(z));
    assert!(e.contains("header length 0"), "{e}");
    let e = err_of(import::read_model_file(z));
    assert!(e.contains("not a regular file"), "{e}");
    assert!(err_of(import::load(z, None, None, &Default::default())).contains("not a regular"));
    assert_clean_failure(&margincert(&["certify", "/dev/zero"]), "not a regular file");
    assert_clean_failure(&margincert(&["inspect", "/dev/zero"]), "text file size");
    assert!(start.elapsed() < Duration::from_secs(10));
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut z, bytes).unwrap();
    z.finish().unwrap()
}

/// The decompression guard was per file: five CIFAR batches, each under it, together
/// reached 7.4 GB. The bound now holds for the dataset, all files together (here a limit of
/// 7 records; each batch holds 2).
#[test]
fn the_decompression_bound_holds_per_dataset_not_per_file() {
    let batch = gz(&vec![1u8; 2 * CIFAR_RECORD]);
    let batches: Vec<_> = (1..=5)
        .map(|i| (format!("data_batch_{i}.bin.gz").into(), batch.clone()))
        .collect();
    let limit = 7 * CIFAR_RECORD as u64;
    let ok = cifar_from_bytes_limited("c", &batches[..3], limit).unwrap();
    assert_eq!(ok.len(), 6);
    let e = err_of(cifar_from_bytes_limited("c", &batches, limit));
    assert!(e.starts_with("data_batch_4.bin.gz:"), "{e}");
    assert!(
        e.contains("of decompressed dataset size; the limit is"),
        "{e}"
    );
    assert!(
        e.contains("with the 18438 bytes of the batches before it"),
        "{e}"
    );
    assert!(e.contains("MARGINCERT_MAX_DATASET_BYTES="), "{e}");

    // IDX: the images and the labels share one budget.
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
    images.extend([7u8; 8]);
    let labels = vec![0, 0, 8, 1, 0, 0, 0, 2, 1, 2];
    let (ip, lp) = (Path::new("i.gz"), Path::new("l.gz"));
    let (gi, gl) = (gz(&images), gz(&labels));
    let both = (images.len() + labels.len()) as u64;
    let d = idx_from_bytes_limited("m", (ip, &gi), (lp, &gl), 10, both).unwrap();
    assert_eq!(d.labels, [1, 2]);
    let e = err_of(idx_from_bytes_limited(
        "m",
        (ip, &gi),
        (lp, &gl),
        10,
        both - 1,
    ));
    assert!(
        e.starts_with("l.gz:") && e.contains("with the 24 bytes of the images"),
        "{e}"
    );
}

/// A limit set through its variable applies, and a malformed value is an error naming it.
#[test]
fn limits_are_raised_or_lowered_through_their_variables() {
    let spec = fixture("specs").join("tiny-cnn.toml");
    let o = margincert::limits::PARAM_BYTES;
    let out = crate::common::cli::command()
        .env(o.env, "64")
        .args(["train", "--spec", spec.to_str().unwrap(), "--epochs", "1"])
        .args(["--train-subset", "10", "--quiet", "--out"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_clean_failure(&out, "MARGINCERT_MAX_PARAM_BYTES");
    let out = crate::common::cli::command()
        .env(o.env, "lots")
        .args(["train", "--spec", spec.to_str().unwrap(), "--epochs", "1"])
        .args(["--train-subset", "10", "--quiet", "--out"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_clean_failure(&out, "MARGINCERT_MAX_PARAM_BYTES=\"lots\" is not a size");
}

/// Reading a checkpoint or a state_dict stayed quadratic in the tensor count (every name was
/// looked up in a list of names): 20 000 weight layers (40 000 tensors) now load in well
/// under two seconds in a debug build.
#[test]
fn deep_checkpoints_load_in_linear_time() {
    let spec = ModelSpec {
        name: String::new(),
        input: Shape::flat(2),
        layers: (0..20_000).map(|_| Layer::dense(2, true)).collect(),
    };
    let params = Params::he_normal(&spec, 1).unwrap();
    let c = Checkpoint {
        spec: spec.clone(),
        params,
        train: None,
    };
    let bytes = c.to_bytes().unwrap();
    let start = Instant::now();
    let back = Checkpoint::from_bytes(&bytes, Path::new("deep.safetensors")).unwrap();
    let imp = import::torch::from_bytes(
        &bytes,
        Path::new("deep.safetensors"),
        Some(&spec),
        &Default::default(),
    )
    .unwrap();
    let took = start.elapsed();
    assert_eq!(back, c);
    assert_eq!(imp.checkpoint.params, c.params);
    assert!(took < Duration::from_secs(2), "took {took:?}");
}
