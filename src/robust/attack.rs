//! Empirical attacks (PGD in L∞ and L2, random restarts, bisection over ε): upper bounds on
//! the robustness radius, each adversarial point re-checked on the REAL network with the
//! certified forward pass before it counts.
//!
//! The attack needs input gradients, which the f32 kernels of `nn` do not expose; it runs its
//! own small f64 forward/backward over the model plan (an estimate only — nothing it computes
//! is certified; its result counts only after [`CertifiedNet::logits_of_ball`] proves the
//! found point misclassified).

use crate::certify::ball::{BallVec, input_enclosure};
use crate::certify::forward::CertifiedNet;
use crate::certify::margin::{Task, gaps, margin_of};
use crate::certify::round::up;
use crate::error::Result;
use crate::model::{Layer, LayerPlan, ModelSpec, Params};

use super::Norm;

/// A plain f64 evaluation of the network with input gradients (estimates, never bounds).
#[derive(Clone, Debug)]
pub struct GradNet {
    plan: Vec<LayerPlan>,
    /// Per plan step: weights and bias as f64 (empty for parameter-free layers).
    w: Vec<(Vec<f64>, Option<Vec<f64>>)>,
    /// Outputs.
    pub outputs: usize,
    /// Input length.
    pub input_len: usize,
}

impl GradNet {
    /// Builds the f64 evaluator of `params` on `spec`.
    pub fn new(spec: &ModelSpec, params: &Params) -> Result<Self> {
        params.check(spec)?;
        let plan = spec.plan()?;
        let mut it = params.layers.iter();
        let w = plan
            .iter()
            .map(|p| {
                if p.layer.has_weights() {
                    let l = it.next().expect("checked by Params::check");
                    (
                        l.weight.iter().map(|&v| v as f64).collect(),
                        l.bias
                            .as_ref()
                            .map(|b| b.iter().map(|&v| v as f64).collect()),
                    )
                } else {
                    (vec![], None)
                }
            })
            .collect();
        let outputs = plan.last().map_or(spec.input.len(), |p| p.output.len());
        Ok(Self {
            plan,
            w,
            outputs,
            input_len: spec.input.len(),
        })
    }

    /// Activations of every layer (index 0 the input) for one example.
    fn forward_all(&self, x: &[f64]) -> Vec<Vec<f64>> {
        let mut acts = vec![x.to_vec()];
        for (p, (w, b)) in self.plan.iter().zip(&self.w) {
            let a = acts.last().expect("non-empty");
            let y = match p.layer {
                Layer::Dense { out, .. } => {
                    let n = p.input.len();
                    (0..out)
                        .map(|o| {
                            let s: f64 = w[o * n..(o + 1) * n]
                                .iter()
                                .zip(a)
                                .map(|(u, v)| u * v)
                                .sum();
                            s + b.as_ref().map_or(0.0, |b| b[o])
                        })
                        .collect()
                }
                Layer::Conv2d { out, kernel: k, .. } => {
                    let win = p.window.expect("conv window");
                    let (ci, hw_in) = (p.input.c, win.in_h * win.in_w);
                    let mut y = vec![0.0; out * win.out_h * win.out_w];
                    for o in 0..out {
                        for oy in 0..win.out_h {
                            for ox in 0..win.out_w {
                                let mut s = b.as_ref().map_or(0.0, |b| b[o]);
                                for c in 0..ci {
                                    for ky in 0..k {
                                        let Some(r) = win.in_row(oy, ky) else {
                                            continue;
                                        };
                                        for kx in 0..k {
                                            let Some(q) = win.in_col(ox, kx) else {
                                                continue;
                                            };
                                            s += w[((o * ci + c) * k + ky) * k + kx]
                                                * a[c * hw_in + r * win.in_w + q];
                                        }
                                    }
                                }
                                y[(o * win.out_h + oy) * win.out_w + ox] = s;
                            }
                        }
                    }
                    y
                }
                Layer::MaxPool { .. } | Layer::AvgPool { .. } => {
                    let win = p.window.expect("pool window");
                    let max = matches!(p.layer, Layer::MaxPool { .. });
                    let c = p.input.c;
                    let mut y = vec![0.0; c * win.out_h * win.out_w];
                    for ch in 0..c {
                        for oy in 0..win.out_h {
                            for ox in 0..win.out_w {
                                let mut m = f64::NEG_INFINITY;
                                let mut s = 0.0;
                                for ky in 0..win.k {
                                    let Some(r) = win.in_row(oy, ky) else {
                                        continue;
                                    };
                                    for kx in 0..win.k {
                                        let Some(q) = win.in_col(ox, kx) else {
                                            continue;
                                        };
                                        let v = a[(ch * win.in_h + r) * win.in_w + q];
                                        m = m.max(v);
                                        s += v;
                                    }
                                }
                                y[(ch * win.out_h + oy) * win.out_w + ox] =
                                    if max { m } else { s / (win.k * win.k) as f64 };
                            }
                        }
                    }
                    y
                }
                Layer::Flatten => a.clone(),
                Layer::Relu => a.iter().map(|&v| v.max(0.0)).collect(),
                Layer::LeakyRelu { slope } => a
                    .iter()
                    .map(|&v| if v > 0.0 { v } else { slope as f64 * v })
                    .collect(),
            };
            acts.push(y);
        }
        acts
    }

