//! The certified direction change (`certify::direction`, proofs/direction.md) against the exact
//! cosine (rational arithmetic) and a 1024-bit MPFR angle, on random and adversarial pairs:
//! nearly parallel vectors (the cosine is 1 - tiny: the catastrophic case for `acos`), nearly
//! orthogonal and opposite ones, and values spanning f32's whole exponent range.

use margincert::certify::direction::direction_change;
use margincert::model::{LayerParams, Params};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rug::{Float, Rational};

use crate::common::exact::{rat32, rat64};

fn params(layers: &[Vec<f32>]) -> Params {
    Params {
        layers: layers
            .iter()
            .enumerate()
            .map(|(i, w)| LayerParams {
                index: i,
                weight_shape: vec![1, w.len()],
                weight: w.clone(),
                bias: None,
            })
            .collect(),
    }
}

/// `c ≤ dot / sqrt(n)` exactly (`n > 0`), by signs and squares.
fn le_cos(c: &Rational, dot: &Rational, n: &Rational) -> bool {
    let c2n = Rational::from(c * c) * n;
    let d2 = Rational::from(dot * dot);
    match (c.cmp0().is_le(), dot.cmp0().is_ge()) {
        (true, true) => true,
        (true, false) => c2n >= d2,
        (false, true) => c2n <= d2,
        (false, false) => false,
    }
}

/// Checks every claim of the certified change between `a` and `b` against the truth.
fn check(a: &[Vec<f32>], b: &[Vec<f32>], prec: u32) -> Result<(), TestCaseError> {
    let (pa, pb) = (params(a), params(b));
    let d = direction_change(&pa, &pb, prec).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let flat = |v: &[Vec<f32>]| v.iter().flatten().copied().collect::<Vec<f32>>();
    let (fa, fb) = (flat(a), flat(b));
    let mut dot = Rational::new();
    let mut na = Rational::new();
    let mut nb = Rational::new();
    for (&x, &y) in fa.iter().zip(&fb) {
        let (x, y) = (rat32(x), rat32(y));
        dot += Rational::from(&x * &y);
        na += Rational::from(&x * &x);
        nb += Rational::from(&y * &y);
    }
    let n = Rational::from(&na * &nb);
    prop_assert!(d.cos.lo >= -1.0 && d.cos.hi <= 1.0 && d.cos.lo <= d.cos.hi);
    prop_assert!(
        le_cos(&rat64(d.cos.lo), &dot, &n),
        "cos.lo {} too high",
        d.cos.lo
    );
    // cos ≤ hi  ⇔  not (hi < cos), and hi < cos ⇔ -cos < -hi ⇔ ... use -hi ≤ -cos with -dot.
    let neg_dot = Rational::from(-&dot);
    prop_assert!(
        le_cos(&rat64(-d.cos.hi), &neg_dot, &n),
        "cos.hi {} too low",
        d.cos.hi
    );
    // The angle: acos of the exact cosine at 1024 bits (error ~2^-1000, far below the f64
    // rounding of the enclosure).
    let p = 1024;
    let cos = Float::with_val(p, &dot) / Float::with_val(p, &n).sqrt();
    let angle = cos
        .clamp(&Float::with_val(p, -1), &Float::with_val(p, 1))
        .acos();
    let slack = Float::with_val(p, 2f64.powi(-900));
    prop_assert!(
        Float::with_val(p, d.angle.lo) <= Float::with_val(p, &angle + &slack),
        "angle.lo {} above {}",
        d.angle.lo,
        angle.to_f64()
    );
    prop_assert!(
        Float::with_val(p, d.angle.hi) >= Float::with_val(p, &angle - &slack),
        "angle.hi {} below {}",
        d.angle.hi,
        angle.to_f64()
    );
    prop_assert!(
        0.0 <= d.angle.lo && d.angle.lo <= d.angle.hi && d.angle.hi <= std::f64::consts::PI + 1e-15
    );
    Ok(())
}

/// A random f32 with exponent in `[lo, hi]`.
fn wide(rng: &mut ChaCha8Rng, lo: i32, hi: i32) -> f32 {
    rng.random_range(-1.0f32..1.0) * 2f32.powi(rng.random_range(lo..=hi))
}

