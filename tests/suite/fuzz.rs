//! Property-based fuzzing of every parser of untrusted input (issue 12): safetensors
//! checkpoints and state_dicts (header and data), IDX, CIFAR-10 batches, the gzip wrapper,
//! ONNX protobuf, TOML/JSON model specs and certificate JSON (parsed, then verified).
//!
//! Valid files are mutated byte by byte (bit flips, byte sets, truncation, extension,
//! splices of the file into itself, deletions, insertions) and structurally (huge, zero and
//! negative dimensions, wrong data types). The property is the same everywhere: the parser
//! returns `Ok` or `Err` — never panics or aborts — within a bounded time per case, and
//! what it accepts satisfies the type's invariant. Memory stays bounded because every size
//! is checked against `margincert::limits` before allocation; the data parsers run with
//! small explicit limits here.
//!
//! The default suite runs [`CASES`] deterministic cases per property (the whole module in a
//! few seconds in a debug build). The long run draws [`LONG_CASES`] random cases per
//! property: `cargo test --release --test suite -- --ignored fuzz::long`.

use std::fmt::Debug;
use std::io::Cursor;
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};

use margincert::certify::certificate::Certificate;
use margincert::certify::verify::verify;
use margincert::checkpoint::{Checkpoint, read_safetensors};
use margincert::data::{Dataset, cifar_from_bytes_limited, embedded, idx_from_bytes_limited};
use margincert::import;
use margincert::io::decode_into_limited;
use margincert::model::{Layer, ModelSpec, Padding, Params, Shape};

use crate::common::data::fixture;
use crate::common::onnx::{self as ob, initializer, int_attr, ints_attr, node};

/// Cases per property in the default suite.
pub const CASES: u32 = 512;
/// Cases per property in the long (ignored) run.
pub const LONG_CASES: u32 = 50_000;
/// Longest time one case may take (debug build, shared machine).
const CASE_TIME: Duration = Duration::from_secs(5);
/// The decompressed-size limit the data parsers run with here.
const DATA_LIMIT: u64 = 1 << 20;

/// One byte-level mutation; positions are taken modulo the length of the input.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
    Splice { from: usize, to: usize, len: usize },
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
}

/// Bytes that often change a parser's path: zero, all ones, sign bits, digits, braces.
const INTERESTING: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'9', b'-', b'{', b'"', b'e', 8];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (any::<usize>(), proptest::sample::select(INTERESTING))
            .prop_map(|(i, v)| Mutation::Set(i, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        (any::<usize>(), any::<usize>(), 1usize..256)
            .prop_map(|(from, to, len)| Mutation::Splice { from, to, len }),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

fn apply(base: &[u8], ms: &[Mutation]) -> Vec<u8> {
    let mut b = base.to_vec();
    for m in ms {
        let len = b.len().max(1);
        match m {
            Mutation::Flip(i, bit) => {
                if let Some(x) = b.get_mut(i % len) {
                    *x ^= 1 << bit;
                }
            }
            Mutation::Set(i, v) => {
                if let Some(x) = b.get_mut(i % len) {
                    *x = *v;
                }
            }
            Mutation::Truncate(i) => b.truncate(i % len),
            Mutation::Extend(v) => b.extend_from_slice(v),
            Mutation::Splice { from, to, len: n } => {
                let from = from % len;
                let seg: Vec<u8> = b.iter().skip(from).take(*n).copied().collect();
                let to = (to % len).min(b.len());
                let end = (to + seg.len()).min(b.len());
                b.splice(to..end, seg);
            }
            Mutation::Delete(i, n) => {
                let s = (i % len).min(b.len());
                let e = (s + n).min(b.len());
                b.drain(s..e);
            }
            Mutation::Insert(i, v) => {
                let s = (i % len).min(b.len());
                b.splice(s..s, v.iter().copied());
            }
        }
    }
    b
}

/// 1 to 4 mutations of `base`.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    vec(mutation(), 1..5).prop_map(move |ms| apply(&base, &ms))
}

/// Runs `property` on `cases` values of `strategy` (deterministic unless `long`), failing on
/// a panic (proptest catches and shrinks it) or a case slower than [`CASE_TIME`].
fn fuzz<S: Strategy>(long: bool, strategy: S, property: impl Fn(S::Value))
where
    S::Value: Debug,
{
    let cases = if long { LONG_CASES } else { CASES };
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = if long {
        TestRunner::new(config)
    } else {
        let rng = TestRng::deterministic_rng(config.rng_algorithm);
        TestRunner::new_with_rng(config, rng)
    };
    let count = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&strategy, |v| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let t = Instant::now();
            property(v);
            let took = t.elapsed();
            prop_assert!(took < CASE_TIME, "one case took {took:?}");
            Ok(())
        })
        .unwrap();
    // Every case ran (none was rejected by a filter).
    assert_eq!(count.into_inner(), cases as usize);
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut z, bytes).unwrap();
    z.finish().unwrap()
}

