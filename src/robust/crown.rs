//! A CROWN-style linear-relaxation lower bound on the class gaps over an L∞ box, sound under
//! floating point (proofs/robust-crown.md), for every layer kind of [`crate::model::Op`]: dense and
//! conv2d (any stride / padding, with or without bias), max- and avg-pool (overlapping
//! windows included), ReLU, LeakyReLU with slope `≤ 1`, flatten.
//!
//! This is the "CROWN-IBP" variant: the pre-activation bounds of the intermediate layers are
//! the IBP enclosures of [`super::ibp::forward_box`]; back-substitution runs only from
//! the output gap specifications (`k − 1` rows for `k` classes, all at once).
//!
//! The bound is kept as `s_j(x) ≥ Σ_k λ_k a_k + β` with `λ` EXACT f64 numbers and `β` a
//! rounded-down constant: every rounding error of a back-substitution step (`λ' = fl(Wᵀλ)`
//! by gemm or a transposed convolution, `μ = fl(λ·slope)`, pool accumulations) is bounded a
//! priori and charged to `β` using the IBP enclosures of the activations, so the final
//! minimisation over the box is of an exactly known linear function, done with downward
//! rounding.

use std::sync::Arc;

use crate::certify::ball::BallVec;
use crate::certify::forward::CertifiedNet;
use crate::certify::forward::prepare::{Affine, PreparedNet, PreparedOp};
use crate::certify::margin::Task;
use crate::certify::round::{ETA, U, down, gamma_up, interval_to_ball, up};
use crate::error::{Error, Result};
use crate::linalg::{Accum, MatMut, MatRef, Par, matmul};
use crate::model::{ModelSpec, Params, Window};

/// One layer prepared for back-substitution: the shared exact weights of the
/// [`PreparedNet`] plus the column sums and term counts of the a-priori charges.
#[derive(Clone, Debug)]
pub(crate) enum BackSub {
    /// `z = W a + b`, `W: [out, inp]` row-major (exact f32 values as f64, `affine.w`);
    /// `colsum[k] ≥ Σ_o |W[o, k]|` (rounded up).
    Dense {
        affine: Arc<Affine>,
        inp: usize,
        colsum: Vec<f64>,
    },
    /// `z[o, p] = Σ_r W[o, r] col[r, p] + b[o]` with the im2col gather `table[r·P + p]`
    /// (`u32::MAX` in the zero padding), `W: [out, fan]`, `fan = c_in·k·k`, `P = oh·ow`.
    /// `terms ≥` the number of products summed into one entry of `Wᵀλ` (`out·⌈k/s⌉²`);
    /// `colsum[i] ≥ Σ_{o,ky,kx} |W[o, c(i), ky, kx]|` for input `i` of channel `c(i)`.
    Conv {
        affine: Arc<Affine>,
        pixels: usize,
        in_len: usize,
        terms: usize,
        colsum: Vec<f64>,
        table: Arc<[u32]>,
    },
    /// Max- (`max`) or avg-pool over `channels` planes, valid windows.
    Pool {
        win: Window,
        channels: usize,
        max: bool,
    },
    /// `max(z, a·z)`, `a ≤ 1` exact (ReLU: `a = 0`).
    Act { slope: f64 },
    /// Identity on the values (C-major on both sides).
    Flatten,
}

/// A network prepared for CROWN back-substitution.
///
/// Invariant: `steps[i]` is layer `i` of the spec's plan, `lens[i]` its input length and
/// `lens[steps.len()]` the number of outputs; weights are the [`PreparedNet`]'s exact copies
/// of the f32 parameters.
#[derive(Clone, Debug)]
pub struct Crown {
    steps: Vec<BackSub>,
    lens: Vec<usize>,
}

impl Crown {
    /// Prepares `spec` with `params` for back-substitution. Errors on parameters that do not
    /// fit the spec, a LeakyReLU slope above 1 (a concave activation, not relaxed here), or
    /// layers too large for the a-priori rounding bound.
    pub fn new(spec: &ModelSpec, params: &Params) -> Result<Self> {
        Self::from_prepared(&PreparedNet::from_spec(spec, params)?)
    }