/// Layers of `sizes` drawn by `f`.
fn layers(sizes: &[usize], mut f: impl FnMut() -> f32) -> Vec<Vec<f32>> {
    sizes
        .iter()
        .map(|&n| (0..n).map(|_| f()).collect())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random pairs, nearly parallel pairs (b = a + a tiny perturbation, or a scaled copy),
    /// opposite and nearly orthogonal pairs, with values from subnormal to 2^100.
    #[test]
    fn direction_change_encloses_the_exact_angle(seed in any::<u64>(), kind in 0usize..6) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let sizes: Vec<usize> = (0..rng.random_range(1..4)).map(|_| rng.random_range(1..40)).collect();
        let mut r2 = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37);
        let a = layers(&sizes, || wide(&mut r2, -3, 3));
        let b: Vec<Vec<f32>> = match kind {
            // independent
            0 => a.iter().map(|l| l.iter().map(|_| wide(&mut r2, -3, 3)).collect()).collect(),
            // nearly parallel: relative perturbation 2^-20 .. 2^-23 (a few ulps)
            1 => a.iter().map(|l| l.iter().map(|&x| {
                let e = r2.random_range(-23..=-20);
                x + x * r2.random_range(-1.0f32..1.0) * 2f32.powi(e)
            }).collect()).collect(),
            // a power-of-two multiple: exactly parallel
            2 => a.iter().map(|l| l.iter().map(|&x| x * 2f32.powi(17)).collect()).collect(),
            // exactly opposite, one entry nudged
            3 => {
                let mut b: Vec<Vec<f32>> = a.iter().map(|l| l.iter().map(|&x| -x).collect()).collect();
                b[0][0] = f32::from_bits(b[0][0].to_bits() ^ 1);
                b
            }
            // whole exponent range, subnormals included
            4 => a.iter().map(|l| l.iter().map(|_| wide(&mut r2, -149, 100)).collect()).collect(),
            // nearly orthogonal: pairs (x, y) against (-y, x), one entry nudged
            _ => {
                let mut b: Vec<Vec<f32>> = a.iter().map(|l| {
                    let mut o = l.clone();
                    for i in (0..l.len().saturating_sub(1)).step_by(2) {
                        o[i] = -l[i + 1];
                        o[i + 1] = l[i];
                    }
                    if l.len() % 2 == 1 {
                        o[l.len() - 1] = 0.0;
                    }
                    o
                }).collect();
                b[0][0] += 2f32.powi(-30);
                b
            }
        };
        let zero = |v: &Vec<Vec<f32>>| v.iter().flatten().all(|&x| x == 0.0);
        prop_assume!(!zero(&a) && !zero(&b));
        let prec = [64u32, 128, 256][rng.random_range(0..3)];
        check(&a, &b, prec)?;
        check(&b, &a, prec)?;
    }
}

/// Nearly parallel vectors have a tiny but certified non-zero angle: the enclosure is tight
/// enough to see a one-ulp change in one of a thousand weights.
#[test]
fn one_ulp_change_is_seen() {
    let a: Vec<f32> = (0..1000).map(|i| 1.0 + i as f32 / 1000.0).collect();
    let mut b = a.clone();
    b[500] = f32::from_bits(b[500].to_bits() + 1);
    let d = direction_change(&params(std::slice::from_ref(&a)), &params(&[b]), 256).unwrap();
    assert!(d.angle.lo > 0.0, "{:?}", d.angle);
    assert!(d.angle.hi < 1e-8, "{:?}", d.angle);
    // The same vector: exactly 0.
    let d = direction_change(&params(std::slice::from_ref(&a)), &params(&[a]), 256).unwrap();
    assert_eq!(d.angle.lo, 0.0);
    assert!(d.angle.hi < 1e-30, "{:?}", d.angle);
}

/// Two checkpoints of different models are refused with an error, not a panic.
#[test]
fn different_layouts_are_refused() {
    let e = direction_change(
        &params(&[vec![1.0, 2.0]]),
        &params(&[vec![1.0], vec![2.0]]),
        128,
    )
    .unwrap_err();
    assert!(e.to_string().contains("same model"), "{e}");
}
