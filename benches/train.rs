//! Criterion benchmarks of the f32 kernels: one training step (forward_train, softmax
//! cross-entropy gradient, backward, SGD update) at batch 100 and inference at batch 1000,
//! for the paper's MNIST CNN and the MLP 784-1000-1000-10; plus the sgemm backend
//! comparison (`gemm` vs `matrixmultiply`) on the products these nets run.
//!
//! `cargo bench --bench train` (a few minutes). Threads: the global rayon pool
//! (`RAYON_NUM_THREADS`, default = cores). The matrixmultiply side uses
//! `MATMUL_NUM_THREADS` (default = cores).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use margincert::model::{ModelSpec, Params, presets};
use margincert::nn::{Network, Workspace};

fn images(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n * 784)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % 256) as f32 / 255.0
        })
        .collect()
}

/// Mean softmax cross-entropy gradient for labels `i % k`.
fn xent_grad(logits: &[f32], k: usize, d: &mut [f32]) {
    let b = logits.len() / k;
    for i in 0..b {
        let z = &logits[i * k..(i + 1) * k];
        let m = z.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let s: f32 = z.iter().map(|&v| (v - m).exp()).sum();
        for j in 0..k {
            let p = (z[j] - m).exp() / s;
            d[i * k + j] = (p - if j == i % k { 1.0 } else { 0.0 }) / b as f32;
        }
    }
}

fn bench_model(c: &mut Criterion, name: &str, spec: ModelSpec) {
    let net = Network::new(&spec).unwrap();
    let k = net.outputs();
    let mut params = Params::he_normal(&spec, 0).unwrap();
    let mut grads = params.zeros_like();
    let mut g = c.benchmark_group(name);
    g.sample_size(10).measurement_time(Duration::from_secs(8));

    let batch = 100;
    let x = images(batch, 1);
    let mut ws = Workspace::new(&net, batch);
    let mut dl = vec![0.0; batch * k];
    g.throughput(Throughput::Elements(batch as u64));
    g.bench_function("train_step_b100", |b| {
        b.iter(|| {
            let logits = net.forward_train(&params, &x, batch, &mut ws).unwrap();
            xent_grad(logits, k, &mut dl);
            net.backward(&params, &mut ws, &dl, &mut grads).unwrap();
            for (p, gr) in params.layers.iter_mut().zip(&grads.layers) {
                for (w, d) in p.weight.iter_mut().zip(&gr.weight) {
                    *w -= 0.01 * d;
                }
            }
        })
    });

    let batch = 1000;
    let x = images(batch, 2);
    g.throughput(Throughput::Elements(batch as u64));
    g.bench_function("forward_b1000", |b| {
        b.iter(|| black_box(net.forward(&params, &x, batch).unwrap()))
    });
    g.finish();
}

fn models(c: &mut Criterion) {
    bench_model(c, "mnist_cnn", presets::mnist_cnn());
    bench_model(c, "mlp", presets::mlp());
}

/// `C[m,n] = A[m,k] B[k,n]`, all row-major, with each backend.
fn sgemm_backends(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    let mut g = c.benchmark_group("sgemm");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    // MLP forward at batch 100, CNN conv2 chunk forward, CNN dense1 forward at batch 100,
    // a square product.
    for (m, n, k) in [
        (100, 1000, 784),
        (3528, 64, 288),
        (100, 1024, 3136),
        (1024, 1024, 1024),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        g.bench_function(format!("gemm_{m}x{n}x{k}"), |bch| {
            bch.iter(|| {
                // SAFETY: a is m x k, b is k x n, out is m x n, all row-major and fully in
                // bounds for these strides; out does not alias a or b.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        out.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(threads),
                    )
                }
            })
        });
        g.bench_function(format!("matrixmultiply_{m}x{n}x{k}"), |bch| {
            bch.iter(|| {
                // SAFETY: as above.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        k as isize,
                        1,
                        b.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        out.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, models, sgemm_backends);
criterion_main!(benches);