    /// Prepares back-substitution over an already prepared network (its weights and gather
    /// tables are shared, not copied). Errors as [`Crown::new`].
    pub fn from_prepared(net: &PreparedNet) -> Result<Self> {
        let plan = net.plan();
        let mut steps = Vec::with_capacity(plan.len());
        let mut lens = Vec::with_capacity(plan.len() + 1);
        for (p, op) in net.layers() {
            lens.push(p.input.len());
            let step = match op {
                PreparedOp::Dense(a) => {
                    gamma_up(a.out)?;
                    let n = p.input.len();
                    let mut colsum = vec![0.0f64; n];
                    for row in a.w.chunks_exact(n.max(1)) {
                        for (c, v) in colsum.iter_mut().zip(row) {
                            *c = up(*c + v.abs());
                        }
                    }
                    BackSub::Dense {
                        affine: Arc::clone(a),
                        inp: n,
                        colsum,
                    }
                }
                PreparedOp::Conv {
                    affine: a,
                    window: win,
                    c_in,
                    table,
                } => {
                    let kernel = win.k;
                    let per_dim = kernel.div_ceil(win.stride);
                    let terms = a.out * per_dim * per_dim;
                    gamma_up(terms)?;
                    let (c_in, kk) = (*c_in, kernel * kernel);
                    let mut chsum = vec![0.0f64; c_in];
                    for row in a.w.chunks_exact((c_in * kk).max(1)) {
                        for (r, v) in row.iter().enumerate() {
                            chsum[r / kk] = up(chsum[r / kk] + v.abs());
                        }
                    }
                    let plane = p.input.h * p.input.w;
                    let colsum = (0..p.input.len()).map(|i| chsum[i / plane]).collect();
                    BackSub::Conv {
                        affine: Arc::clone(a),
                        pixels: win.out_h * win.out_w,
                        in_len: p.input.len(),
                        terms,
                        colsum,
                        table: Arc::clone(table),
                    }
                }
                PreparedOp::MaxPool { window, channels } => BackSub::Pool {
                    win: *window,
                    channels: *channels,
                    max: true,
                },
                PreparedOp::AvgPool { window, channels } => BackSub::Pool {
                    win: *window,
                    channels: *channels,
                    max: false,
                },
                PreparedOp::Flatten => BackSub::Flatten,
                PreparedOp::Relu => BackSub::Act { slope: 0.0 },
                &PreparedOp::LeakyRelu { slope } => {
                    if slope.is_nan() || slope > 1.0 {
                        return Err(Error::Certify(format!(
                            "CROWN relaxes LeakyReLU with slope ≤ 1 only (convex), not {slope}"
                        )));
                    }
                    BackSub::Act {
                        slope: slope as f64,
                    }
                }
            };
            steps.push(step);
        }
        lens.push(net.outputs());
        Ok(Self { steps, lens })
    }

