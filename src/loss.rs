//! Loss math in the log domain, shared by training ([`crate::train`]) and the checker
//! ([`crate::certify`]): the loss kinds, per-example losses and their gradients relative to a
//! loss frame, so that training goes on far below the range of f32 and f64.
//!
//! Every per-example loss is computed as its natural logarithm `log ℓ_n` in f64, which stays
//! finite when `ℓ_n` itself would underflow (a margin of 2,000 gives `ℓ = e^-2000`). Sums are
//! taken relative to a frame `F`: `R = Σ_n exp(log ℓ_n − F)`, with `F` near the logarithm of
//! the previous loss so that `R` is of order one. The true log-loss is `F + ln R`.
//!
//! Gradients with respect to the logits are likewise computed in the log domain and scaled
//! by `e^-F`, which is what the paper's code does ("train on the relative loss").
//!
//! These are f64 estimates; the certified bounds on the loss are in [`crate::certify::loss`].

use serde::{Deserialize, Serialize};

/// A loss: the training objective, and the loss whose threshold and multipliers the
/// certificates use. Serialized (config files, checkpoints, certificates) in kebab-case:
/// `cross-entropy`, `logistic`, `exponential`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Softmax cross-entropy, `log(1 + Σ_{j≠y} e^{-(z_y - z_j)})` (multi-class; for a
    /// one-output model the certifier reads it as the logistic loss).
    #[default]
    CrossEntropy,
    /// Logistic, `log(1 + e^{-q})`, `q = y z` (binary, one output).
    Logistic,
    /// Exponential, `e^{-q}` (binary, one output).
    Exponential,
}

impl LossKind {
    /// True for the binary losses (one network output, labels mapped to ±1).
    pub fn is_binary(self) -> bool {
        !matches!(self, LossKind::CrossEntropy)
    }

    /// The summed-loss threshold after which the paper's theorems apply: `1` for the
    /// exponential loss, `ln 2` otherwise.
    pub fn threshold(self) -> f64 {
        match self {
            LossKind::Exponential => 1.0,
            LossKind::CrossEntropy | LossKind::Logistic => std::f64::consts::LN_2,
        }
    }
}

/// `ln(1 + e^a)` without overflow or loss of accuracy.
pub fn softplus(a: f64) -> f64 {
    if a > 0.0 {
        a + (-a).exp().ln_1p()
    } else {
        a.exp().ln_1p()
    }
}

/// `ln(ln(1 + e^a))`: the log of a softplus, accurate when `e^a` underflows.
pub fn ln_softplus(a: f64) -> f64 {
    if a < -20.0 {
        // ln(1 + x) = x (1 - x/2 + x²/3 - …) with x = e^a < 2.1e-9, so
        // ln ln(1 + x) = a + ln(1 - x/2 + …) = a - x/2 + O(x²).
        a - 0.5 * a.exp()
    } else {
        softplus(a).ln()
    }
}

/// `ln Σ_j e^{v_j}` (log-sum-exp), `-inf` for an empty slice.
pub fn log_sum_exp(v: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = v.clone().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY || m.is_nan() || m == f64::INFINITY {
        return m;
    }
    m + v.map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Per-example quantities from one example's logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExampleLoss {
    /// `ln ℓ_n`, finite even when `ℓ_n` underflows.
    pub log_loss: f64,
    /// The margin `q_n` (binary `y z`, multi-class `min_{j≠y} z_y − z_j`).
    pub margin: f64,
    /// Whether the prediction is right (margin > 0).
    pub correct: bool,
}

/// Signed label `y ∈ {−1, +1}` of a binary example (label 1 is positive).
#[inline]
pub fn sign_of(label: u8) -> f64 {
    if label == 1 { 1.0 } else { -1.0 }
}

impl LossKind {
    /// Loss and margin of one example from its logits (f32 logits, f64 arithmetic).
    pub fn example(self, logits: &[f32], label: u8) -> ExampleLoss {
        match self {
            LossKind::CrossEntropy => {
                let y = label as usize;
                let zy = logits[y] as f64;
                let gaps = logits
                    .iter()
                    .enumerate()
                    .filter(move |&(j, _)| j != y)
                    .map(move |(_, &z)| z as f64 - zy);
                // a = ln Σ_{j≠y} e^{-s_j}, s_j = z_y − z_j.
                let a = log_sum_exp(gaps.clone());
                let margin = -gaps.fold(f64::NEG_INFINITY, f64::max);
                ExampleLoss {
                    log_loss: ln_softplus(a),
                    margin,
                    correct: margin > 0.0,
                }
            }
            LossKind::Logistic | LossKind::Exponential => {
                let q = sign_of(label) * logits[0] as f64;
                let log_loss = if self == LossKind::Logistic {
                    ln_softplus(-q)
                } else {
                    -q
                };
                ExampleLoss {
                    log_loss,
                    margin: q,
                    correct: q > 0.0,
                }
            }
        }
    }

