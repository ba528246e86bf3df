//! Certified backward pass: enclosures of the gradient of a margin constraint with respect
//! to all parameters, containing the whole Clarke subdifferential.
//!
//! A *constraint function* is a fixed linear functional of the network output,
//! `s(θ) = cᵀ Φ(θ; x)`, with an exact small-integer vector `c` ([`Constraint::adjoint`]):
//! `y·e₀` for a binary model (`q_n = y_n Φ`), `e_y − e_j` for the pairwise multi-class
//! constraint `s_nj = Φ_y − Φ_j`. [`Backward::gradient`] propagates the adjoint `c` from the
//! output to the input through the layers in midpoint-radius arithmetic, using the forward
//! enclosures of [`super::forward`], and returns a [`BallVec`] over all parameters (in
//! [`Params`] order: per weight layer the weight, then the bias) that contains
//! `∂°s(θ)` (proofs/backward.md, Theorem B).
//!
//! Nonsmooth units are handled by interval evaluation over their generalised derivative:
//! a ReLU whose pre-activation enclosure is `> 0` passes the adjoint, one `< 0` blocks it,
//! and one whose enclosure contains 0 multiplies it by the Clarke interval `[0, 1]`
//! (LeakyReLU: `[min(s,1), max(s,1)]`). A max-pool window passes its adjoint to every
//! element that may be the maximum, with coefficient 1 when that element is the only
//! candidate and `[0, 1]` otherwise.
//!
//! Rounding: every sum is computed in f64 round-to-nearest in any order and widened by the
//! a-priori bound of [`finish_rad`] (Lemma B1 of proofs/backward.md); every elementwise step
//! goes through intervals rounded outward with [`up`]/[`down`].
//!
//! Sums `Σ_c λ_c ∇s_c` over many constraints are accumulated without storing the
//! individual gradients with [`GradSum`].

use std::sync::Arc;

use rayon::prelude::*;

use crate::certify::ball::BallVec;
use crate::certify::forward::prepare::{PreparedNet, PreparedOp};
use crate::certify::round::{ETA, U, down, exact, gamma_up, interval_to_ball, up};
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params, Window};

/// Rigorous radius of a sum `Σ_{i<n} a_i b_i` computed in round-to-nearest (Lemma B1).
///
/// Inputs: `rad_hat = fl(Σ ρ_i)`, where each exact `ρ_i ≥ 0` is a sum of at most three
/// products of two non-negative f64 (the radius contribution of term `i`), and
/// `abs_hat = fl(Σ |fl(ma_i mb_i)|)`, for `n` terms, in any summation order. Returns `R`
/// with `|Σ a_i b_i − fl(Σ ma_i mb_i)| ≤ R` whenever `|a_i b_i − ma_i mb_i| ≤ ρ_i`:
///
/// `R = (1 + 2g)(rad_hat + g·abs_hat + 4nη) + nη`, `g ≥ γ_{n+5}`, every operation rounded
/// up.
#[inline]
pub fn finish_rad(rad_hat: f64, abs_hat: f64, g: &RadConst) -> f64 {
    let t = up(rad_hat + up(g.g * abs_hat));
    let t = up(t + g.four_n_eta);
    up(up(t * g.one_plus_2g) + g.n_eta)
}

/// Constants of [`finish_rad`] for sums of `n` terms.
#[derive(Clone, Copy, Debug)]
pub struct RadConst {
    /// `≥ γ_{n+5}`.
    pub g: f64,
    /// `≥ 1 + 2g`.
    pub one_plus_2g: f64,
    /// `4 n η` (exact).
    pub four_n_eta: f64,
    /// `n η` (exact).
    pub n_eta: f64,
}

