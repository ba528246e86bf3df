//! The test oracle: the real network evaluated in rug, with exact rationals (the truth, for
//! small nets) or MPFR floats of a chosen precision (round-to-nearest in every operation, an
//! approximation accurate to far more digits than f64 for larger nets); and exact membership
//! tests of the crate's enclosures.
//!
//! It shares no arithmetic with the crate's certified passes: it walks the spec's plan
//! directly, scalar by scalar, in `rug`. Every enclosure the soundness tests check must
//! contain its value.

use rug::{Assign, Float, Rational};

use margincert::certify::BallVec;
use margincert::certify::DdBallVec;
use margincert::model::{ModelSpec, Op, Params, Window};
use margincert::{Error, Result};

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

/// A pooling window over every channel of `x`: the first tap starts the accumulator, `fold`
/// takes in the others in row-major kernel order, `finish` closes each window.
fn pool<N: RefNum>(
    x: &[N],
    w: &Window,
    channels: usize,
    fold: impl Fn(&mut N, &N),
    finish: impl Fn(&mut N),
) -> Vec<N> {
    let mut y = Vec::with_capacity(channels * w.out_h * w.out_w);
    for c in 0..channels {
        let plane = &x[c * w.in_h * w.in_w..(c + 1) * w.in_h * w.in_w];
        for oy in 0..w.out_h {
            for ox in 0..w.out_w {
                let mut taps = w.taps(oy, ox);
                let (_, first) = taps.next().expect("a pooling window has a tap");
                let mut acc = plane[first].clone();
                for (_, i) in taps {
                    fold(&mut acc, &plane[i]);
                }
                finish(&mut acc);
                y.push(acc);
            }
        }
    }
    y
}

/// Evaluates the network on `image`, calling `each` with every layer's output in order, and
/// returns the logits.
fn evaluate<N: RefNum>(
    spec: &ModelSpec,
    params: &Params,
    image: &[u8],
    proto: N,
    mut each: impl FnMut(&[N]),
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
        x = match p.op {
            Op::Dense { out, inp, .. } => {
                let lp = weights.next().expect("checked");
                (0..out)
                    .map(|o| {
                        let mut acc = match &lp.bias {
                            Some(b) => proto.weight(b[o]),
                            None => proto.zero(),
                        };
                        for (w, xj) in lp.weight[o * inp..(o + 1) * inp].iter().zip(&x) {
                            acc.add_mul(&proto.weight(*w), xj);
                        }
                        acc
                    })
                    .collect()
            }
            Op::Conv {
                out,
                c_in,
                window: w,
                ..
            } => {
                let lp = weights.next().expect("checked");
                let kk = w.k * w.k;
                let plane = w.in_h * w.in_w;
                let mut y = Vec::with_capacity(p.output.len());
                for o in 0..out {
                    for oy in 0..w.out_h {
                        for ox in 0..w.out_w {
                            let mut acc = match &lp.bias {
                                Some(b) => proto.weight(b[o]),
                                None => proto.zero(),
                            };
                            for c in 0..c_in {
                                for (t, i) in w.taps(oy, ox) {
                                    let wv = lp.weight[(o * c_in + c) * kk + t];
                                    acc.add_mul(&proto.weight(wv), &x[c * plane + i]);
                                }
                            }
                            y.push(acc);
                        }
                    }
                }
                y
            }
            Op::MaxPool { window, channels } => pool(
                &x,
                &window,
                channels,
                |acc, v| {
                    if v.gt(acc) {
                        *acc = v.clone();
                    }
                },
                |_| {},
            ),
            Op::AvgPool { window, channels } => pool(
                &x,
                &window,
                channels,
                |acc, v| acc.add(v),
                |acc| acc.div_int((window.k * window.k) as u32),
            ),
            Op::Flatten => x,
            Op::Relu => x
                .into_iter()
                .map(|v| if v.is_neg() { proto.zero() } else { v })
                .collect(),
            Op::LeakyRelu { slope } => {
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
        each(&x);
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
    Ok(
        evaluate(spec, params, image, Exact(Rational::new()), |_| {})?
            .into_iter()
            .map(|e| e.0)
            .collect(),
    )
}

/// Exact activations of the real network: index 0 the input `p/255`, index `i + 1` the
/// output of layer `i` (the last one the logits of [`reference_logits_exact`]).
pub fn reference_activations_exact(
    spec: &ModelSpec,
    params: &Params,
    image: &[u8],
) -> Result<Vec<Vec<Rational>>> {
    let mut acts = vec![
        image
            .iter()
            .map(|&p| Rational::from((p as u32, 255u32)))
            .collect::<Vec<_>>(),
    ];
    evaluate(spec, params, image, Exact(Rational::new()), |y| {
        acts.push(y.iter().map(|e| e.0.clone()).collect())
    })?;
    Ok(acts)
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
    Ok(evaluate(spec, params, image, Mp(proto), |_| {})?
        .into_iter()
        .map(|e| e.0)
        .collect())
}

/// The exact value of a finite `f32`.
pub fn rat32(v: f32) -> Rational {
    Rational::from_f32(v).expect("finite")
}

/// The exact value of a finite `f64`.
pub fn rat64(v: f64) -> Rational {
    Rational::from_f64(v).expect("finite")
}

/// Exact test `|q − mid| ≤ rad` of entry `i` of a binary64 ball vector.
pub fn ball_contains(b: &BallVec, i: usize, q: &Rational) -> bool {
    let m = rat64(b.mid[i]);
    let r = rat64(b.rad[i]);
    r >= 0 && Rational::from(q - &m).abs() <= r
}

/// Exact test `|q − (hi + lo)| ≤ rad` of entry `i` of a double-double ball vector.
pub fn dd_contains(x: &DdBallVec, i: usize, q: &Rational) -> bool {
    let m = rat64(x.hi[i]) + rat64(x.lo[i]);
    let r = rat64(x.rad[i]);
    r >= 0 && Rational::from(q - &m).abs() <= r
}
