//! Training / inference throughput of the f32 kernels, for comparison with the PyTorch
//! anchor (`benches/anchor.sh`).
//!
//! ```text
//! cargo run --release --example throughput -- --model cnn|mlp --mode train|infer \
//!     --batch B --seconds S --threads T [--runs R]
//! ```
//!
//! Prints one JSON line `{model, mode, batch, threads, images_per_s, min, max, ...}` where
//! `images_per_s` is the median over `--runs` runs of (images / wall time) after a warm-up.
//! A training step is exactly what the anchor times: gather a random batch, forward_train,
//! mean softmax cross-entropy gradient, backward, SGD update `w -= lr * g` (lr 0.01).
//! Data: Fashion-MNIST train images from /usr/share/datasets/fashion-mnist when present,
//! else synthetic images (fixed seed).

use std::io::Read;
use std::time::Instant;

use clap::Parser;
use margincert::model::{Params, presets};
use margincert::nn::{Network, Workspace};
use rayon::prelude::*;

#[derive(Parser, Debug)]
struct Args {
    /// `cnn` (the paper's bias-free MNIST CNN), `cnn-first-bias` (bias on the first conv,
    /// as the anchor's default) or `mlp` (784-1000-1000-10).
    #[arg(long, default_value = "cnn")]
    model: String,
    /// `train` or `infer`.
    #[arg(long, default_value = "train")]
    mode: String,
    /// Batch size.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Timed seconds per run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up seconds per run (at least 3 steps).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// rayon threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Number of runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Reads a gzipped IDX file and returns (dims, payload bytes).
fn read_idx(path: &str) -> Option<(Vec<usize>, Vec<u8>)> {
    let f = std::fs::File::open(path).ok()?;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(f).read_to_end(&mut raw).ok()?;
    if raw.len() < 4 || raw[0] != 0 || raw[1] != 0 || raw[2] != 8 {
        return None;
    }
    let nd = raw[3] as usize;
    let mut dims = Vec::new();
    for i in 0..nd {
        let b = raw.get(4 + 4 * i..8 + 4 * i)?;
        dims.push(u32::from_be_bytes(b.try_into().ok()?) as usize);
    }
    let body = raw.get(4 + 4 * nd..)?.to_vec();
    (body.len() == dims.iter().product::<usize>()).then_some((dims, body))
}

/// CPU time of the whole process (all threads) in seconds, from /proc/self/stat (utime +
/// stime, at the usual 100 ticks per second); `None` where unavailable.
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// SplitMix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Images as f32 p/255 (`[n, 784]`), labels, and the data set's name.
fn load() -> (Vec<f32>, Vec<u8>, &'static str) {
    let imgs = read_idx(&format!("{FMNIST}/train-images-idx3-ubyte.gz"));
    let labs = read_idx(&format!("{FMNIST}/train-labels-idx1-ubyte.gz"));
    if let (Some((d, px)), Some((_, lb))) = (imgs, labs)
        && d.len() == 3
        && d[1] * d[2] == 784
        && lb.len() == d[0]
    {
        return (
            px.iter().map(|&p| p as f32 / 255.0).collect(),
            lb,
            "fashion-mnist-train",
        );
    }
    let n = 60_000;
    let mut r = Rng(0);
    let x = (0..n * 784)
        .map(|_| (r.next() % 256) as f32 / 255.0)
        .collect();
    let y = (0..n).map(|_| (r.next() % 10) as u8).collect();
    (x, y, "synthetic(seed=0)")
}

/// Mean softmax cross-entropy gradient w.r.t. the logits, written into `d`; returns the
/// mean loss.
fn xent_grad(logits: &[f32], labels: &[u8], k: usize, d: &mut [f32]) -> f32 {
    let b = labels.len();
    let mut loss = 0.0f64;
    for (i, &y) in labels.iter().enumerate() {
        let z = &logits[i * k..(i + 1) * k];
        let m = z.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let s: f32 = z.iter().map(|&v| (v - m).exp()).sum();
        let out = &mut d[i * k..(i + 1) * k];
        for j in 0..k {
            let p = (z[j] - m).exp() / s;
            out[j] = (p - if j == y as usize { 1.0 } else { 0.0 }) / b as f32;
        }
        loss += (s.ln() + m - z[y as usize]) as f64;
    }
    (loss / b as f64) as f32
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build_global()?;
    let spec = match a.model.as_str() {
        "cnn" => presets::mnist_cnn(),
        "cnn-first-bias" => presets::by_name(
            "mnist-cnn-first-bias",
            margincert::model::Shape::new(1, 28, 28),
            10,
        )?,
        "mlp" => presets::mlp(),
        m => return Err(format!("unknown model {m}; use cnn, cnn-first-bias or mlp").into()),
    };
    let train = match a.mode.as_str() {
        "train" => true,
        "infer" => false,
        m => return Err(format!("unknown mode {m}; use train or infer").into()),
    };
    let net = Network::new(&spec)?;
    let k = net.outputs();
    let mut params = Params::he_normal(&spec, 0)?;
    let mut grads = params.zeros_like();
    let (x, y, data) = load();
    let n = y.len();
    let bsz = a.batch;
    if bsz == 0 || bsz > n {
        return Err(format!("batch must be in 1..={n}").into());
    }
    let mut ws = Workspace::new(&net, bsz);
    let mut xb = vec![0.0f32; bsz * 784];
    let mut yb = vec![0u8; bsz];
    let mut dl = vec![0.0f32; bsz * k];
    let mut rng = Rng(1);
    let mut perm: Vec<usize> = (0..n).collect();
    let mut pos = n;
    let lr = 0.01f32;
    let mut last_loss = f32::NAN;
    let mut fill_batch = |xb: &mut [f32], yb: &mut [u8]| {
        if pos + bsz > n {
            for i in (1..n).rev() {
                perm.swap(i, (rng.next() % (i as u64 + 1)) as usize);
            }
            pos = 0;
        }
        for (j, &i) in perm[pos..pos + bsz].iter().enumerate() {
            xb[j * 784..(j + 1) * 784].copy_from_slice(&x[i * 784..(i + 1) * 784]);
            yb[j] = y[i];
        }
        pos += bsz;
    };
    fill_batch(&mut xb, &mut yb);
    let mut step = |xb: &mut [f32], yb: &mut [u8]| -> margincert::Result<()> {
        if train {
            fill_batch(xb, yb);
            let logits = net.forward_train(&params, xb, bsz, &mut ws)?;
            last_loss = xent_grad(logits, yb, k, &mut dl);
            net.backward(&params, &mut ws, &dl, &mut grads)?;
            for (p, g) in params.layers.iter_mut().zip(&grads.layers) {
                p.weight
                    .par_chunks_mut(1 << 15)
                    .zip(g.weight.par_chunks(1 << 15))
                    .for_each(|(w, d)| {
                        for (w, d) in w.iter_mut().zip(d) {
                            *w -= lr * d;
                        }
                    });
                if let (Some(b), Some(db)) = (&mut p.bias, &g.bias) {
                    for (w, d) in b.iter_mut().zip(db) {
                        *w -= lr * d;
                    }
                }
            }
        } else {
            let out = net.forward(&params, xb, bsz)?;
            std::hint::black_box(out);
        }
        Ok(())
    };
    let mut rates = Vec::new();
    let (mut cpu_total, mut wall_total, mut imgs_total) = (0.0f64, 0.0f64, 0usize);
    for _ in 0..a.runs.max(1) {
        let t0 = Instant::now();
        let mut s = 0;
        while s < 3 || t0.elapsed().as_secs_f64() < a.warmup {
            step(&mut xb, &mut yb)?;
            s += 1;
        }
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        let mut steps = 0usize;
        while steps == 0 || t0.elapsed().as_secs_f64() < a.seconds {
            step(&mut xb, &mut yb)?;
            steps += 1;
        }
        let wall = t0.elapsed().as_secs_f64();
        if let (Some(c0), Some(c1)) = (c0, cpu_seconds()) {
            cpu_total += c1 - c0;
        }
        wall_total += wall;
        imgs_total += steps * bsz;
        rates.push((steps * bsz) as f64 / wall);
    }
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    println!(
        "{}",
        serde_json::json!({
            "model": a.model, "mode": a.mode, "batch": bsz, "threads": a.threads,
            "images_per_s": (median * 10.0).round() / 10.0,
            "min": (sorted[0] * 10.0).round() / 10.0,
            "max": (sorted[sorted.len() - 1] * 10.0).round() / 10.0,
            "runs": rates.len(), "data": data,
            // Cores this process kept busy, and its CPU time per image: with other load on
            // the machine, cpu_ms_per_image is a steadier efficiency figure than images/s.
            "own_cores": ((cpu_total / wall_total) * 100.0).round() / 100.0,
            "cpu_ms_per_image": ((cpu_total / imgs_total as f64) * 1e3 * 1e4).round() / 1e4,
            "loss_last": if train { Some(last_loss) } else { None },
        })
    );
    Ok(())
}