impl RadConst {
    /// Constants for sums of `n ≥ 1` terms; errors if `n` is absurdly large.
    pub fn new(n: usize) -> Result<Self> {
        let n = n.max(1);
        let g = gamma_up(n + 5)?;
        if g > 0.25 {
            return Err(Error::Certify(format!("sums of {n} terms are too long")));
        }
        Ok(Self {
            g,
            one_plus_2g: up(1.0 + up(2.0 * g)),
            // an integer below 2^52 times 2^-1074 is an exact subnormal.
            four_n_eta: exact(4 * n) * ETA,
            n_eta: exact(n) * ETA,
        })
    }
}

/// Encloses `x·d` for `x ∈ [xl, xh]`, `d ∈ [dl, dh]` by an interval rounded outward.
#[inline]
fn imul(xl: f64, xh: f64, dl: f64, dh: f64) -> (f64, f64) {
    if dl == dh && dl == 1.0 {
        return (xl, xh);
    }
    let p = [xl * dl, xl * dh, xh * dl, xh * dh];
    let lo = p.iter().fold(f64::INFINITY, |a, &b| a.min(b));
    let hi = p.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    (down(lo), up(hi))
}

/// Which scalar margin function of the network a gradient is taken of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Constraint {
    /// Binary model (one output): `q_n = y_n Φ(θ; x_n)` with `y = +1` for label 1 and
    /// `y = −1` for label 0.
    Binary {
        /// Example index.
        example: usize,
        /// `true` for `y = +1`.
        positive: bool,
    },
    /// Multi-class pairwise constraint `s_nj = Φ_{y_n} − Φ_j`, `j ≠ y_n`.
    Pair {
        /// Example index.
        example: usize,
        /// The label `y_n`.
        label: usize,
        /// The other class `j`.
        other: usize,
    },
}

impl Constraint {
    /// The example the constraint is about.
    pub fn example(&self) -> usize {
        match *self {
            Constraint::Binary { example, .. } | Constraint::Pair { example, .. } => example,
        }
    }

    /// The exact output adjoint `c` with `s = cᵀ Φ` (entries in `{−1, 0, 1}`), of length
    /// `outputs`. Errors when the classes do not fit the output count.
    pub fn adjoint(&self, outputs: usize) -> Result<Vec<f64>> {
        let mut c = vec![0.0; outputs];
        match *self {
            Constraint::Binary { positive, .. } => {
                if outputs != 1 {
                    return Err(Error::Shape(format!(
                        "a binary constraint needs a model with one output, found {outputs}"
                    )));
                }
                c[0] = if positive { 1.0 } else { -1.0 };
            }
            Constraint::Pair { label, other, .. } => {
                if label >= outputs || other >= outputs || label == other {
                    return Err(Error::Shape(format!(
                        "pairwise constraint ({label}, {other}) does not fit {outputs} outputs"
                    )));
                }
                c[label] = 1.0;
                c[other] = -1.0;
            }
        }
        Ok(c)
    }

    /// Certified enclosure `[lo, hi]` of `s = cᵀΦ` from the output enclosure `out` (the
    /// row of one example, length `outputs`).
    pub fn value_enclosure(&self, out_mid: &[f64], out_rad: &[f64]) -> Result<(f64, f64)> {
        let c = self.adjoint(out_mid.len())?;
        let mut m = 0.0;
        let mut r = 0.0;
        let mut a = 0.0;
        for ((&ci, &om), &or) in c.iter().zip(out_mid).zip(out_rad) {
            if ci != 0.0 {
                m += ci * om;
                r += or;
                a += om.abs();
            }
        }
        // at most two nonzero terms, each an exact ±product.
        let rad = finish_rad(r, a, &RadConst::new(2)?);
        Ok((down(m - rad), up(m + rad)))
    }
}

/// How many nonsmooth points the backward pass met (units whose generalised derivative
/// had to be taken as an interval).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KinkStats {
    /// ReLU / LeakyReLU units whose pre-activation enclosure contains 0.
    pub ambiguous_units: usize,
    /// Max-pool windows with more than one candidate for the maximum (this includes ties
    /// among exact zeros after a ReLU, which are harmless when the ReLU below is certainly
    /// inactive: its derivative 0 then kills the interval adjoint).
    pub ambiguous_pools: usize,
}