    /// Writes `∂(ℓ_n e^{-frame})/∂z` into `out` (same length as `logits`), multiplied by
    /// `scale`. Every factor is formed in the log domain, so nothing overflows or underflows
    /// before the final exponential.
    pub fn example_grad(self, logits: &[f32], label: u8, frame: f64, scale: f64, out: &mut [f32]) {
        match self {
            LossKind::CrossEntropy => {
                let y = label as usize;
                let zy = logits[y] as f64;
                let a = log_sum_exp(
                    logits
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != y)
                        .map(|(_, &z)| z as f64 - zy),
                );
                // ∂ℓ/∂z_j = e^{-s_j} / (1 + Σ_k e^{-s_k}) for j ≠ y; ∂ℓ/∂z_y = −Σ_{j≠y} of those.
                let log_denominator = softplus(a);
                let mut total = 0.0;
                for (j, (&z, o)) in logits.iter().zip(out.iter_mut()).enumerate() {
                    if j == y {
                        continue;
                    }
                    let p = scale * (z as f64 - zy - log_denominator - frame).exp();
                    total += p;
                    *o = p as f32;
                }
                out[y] = -total as f32;
            }
            LossKind::Logistic => {
                let y = sign_of(label);
                let q = y * logits[0] as f64;
                // ∂ℓ/∂z = −y e^{-q} / (1 + e^{-q}) = −y exp(−q − softplus(−q)).
                out[0] = (-y * scale * (-q - softplus(-q) - frame).exp()) as f32;
            }
            LossKind::Exponential => {
                let y = sign_of(label);
                let q = y * logits[0] as f64;
                out[0] = (-y * scale * (-q - frame).exp()) as f32;
            }
        }
    }
}

/// A loss summed over examples, held as `frame + ln(relative)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogSum {
    /// `ln` of the sum; `-inf` for an empty or zero sum.
    pub ln: f64,
}

impl LogSum {
    /// `ln Σ e^{v}` over per-example log-losses.
    pub fn of(log_losses: &[f64]) -> Self {
        Self {
            ln: log_sum_exp(log_losses.iter().copied()),
        }
    }
    /// `log10` of the sum.
    pub fn log10(&self) -> f64 {
        self.ln / std::f64::consts::LN_10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ce_naive(logits: &[f64], y: usize) -> f64 {
        let m = logits.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + logits.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
        lse - logits[y]
    }

    #[test]
    fn cross_entropy_matches_naive_where_representable() {
        let z = [0.3f32, -1.2, 2.5, 0.0];
        for y in 0..4 {
            let e = LossKind::CrossEntropy.example(&z, y as u8);
            let naive = ce_naive(&z.map(|v| v as f64), y);
            assert!((e.log_loss.exp() - naive).abs() < 1e-12 * naive.max(1.0));
        }
    }

    #[test]
    fn log_loss_survives_underflow() {
        // Margin 2000: the loss is e^-2000, far below f64, but ln ℓ = −2000 exactly enough.
        let z = [2000.0f32, 0.0];
        let e = LossKind::CrossEntropy.example(&z, 0);
        assert!((e.log_loss + 2000.0).abs() < 1e-9, "{}", e.log_loss);
        let e = LossKind::Logistic.example(&[-2000.0], 0);
        assert!((e.log_loss + 2000.0).abs() < 1e-9);
        let e = LossKind::Exponential.example(&[1500.0], 1);
        assert_eq!(e.log_loss, -1500.0);
    }

    #[test]
    fn relative_gradient_is_finite_and_matches_finite_differences() {
        let z = [1.5f32, -0.5, 0.25];
        for kind in [LossKind::CrossEntropy] {
            let mut g = [0f32; 3];
            kind.example_grad(&z, 1, 0.0, 1.0, &mut g);
            for j in 0..3 {
                let h = 1e-3f32;
                let mut zp = z;
                zp[j] += h;
                let mut zm = z;
                zm[j] -= h;
                let fd = (kind.example(&zp, 1).log_loss.exp()
                    - kind.example(&zm, 1).log_loss.exp())
                    / (2.0 * h as f64);
                assert!((fd - g[j] as f64).abs() < 1e-4, "{j}: {fd} vs {}", g[j]);
            }
        }
        for kind in [LossKind::Logistic, LossKind::Exponential] {
            for label in [0u8, 1] {
                let mut g = [0f32];
                kind.example_grad(&[0.7], label, 0.0, 1.0, &mut g);
                let h = 1e-3f32;
                let fd = (kind.example(&[0.7 + h], label).log_loss.exp()
                    - kind.example(&[0.7 - h], label).log_loss.exp())
                    / (2.0 * h as f64);
                assert!(
                    (fd - g[0] as f64).abs() < 1e-4,
                    "{kind:?} {label}: {fd} {}",
                    g[0]
                );
            }
        }
        // Far below f64: the frame keeps the relative gradient of order one.
        let mut g = [0f32; 2];
        LossKind::CrossEntropy.example_grad(&[3000.0, 0.0], 0, -3000.0, 1.0, &mut g);
        assert!(
            (g[1] - 1.0).abs() < 1e-6 && (g[0] + 1.0).abs() < 1e-6,
            "{g:?}"
        );
    }

    #[test]
    fn log_sum_is_accurate() {
        let s = LogSum::of(&[-2000.0, -2000.0]);
        assert!((s.ln - (-2000.0 + std::f64::consts::LN_2)).abs() < 1e-12);
        assert_eq!(LogSum::of(&[]).ln, f64::NEG_INFINITY);
    }
}
