//! Certified forward pass vs a plain f32 forward pass on the paper's MNIST CNN.
//!
//! The f32 baseline is the training path's own forward pass (`nn::Network::forward`:
//! im2col and gemm, channels-last, parallel over the batch), so the ratio is what
//! certifying costs over plain inference with margincert.
//!
//! Run: `cargo bench --bench certify` (uses the first 512 MNIST training images when the
//! shared data folder is present: `$MARGINCERT_SHARED_DATA`, else `../shared/data` next to
//! the crate; else random pixels). On a shared machine, compare CPU
//! time instead of wall time: `MARGINCERT_CPU_RATIO=1 cargo bench --bench certify`.

use criterion::{Criterion, criterion_group};
use margincert::certify::CertifiedNet;
use margincert::certify::{ForwardMode, RadiusMode};
use margincert::model::{Params, Shape, presets};
use margincert::nn::Network;
use std::hint::black_box;
use std::io::Read;

fn pixels(n: usize) -> Vec<u8> {
    let dir = std::env::var("MARGINCERT_SHARED_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
        });
    let mut out = Vec::new();
    if let Ok(f) = std::fs::File::open(dir.join("mnist/train-images-idx3-ubyte.gz"))
        && flate2::read::GzDecoder::new(f)
            .read_to_end(&mut out)
            .is_ok()
        && out.len() >= 16 + n * 784
    {
        return out[16..16 + n * 784].to_vec();
    }
    eprintln!("MNIST not found: random pixels");
    (0..n * 784).map(|i| (i * 7919 % 256) as u8).collect()
}

/// The plain f32 forward pass of the training path (`nn::Network`), in chunks of 1,000.
fn f32_forward(net: &Network, params: &Params, px: &[u8]) -> Vec<f32> {
    let il = net.spec().input.len();
    let mut out = Vec::new();
    for c in px.chunks(1000 * il) {
        let x: Vec<f32> = c.iter().map(|&p| p as f32 / 255.0).collect();
        out.extend(net.forward(params, &x, c.len() / il).unwrap());
    }
    out
}

fn bench(c: &mut Criterion) {
    let n = 512;
    let spec = presets::mnist_cnn();
    assert_eq!(spec.input, Shape::new(1, 28, 28));
    let params = Params::he_normal(&spec, 1).unwrap();
    let px = pixels(n);
    let net = CertifiedNet::new(&spec, &params).unwrap();
    let f32_net = Network::new(&spec).unwrap();
    let mut g = c.benchmark_group("mnist_cnn_512");
    g.sample_size(10);
    g.bench_function("f32_forward", |b| {
        b.iter(|| black_box(f32_forward(&f32_net, &params, black_box(&px))))
    });
    g.bench_function("certified_logits", |b| {
        b.iter(|| black_box(net.logits(black_box(&px), n).unwrap()))
    });
    g.finish();
}

/// Process CPU time (user + system, all threads) in seconds, from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses): utime is field 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ = 100 on Linux
}

/// CPU-time ratio, robust to other processes sharing the machine:
/// `MARGINCERT_CPU_RATIO=1 cargo bench --bench certify`.
fn cpu_ratio() {
    let n = 512;
    let reps = 6;
    let spec = presets::mnist_cnn();
    let params = Params::he_normal(&spec, 1).unwrap();
    let px = pixels(n);
    let net = CertifiedNet::new(&spec, &params).unwrap();
    let f32_net = Network::new(&spec).unwrap();
    let t0 = cpu_seconds().expect("/proc/self/stat");
    for _ in 0..reps {
        black_box(f32_forward(&f32_net, &params, &px));
    }
    let t1 = cpu_seconds().unwrap();
    for _ in 0..reps {
        black_box(net.logits(&px, n).unwrap());
    }
    let t2 = cpu_seconds().unwrap();
    let fast = net.clone().with_radius_mode(RadiusMode::RowSum);
    for _ in 0..reps {
        black_box(fast.logits(&px, n).unwrap());
    }
    let t3 = cpu_seconds().unwrap();
    // What `certify` runs by default: f64 first, double-double only where too wide.
    let auto = net.clone().with_forward_mode(ForwardMode::Auto).unwrap();
    let mut redone = 0;
    for _ in 0..reps {
        let (b, stats) = auto.logits_with_stats(&px, n).unwrap();
        black_box(b);
        redone = stats.dd_examples;
    }
    let t4 = cpu_seconds().unwrap();
    let r = reps as f64;
    let (a, b, c, d) = ((t1 - t0) / r, (t2 - t1) / r, (t3 - t2) / r, (t4 - t3) / r);
    println!(
        "CPU time per {n} examples: f32 forward {a:.3} s, certified logits {b:.3} s (ratio {:.2}), \
         row-sum radius mode {c:.3} s (ratio {:.2}), Auto precision {d:.3} s (ratio {:.2}, \
         {redone} examples redone in double-double)",
        b / a,
        c / a,
        d / a
    );
}

criterion_group!(benches, bench);

fn main() {
    if std::env::var_os("MARGINCERT_CPU_RATIO").is_some() {
        cpu_ratio();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