impl KinkStats {
    /// Total number of ambiguous points.
    pub fn total(&self) -> usize {
        self.ambiguous_units + self.ambiguous_pools
    }
}

/// A network prepared for certified backward passes: the shared [`PreparedNet`] (exact f64
/// weights) and the offset of every layer's parameters in the flat gradient.
///
/// Invariant: `offsets[i]` is, for weight layer `i` of the plan, the offset of its weight in
/// the flat parameter vector (its bias follows); `n_params` is the total length.
#[derive(Clone, Debug)]
pub struct Backward {
    net: Arc<PreparedNet>,
    /// Per plan layer: offset of its parameters (0 for layers without weights).
    offsets: Vec<usize>,
    n_params: usize,
}

/// The output of one certified backward pass.
#[derive(Clone, Debug)]
pub struct GradEnclosure {
    /// Enclosure of every element of `∂°s(θ)`, flat in [`Params`] order.
    pub grad: BallVec,
    /// Nonsmooth points met.
    pub kinks: KinkStats,
}

impl Backward {
    /// Checks `params` against `spec` and prepares them; errors on shape mismatch or
    /// non-finite weights.
    pub fn new(spec: &ModelSpec, params: &Params) -> Result<Self> {
        Ok(Self::from_prepared(Arc::new(PreparedNet::from_spec(
            spec, params,
        )?)))
    }

    /// Backward passes over an already prepared network (shared, not copied).
    pub fn from_prepared(net: Arc<PreparedNet>) -> Self {
        let mut offsets = Vec::with_capacity(net.ops().len());
        let mut off = 0;
        for op in net.ops() {
            offsets.push(off);
            match op {
                PreparedOp::Dense(a) | PreparedOp::Conv { affine: a, .. } => {
                    off += a.w.len() + a.bias.as_ref().map_or(0, Vec::len);
                }
                PreparedOp::MaxPool { .. }
                | PreparedOp::AvgPool { .. }
                | PreparedOp::Flatten
                | PreparedOp::Relu
                | PreparedOp::LeakyRelu { .. } => {}
            }
        }
        Self {
            net,
            offsets,
            n_params: off,
        }
    }

    /// Number of scalar parameters (length of every gradient).
    pub fn n_params(&self) -> usize {
        self.n_params
    }

    /// Number of network outputs.
    pub fn outputs(&self) -> usize {
        self.net.outputs()
    }