    /// Full CROWN: tightens the pre-activation enclosure `encl[i]` of every activation layer
    /// `i` by back-substitution from that layer (proofs/robust-crown-full.md), for its
    /// unstable units only (`lo < 0 < hi`: the relaxation of a stable unit is exact), in
    /// order, re-propagating IBP from each tightened layer (`encl` from
    /// [`super::ibp::forward_box`] of one example). With a box input, layers with nothing but
    /// one affine layer before them are skipped (IBP is then exact up to rounding).
    /// `rows_per_pass` bounds the memory (rows back-substituted together); a layer with more
    /// than `max_unstable` unstable units keeps its IBP enclosure (the cost knob: each
    /// unstable unit costs two back-substituted rows).
    pub fn refine(
        &self,
        net: &PreparedNet,
        encl: &mut [BallVec],
        input: &InputSet,
        rows_per_pass: usize,
        max_unstable: usize,
    ) -> Result<()> {
        if encl.len() != self.steps.len() + 1 {
            return Err(Error::Shape(
                "CROWN: the layer enclosures do not fit the network".into(),
            ));
        }
        for i in 0..self.steps.len() {
            if !matches!(self.steps[i], BackSub::Act { .. }) {
                continue;
            }
            let affine_only = self.steps[..i]
                .iter()
                .filter(|s| !matches!(s, BackSub::Flatten))
                .count()
                <= 1;
            if affine_only {
                match input {
                    InputSet::Box => continue,
                    InputSet::L2 { center, eps } => {
                        if self.first_layer_l2(net, encl, i, center, *eps)? {
                            continue;
                        }
                    }
                }
            }
            let e = &encl[i];
            let n = e.len();
            let unstable: Vec<usize> = (0..n).filter(|&k| e.lo(k) < 0.0 && e.hi(k) > 0.0).collect();
            if unstable.is_empty() || unstable.len() > max_unstable {
                continue;
            }
            let per = (rows_per_pass / 2).max(1);
            let mut lo: Vec<f64> = (0..n).map(|k| e.lo(k)).collect();
            let mut hi: Vec<f64> = (0..n).map(|k| e.hi(k)).collect();
            for chunk in unstable.chunks(per) {
                let mut lam = vec![0.0; 2 * chunk.len() * n];
                for (r, &k) in chunk.iter().enumerate() {
                    lam[2 * r * n + k] = 1.0;
                    lam[(2 * r + 1) * n + k] = -1.0;
                }
                let b = self.lower_at(encl, i, lam, input, None)?;
                for (r, &k) in chunk.iter().enumerate() {
                    lo[k] = lo[k].max(b[2 * r]);
                    hi[k] = hi[k].min(-b[2 * r + 1]);
                }
            }
            let mut t = encl[i].clone();
            for k in 0..n {
                if lo[k] <= hi[k] {
                    (t.mid[k], t.rad[k]) = interval_to_ball(lo[k], hi[k]);
                }
            }
            super::ibp::intersect(&mut encl[i], &t);
            super::ibp::forward_from(net, encl, i, 1)?;
        }
        Ok(())
    }

    /// The pre-activation enclosure `encl[i]` of the first affine layer over an L2 ball, in
    /// closed form (proofs/robust-crown-full.md, "The first layer over an L2 ball"): unit `k`
    /// of output channel / row `o` is `z_k(x0) ± ε‖w_o‖₂` with `z_k(x0)` over the centre's
    /// enclosure. Returns false (nothing done) when the layers before `i` are not one dense or
    /// conv layer (and flattens).
    fn first_layer_l2(
        &self,
        net: &PreparedNet,
        encl: &mut [BallVec],
        i: usize,
        center: &BallVec,
        eps: f64,
    ) -> Result<bool> {
        let Some((affine, pixels)) = self.steps[..i].iter().find_map(|s| match s {
            BackSub::Dense { affine, .. } => Some((affine, 1)),
            BackSub::Conv { affine, pixels, .. } => Some((affine, *pixels)),
            _ => None,
        }) else {
            return Ok(false);
        };
        let fan = affine.fan_in;
        let norms: Vec<f64> = affine
            .w
            .chunks_exact(fan.max(1))
            .map(|row| up(eps * up(row.iter().fold(0.0f64, |s, &w| up(s + up(w * w))).sqrt())))
            .collect();
        let zc = super::ibp::forward_prefix(net, center, i, 1)?;
        let mut t = zc.clone();
        for k in 0..t.len() {
            let d = norms[k / pixels.max(1)];
            (t.mid[k], t.rad[k]) = interval_to_ball(down(zc.lo(k) - d), up(zc.hi(k) + d));
        }
        super::ibp::intersect(&mut encl[i], &t);
        super::ibp::forward_from(net, encl, i, 1)?;
        Ok(true)
    }

    /// Certified lower bound of every gap `Φ_y − Φ_j` (`j ≠ y`, increasing; binary: `[q]`)
    /// over the box `x` (one example), whose layer enclosures `encl` come from
    /// [`super::ibp::forward_box`]. Returns the minimum (a lower bound of the margin);
    /// `−∞` when the bound overflowed. Errors when `encl` does not fit the network.
    pub fn margin_lower(&self, encl: &[BallVec], label: u8, task: Task) -> Result<f64> {
        Ok(self
            .gap_lowers(encl, label, task)?
            .into_iter()
            .fold(f64::INFINITY, f64::min))
    }