fn check_dataset(d: &Dataset) {
    assert_eq!(d.pixels.len(), d.labels.len() * d.shape.len());
    assert!(d.labels.iter().all(|&l| (l as usize) < d.classes));
}

// ---------------------------------------------------------------------------------------------
// The properties.

fn safetensors_checkpoint(long: bool) {
    let base = read("expected/tiny-cnn-last.safetensors");
    fuzz(long, mutated(base), |b| {
        let p = Path::new("fuzz.safetensors");
        if let Ok(c) = Checkpoint::from_bytes(&b, p) {
            c.params.check(&c.spec).unwrap();
        }
        // The bounded reader returns exactly the file when it accepts it.
        if let Ok(r) = read_safetensors(Cursor::new(&b), Some(b.len() as u64), p) {
            assert_eq!(r, b);
        }
        let _ = read_safetensors(Cursor::new(&b), None, p);
    });
}

fn safetensors_state_dict(long: bool) {
    let base = read("import/cnn_bias.safetensors");
    let spec = ModelSpec::from_file(&fixture("import/cnn_bias.toml")).unwrap();
    fuzz(long, mutated(base), |b| {
        let p = Path::new("fuzz.safetensors");
        if let Ok(imp) = import::torch::from_bytes(&b, p, Some(&spec), &Default::default()) {
            imp.checkpoint.params.check(&imp.checkpoint.spec).unwrap();
        }
        let _ = import::torch::from_bytes(&b, p, None, &Default::default());
    });
}

/// A valid IDX pair: 3 images of 4 x 5 and their labels.
fn idx_pair() -> (Vec<u8>, Vec<u8>) {
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5];
    images.extend((0..60u8).map(|i| i.wrapping_mul(37)));
    (images, vec![0, 0, 8, 1, 0, 0, 0, 3, 1, 9, 4])
}

fn idx(long: bool) {
    let (images, labels) = idx_pair();
    let strategy = (
        any::<bool>(),
        any::<bool>(),
        mutated(images.clone()),
        mutated(labels.clone()),
    );
    fuzz(long, strategy, |(gzip, which, mi, ml)| {
        let (i, l) = if which {
            (mi, labels.clone())
        } else {
            (images.clone(), ml)
        };
        let (i, l) = if gzip { (gz(&i), gz(&l)) } else { (i, l) };
        let r = idx_from_bytes_limited(
            "fuzz",
            (Path::new("i"), &i),
            (Path::new("l"), &l),
            10,
            DATA_LIMIT,
        );
        if let Ok(d) = r {
            check_dataset(&d);
        }
    });
}

fn cifar(long: bool) {
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072u32).map(|j| (j * 7 + label as u32) as u8));
        r
    };
    let plain = [record(3), record(9)].concat();
    let zipped = gz(&record(0));
    let strategy = (
        any::<bool>(),
        mutated(plain.clone()),
        mutated(zipped.clone()),
    );
    fuzz(long, strategy, |(which, mp, mz)| {
        let batches = if which {
            vec![("a".into(), mp), ("b".into(), zipped.clone())]
        } else {
            vec![("a".into(), plain.clone()), ("b".into(), mz)]
        };
        if let Ok(d) = cifar_from_bytes_limited("fuzz", &batches, DATA_LIMIT) {
            check_dataset(&d);
            assert!((d.pixels.len() as u64) < DATA_LIMIT);
        }
    });
}