    /// Enclosure of `∂°(cᵀΦ)(θ)` at example `b` of a batch of `batch` examples whose
    /// forward enclosures are `acts` (as returned by
    /// [`super::forward::forward_enclosures`]: index 0 the input, index `i + 1` the
    /// output of layer `i`, batch-major). `adjoint` is `c` (exact, length = outputs).
    pub fn gradient(
        &self,
        acts: &[BallVec],
        batch: usize,
        b: usize,
        adjoint: &[f64],
    ) -> Result<GradEnclosure> {
        let plan = self.net.plan();
        if acts.len() != plan.len() + 1 || b >= batch {
            return Err(Error::Shape(format!(
                "backward pass: {} forward enclosures for {} layers, example {b} of {batch}",
                acts.len(),
                plan.len()
            )));
        }
        if adjoint.len() != self.outputs() {
            return Err(Error::Shape(format!(
                "backward pass: adjoint of length {} for {} outputs",
                adjoint.len(),
                self.outputs()
            )));
        }
        let row = |i: usize, len: usize| -> Result<(&[f64], &[f64])> {
            let a = &acts[i];
            if a.mid.len() != batch * len || a.rad.len() != batch * len {
                return Err(Error::Shape(format!(
                    "forward enclosure {i} has {} values, expected {batch} x {len}",
                    a.mid.len()
                )));
            }
            Ok((
                &a.mid[b * len..(b + 1) * len],
                &a.rad[b * len..(b + 1) * len],
            ))
        };
        let mut grad = BallVec {
            mid: vec![0.0; self.n_params],
            rad: vec![0.0; self.n_params],
        };
        let mut kinks = KinkStats::default();
        // current adjoint of the output of layer i: exact c at the top.
        let mut gm = adjoint.to_vec();
        let mut gr = vec![0.0; adjoint.len()];
        let first_weight = self.net.ops().iter().position(PreparedOp::has_weights);
        for (i, (p, op)) in self.net.layers().enumerate().rev() {
            let (il, ol) = (p.input.len(), p.output.len());
            debug_assert_eq!(gm.len(), ol);
            let (xm, xr) = row(i, il)?;
            // Whether anything below layer i depends on the parameters.
            let need_input = first_weight.is_some_and(|f| f < i);
            let (nm, nr) = match op {
                PreparedOp::Dense(a) => {
                    let (w, out) = (&a.w, a.out);
                    let off = self.offsets[i];
                    dense_weight_grad(&gm, &gr, xm, xr, out, il, &mut grad, off)?;
                    if a.bias.is_some() {
                        let bo = off + w.len();
                        grad.mid[bo..bo + out].copy_from_slice(&gm);
                        grad.rad[bo..bo + out].copy_from_slice(&gr);
                    }
                    if need_input {
                        dense_input_adjoint(w, &gm, &gr, out, il)?
                    } else {
                        (vec![], vec![])
                    }
                }
                PreparedOp::Conv {
                    affine: a,
                    window: win,
                    c_in,
                    ..
                } => {
                    let (w, out, c_in) = (&a.w, a.out, *c_in);
                    let off = self.offsets[i];
                    conv_weight_grad(&gm, &gr, xm, xr, out, c_in, win, &mut grad, off)?;
                    if a.bias.is_some() {
                        conv_bias_grad(&gm, &gr, out, win, &mut grad, off + w.len())?;
                    }
                    if need_input {
                        conv_input_adjoint(w, &gm, &gr, out, c_in, win)?
                    } else {
                        (vec![], vec![])
                    }
                }
                PreparedOp::Relu => leaky_backward(&gm, &gr, xm, xr, 0.0, &mut kinks),
                PreparedOp::LeakyRelu { slope } => {
                    leaky_backward(&gm, &gr, xm, xr, *slope as f64, &mut kinks)
                }
                PreparedOp::MaxPool { window, channels } => {
                    maxpool_backward(&gm, &gr, xm, xr, *channels, window, &mut kinks)
                }
                PreparedOp::AvgPool { window, channels } => {
                    avgpool_backward(&gm, &gr, *channels, window)
                }
                PreparedOp::Flatten => (gm, gr),
            };
            if !need_input {
                break;
            }
            gm = nm;
            gr = nr;
            if gm.iter().chain(&gr).any(|v| !v.is_finite()) {
                return Err(Error::Certify(format!(
                    "layer {i} ({}): the gradient enclosure overflowed f64",
                    p.layer.describe()
                )));
            }
        }
        if !grad.is_valid() {
            return Err(Error::Certify(
                "the gradient enclosure overflowed f64".into(),
            ));
        }
        Ok(GradEnclosure { grad, kinks })
    }
}