    /// Certified lower bounds of every gap (as [`Crown::margin_lower`], one per gap: `j ≠ y`
    /// increasing; binary: `[q]`). A bound that overflowed is `−∞`.
    pub fn gap_lowers(&self, encl: &[BallVec], label: u8, task: Task) -> Result<Vec<f64>> {
        self.gap_lowers_over(encl, label, task, &InputSet::Box, None)
    }

    /// [`Crown::gap_lowers`] over `input`, with the lower ReLU slopes `alphas` when given
    /// (per activation layer `[gaps, units]`, see `Crown::lower_at`).
    pub fn gap_lowers_over(
        &self,
        encl: &[BallVec],
        label: u8,
        task: Task,
        input: &InputSet,
        alphas: Option<&[Option<Vec<f64>>]>,
    ) -> Result<Vec<f64>> {
        let lam = self.gap_specs(label, task)?;
        self.lower_at(encl, self.steps.len(), lam, input, alphas)
    }

    /// The gap specification rows `e_y − e_j` (`j ≠ y` increasing; binary: `±1`),
    /// row-major `[gaps, outputs]`. Errors when the task does not fit the network.
    pub(crate) fn gap_specs(&self, label: u8, task: Task) -> Result<Vec<f64>> {
        let k = task.outputs();
        if k != self.lens[self.steps.len()] || label as usize >= k.max(2) {
            return Err(Error::Invalid(format!(
                "CROWN: a task with {k} outputs (label {label}) for a network with {} outputs",
                self.lens[self.steps.len()]
            )));
        }
        Ok(match task {
            Task::Binary => vec![if label == 1 { 1.0 } else { -1.0 }],
            Task::Multi(_) => {
                let y = label as usize;
                let mut lam = Vec::with_capacity((k - 1) * k);
                for j in (0..k).filter(|&j| j != y) {
                    let mut c = vec![0.0; k];
                    c[y] = 1.0;
                    c[j] = -1.0;
                    lam.extend(c);
                }
                lam
            }
        })
    }

    /// The layer steps, for the slope optimizer (robust/alpha.rs).
    pub(crate) fn steps(&self) -> &[BackSub] {
        &self.steps
    }

