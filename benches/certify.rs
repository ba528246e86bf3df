//! Certified forward pass vs a plain f32 forward pass on the paper's MNIST CNN.
//!
//! The f32 baseline is written here (im2col + ndarray/matrixmultiply sgemm, rayon over
//! chunks of 64 examples — the same structure as the certified pass), not taken from the
//! `nn` module, so the ratio compares the same algorithm in f32 vs certified f64.
//!
//! Run: `cargo bench --bench certify` (uses the first 512 MNIST training images when
//! /work/shared/data is present, else random pixels). On a shared machine, compare CPU
//! time instead of wall time: `MARGINCERT_CPU_RATIO=1 cargo bench --bench certify`.

use criterion::{Criterion, criterion_group};
use margincert::certify::CertifiedNet;
use margincert::certify::enclosure::RadiusMode;
use margincert::model::{Layer, ModelSpec, Params, Shape, presets};
use ndarray::{ArrayView2, ArrayViewMut2, linalg::general_mat_mul};
use rayon::prelude::*;
use std::hint::black_box;
use std::io::Read;

fn pixels(n: usize) -> Vec<u8> {
    let dir = std::env::var("MARGINCERT_SHARED_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| "/work/shared/data".into());
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

/// Plain f32 forward (no certification) of a spec, one chunk of examples.
fn f32_chunk(spec: &ModelSpec, params: &Params, x: &[f32], batch: usize) -> Vec<f32> {
    let plan = spec.plan().unwrap();
    let mut w = params.layers.iter();
    let mut x = x.to_vec();
    for p in &plan {
        let il = p.input.len();
        let ol = p.output.len();
        x = match p.layer {
            Layer::Dense { out, .. } => {
                let lp = w.next().unwrap();
                let mut y = vec![0f32; batch * out];
                let a = ArrayView2::from_shape((batch, il), &x[..]).unwrap();
                let b = ArrayView2::from_shape((out, il), &lp.weight[..]).unwrap();
                let mut c = ArrayViewMut2::from_shape((batch, out), &mut y[..]).unwrap();
                general_mat_mul(1.0, &a, &b.t(), 0.0, &mut c);
                y
            }
            Layer::Conv2d { out, .. } => {
                let lp = w.next().unwrap();
                let win = p.window.unwrap();
                let k = lp.fan_in();
                let np = win.out_h * win.out_w;
                let mut col = vec![0f32; k * np];
                let mut y = vec![0f32; batch * ol];
                // im2col gather table (input index or u32::MAX in the padding), as in the
                // certified pass.
                let mut table = Vec::with_capacity(k * np);
                for c in 0..p.input.c {
                    for ky in 0..win.k {
                        for kx in 0..win.k {
                            for oy in 0..win.out_h {
                                let iy = win.in_row(oy, ky);
                                for ox in 0..win.out_w {
                                    table.push(match (iy, win.in_col(ox, kx)) {
                                        (Some(iy), Some(ix)) => {
                                            ((c * win.in_h + iy) * win.in_w + ix) as u32
                                        }
                                        _ => u32::MAX,
                                    });
                                }
                            }
                        }
                    }
                }
                for b in 0..batch {
                    let xb = &x[b * il..(b + 1) * il];
                    for (c, &g) in col.iter_mut().zip(&table) {
                        *c = if g == u32::MAX { 0.0 } else { xb[g as usize] };
                    }
                    let a = ArrayView2::from_shape((out, k), &lp.weight[..]).unwrap();
                    let bm = ArrayView2::from_shape((k, np), &col[..]).unwrap();
                    let mut c =
                        ArrayViewMut2::from_shape((out, np), &mut y[b * ol..(b + 1) * ol]).unwrap();
                    general_mat_mul(1.0, &a, &bm, 0.0, &mut c);
                }
                y
            }
            Layer::MaxPool { .. } => {
                let win = p.window.unwrap();
                let mut y = vec![0f32; batch * ol];
                for b in 0..batch {
                    for c in 0..p.input.c {
                        for oy in 0..win.out_h {
                            for ox in 0..win.out_w {
                                let mut m = f32::NEG_INFINITY;
                                for ky in 0..win.k {
                                    for kx in 0..win.k {
                                        let iy = oy * win.stride + ky;
                                        let ix = ox * win.stride + kx;
                                        m = m.max(x[b * il + (c * win.in_h + iy) * win.in_w + ix]);
                                    }
                                }
                                y[b * ol + (c * win.out_h + oy) * win.out_w + ox] = m;
                            }
                        }
                    }
                }
                y
            }
            Layer::Relu => x.into_iter().map(|v| v.max(0.0)).collect(),
            Layer::Flatten => x,
            _ => unimplemented!("bench covers the paper CNN's layers"),
        };
    }
    x
}

/// Examples per parallel chunk of the f32 baseline (`MARGINCERT_F32_CHUNK`, default 64).
static CHUNK: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    std::env::var("MARGINCERT_F32_CHUNK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
});

fn f32_forward(spec: &ModelSpec, params: &Params, px: &[u8]) -> Vec<f32> {
    let il = spec.input.len();
    px.par_chunks(*CHUNK * il)
        .flat_map_iter(|c| {
            let x: Vec<f32> = c.iter().map(|&p| p as f32 / 255.0).collect();
            f32_chunk(spec, params, &x, c.len() / il)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let n = 512;
    let spec = presets::mnist_cnn();
    assert_eq!(spec.input, Shape::new(1, 28, 28));
    let params = Params::he_normal(&spec, 1).unwrap();
    let px = pixels(n);
    let net = CertifiedNet::new(&spec, &params).unwrap();
    let mut g = c.benchmark_group("mnist_cnn_512");
    g.sample_size(10);
    g.bench_function("f32_forward", |b| {
        b.iter(|| black_box(f32_forward(&spec, &params, black_box(&px))))
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
    let t0 = cpu_seconds().expect("/proc/self/stat");
    for _ in 0..reps {
        black_box(f32_forward(&spec, &params, &px));
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
    let r = reps as f64;
    let (a, b, c) = ((t1 - t0) / r, (t2 - t1) / r, (t3 - t2) / r);
    println!(
        "CPU time per {n} examples: f32 forward {a:.3} s, certified logits {b:.3} s (ratio {:.2}), \
         row-sum radius mode {c:.3} s (ratio {:.2})",
        b / a,
        c / a
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