/// `G[o, k] = g_o x_k` for each entry: one product of two balls (Lemma B1 with n = 1).
#[allow(clippy::too_many_arguments)]
fn dense_weight_grad(
    gm: &[f64],
    gr: &[f64],
    xm: &[f64],
    xr: &[f64],
    out: usize,
    il: usize,
    grad: &mut BallVec,
    off: usize,
) -> Result<()> {
    let k1 = RadConst::new(1)?;
    for o in 0..out {
        let (a, ar) = (gm[o], gr[o]);
        let dst_m = &mut grad.mid[off + o * il..off + (o + 1) * il];
        let dst_r = &mut grad.rad[off + o * il..off + (o + 1) * il];
        if a == 0.0 && ar == 0.0 {
            // exact zero adjoint: exact zero gradient row.
            dst_m.fill(0.0);
            dst_r.fill(0.0);
            continue;
        }
        for k in 0..il {
            let (b, br) = (xm[k], xr[k]);
            let m = a * b;
            let rs = a.abs() * br + ar * b.abs() + ar * br;
            dst_m[k] = m;
            dst_r[k] = finish_rad(rs, m.abs(), &k1);
        }
    }
    Ok(())
}

/// `Wᵀ g` for exact `W: [out, il]` and a ball `g` (Lemma B1, n = out).
fn dense_input_adjoint(
    w: &[f64],
    gm: &[f64],
    gr: &[f64],
    out: usize,
    il: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let k = RadConst::new(out)?;
    let mut m = vec![0.0; il];
    let mut r = vec![0.0; il];
    let mut a = vec![0.0; il];
    for o in 0..out {
        let (g, grr) = (gm[o], gr[o]);
        if g == 0.0 && grr == 0.0 {
            continue;
        }
        let ga = g.abs();
        let row = &w[o * il..(o + 1) * il];
        for j in 0..il {
            let wv = row[j];
            m[j] += wv * g;
            r[j] += wv.abs() * grr;
            a[j] += wv.abs() * ga;
        }
    }
    for j in 0..il {
        r[j] = finish_rad(r[j], a[j], &k);
    }
    Ok((m, r))
}

/// Conv weight gradient `G[o, c, ky, kx] = Σ_{oy, ox} g[o, oy, ox] x[c, iy, ix]`.
#[allow(clippy::too_many_arguments)]
fn conv_weight_grad(
    gm: &[f64],
    gr: &[f64],
    xm: &[f64],
    xr: &[f64],
    out: usize,
    c_in: usize,
    w: &Window,
    grad: &mut BallVec,
    off: usize,
) -> Result<()> {
    let p = w.out_h * w.out_w;
    let plane = w.in_h * w.in_w;
    let kc = RadConst::new(p)?;
    let kk = w.k * w.k;
    for o in 0..out {
        let g_m = &gm[o * p..(o + 1) * p];
        let g_r = &gr[o * p..(o + 1) * p];
        let zero = g_m.iter().all(|&v| v == 0.0) && g_r.iter().all(|&v| v == 0.0);
        for c in 0..c_in {
            let x_m = &xm[c * plane..(c + 1) * plane];
            let x_r = &xr[c * plane..(c + 1) * plane];
            for ky in 0..w.k {
                for kx in 0..w.k {
                    let idx = off + ((o * c_in + c) * kk) + ky * w.k + kx;
                    if zero {
                        grad.mid[idx] = 0.0;
                        grad.rad[idx] = 0.0;
                        continue;
                    }
                    let (mut m, mut r, mut a) = (0.0, 0.0, 0.0);
                    for oy in 0..w.out_h {
                        let Some(iy) = w.in_row(oy, ky) else { continue };
                        for ox in 0..w.out_w {
                            let Some(ix) = w.in_col(ox, kx) else { continue };
                            let (ga, gra) = (g_m[oy * w.out_w + ox], g_r[oy * w.out_w + ox]);
                            let (xa, xra) = (x_m[iy * w.in_w + ix], x_r[iy * w.in_w + ix]);
                            let prod = ga * xa;
                            m += prod;
                            a += prod.abs();
                            r += ga.abs() * xra + gra * xa.abs() + gra * xra;
                        }
                    }
                    grad.mid[idx] = m;
                    grad.rad[idx] = finish_rad(r, a, &kc);
                }
            }
        }
    }
    Ok(())
}