    /// `lens[i]`: the input length of layer `i` (`lens[steps]`: the outputs).
    pub(crate) fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// Lower bounds of `c_sᵀ a_top(x)` over the input set, `a_top` the output of layer
    /// `top − 1` (`encl[top]`; the logits for `top = steps`), one per row `c_s` of
    /// `lam` (`[rows, lens[top]]` row-major): back-substitution through layers `top − 1, …, 0`
    /// with the enclosures `encl[..top]` (every one must contain its layer's exact values
    /// over the input set). `alphas[i]`, when given for an activation layer `i`, holds the
    /// lower-line slope of every (row, unit) in `[a, 1]` (`[rows, lens[i]]`) instead of
    /// CROWN's choice (proofs/robust-alpha.md). A bound that overflowed is `−∞`.
    pub(crate) fn lower_at(
        &self,
        encl: &[BallVec],
        top: usize,
        mut lam: Vec<f64>,
        input: &InputSet,
        alphas: Option<&[Option<Vec<f64>>]>,
    ) -> Result<Vec<f64>> {
        if top > self.steps.len()
            || encl.len() < top + 1
            || encl
                .iter()
                .zip(&self.lens)
                .take(top + 1)
                .any(|(e, &l)| e.len() != l)
            || !lam.len().is_multiple_of(self.lens[top].max(1))
            || alphas.is_some_and(|a| a.len() != self.steps.len())
        {
            return Err(Error::Shape(
                "CROWN: the layer enclosures do not fit the network (one example expected)".into(),
            ));
        }
        let ns = lam.len() / self.lens[top].max(1);
        let mut beta = vec![0.0f64; ns];
        let mut dead = vec![false; ns];
        for (i, step) in self.steps[..top].iter().enumerate().rev() {
            let inp = &encl[i]; // input enclosure of layer i
            let n_in = self.lens[i];
            let n_out = self.lens[i + 1];
            debug_assert_eq!(lam.len(), ns * n_out);
            let lo: Vec<f64> = (0..n_in).map(|k| inp.lo(k)).collect();
            let hi: Vec<f64> = (0..n_in).map(|k| inp.hi(k)).collect();
            let amax: Vec<f64> = lo
                .iter()
                .zip(&hi)
                .map(|(l, h)| l.abs().max(h.abs()))
                .collect();
            match step {
                BackSub::Dense {
                    affine,
                    inp: n,
                    colsum,
                } => {
                    let (out, w) = (affine.out, &affine.w);
                    if let Some(b) = &affine.bias {
                        add_bias(&lam, &mut beta, b, 1);
                    }
                    let mut next = vec![0.0; ns * n];
                    // λ' = Λ·W: each entry a sum of `out` once-rounded products, any order.
                    matmul(
                        MatMut::row_major(&mut next, ns, *n),
                        Accum::Replace,
                        MatRef::row_major(&lam, ns, out),
                        MatRef::row_major(w, out, *n),
                        Par::Seq,
                    );
                    product_charge(&lam, &mut beta, colsum, &amax, out)?;
                    lam = next;
                }
                BackSub::Conv {
                    affine,
                    pixels,
                    in_len,
                    terms,
                    colsum,
                    table,
                } => {
                    let (out, fan, pp) = (affine.out, affine.fan_in, *pixels);
                    let w = &affine.w;
                    if let Some(b) = &affine.bias {
                        add_bias(&lam, &mut beta, b, pp);
                    }
                    // The col2im scatter-add is part of the same summation tree of ≤ `terms`
                    // products per input entry.
                    let next = conv_transpose(&lam, w, (out, fan, pp), ns, *in_len, table);
                    product_charge(&lam, &mut beta, colsum, &amax, *terms)?;
                    lam = next;
                }
                BackSub::Pool { win, channels, max } => {
                    lam = pool_back(win, *channels, *max, &lam, &mut beta, &lo, &hi, &amax);
                }
                BackSub::Act { slope } => {
                    let al = alphas.and_then(|a| a[i].as_deref());
                    act_back(*slope, &mut lam, &mut beta, &lo, &hi, al)
                }
                BackSub::Flatten => {}
            }
            // A non-finite coefficient or constant makes the invariant meaningless: the
            // spec's bound becomes −∞ (trivially sound) and its coefficients are dropped.
            for s in 0..ns {
                let ls = &mut lam[s * n_in..(s + 1) * n_in];
                if dead[s] || !beta[s].is_finite() || ls.iter().any(|v| !v.is_finite()) {
                    dead[s] = true;
                    ls.fill(0.0);
                    beta[s] = 0.0;
                }
            }
        }
        // min over the input set of Σ λ_k x_k.
        let n0 = self.lens[0];
        Ok((0..ns)
            .map(|s| {
                if dead[s] {
                    return f64::NEG_INFINITY;
                }
                let v = input.min_linear(&encl[0], &lam[s * n0..(s + 1) * n0], beta[s]);
                if v.is_nan() { f64::NEG_INFINITY } else { v }
            })
            .collect())
    }
}

/// The set of inputs a CROWN bound holds over.
#[derive(Clone, Copy, Debug)]
pub enum InputSet<'a> {
    /// The box `encl[0]` (the clipped L∞ box).
    Box,
    /// The L2 ball of radius `eps` around every exact point enclosed by `center` (one
    /// example; not clipped to the pixel domain). `encl[0]` must enclose the ball (e.g.
    /// `center ± eps`, rounded outward): it bounds the input activations of the charges.
    L2 {
        /// Enclosure of the exact centre (`p / 255`).
        center: &'a BallVec,
        /// Radius.
        eps: f64,
    },
}

