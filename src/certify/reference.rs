//! Reference evaluation of the real network with rug: exact rationals (the truth, for small
//! nets) or MPFR floats of a chosen precision (round-to-nearest in every operation — an
//! approximation, accurate to far more digits than f64 for larger nets).
//!
//! Used by the soundness tests as the value every enclosure must contain. It shares no
//! arithmetic with [`super::forward`]: it walks the spec's plan directly, scalar by scalar.

use rug::{Assign, Float, Rational};

use crate::error::{Error, Result};
use crate::model::{Layer, ModelSpec, Params};

/// Arithmetic the reference evaluator needs.
trait RefNum: Clone {
    fn zero(&self) -> Self;
    fn weight(&self, v: f32) -> Self;
    fn pixel(&self, p: u8) -> Self;
    fn add_mul(&mut self, a: &Self, b: &Self);
    fn add(&mut self, a: &Self);
    fn is_neg(&self) -> bool;
    fn gt(&self, other: &Self) -> bool;
    fn div_int(&mut self, n: u32);
}

/// Exact rational arithmetic.
#[derive(Clone, Debug)]
struct Exact(Rational);

impl RefNum for Exact {
    fn zero(&self) -> Self {
        Exact(Rational::new())
    }
    fn weight(&self, v: f32) -> Self {
        Exact(Rational::from_f32(v).expect("finite weights (checked)"))
    }
    fn pixel(&self, p: u8) -> Self {
        Exact(Rational::from((p as u32, 255u32)))
    }
    fn add_mul(&mut self, a: &Self, b: &Self) {
        self.0 += Rational::from(&a.0 * &b.0);
    }
    fn add(&mut self, a: &Self) {
        self.0 += &a.0;
    }
    fn is_neg(&self) -> bool {
        self.0.is_negative()
    }
    fn gt(&self, other: &Self) -> bool {
        self.0 > other.0
    }
    fn div_int(&mut self, n: u32) {
        self.0 /= n;
    }
}

/// MPFR floats of a fixed precision, round-to-nearest.
#[derive(Clone, Debug)]
struct Mp(Float);

impl RefNum for Mp {
    fn zero(&self) -> Self {
        Mp(Float::new(self.0.prec()))
    }
    fn weight(&self, v: f32) -> Self {
        Mp(Float::with_val(self.0.prec(), v))
    }
    fn pixel(&self, p: u8) -> Self {
        Mp(Float::with_val(self.0.prec(), p as u32) / 255u32)
    }
    fn add_mul(&mut self, a: &Self, b: &Self) {
        let t = Float::with_val(self.0.prec(), &a.0 * &b.0);
        self.0 += t;
    }
    fn add(&mut self, a: &Self) {
        self.0 += &a.0;
    }
    fn is_neg(&self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }
    fn gt(&self, other: &Self) -> bool {
        self.0 > other.0
    }
    fn div_int(&mut self, n: u32) {
        self.0 /= n;
    }
}

fn evaluate<N: RefNum>(
    spec: &ModelSpec,
    params: &Params,
    image: &[u8],
    proto: N,
) -> Result<Vec<N>> {
    params.check(spec)?;
    if image.len() != spec.input.len() {
        return Err(Error::Shape(format!(
            "an image of {} values for an input of {}",
            image.len(),
            spec.input.len()
        )));
    }
    let mut x: Vec<N> = image.iter().map(|&p| proto.pixel(p)).collect();
    let mut weights = params.layers.iter();
    for p in spec.plan()? {
        x = match p.layer {
            Layer::Dense { out, .. } => {
                let lp = weights.next().expect("checked");
                let n = p.input.len();
                (0..out)
                    .map(|o| {
                        let mut acc = match &lp.bias {
                            Some(b) => proto.weight(b[o]),
                            None => proto.zero(),
                        };
                        for (w, xj) in lp.weight[o * n..(o + 1) * n].iter().zip(&x) {
                            acc.add_mul(&proto.weight(*w), xj);
                        }
                        acc
                    })
                    .collect()
            }
            Layer::Conv2d { out, kernel: k, .. } => {
                let lp = weights.next().expect("checked");
                let w = p.window.expect("window");
                let c_in = p.input.c;
                let mut y = Vec::with_capacity(p.output.len());
                for o in 0..out {
                    for oy in 0..w.out_h {
                        for ox in 0..w.out_w {
                            let mut acc = match &lp.bias {
                                Some(b) => proto.weight(b[o]),
                                None => proto.zero(),
                            };
                            for c in 0..c_in {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        if let (Some(iy), Some(ix)) =
                                            (w.in_row(oy, ky), w.in_col(ox, kx))
                                        {
                                            let wv = lp.weight[((o * c_in + c) * k + ky) * k + kx];
                                            acc.add_mul(
                                                &proto.weight(wv),
                                                &x[(c * w.in_h + iy) * w.in_w + ix],
                                            );
                                        }
                                    }
                                }
                            }
                            y.push(acc);
                        }
                    }
                }
                y
            }
            Layer::MaxPool { .. } | Layer::AvgPool { .. } => {
                let w = p.window.expect("window");
                let is_max = matches!(p.layer, Layer::MaxPool { .. });
                let mut y = Vec::with_capacity(p.output.len());
                for c in 0..p.input.c {
                    for oy in 0..w.out_h {
                        for ox in 0..w.out_w {
                            let at = |ky: usize, kx: usize| {
                                &x[(c * w.in_h + oy * w.stride + ky) * w.in_w + ox * w.stride + kx]
                            };
                            let mut acc = at(0, 0).clone();
                            for ky in 0..w.k {
                                for kx in 0..w.k {
                                    if ky == 0 && kx == 0 {
                                        continue;
                                    }
                                    let v = at(ky, kx);
                                    if is_max {
                                        if v.gt(&acc) {
                                            acc = v.clone();
                                        }
                                    } else {
                                        acc.add(v);
                                    }
                                }
                            }
                            if !is_max {
                                acc.div_int((w.k * w.k) as u32);
                            }
                            y.push(acc);
                        }
                    }
                }
                y
            }
            Layer::Flatten => x,
            Layer::Relu => x
                .into_iter()
                .map(|v| if v.is_neg() { proto.zero() } else { v })
                .collect(),
            Layer::LeakyRelu { slope } => {
                let s = proto.weight(slope);
                x.into_iter()
                    .map(|v| {
                        if v.is_neg() {
                            let mut r = proto.zero();
                            r.add_mul(&s, &v);
                            r
                        } else {
                            v
                        }
                    })
                    .collect()
            }
        };
    }
    Ok(x)
}

/// Exact rational logits of the real network (f32 weights as exact reals, inputs `p/255`).
/// Cost grows with the bit length of the numbers: use it for small nets.
pub fn reference_logits_exact(
    spec: &ModelSpec,
    params: &Params,
    image: &[u8],
) -> Result<Vec<Rational>> {
    Ok(evaluate(spec, params, image, Exact(Rational::new()))?
        .into_iter()
        .map(|e| e.0)
        .collect())
}

/// Logits of the real network evaluated in MPFR at `prec` bits, each operation rounded to
/// nearest (not a bound; at 256 bits accurate to far below f64 resolution for nets of
/// moderate depth). For exact values use [`reference_logits_exact`].
pub fn reference_logits(
    spec: &ModelSpec,
    params: &Params,
    image: &[u8],
    prec: u32,
) -> Result<Vec<Float>> {
    let mut proto = Float::new(prec);
    proto.assign(0);
    Ok(evaluate(spec, params, image, Mp(proto))?
        .into_iter()
        .map(|e| e.0)
        .collect())
}