/// Conv bias gradient `Σ_{oy, ox} g[o, oy, ox]`.
fn conv_bias_grad(
    gm: &[f64],
    gr: &[f64],
    out: usize,
    w: &Window,
    grad: &mut BallVec,
    off: usize,
) -> Result<()> {
    let p = w.out_h * w.out_w;
    let kc = RadConst::new(p)?;
    for o in 0..out {
        let (mut m, mut r, mut a) = (0.0, 0.0, 0.0);
        for q in o * p..(o + 1) * p {
            m += gm[q];
            r += gr[q];
            a += gm[q].abs();
        }
        grad.mid[off + o] = m;
        grad.rad[off + o] = finish_rad(r, a, &kc);
    }
    Ok(())
}

/// Transposed convolution: `x̄[c, iy, ix] = Σ W[o, c, ky, kx] g[o, oy, ox]` over the
/// output positions whose window covers `(iy, ix)`; at most `out·k²` terms per entry.
fn conv_input_adjoint(
    wt: &[f64],
    gm: &[f64],
    gr: &[f64],
    out: usize,
    c_in: usize,
    w: &Window,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let p = w.out_h * w.out_w;
    let plane = w.in_h * w.in_w;
    let kk = w.k * w.k;
    let kc = RadConst::new(out * kk)?;
    let n = c_in * plane;
    let mut m = vec![0.0; n];
    let mut r = vec![0.0; n];
    let mut a = vec![0.0; n];
    for o in 0..out {
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                let q = o * p + oy * w.out_w + ox;
                let (g, grr) = (gm[q], gr[q]);
                if g == 0.0 && grr == 0.0 {
                    continue;
                }
                let ga = g.abs();
                for (tap, at) in w.taps(oy, ox) {
                    for c in 0..c_in {
                        let wv = wt[(o * c_in + c) * kk + tap];
                        let j = c * plane + at;
                        m[j] += wv * g;
                        r[j] += wv.abs() * grr;
                        a[j] += wv.abs() * ga;
                    }
                }
            }
        }
    }
    for j in 0..n {
        r[j] = finish_rad(r[j], a[j], &kc);
    }
    Ok((m, r))
}

/// (Leaky)ReLU with slope `s` (`s = 0` for ReLU): multiplies the adjoint by the
/// generalised derivative `D`: `1` when the pre-activation `z ∈ xm ± xr` is certainly
/// `> 0` (`xm > xr`, an exact comparison), `s` when certainly `< 0`, and the interval
/// `[min(s,1), max(s,1)]` otherwise (the Clarke subdifferential of the unit at 0).
fn leaky_backward(
    gm: &[f64],
    gr: &[f64],
    xm: &[f64],
    xr: &[f64],
    s: f64,
    kinks: &mut KinkStats,
) -> (Vec<f64>, Vec<f64>) {
    let n = gm.len();
    let mut m = vec![0.0; n];
    let mut r = vec![0.0; n];
    let (dlo, dhi) = (s.min(1.0), s.max(1.0));
    for j in 0..n {
        if xm[j] > xr[j] {
            m[j] = gm[j];
            r[j] = gr[j];
            continue;
        }
        let (d_lo, d_hi) = if -xm[j] > xr[j] {
            if s == 0.0 {
                continue; // exact zero
            }
            (s, s)
        } else {
            kinks.ambiguous_units += 1;
            (dlo, dhi)
        };
        let (lo, hi) = (down(gm[j] - gr[j]), up(gm[j] + gr[j]));
        let (plo, phi) = imul(lo, hi, d_lo, d_hi);
        (m[j], r[j]) = interval_to_ball(plo, phi);
    }
    (m, r)
}