fn gzip(long: bool) {
    let content: Vec<u8> = (0..4096u32).map(|i| (i * i % 251) as u8).collect();
    let multi = [gz(&content), gz(&content[..100])].concat();
    // Byte mutations of a multi-member stream, and bombs of every size around the limit.
    let strategy = (mutated(multi), 0usize..(64 << 10), 1usize..(32 << 10));
    fuzz(long, strategy, |(z, bomb, limit)| {
        let mut out = vec![7u8];
        match decode_into_limited(Path::new("z"), &z, &mut out, limit) {
            Ok(n) => assert!(n <= limit && out.len() == n + 1),
            Err(_) => assert_eq!(out, [7]),
        }
        let zeros = gz(&vec![0u8; bomb]);
        let mut out = Vec::new();
        let r = decode_into_limited(Path::new("bomb"), &zeros, &mut out, limit);
        assert_eq!(r.is_ok(), bomb <= limit, "{bomb} bytes, limit {limit}");
        assert!(out.len() <= limit);
    });
}

fn onnx_bytes(long: bool) {
    let a = read("import/cnn_bias.onnx");
    let b = read("import/mlp.onnx");
    let strategy = prop_oneof![mutated(a), mutated(b)];
    fuzz(long, strategy, |m| {
        if let Ok(imp) = import::onnx::from_bytes(&m, Path::new("fuzz.onnx"), &Default::default()) {
            imp.checkpoint.params.check(&imp.checkpoint.spec).unwrap();
        }
    });
}

/// Dimensions and geometry values that break careless arithmetic.
const HUGE: &[i64] = &[
    -1,
    0,
    1,
    2,
    3,
    28,
    65536,
    (1 << 31) - 1,
    1 << 32,
    1 << 40,
    1 << 62,
    i64::MAX,
    i64::MIN,
];

fn onnx_structure(long: bool) {
    let dim = || proptest::sample::select(HUGE);
    let strategy = (
        vec(dim(), 4),
        vec(dim(), 4),
        vec(dim(), 2),
        vec(dim(), 4),
        proptest::sample::select(&[1i32, 2, 3, 6, 7, 10, 11, 16][..]),
        0usize..4,
    );
    fuzz(long, strategy, |(input, w, strides, pads, dtype, extra)| {
        // input -> Conv(w, strides, pads) -> Flatten -> Gemm, with weights of the declared
        // dims (no data) and a given element type: never an allocation of the declared size.
        let mut w0 = initializer("w0", &[], &[0.5; 4]);
        w0.dims = w.clone();
        w0.data_type = dtype;
        let mut w1 = initializer("w1", &[], &[0.5; 4]);
        w1.dims = vec![2, w[0].wrapping_mul(4)];
        let mut nodes = vec![
            node(
                "Conv",
                &["x", "w0"],
                "c",
                vec![ints_attr("strides", &strides), ints_attr("pads", &pads)],
            ),
            node("Flatten", &["c"], "f", vec![int_attr("axis", 1)]),
            node("Gemm", &["f", "w1"], "y", vec![int_attr("transB", 1)]),
        ];
        for i in 0..extra {
            nodes.push(node("Relu", &[if i == 0 { "y" } else { "r" }], "r", vec![]));
        }
        let mut m = ob::model(&input, nodes, vec![w0, w1], &[1, 2]);
        m.graph.as_mut().unwrap().input[0]
            .type_
            .as_mut()
            .unwrap()
            .mut_tensor_type()
            .elem_type = dtype;
        let r = import::onnx::from_bytes(&ob::bytes(&m), Path::new("s.onnx"), &Default::default());
        if let Ok(imp) = r {
            imp.checkpoint.params.check(&imp.checkpoint.spec).unwrap();
        }
    });
}

fn spec_text(long: bool) {
    let toml = read("specs/tiny-cnn.toml");
    let json = ModelSpec::parse(std::str::from_utf8(&toml).unwrap())
        .unwrap()
        .to_json()
        .into_bytes();
    let strategy = prop_oneof![mutated(toml), mutated(json)];
    fuzz(long, strategy, |b| {
        if let Ok(s) = ModelSpec::parse(&String::from_utf8_lossy(&b)) {
            check_spec(&s);
        }
    });
}

