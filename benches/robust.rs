//! Certified L∞ radii per second (IBP bisection, 10 steps; CROWN+IBP) next to
//! plain f32 inference on the same examples, for the paper's MNIST CNN and an MLP
//! 784-100-10 (He-initialised; labels set to the f32 prediction so every clean margin is
//! positive and the bisection runs all its steps).
//!
//! `cargo bench --bench robust` (a minute or two).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use margincert::certify::CertifiedNet;
use margincert::certify::margin::Task;
use margincert::data::{DataSource, Dataset};
use margincert::model::{ModelSpec, Params, presets};
use margincert::nn::Network;
use margincert::robust::{crown, ibp_radius};

fn setup(spec: &ModelSpec, n: usize) -> (Params, Dataset) {
    let split = "embedded".parse::<DataSource>().unwrap().load().unwrap();
    let mut data = split.test.take(n);
    let params = Params::he_normal(spec, 1).unwrap();
    let net = Network::new(spec).unwrap();
    let logits = net.forward(&params, &data.to_f32(), data.len()).unwrap();
    let k = net.outputs();
    for (i, l) in data.labels.iter_mut().enumerate() {
        let row = &logits[i * k..(i + 1) * k];
        *l = (0..k).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() as u8;
    }
    (params, data)
}

fn bench(c: &mut Criterion) {
    let n = 32;
    for (name, spec) in [
        (
            "mlp-784-100-10",
            presets::mlp_with(margincert::model::Shape { c: 1, h: 28, w: 28 }, &[100], 10),
        ),
        ("mnist-cnn", presets::mnist_cnn()),
    ] {
        let (params, data) = setup(&spec, n);
        let mut g = c.benchmark_group(name);
        g.sample_size(10).measurement_time(Duration::from_secs(8));
        g.throughput(Throughput::Elements(n as u64));
        let f32net = Network::new(&spec).unwrap();
        let x = data.to_f32();
        g.bench_function("f32 inference", |b| {
            b.iter(|| black_box(f32net.forward(&params, &x, n).unwrap()))
        });
        let net = CertifiedNet::new(&spec, &params).unwrap();
        g.bench_function("certified Linf radius (IBP, 10 bisection steps)", |b| {
            b.iter(|| black_box(ibp_radius(&net, &data, Task::Multi(10), 0.1, 10).unwrap()))
        });
        if let Ok(cr) = crown::Crown::new(&spec, &params) {
            g.bench_function("certified Linf radius (CROWN+IBP, 10 steps)", |b| {
                b.iter(|| {
                    black_box(
                        crown::crown_radius(&cr, &net, &data, Task::Multi(10), 0.1, 10).unwrap(),
                    )
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
