//! Unit tests of the double-double kernels against exact rationals.

use super::*;
use rug::Rational;

fn q(x: f64) -> Rational {
    Rational::from_f64(x).unwrap()
}

fn contains(h: f64, l: f64, r: f64, truth: &Rational) -> bool {
    let m = q(h) + q(l);
    Rational::from(truth - &m).abs() <= q(r)
}

#[test]
fn input_dd_contains_every_pixel_value_exactly() {
    // Exhaustive over the whole input domain (256 values), in exact rationals.
    let all: Vec<u8> = (0..=255).collect();
    let x = input_dd(&all);
    let mut max_rad = 0.0f64;
    for p in 0..=255u32 {
        let i = p as usize;
        let truth = Rational::from((p, 255u32));
        assert!(contains(x.hi[i], x.lo[i], x.rad[i], &truth), "p = {p}");
        max_rad = max_rad.max(x.rad[i]);
    }
    // The radius is at the 2⁻¹⁰⁶ scale (not the f64 pass's 2⁻⁵⁴).
    assert!(max_rad < 2f64.powi(-105), "max radius {max_rad:e}");
    // The remainder FMA is exact: hi + lo is the correctly rounded double-double.
    for p in 1..255u32 {
        let i = p as usize;
        let rem = Rational::from((p, 255u32)) - q(x.hi[i]);
        assert!((&rem - q(x.lo[i])).abs() <= q(x.lo[i].abs()) * q(U));
    }
}

#[test]
fn two_sum_and_two_prod_are_error_free() {
    let cases = [
        (1e20, -1e20 + 1.0),
        (0.1, 0.2),
        (1e300, 1e-300),
        (f64::from_bits(1), 3e-310),
        (-7.25e-5, 3.3e100),
    ];
    for (a, b) in cases {
        let (s, e) = two_sum(a, b);
        assert_eq!(q(s) + q(e), q(a) + q(b));
        if (a * b).abs() > 1e-290 {
            let (p, e) = two_prod(a, b);
            assert_eq!(q(p) + q(e), q(a) * q(b), "{a} * {b}");
        }
    }
}

/// Exact Σ w_j (hi_j + lo_j) ± Σ|w_j| rad_j must lie within the computed ball.
fn check_dot(w: &[f64], x: &DdBallVec) -> (f64, f64, f64) {
    let (h, l, r) = dot_dd(w, x).unwrap();
    let mut mid = Rational::new();
    let mut spread = Rational::new();
    for (j, &wj) in w.iter().enumerate() {
        mid += q(wj) * (q(x.hi[j]) + q(x.lo[j]));
        spread += q(wj.abs()) * q(x.rad[j]);
    }
    // Both extreme values of the exact dot product over the input box.
    for truth in [
        Rational::from(&mid + &spread),
        Rational::from(&mid - &spread),
    ] {
        assert!(contains(h, l, r, &truth), "w = {w:?}");
    }
    (h, l, r)
}

#[test]
fn dot_dd_bound_holds_under_huge_cancellation() {
    // Terms ~1e20 that cancel to a residual ~1: f64 would lose every digit.
    let mut w = Vec::new();
    let mut x = DdBallVec::default();
    for k in 0..40 {
        let big = 1e20 * (1.0 + k as f64 / 7.0);
        for (wv, hv, lv) in [(big, 1.0 / 3.0, 1e-17), (-big, 1.0 / 3.0, -1e-17 + 1e-30)] {
            w.push(wv);
            x.hi.push(hv);
            x.lo.push(lv);
            x.rad.push(0.0);
        }
    }
    w.push(1.0);
    x.hi.push(0.75);
    x.lo.push(0.0);
    x.rad.push(0.0);
    // The bound is at the n·u² scale of Σ|w||x| (~4e21 here), far below the f64
    // pass's n·u scale (which would exceed the exact value, ~3e5, itself).
    check_dot_tight(&w, &x);
}

/// [`check_dot`] (the exact value inside the ball) and a radius at the `n·u²` scale of
/// `Σ|w_j||x_j|` (below 1e-28 of it).
fn check_dot_tight(w: &[f64], x: &DdBallVec) {
    let (_, _, r) = check_dot(w, x);
    let scale: f64 = w.iter().zip(&x.hi).map(|(a, b)| (a * b).abs()).sum();
    assert!(r < 1e-28 * scale, "radius {r:e}, scale {scale:e}");
}

#[test]
fn dot_dd_encloses_a_sum_of_1e20_terms_that_cancels_to_almost_zero() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for _ in 0..50 {
        let mut w = Vec::new();
        let mut x = DdBallVec::default();
        for _ in 0..rng.random_range(4..200) {
            w.push((rng.random_range(-1.0f64..1.0) * 1e20) as f32 as f64);
            x.hi.push(rng.random_range(-1.0..1.0));
            x.lo.push(0.0);
            x.rad.push(0.0);
        }
        // Append terms −1·RN(residual) until the exact sum is ~0 (about 1e-30 of the
        // terms' magnitude): Σ w_j x_j ≈ 0 of terms ~1e20.
        for _ in 0..4 {
            let mut exact = Rational::new();
            for (wj, hj) in w.iter().zip(&x.hi) {
                exact += q(*wj) * q(*hj);
            }
            w.push(-1.0);
            x.hi.push(exact.to_f64());
            x.lo.push(0.0);
            x.rad.push(0.0);
        }
        check_dot_tight(&w, &x);
    }
}