/// Max-pool: the adjoint of each window goes to the elements that may be its maximum
/// (`hi_e ≥ max_k lo_k`), with derivative 1 when there is a single candidate and `[0, 1]`
/// otherwise; contributions of overlapping windows are added as outward-rounded intervals.
fn maxpool_backward(
    gm: &[f64],
    gr: &[f64],
    xm: &[f64],
    xr: &[f64],
    c: usize,
    w: &Window,
    kinks: &mut KinkStats,
) -> (Vec<f64>, Vec<f64>) {
    let plane = w.in_h * w.in_w;
    let p = w.out_h * w.out_w;
    let n = c * plane;
    let mut lo = vec![0.0; n];
    let mut hi = vec![0.0; n];
    let mut cand = Vec::with_capacity(w.k * w.k);
    for ch in 0..c {
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                let q = ch * p + oy * w.out_w + ox;
                let (g, grr) = (gm[q], gr[q]);
                if g == 0.0 && grr == 0.0 {
                    continue;
                }
                let (glo, ghi) = (down(g - grr), up(g + grr));
                // Valid pooling: every tap is inside the plane.
                let window = move || w.taps(oy, ox).map(move |(_, t)| ch * plane + t);
                let mut best_lo = f64::NEG_INFINITY;
                for e in window() {
                    best_lo = best_lo.max(down(xm[e] - xr[e]));
                }
                cand.clear();
                for e in window() {
                    if up(xm[e] + xr[e]) >= best_lo {
                        cand.push(e);
                    }
                }
                let (clo, chi) = if cand.len() == 1 {
                    (glo, ghi)
                } else {
                    kinks.ambiguous_pools += 1;
                    (glo.min(0.0), ghi.max(0.0))
                };
                for &e in &cand {
                    lo[e] = down(lo[e] + clo);
                    hi[e] = up(hi[e] + chi);
                }
            }
        }
    }
    to_balls(lo, hi)
}

/// Avg-pool: every window element receives `g / k²` (outward-rounded intervals).
fn avgpool_backward(gm: &[f64], gr: &[f64], c: usize, w: &Window) -> (Vec<f64>, Vec<f64>) {
    let plane = w.in_h * w.in_w;
    let p = w.out_h * w.out_w;
    let kk = exact(w.k * w.k);
    let n = c * plane;
    let mut lo = vec![0.0; n];
    let mut hi = vec![0.0; n];
    for ch in 0..c {
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                let q = ch * p + oy * w.out_w + ox;
                let (g, grr) = (gm[q], gr[q]);
                if g == 0.0 && grr == 0.0 {
                    continue;
                }
                let clo = down(down(g - grr) / kk);
                let chi = up(up(g + grr) / kk);
                for (_, t) in w.taps(oy, ox) {
                    let e = ch * plane + t;
                    lo[e] = down(lo[e] + clo);
                    hi[e] = up(hi[e] + chi);
                }
            }
        }
    }
    to_balls(lo, hi)
}

fn to_balls(lo: Vec<f64>, hi: Vec<f64>) -> (Vec<f64>, Vec<f64>) {
    let mut m = lo;
    let mut r = hi;
    for (m, r) in m.iter_mut().zip(r.iter_mut()) {
        let (l, h) = (*m, *r);
        if l == 0.0 && h == 0.0 {
            continue;
        }
        (*m, *r) = interval_to_ball(l, h);
    }
    (m, r)
}

/// Certified enclosure `[lo, hi]` of `⟨g, θ⟩` for every `g` in the ball vector `grad`
/// (flat, [`Params`] order) and the exact parameters `θ` (Lemma B1 with n = #params).
pub fn dot_with_params(grad: &BallVec, params: &Params) -> Result<(f64, f64)> {
    let n = grad.len();
    if params.len() != n {
        return Err(Error::Shape(format!(
            "{n} gradient entries for {} parameters",
            params.len()
        )));
    }
    let (mut m, mut r, mut a) = (0.0, 0.0, 0.0);
    for ((&gmi, &gri), &t) in grad.mid.iter().zip(&grad.rad).zip(params.values()) {
        let t = t as f64;
        let prod = gmi * t;
        m += prod;
        a += prod.abs();
        r += gri * t.abs();
    }
    let rad = finish_rad(r, a, &RadConst::new(n)?);
    Ok((down(m - rad), up(m + rad)))
}