impl InputSet<'_> {
    /// A lower bound of `min_x Σ λ_k x_k + β` over the set, `bx` the enclosing box
    /// (proofs/robust-crown-full.md, "L2 inputs"): every product and sum rounded down; for
    /// L2, `Σ λ_k x0_k − ε‖λ‖₂` with `x0` over the centre's enclosure and `‖λ‖₂` rounded up.
    fn min_linear(&self, bx: &BallVec, lam: &[f64], beta: f64) -> f64 {
        let corner = |x: &BallVec| {
            let mut v = beta;
            for (kk, &l) in lam.iter().enumerate() {
                let xv = if l >= 0.0 { x.lo(kk) } else { x.hi(kk) };
                v = down(v + down(l * xv));
            }
            v
        };
        match self {
            InputSet::Box => corner(bx),
            InputSet::L2 { center, eps } => {
                let norm = up(lam.iter().fold(0.0f64, |s, &l| up(s + up(l * l))).sqrt());
                down(corner(center) - up(eps * norm))
            }
        }
    }
}

/// `β_s += Σ_{o,p} λ_s[o·P + p]·b[o]`, every product and sum rounded down.
/// `Wᵀλ` of a convolution for `ns` specs at once, in f64 (the caller charges the rounding):
/// `lam` is `[ns, out, P]`, `w` row-major `[out, fan]`, `table` the im2col gather (input index
/// per `(fan, P)` entry, `u32::MAX` for padding); returns `[ns, in_len]` (Λ as `[out, ns·P]`,
/// one product `Wᵀ·Λ`, then the col2im scatter-add).
pub(super) fn conv_transpose(
    lam: &[f64],
    w: &[f64],
    (out, fan, pp): (usize, usize, usize),
    ns: usize,
    in_len: usize,
    table: &[u32],
) -> Vec<f64> {
    let sp = ns * pp;
    let mut lc = vec![0.0; out * sp];
    for s in 0..ns {
        for o in 0..out {
            let src = &lam[s * out * pp + o * pp..][..pp];
            lc[o * sp + s * pp..][..pp].copy_from_slice(src);
        }
    }
    let mut cols = vec![0.0; fan * sp];
    matmul(
        MatMut::row_major(&mut cols, fan, sp),
        Accum::Replace,
        MatRef::row_major(w, out, fan).transpose(),
        MatRef::row_major(&lc, out, sp),
        Par::Seq,
    );
    let mut next = vec![0.0; ns * in_len];
    for r in 0..fan {
        let trow = &table[r * pp..(r + 1) * pp];
        for s in 0..ns {
            let c = &cols[r * sp + s * pp..][..pp];
            let nx = &mut next[s * in_len..(s + 1) * in_len];
            for (&t, &v) in trow.iter().zip(c) {
                if t != u32::MAX {
                    nx[t as usize] += v;
                }
            }
        }
    }
    next
}

fn add_bias(lam: &[f64], beta: &mut [f64], b: &[f64], pixels: usize) {
    let per = b.len() * pixels;
    for (s, bs) in beta.iter_mut().enumerate() {
        for (idx, &l) in lam[s * per..(s + 1) * per].iter().enumerate() {
            if l != 0.0 {
                *bs = down(*bs + down(l * b[idx / pixels]));
            }
        }
    }
}

/// Charges the rounding error of `λ' = fl(Wᵀλ)` (each entry a sum of at most `n` once-rounded
/// products, any order) to every spec's `β`: with `A_k = Σ_t |W_tk λ_t| ≤ colsum_k·max|λ|`
/// and Higham's `|λ'_k − (Wᵀλ)_k| ≤ γ_n A_k + nη`, `Σ_k e_k amax_k ≤ γ_n max|λ| T + nη S` for
/// `T ≥ Σ_k colsum_k amax_k`, `S ≥ Σ_k amax_k` (proofs/robust-crown.md, "Dense").
fn product_charge(
    lam: &[f64],
    beta: &mut [f64],
    colsum: &[f64],
    amax: &[f64],
    n: usize,
) -> Result<()> {
    let g = gamma_up(n)?;
    let neta = n as f64 * ETA; // exact: a multiple of 2⁻¹⁰⁷⁴ below 2⁵³·2⁻¹⁰⁷⁴
    let (mut t, mut sa) = (0.0f64, 0.0f64);
    for (&c, &m) in colsum.iter().zip(amax) {
        t = up(t + up(c * m));
        sa = up(sa + m);
    }
    let under = up(neta * sa);
    let per = lam.len() / beta.len().max(1);
    for (s, b) in beta.iter_mut().enumerate() {
        let lmax = lam[s * per..(s + 1) * per]
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        if lmax == 0.0 {
            continue;
        }
        let slack = up(up(g * up(lmax * t)) + under);
        *b = down(*b - slack);
    }
    Ok(())
}