#[test]
fn dot_dd_bound_holds_on_adversarial_and_subnormal_products() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for case in 0..300 {
        let n = 1 + case % 97;
        let mut w = Vec::with_capacity(n);
        let mut x = DdBallVec::default();
        for _ in 0..n {
            let ew: i32 = match case % 3 {
                0 => rng.random_range(-40..40),
                1 => rng.random_range(-560..-500), // products near the subnormal range
                _ => rng.random_range(-5..60),
            };
            let wv = (rng.random_range(-1.0f64..1.0) * 2f64.powi(ew)) as f32 as f64;
            let hv: f64 = rng.random_range(-1.0..1.0) * 2f64.powi(rng.random_range(-520..30));
            let lv = hv * 2f64.powi(-54) * rng.random_range(-1.0..1.0);
            let rv = hv.abs() * 2f64.powi(rng.random_range(-110..-60));
            w.push(wv);
            x.hi.push(hv);
            x.lo.push(lv);
            x.rad.push(rv);
        }
        // Make the last pair cancel the sum's leading part.
        if n > 2 {
            w[n - 1] = -w[0];
            x.hi[n - 1] = x.hi[0];
        }
        check_dot(&w, &x);
    }
}

/// Random balls with radii 0 or tiny (so the rounding terms of the pointwise ops are
/// what keeps the exact image inside), near-ties and cancelling `lo` parts.
fn random_balls(n: usize, rng: &mut rand_chacha::ChaCha8Rng) -> DdBallVec {
    use rand::RngExt;
    let mut x = DdBallVec::zeros(n);
    let base: f64 = rng.random_range(-1.0..1.0);
    for i in 0..n {
        let h = match rng.random_range(0..4) {
            0 => base, // ties on hi
            1 => base + rng.random_range(-1e-15..1e-15),
            2 => rng.random_range(-1.0..1.0) / 3.0,
            _ => rng.random_range(-1e-300..1e-300),
        };
        x.hi[i] = h;
        x.lo[i] = h * rng.random_range(-1e-16..1e-16);
        x.rad[i] = match rng.random_range(0..3) {
            0 => 0.0,
            1 => h.abs() * 1e-25,
            _ => h.abs() * rng.random_range(0.0..1e-15),
        };
    }
    x
}

fn ends(x: &DdBallVec, i: usize) -> (Rational, Rational) {
    let m = q(x.hi[i]) + q(x.lo[i]);
    (&m - q(x.rad[i]), m + q(x.rad[i]))
}

#[test]
fn pointwise_ops_contain_the_exact_image_of_every_ball() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for _ in 0..200 {
        let x = random_balls(16, &mut rng);
        let s = 0.1f32 as f64; // inexact products
        let (r, lk, ln) = (
            relu_dd(x.clone()),
            leaky_dd(x.clone(), s),
            leaky_dd(x.clone(), -0.7f32 as f64),
        );
        for i in 0..x.len() {
            // All three maps are piecewise linear: the image of [a, b] is the hull of the
            // images of a, b and (for a straddling ball) 0.
            let (a, b) = ends(&x, i);
            let mut pts = vec![a.clone(), b.clone()];
            if a < 0 && b > 0 {
                pts.push(Rational::new());
            }
            for p in pts {
                let relu = if p < 0 { Rational::new() } else { p.clone() };
                let leak = |sl: f64| {
                    if p < 0 { &p * q(sl) } else { p.clone() }
                };
                assert!(contains(r.hi[i], r.lo[i], r.rad[i], &relu));
                assert!(contains(lk.hi[i], lk.lo[i], lk.rad[i], &leak(s)), "{i}");
                assert!(contains(
                    ln.hi[i],
                    ln.lo[i],
                    ln.rad[i],
                    &leak(-0.7f32 as f64)
                ));
            }
        }
    }
}

#[test]
fn pools_contain_the_exact_image_of_every_box() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    for (k, stride) in [(2usize, 1usize), (3, 1), (2, 2)] {
        let (h, w) = (4, 5);
        let win = Window {
            k,
            stride,
            pad_top: 0,
            pad_left: 0,
            in_h: h,
            in_w: w,
            out_h: (h - k) / stride + 1,
            out_w: (w - k) / stride + 1,
        };
        for _ in 0..100 {
            let x = random_balls(2 * h * w, &mut rng);
            let mx = max_pool_dd(&win, 2, &x);
            let av = avg_pool_dd(&win, 2, &x).unwrap();
            let p = win.out_h * win.out_w;
            for c in 0..2 {
                for oy in 0..win.out_h {
                    for ox in 0..win.out_w {
                        let idx: Vec<usize> = (0..k * k)
                            .map(|t| c * h * w + (oy * stride + t / k) * w + ox * stride + t % k)
                            .collect();
                        // max and mean are monotone: the image of the box is
                        // [f(lower ends), f(upper ends)].
                        let lows: Vec<Rational> = idx.iter().map(|&i| ends(&x, i).0).collect();
                        let highs: Vec<Rational> = idx.iter().map(|&i| ends(&x, i).1).collect();
                        let o = c * p + oy * win.out_w + ox;
                        for v in [&lows, &highs] {
                            let m = v.iter().max().unwrap();
                            assert!(contains(mx.hi[o], mx.lo[o], mx.rad[o], m), "max k={k}");
                            let mean = v.iter().sum::<Rational>() / (k * k) as u32;
                            assert!(contains(av.hi[o], av.lo[o], av.rad[o], &mean), "avg k={k}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn dot_dd_rejects_bad_input() {
    let x = DdBallVec::zeros(3);
    assert!(dot_dd(&[1.0, 2.0], &x).is_err());
    assert!(dot_dd(&[1.0, f64::NAN, 0.0], &x).is_err());
}
