//! Empirical attacks: upper bounds on the robustness radius, each adversarial point re-checked
//! on the REAL network with the certified forward pass before it counts.
//!
//! - [`AttackKind::Pgd`] ([`pgd_radius`]): projected gradient descent on the margin loss in L∞
//!   or L2, random restarts, bisection over ε. [`AttackOptions::paper`] is the setting of
//!   the paper's L∞ evaluation (100 steps of `0.1·ε`, 10 restarts).
//! - [`AttackKind::Cw`] ([`cw_l2`]): Carlini–Wagner L2 (the paper's Figure 8 attack): Adam on
//!   the tanh-space variable `w` (`x = (tanh w + 1)/2`, so the box `[0,1]^d` needs no
//!   projection), the objective `||x − x₀||² + c·max(q(x), 0)` with a binary search on `c`;
//!   it returns the distance itself (no ε to bisect).
//! - [`AttackKind::None`]: no attack (every attack radius is unknown, `+inf`).
//!
//! Both follow the fast f32 network of [`crate::nn`]: its logits and its input gradient
//! ([`Network::input_gradient`]) at the current point rounded to f32. Nothing they compute
//! is certified: a point counts only after [`CertifiedNet::logits_of_ball`] proves the REAL
//! network misclassifies it (see [`verified_adversarial`]), and its distance is a certified
//! upper bound ([`distance_up`]).

use crate::certify::ball::{BallVec, input_enclosure};
use crate::certify::forward::CertifiedNet;
use crate::certify::margin::{Task, gaps, margin_of};
use crate::certify::round::up;
use crate::error::Result;
use crate::model::Params;
use crate::nn::{Network, Workspace};

use super::Norm;
use crate::error::Error;

/// The f32 margin estimate of one example and its input gradient: the network, its
/// parameters and the buffers reused across PGD steps.
struct Probe<'a> {
    net: &'a Network,
    params: &'a Params,
    ws: Workspace,
    /// The current point rounded to f32.
    x: Vec<f32>,
    /// `d q / d logits`.
    dz: Vec<f32>,
}

impl<'a> Probe<'a> {
    fn new(net: &'a Network, params: &'a Params) -> Self {
        Self {
            net,
            params,
            ws: Workspace::new(net, 1),
            x: Vec::with_capacity(net.input_len()),
            dz: vec![0.0; net.outputs()],
        }
    }

    /// The margin estimate `q(x)` (`±z_0` for a binary model, `z_y − max_{j≠y} z_j`
    /// otherwise, the first largest `j` on ties); with `grad`, also fills `d q / d logits`
    /// and returns the gradient of `q` in `x` (a subgradient at kinks).
    fn eval(&mut self, x: &[f64], label: u8, task: Task, grad: bool) -> Result<(f64, Vec<f64>)> {
        self.x.clear();
        self.x.extend(x.iter().map(|&v| v as f32));
        let z = self
            .net
            .forward_train(self.params, &self.x, 1, &mut self.ws)?;
        let z: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        self.dz.fill(0.0);
        let q = match task {
            Task::Binary => {
                let s = if label == 1 { 1.0 } else { -1.0 };
                self.dz[0] = s as f32;
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
                self.dz[y] = 1.0;
                self.dz[j] = -1.0;
                z[y] - zj
            }
        };
        if !grad {
            return Ok((q, Vec::new()));
        }
        let g = self
            .net
            .input_gradient(self.params, &mut self.ws, &self.dz)?;
        Ok((q, g.iter().map(|&v| v as f64).collect()))
    }
}

/// Which attack gives the upper bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// Projected gradient descent on the margin loss (L∞ or L2), bisection on ε.
    #[default]
    Pgd,
    /// Carlini–Wagner L2 (L2 only).
    Cw,
    /// No attack: every attack radius is `+inf` (unknown).
    None,
}

impl std::str::FromStr for AttackKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pgd" => Ok(Self::Pgd),
            "cw" => Ok(Self::Cw),
            "none" => Ok(Self::None),
            o => Err(Error::Invalid(format!(
                "unknown attack {o:?}: use pgd, cw (L2 only) or none"
            ))),
        }
    }
}

/// Attack settings.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackOptions {
    /// Which attack.
    pub kind: AttackKind,
    /// Gradient steps per restart (PGD), Adam steps per constant `c` (CW).
    pub steps: usize,
    /// Random restarts (PGD; the first start is the clean point itself). Unused by CW.
    pub restarts: usize,
    /// Bisection steps on ε (PGD), binary-search steps on the constant `c` (CW).
    pub bisection: usize,
    /// Seed of the random starts.
    pub seed: u64,
}

impl Default for AttackOptions {
    fn default() -> Self {
        Self {
            kind: AttackKind::Pgd,
            steps: 20,
            restarts: 3,
            bisection: 10,
            seed: 0x5eed,
        }
    }
}