/// Adds `v` to `next[i]`, charging the rounding error of the addition (`≤ u|fl(a + b)|`; sums
/// of floats are exact on underflow) to `err[i]`.
#[inline]
fn acc(next: &mut [f64], err: &mut [f64], i: usize, v: f64) {
    let old = next[i];
    if old == 0.0 {
        next[i] = v;
    } else {
        let r = old + v;
        next[i] = r;
        err[i] = up(err[i] + up(U * r.abs()));
    }
}

/// Back-substitution through a max- or avg-pool layer (proofs/robust-crown.md, "Pooling").
/// `lo, hi, amax` are the IBP bounds of the pool input.
#[allow(clippy::too_many_arguments)]
fn pool_back(
    win: &Window,
    channels: usize,
    max: bool,
    lam: &[f64],
    beta: &mut [f64],
    lo: &[f64],
    hi: &[f64],
    amax: &[f64],
) -> Vec<f64> {
    let plane = win.in_h * win.in_w;
    let pp = win.out_h * win.out_w;
    let n_out = channels * pp;
    let n_in = channels * plane;
    let ns = beta.len();
    // Valid pooling: every tap of output `o` is inside its channel's plane.
    let window = move |o: usize| {
        let (ch, q) = (o / pp, o % pp);
        win.taps(q / win.out_w, q % win.out_w)
            .map(move |(_, t)| ch * plane + t)
    };
    // Max: per output, the input with the largest lower bound, whether it is the max
    // outright, and the largest upper bound.
    let mut star = vec![0usize; if max { n_out } else { 0 }];
    let mut decided = vec![false; star.len()];
    let mut umax = vec![0.0f64; star.len()];
    if max {
        for o in 0..n_out {
            let (mut j, mut lj) = (usize::MAX, f64::NEG_INFINITY);
            let mut u = f64::NEG_INFINITY;
            for i in window(o) {
                if j == usize::MAX || lo[i] > lj {
                    (j, lj) = (i, lo[i]);
                }
                u = u.max(hi[i]);
            }
            star[o] = j;
            umax[o] = u;
            decided[o] = window(o).all(|i| i == j || hi[i] <= lj);
        }
    }
    let kk = win.k * win.k;
    let kkf = kk as f64;
    let mut next = vec![0.0; ns * n_in];
    for s in 0..ns {
        let mut err = vec![0.0; n_in];
        let nx = &mut next[s * n_in..(s + 1) * n_in];
        for (o, &l) in lam[s * n_out..(s + 1) * n_out].iter().enumerate() {
            if l == 0.0 {
                continue;
            }
            if max {
                if decided[o] || l > 0.0 {
                    // max = x_j (decided) or max ≥ x_j with λ > 0.
                    acc(nx, &mut err, star[o], l);
                } else {
                    // λ < 0 and max ≤ max_i u_i: λ·max ≥ λ·max_i u_i.
                    beta[s] = down(beta[s] + down(l * umax[o]));
                }
            } else {
                let q = l / kkf;
                // |fl(λ/k²) − λ/k²| ≤ u|q| + η; zero when k² is a power of two and q normal.
                let qe = if kk.is_power_of_two() && q.abs() >= f64::MIN_POSITIVE {
                    0.0
                } else {
                    up(up(U * q.abs()) + ETA)
                };
                for i in window(o) {
                    acc(nx, &mut err, i, q);
                    if qe > 0.0 {
                        err[i] = up(err[i] + qe);
                    }
                }
            }
        }
        let mut slack = 0.0f64;
        for (e, m) in err.iter().zip(amax) {
            if *e > 0.0 {
                slack = up(slack + up(e * m));
            }
        }
        beta[s] = down(beta[s] - slack);
    }
    next
}