/// Certified accumulator of `Σ_c λ_c g_c` over gradient enclosures `g_c` and exact f64
/// multipliers `λ_c ≥ 0`, without storing the `g_c`: the result contains
/// `Σ_c λ_c h_c` for every choice `h_c ∈ g_c`.
///
/// Invariant: `mid`, `rad`, `abs` have one entry per parameter; `rad` holds
/// `fl(Σ λ_c r_c)` and `abs` `fl(Σ |fl(λ_c m_c)|)`, `terms` the number of added terms
/// (the `n` of Lemma B1; any summation order and any merge order is covered).
#[derive(Clone, Debug)]
pub struct GradSum {
    mid: Vec<f64>,
    rad: Vec<f64>,
    abs: Vec<f64>,
    terms: usize,
}

impl GradSum {
    /// An empty sum over `n` parameters.
    pub fn new(n: usize) -> Self {
        Self {
            mid: vec![0.0; n],
            rad: vec![0.0; n],
            abs: vec![0.0; n],
            terms: 0,
        }
    }

    /// Adds `λ g` (λ exact, `≥ 0` and finite).
    pub fn add(&mut self, lambda: f64, g: &BallVec) -> Result<()> {
        if !(lambda >= 0.0 && lambda.is_finite()) {
            return Err(Error::Invalid(format!(
                "multiplier {lambda} is not a finite non-negative number"
            )));
        }
        if g.len() != self.mid.len() {
            return Err(Error::Shape(format!(
                "gradient of length {} added to a sum of length {}",
                g.len(),
                self.mid.len()
            )));
        }
        self.terms += 1;
        if lambda == 0.0 {
            return Ok(());
        }
        // Elementwise and independent: parallel chunks do not change any sum's order.
        const CHUNK: usize = 1 << 15;
        self.mid
            .par_chunks_mut(CHUNK)
            .zip(self.abs.par_chunks_mut(CHUNK))
            .zip(self.rad.par_chunks_mut(CHUNK))
            .zip(g.mid.par_chunks(CHUNK).zip(g.rad.par_chunks(CHUNK)))
            .for_each(|(((m, a), r), (gm, gr))| {
                for i in 0..m.len() {
                    let p = lambda * gm[i];
                    m[i] += p;
                    a[i] += p.abs();
                    r[i] += lambda * gr[i];
                }
            });
        Ok(())
    }

    /// Adds another partial sum (a reordering of the same sum: Lemma B1 holds for any
    /// order).
    pub fn merge(&mut self, other: &GradSum) {
        for i in 0..self.mid.len() {
            self.mid[i] += other.mid[i];
            self.abs[i] += other.abs[i];
            self.rad[i] += other.rad[i];
        }
        self.terms += other.terms;
    }

    /// Number of terms added so far.
    pub fn terms(&self) -> usize {
        self.terms
    }

    /// The certified enclosure of the sum.
    pub fn finish(self) -> Result<BallVec> {
        let k = RadConst::new(self.terms)?;
        let mut rad = self.rad;
        for (r, &a) in rad.iter_mut().zip(&self.abs) {
            *r = finish_rad(*r, a, &k);
        }
        let out = BallVec { mid: self.mid, rad };
        if !out.is_valid() {
            return Err(Error::Certify(
                "the sum of gradient enclosures overflowed f64".into(),
            ));
        }
        Ok(out)
    }
}

/// Squared radius helper for tests and reports: `max_i rad_i` of a ball vector.
pub fn max_radius(v: &BallVec) -> f64 {
    v.rad.iter().fold(0.0, |a: f64, &b| a.max(b))
}

/// Unit-roundoff used in the bounds (re-exported for the proofs' notation).
pub const UNIT_ROUNDOFF: f64 = U;