/// What an accepted spec promises: a plan, a parameter count within the limit, and (when
/// small) initial parameters that pass their own check.
fn check_spec(s: &ModelSpec) {
    let plan = s.plan().unwrap();
    let n = s.num_params().unwrap();
    assert!(n as u64 * 4 <= margincert::limits::PARAM_BYTES.default);
    assert!(plan.iter().all(|p| p.output.checked_len().is_some()));
    if n < 200_000 {
        Params::he_normal(s, 1).unwrap().check(s).unwrap();
    }
}

fn spec_structure(long: bool) {
    let size = || {
        prop_oneof![
            0usize..40,
            proptest::sample::select(
                &[
                    65536usize,
                    1 << 31,
                    1 << 32,
                    1 << 40,
                    1 << 62,
                    1 << 63,
                    usize::MAX
                ][..]
            )
        ]
    };
    let padding = prop_oneof![
        Just(Padding::Valid),
        Just(Padding::Same),
        size().prop_map(Padding::Explicit)
    ];
    let layer = prop_oneof![
        (size(), any::<bool>()).prop_map(|(out, bias)| Layer::Dense { out, bias }),
        (size(), size(), size(), padding, any::<bool>()).prop_map(
            |(out, kernel, stride, padding, bias)| Layer::Conv2d {
                out,
                kernel,
                stride,
                padding,
                bias
            }
        ),
        (size(), proptest::option::of(size()))
            .prop_map(|(size, stride)| Layer::MaxPool { size, stride }),
        (size(), proptest::option::of(size()))
            .prop_map(|(size, stride)| Layer::AvgPool { size, stride }),
        Just(Layer::Flatten),
        Just(Layer::Relu),
        proptest::sample::select(&[0.1f32, -2.0, f32::NAN, f32::INFINITY][..])
            .prop_map(|slope| Layer::LeakyRelu { slope }),
    ];
    let strategy = (size(), size(), size(), vec(layer, 0..6), any::<bool>());
    fuzz(long, strategy, |(c, h, w, layers, via_text)| {
        let s = ModelSpec {
            name: String::new(),
            input: Shape::new(c, h, w),
            layers,
        };
        // Through the text form when it serializes (NaN slopes do not in JSON).
        let r = if via_text {
            ModelSpec::parse(&s.to_json())
        } else {
            s.validate().map(|_| s.clone())
        };
        if let Ok(s) = r {
            check_spec(&s);
        }
    });
}

fn certificate(long: bool) {
    let text = read("expected/linear-last.cert.json");
    let ck = Checkpoint::load(&fixture("expected/linear-last.safetensors")).unwrap();
    let data = embedded().unwrap().train.binary(0, 1).unwrap().take(40);
    // The unmutated certificate verifies.
    let cert = Certificate::from_json(std::str::from_utf8(&text).unwrap()).unwrap();
    verify(&cert, &ck.spec, &ck.params, &data).unwrap();
    fuzz(long, mutated(text), |b| {
        if let Ok(c) = Certificate::from_json(&String::from_utf8_lossy(&b)) {
            let _ = verify(&c, &ck.spec, &ck.params, &data);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The default suite: CASES deterministic cases per property.

#[test]
fn safetensors_checkpoints_never_panic() {
    safetensors_checkpoint(false);
}
#[test]
fn safetensors_state_dicts_never_panic() {
    safetensors_state_dict(false);
}
#[test]
fn idx_files_never_panic() {
    idx(false);
}
#[test]
fn cifar_batches_never_panic() {
    cifar(false);
}
#[test]
fn gzip_streams_are_bounded() {
    gzip(false);
}
#[test]
fn onnx_bytes_never_panic() {
    onnx_bytes(false);
}
#[test]
fn onnx_structures_never_panic() {
    onnx_structure(false);
}
#[test]
fn spec_texts_never_panic() {
    spec_text(false);
}
#[test]
fn spec_structures_never_panic() {
    spec_structure(false);
}
#[test]
fn certificates_never_panic() {
    certificate(false);
}

// ---------------------------------------------------------------------------------------------
// The long run: LONG_CASES random cases per property.

#[test]
#[ignore = "long fuzz run; run with: cargo test --release --test suite -- --ignored fuzz::long"]
fn long_run_of_every_property() {
    safetensors_checkpoint(true);
    safetensors_state_dict(true);
    idx(true);
    cifar(true);
    gzip(true);
    onnx_bytes(true);
    onnx_structure(true);
    spec_text(true);
    spec_structure(true);
    certificate(true);
}