/// Back-substitution through `y = max(z, a·z)` (`a ≤ 1`; ReLU: `a = 0`) with pre-activation
/// bounds `z ∈ [lo, hi]` (proofs/robust-crown.md, "ReLU and LeakyReLU").
/// `alphas` (`[rows, n]`), when given, are the lower-line slopes of the straddling units
/// with `λ > 0` (clamped into `[a, 1]`; any such line is below `f`) instead of CROWN's
/// area heuristic.
fn act_back(
    a: f64,
    lam: &mut [f64],
    beta: &mut [f64],
    lo: &[f64],
    hi: &[f64],
    alphas: Option<&[f64]>,
) {
    let n = lo.len();
    // Upper line `y ≤ s z + c` of a straddling unit: s ≥ (u − a l)/(u − l), c ≥ (−l)(s − a).
    let lines: Vec<(f64, f64)> = lo
        .iter()
        .zip(hi)
        .map(|(&l, &u)| {
            if l >= 0.0 || u <= 0.0 {
                return (0.0, 0.0);
            }
            let al = if a == 0.0 { 0.0 } else { down(a * l) };
            let num = up(u - al);
            let s = if num >= 0.0 {
                up(num / down(u - l))
            } else {
                up(num / up(u - l))
            };
            (s, up(-l * up(s - a)))
        })
        .collect();
    for (s, b) in beta.iter_mut().enumerate() {
        let mut slack = 0.0f64;
        let ls = &mut lam[s * n..(s + 1) * n];
        for (k, lk) in ls.iter_mut().enumerate() {
            let (l, u, lv) = (lo[k], hi[k], *lk);
            if lv == 0.0 || l >= 0.0 {
                continue; // no contribution, or y = z
            }
            let zmax = (-l).max(u.abs());
            if u > 0.0
                && lv > 0.0
                && let Some(al) = alphas
            {
                // The lower line y ≥ α z, α ∈ [a, 1] (NaN → a).
                let al = al[s * n + k];
                let al = if al >= a { al.min(1.0) } else { a };
                if al == 0.0 {
                    *lk = 0.0;
                } else if al != 1.0 {
                    let mu = lv * al;
                    slack = up(slack + up(up(up(2.0 * U * mu.abs()) + ETA) * zmax));
                    *lk = mu;
                }
                continue;
            }
            // y = a z (u ≤ 0), or the lower line y ≥ a z (λ > 0, chosen when u < −l).
            let lower_a = u <= 0.0 || (lv > 0.0 && u < -l);
            if lower_a {
                if a == 0.0 {
                    *lk = 0.0;
                } else {
                    let mu = lv * a;
                    slack = up(slack + up(up(up(2.0 * U * mu.abs()) + ETA) * zmax));
                    *lk = mu;
                }
            } else if lv < 0.0 {
                // λ y ≥ λ s z + λ c.
                let (sl, c) = lines[k];
                let mu = lv * sl;
                slack = up(slack + up(up(up(2.0 * U * mu.abs()) + ETA) * zmax));
                *b = down(*b + down(lv * c));
                *lk = mu;
            }
            // else λ > 0 with the lower line y ≥ z: λ unchanged.
        }
        *b = down(*b - slack);
    }
}

/// Certified L∞ radii by bisection on ε with [`super::method::Method::Crown`]: the margin
/// lower bound `max(IBP, CROWN-IBP, full CROWN)` over the clipped box, each stage run only
/// where the previous ones do not prove the margin positive (all are sound, so their
/// maximum is), bisecting above the IBP radius: never below the IBP radius.
pub fn crown_radius(
    crown: &Crown,
    net: &CertifiedNet,
    data: &crate::data::Dataset,
    task: Task,
    eps_max: f64,
    steps: usize,
) -> Result<Vec<f64>> {
    use super::method::{Bounder, Method, RadiusOptions, radii};
    let bounder = Bounder::with_crown(Arc::clone(net.prepared()), crown.clone());
    let opts = RadiusOptions {
        method: Method::Crown,
        eps_max,
        steps,
        alpha_steps: 0,
    };
    radii(&bounder, data, task, super::Norm::Inf, &opts, None)
}