    /// Logits of one example.
    pub fn logits(&self, x: &[f64]) -> Vec<f64> {
        self.forward_all(x).pop().expect("non-empty")
    }

    /// The margin estimate `q(x)` and its gradient in `x` (a subgradient at kinks).
    pub fn margin_grad(&self, x: &[f64], label: u8, task: Task) -> (f64, Vec<f64>) {
        let acts = self.forward_all(x);
        let z = acts.last().expect("non-empty");
        let mut dz = vec![0.0; z.len()];
        let q = match task {
            Task::Binary => {
                let s = if label == 1 { 1.0 } else { -1.0 };
                dz[0] = s;
                s * z[0]
            }
            Task::Multi(k) => {
                let y = label as usize;
                let (j, zj) = (0..k).filter(|&j| j != y).map(|j| (j, z[j])).fold(
                    (usize::MAX, f64::NEG_INFINITY),
                    |a, b| {
                        if b.1 > a.1 { b } else { a }
                    },
                );
                dz[y] = 1.0;
                dz[j] = -1.0;
                z[y] - zj
            }
        };
        let mut g = dz;
        for (i, (p, (w, _))) in self.plan.iter().zip(&self.w).enumerate().rev() {
            let a = &acts[i];
            let mut dx = vec![0.0; a.len()];
            match p.layer {
                Layer::Dense { out, .. } => {
                    let n = p.input.len();
                    for o in 0..out {
                        let go = g[o];
                        if go != 0.0 {
                            for (d, wv) in dx.iter_mut().zip(&w[o * n..(o + 1) * n]) {
                                *d += go * wv;
                            }
                        }
                    }
                }
                Layer::Conv2d { out, kernel: k, .. } => {
                    let win = p.window.expect("conv window");
                    let (ci, hw_in) = (p.input.c, win.in_h * win.in_w);
                    for o in 0..out {
                        for oy in 0..win.out_h {
                            for ox in 0..win.out_w {
                                let go = g[(o * win.out_h + oy) * win.out_w + ox];
                                if go == 0.0 {
                                    continue;
                                }
                                for c in 0..ci {
                                    for ky in 0..k {
                                        let Some(r) = win.in_row(oy, ky) else {
                                            continue;
                                        };
                                        for kx in 0..k {
                                            let Some(q) = win.in_col(ox, kx) else {
                                                continue;
                                            };
                                            dx[c * hw_in + r * win.in_w + q] +=
                                                go * w[((o * ci + c) * k + ky) * k + kx];
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                Layer::MaxPool { .. } | Layer::AvgPool { .. } => {
                    let win = p.window.expect("pool window");
                    let max = matches!(p.layer, Layer::MaxPool { .. });
                    let c = p.input.c;
                    for ch in 0..c {
                        for oy in 0..win.out_h {
                            for ox in 0..win.out_w {
                                let go = g[(ch * win.out_h + oy) * win.out_w + ox];
                                let mut best = (f64::NEG_INFINITY, usize::MAX);
                                for ky in 0..win.k {
                                    let Some(r) = win.in_row(oy, ky) else {
                                        continue;
                                    };
                                    for kx in 0..win.k {
                                        let Some(q) = win.in_col(ox, kx) else {
                                            continue;
                                        };
                                        let idx = (ch * win.in_h + r) * win.in_w + q;
                                        if max {
                                            if a[idx] > best.0 {
                                                best = (a[idx], idx);
                                            }
                                        } else {
                                            dx[idx] += go / (win.k * win.k) as f64;
                                        }
                                    }
                                }
                                if max && best.1 != usize::MAX {
                                    dx[best.1] += go;
                                }
                            }
                        }
                    }
                }
                Layer::Flatten => dx.copy_from_slice(&g),
                Layer::Relu => {
                    for ((d, &gv), &v) in dx.iter_mut().zip(&g).zip(a) {
                        *d = if v > 0.0 { gv } else { 0.0 };
                    }
                }
                Layer::LeakyRelu { slope } => {
                    for ((d, &gv), &v) in dx.iter_mut().zip(&g).zip(a) {
                        *d = if v > 0.0 { gv } else { slope as f64 * gv };
                    }
                }
            }
            g = dx;
        }
        (q, g)
    }
}

/// Attack settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttackOptions {
    /// Gradient steps per restart.
    pub steps: usize,
    /// Random restarts (the first start is the clean point itself).
    pub restarts: usize,
    /// Bisection steps on ε.
    pub bisection: usize,
    /// Seed of the random starts.
    pub seed: u64,
}

impl Default for AttackOptions {
    fn default() -> Self {
        Self {
            steps: 20,
            restarts: 3,
            bisection: 10,
            seed: 0x5eed,
        }
    }
}

/// SplitMix64: a tiny deterministic generator for the random starts.
#[derive(Clone, Debug)]
struct SplitMix(u64);
impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [-1, 1].
    fn sym(&mut self) -> f64 {
        2.0 * self.next_f64() - 1.0
    }
}

/// Projects `x` onto `{x0 + δ : ||δ|| ≤ eps} ∩ [0,1]^d` (for L2: onto the ball, then the
/// box — a point of the ball's image that stays within eps after the box clip, as clipping
/// toward x0 ∈ [0,1]^d only shrinks |δ_i|).
fn project(x: &mut [f64], x0: &[f64], eps: f64, norm: Norm) {
    match norm {
        Norm::Inf => {
            for (v, &c) in x.iter_mut().zip(x0) {
                *v = v.clamp(c - eps, c + eps).clamp(0.0, 1.0);
            }
        }
        Norm::L2 => {
            let n: f64 = x
                .iter()
                .zip(x0)
                .map(|(v, c)| (v - c) * (v - c))
                .sum::<f64>()
                .sqrt();
            if n > eps {
                let s = eps / n;
                for (v, &c) in x.iter_mut().zip(x0) {
                    *v = c + (*v - c) * s;
                }
            }
            for v in x.iter_mut() {
                *v = v.clamp(0.0, 1.0);
            }
        }
    }
}

/// Certified check that the REAL network does not classify the exact point `x` (f64 values
/// are exact reals) with positive margin: the certified upper bound of `q(x)` is `≤ 0`.
pub fn verified_adversarial(net: &CertifiedNet, x: &[f64], label: u8, task: Task) -> Result<bool> {
    let ball = BallVec {
        mid: x.to_vec(),
        rad: vec![0.0; x.len()],
    };
    let logits = net.logits_of_ball(&ball, 1)?;
    Ok(margin_of(&gaps(&logits, 0, label, task)).hi <= 0.0)
}

/// Certified upper bound on the distance from the exact input `p/255` to the exact point `x`.
pub fn distance_up(pixels: &[u8], x: &[f64], norm: Norm) -> f64 {
    let e = input_enclosure(pixels);
    // |x_i − p_i/255| ≤ |x_i − mid_i| + rad_i, each rounded up.
    let d = x
        .iter()
        .zip(e.mid.iter().zip(&e.rad))
        .map(|(&v, (&m, &r))| up(up((v - m).abs()) + r));
    match norm {
        Norm::Inf => d.fold(0.0, f64::max),
        Norm::L2 => up(d.fold(0.0, |s, t| up(s + up(t * t))).sqrt()),
    }
}

/// PGD at one ε: returns a candidate point with estimated `q < 0`, if found.
#[allow(clippy::too_many_arguments)]
fn pgd(
    g: &GradNet,
    x0: &[f64],
    label: u8,
    task: Task,
    eps: f64,
    norm: Norm,
    opts: &AttackOptions,
    rng: &mut SplitMix,
) -> Option<Vec<f64>> {
    for r in 0..opts.restarts.max(1) {
        let mut x = x0.to_vec();
        if r > 0 {
            for v in x.iter_mut() {
                *v += eps * rng.sym();
            }
            project(&mut x, x0, eps, norm);
        }
        // step: 2.5 ε / steps (Madry et al.), at least 0.1 ε.
        let alpha = eps * (2.5 / opts.steps.max(1) as f64).max(0.1);
        for _ in 0..opts.steps.max(1) {
            let (q, grad) = g.margin_grad(&x, label, task);
            if q < 0.0 {
                return Some(x);
            }
            match norm {
                Norm::Inf => {
                    for (v, gv) in x.iter_mut().zip(&grad) {
                        *v -= alpha * gv.signum() * (*gv != 0.0) as u8 as f64;
                    }
                }
                Norm::L2 => {
                    let n = grad.iter().map(|v| v * v).sum::<f64>().sqrt();
                    if n == 0.0 {
                        break;
                    }
                    for (v, gv) in x.iter_mut().zip(&grad) {
                        *v -= alpha * gv / n;
                    }
                }
            }
            project(&mut x, x0, eps, norm);
        }
        if g.margin_grad(&x, label, task).0 < 0.0 {
            return Some(x);
        }
    }
    None
}

/// Result of the attack on one example.
#[derive(Clone, Debug, PartialEq)]
pub struct AttackResult {
    /// Certified upper bound on the distance to a point the REAL network provably does not
    /// classify correctly (`+inf` when none was found within `eps_max`).
    pub radius: f64,
    /// The verified adversarial point, if any.
    pub point: Option<Vec<f64>>,
}

/// Searches by bisection on ε in `(0, eps_max]` for the smallest radius at which PGD finds a
/// verified adversarial point. Only points proven misclassified by the certified forward pass
/// count. An example already not classified correctly (certified `q ≤ 0`) gets radius 0.
#[allow(clippy::too_many_arguments)]
pub fn attack(
    g: &GradNet,
    net: &CertifiedNet,
    pixels: &[u8],
    label: u8,
    task: Task,
    norm: Norm,
    eps_max: f64,
    opts: &AttackOptions,
) -> Result<AttackResult> {
    let x0: Vec<f64> = pixels.iter().map(|&p| p as f64 / 255.0).collect();
    let mut rng = SplitMix(opts.seed ^ (label as u64).wrapping_mul(0x1234_5678_9abc));
    for (i, &p) in pixels.iter().enumerate().take(64) {
        rng.0 = rng.0.wrapping_mul(31).wrapping_add(p as u64 + i as u64);
    }
    let clean = net.logits(pixels, 1)?;
    if margin_of(&gaps(&clean, 0, label, task)).hi <= 0.0 {
        return Ok(AttackResult {
            radius: 0.0,
            point: Some(x0),
        });
    }
    let mut best: Option<(f64, Vec<f64>)> = None;
    let mut try_eps = |eps: f64, best: &mut Option<(f64, Vec<f64>)>| -> Result<bool> {
        if let Some(x) = pgd(g, &x0, label, task, eps, norm, opts, &mut rng)
            && verified_adversarial(net, &x, label, task)?
        {
            {
                let r = distance_up(pixels, &x, norm);
                if best.as_ref().is_none_or(|(b, _)| r < *b) {
                    *best = Some((r, x));
                }
                return Ok(true);
            }
        }
        Ok(false)
    };
    if !try_eps(eps_max, &mut best)? {
        return Ok(AttackResult {
            radius: f64::INFINITY,
            point: None,
        });
    }
    let (mut lo, mut hi) = (0.0, eps_max);
    for _ in 0..opts.bisection {
        let mid = 0.5 * (lo + hi);
        if try_eps(mid, &mut best)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let (radius, point) = best.expect("found at eps_max");
    Ok(AttackResult {
        radius,
        point: Some(point),
    })
}