impl AttackOptions {
    /// The paper's L∞ PGD: 100 steps of `0.1·ε` (the step is `ε·max(2.5/steps, 0.1)`),
    /// 10 restarts, margin loss.
    pub fn paper() -> Self {
        Self {
            steps: 100,
            restarts: 10,
            ..Self::default()
        }
    }

    /// Carlini–Wagner L2 with `steps` Adam steps per constant and `searches` binary-search
    /// steps on the constant.
    pub fn cw(steps: usize, searches: usize) -> Self {
        Self {
            kind: AttackKind::Cw,
            steps,
            restarts: 1,
            bisection: searches,
            ..Self::default()
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
    probe: &mut Probe<'_>,
    x0: &[f64],
    label: u8,
    task: Task,
    eps: f64,
    norm: Norm,
    opts: &AttackOptions,
    rng: &mut SplitMix,
) -> Result<Option<Vec<f64>>> {
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
            let (q, grad) = probe.eval(&x, label, task, true)?;
            if q < 0.0 {
                return Ok(Some(x));
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
        if probe.eval(&x, label, task, false)?.0 < 0.0 {
            return Ok(Some(x));
        }
    }
    Ok(None)
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

/// The attack `opts.kind` on one example: [`pgd_radius`], [`cw_l2`] (L2 only: an error for
/// L∞), or, for [`AttackKind::None`], radius `+inf` and no point.
#[allow(clippy::too_many_arguments)]
pub fn attack(
    f32net: &Network,
    params: &Params,
    net: &CertifiedNet,
    pixels: &[u8],
    label: u8,
    task: Task,
    norm: Norm,
    eps_max: f64,
    opts: &AttackOptions,
) -> Result<AttackResult> {
    match (opts.kind, norm) {
        (AttackKind::Pgd, _) => pgd_radius(
            f32net, params, net, pixels, label, task, norm, eps_max, opts,
        ),
        (AttackKind::Cw, Norm::L2) => cw_l2(f32net, params, net, pixels, label, task, opts),
        (AttackKind::Cw, Norm::Inf) => Err(Error::Invalid(
            "the Carlini-Wagner attack (cw) is an L2 attack: use --attack pgd with --norm inf"
                .into(),
        )),
        (AttackKind::None, _) => Ok(AttackResult {
            radius: f64::INFINITY,
            point: None,
        }),
    }
}

/// Searches by bisection on ε in `(0, eps_max]` for the smallest radius at which PGD (on the
/// f32 network `f32net` with `params`) finds a verified adversarial point. Only points proven
/// misclassified by the certified forward pass `net` count. An example already not classified
/// correctly (certified `q ≤ 0`) gets radius 0.
#[allow(clippy::too_many_arguments)]
pub fn pgd_radius(
    f32net: &Network,
    params: &Params,
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
    let mut probe = Probe::new(f32net, params);
    let mut best: Option<(f64, Vec<f64>)> = None;
    let mut try_eps = |eps: f64, best: &mut Option<(f64, Vec<f64>)>| -> Result<bool> {
        if let Some(x) = pgd(&mut probe, &x0, label, task, eps, norm, opts, &mut rng)?
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

/// Bisection steps on the ray of a CW candidate: `t` to `1.25·2^-24` (relative distance 1e-7).
pub const RAY_BISECTION: usize = 24;

/// The point `x₀ + t·(x − x₀)` clipped to `[0,1]^d`.
fn along(x0: &[f64], x: &[f64], t: f64) -> Vec<f64> {
    x0.iter()
        .zip(x)
        .map(|(&a, &b)| (a + t * (b - a)).clamp(0.0, 1.0))
        .collect()
}

/// The verified adversarial point closest to `x₀` on the ray from `x₀` through the candidate
/// `x` (found in f32): the first of `t = 1, 1.02, 1.1, 1.25` whose point the certified pass
/// proves misclassified, then [`RAY_BISECTION`] bisection steps on `t` keeping the upper end
/// verified.
/// `None` when no point of the ray up to `t = 1.25` is verified.
fn shortest_verified(
    net: &CertifiedNet,
    pixels: &[u8],
    x0: &[f64],
    x: &[f64],
    label: u8,
    task: Task,
) -> Result<Option<(f64, Vec<f64>)>> {
    let mut hi = None;
    for t in [1.0, 1.02, 1.1, 1.25] {
        if verified_adversarial(net, &along(x0, x, t), label, task)? {
            hi = Some(t);
            break;
        }
    }
    let Some(mut hi) = hi else {
        return Ok(None);
    };
    let mut lo = 0.0;
    for _ in 0..RAY_BISECTION {
        let mid = 0.5 * (lo + hi);
        if verified_adversarial(net, &along(x0, x, mid), label, task)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let p = along(x0, x, hi);
    Ok(Some((distance_up(pixels, &p, Norm::L2), p)))
}

/// Adam (step 0.1 decayed to 0 on a cosine) on the tanh-space variable for one constant `c`:
/// minimizes
/// `||x(w) − x₀||² + c·max(q(x(w)) + κ, 0)` from the clean point and returns the closest
/// point with f32 margin estimate `q < 0` met along the way, if any.
#[allow(clippy::too_many_arguments)]
fn cw_descend(
    probe: &mut Probe<'_>,
    x0: &[f64],
    w0: &[f64],
    label: u8,
    task: Task,
    c: f64,
    kappa: f64,
    steps: usize,
) -> Result<Option<Vec<f64>>> {
    const LR: f64 = 0.1;
    const B1: f64 = 0.9;
    const B2: f64 = 0.999;
    let n = x0.len();
    let mut w = w0.to_vec();
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    let mut x = vec![0.0; n];
    let mut best: Option<(f64, Vec<f64>)> = None;
    let (mut p1, mut p2) = (1.0, 1.0);
    let total = steps.max(1);
    for t in 0..total {
        // Cosine decay of the step from LR to 0: converges in a few hundred steps.
        let lr = LR * 0.5 * (1.0 + (std::f64::consts::PI * t as f64 / total as f64).cos());
        for (xi, &wi) in x.iter_mut().zip(&w) {
            *xi = 0.5 * (wi.tanh() + 1.0);
        }
        let (q, g) = probe.eval(&x, label, task, true)?;
        let d2: f64 = x.iter().zip(x0).map(|(a, b)| (a - b) * (a - b)).sum();
        if q < 0.0 && best.as_ref().is_none_or(|(b, _)| d2 < *b) {
            best = Some((d2, x.clone()));
        }
        let gq = if q > -kappa { c } else { 0.0 };
        p1 *= B1;
        p2 *= B2;
        for i in 0..n {
            let gx = 2.0 * (x[i] - x0[i]) + gq * g[i];
            let gw = gx * 2.0 * x[i] * (1.0 - x[i]);
            m[i] = B1 * m[i] + (1.0 - B1) * gw;
            v[i] = B2 * v[i] + (1.0 - B2) * gw * gw;
            let mh = m[i] / (1.0 - p1);
            let vh = v[i] / (1.0 - p2);
            w[i] -= lr * mh / (vh.sqrt() + 1e-8);
        }
    }
    Ok(best.map(|b| b.1))
}

/// Carlini–Wagner L2 on one example: for each constant `c` of a binary search
/// (`opts.bisection` steps from `c = 0.1`, ×10 until a success, then halving the bracket),
/// `opts.steps` Adam steps on the tanh-space variable (`cw_descend`); each candidate is
/// moved along its ray to the closest point the certified forward pass `net` proves
/// misclassified. Returns the smallest certified distance of such a point (`+inf` when none
/// was found); 0 for an example already not classified correctly.
pub fn cw_l2(
    f32net: &Network,
    params: &Params,
    net: &CertifiedNet,
    pixels: &[u8],
    label: u8,
    task: Task,
    opts: &AttackOptions,
) -> Result<AttackResult> {
    let x0: Vec<f64> = pixels.iter().map(|&p| p as f64 / 255.0).collect();
    let clean = net.logits(pixels, 1)?;
    if margin_of(&gaps(&clean, 0, label, task)).hi <= 0.0 {
        return Ok(AttackResult {
            radius: 0.0,
            point: Some(x0),
        });
    }
    let mut probe = Probe::new(f32net, params);
    let q0 = probe.eval(&x0, label, task, false)?.0;
    // Aim slightly past the boundary so that the f32 point stays adversarial exactly.
    let kappa = 1e-3 * q0.abs().max(1e-6);
    let w0: Vec<f64> = x0
        .iter()
        .map(|&v| ((2.0 * v - 1.0) * (1.0 - 1e-6)).atanh())
        .collect();
    let mut best: Option<(f64, Vec<f64>)> = None;
    let (mut lo, mut hi, mut c) = (0.0, f64::INFINITY, 0.1);
    for _ in 0..opts.bisection.max(1) {
        let found = match cw_descend(&mut probe, &x0, &w0, label, task, c, kappa, opts.steps)? {
            Some(x) => shortest_verified(net, pixels, &x0, &x, label, task)?,
            None => None,
        };
        match found {
            Some((r, p)) => {
                if best.as_ref().is_none_or(|(b, _)| r < *b) {
                    best = Some((r, p));
                }
                hi = c;
            }
            None => lo = c,
        }
        c = if hi.is_finite() {
            0.5 * (lo + hi)
        } else {
            c * 10.0
        };
    }
    Ok(match best {
        Some((radius, p)) => AttackResult {
            radius,
            point: Some(p),
        },
        None => AttackResult {
            radius: f64::INFINITY,
            point: None,
        },
    })
}
