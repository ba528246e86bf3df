//! Per-epoch metrics: loss (as `log10`), accuracy, margins, norms, normalized and smoothed
//! margins. These are f64 estimates from f32 logits, for monitoring; the certified values
//! come from [`crate::certify`].

use serde::{Deserialize, Serialize};

use super::TrainState;
use crate::loss::{LogSum, LossKind};
use crate::model::Params;

/// Loss, margins and accuracy of one split at the current parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// `ln ℓ_n` per example.
    pub log_losses: Vec<f64>,
    /// Margin `q_n` per example.
    pub margins: Vec<f64>,
    /// Fraction of examples with a positive margin.
    pub accuracy: f64,
}

impl Evaluation {
    /// Evaluates logits (`[n, k]`, row-major) against labels.
    pub fn new(loss: LossKind, logits: &[f32], labels: &[u8], k: usize) -> Self {
        let per: Vec<_> = logits
            .chunks_exact(k)
            .zip(labels)
            .map(|(z, &y)| loss.example(z, y))
            .collect();
        let correct = per.iter().filter(|e| e.correct).count();
        Self {
            accuracy: correct as f64 / per.len().max(1) as f64,
            log_losses: per.iter().map(|e| e.log_loss).collect(),
            margins: per.iter().map(|e| e.margin).collect(),
        }
    }

    /// `ln` of the summed loss.
    pub fn ln_sum_loss(&self) -> f64 {
        LogSum::of(&self.log_losses).ln
    }

    /// `ln` of the mean loss (what the paper's code reports and schedules on).
    pub fn ln_mean_loss(&self) -> f64 {
        self.ln_sum_loss() - (self.log_losses.len().max(1) as f64).ln()
    }

    /// Smallest margin.
    pub fn q_min(&self) -> f64 {
        self.margins.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// Largest margin.
    pub fn q_max(&self) -> f64 {
        self.margins
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// One line of the per-epoch metrics log (JSON lines).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Completed epochs.
    pub epoch: usize,
    /// Failed attempts so far (loss-based schedule).
    pub retries: usize,
    /// Step size used in this epoch.
    pub lr: f64,
    /// `log10` of the mean training loss (the paper's code's loss).
    pub log10_loss: f64,
    /// `log10` of the summed training loss (the paper's theory).
    pub log10_loss_sum: f64,
    /// Training accuracy.
    pub train_accuracy: f64,
    /// Test accuracy, if a test set was given.
    pub test_accuracy: Option<f64>,
    /// Smallest training margin `q_min`.
    pub q_min: f64,
    /// Largest training margin.
    pub q_max: f64,
    /// `rho = ||theta||_2`.
    pub rho: f64,
    /// Frobenius norm of each weight layer.
    pub layer_norms: Vec<f64>,
    /// Product of the layer norms.
    pub norm_product: f64,
    /// `q_min / rho^L` (absent for a non-homogeneous model).
    pub normalized_margin: Option<f64>,
    /// `q_min / prod ||W_i||` (biases inside their layer's norm). Logged for every model, as
    /// the paper's code logs it; for a non-homogeneous model (biases after the first layer)
    /// it is not scale-invariant and no theorem is about it — the bias control's curve.
    pub layer_normalized_margin: Option<f64>,
    /// Smoothed margin from the summed loss (absent for a non-homogeneous model).
    pub smoothed_margin: Option<f64>,
    /// For k = 1..=5, how many training examples have `q_n - q_min <= ln(10^k)`.
    pub near_min: Vec<usize>,
    /// Seconds of training since the run started (summed over the sessions of a resumed
    /// run).
    pub seconds: f64,
}

/// Smoothed margin numerator from `ln L` of the summed loss: `ln(1/L)` for the exponential
/// loss, `-ln(expm1(L))` for logistic and cross-entropy.
pub fn smoothed_numerator(loss: LossKind, ln_loss: f64) -> f64 {
    match loss {
        LossKind::Exponential => -ln_loss,
        _ => {
            if ln_loss < -30.0 {
                // expm1(L) = L (1 + L/2 + …): -ln expm1(L) = -ln L - L/2 + O(L²).
                -ln_loss - 0.5 * ln_loss.exp()
            } else {
                -ln_loss.exp().exp_m1().ln()
            }
        }
    }
}

impl EpochMetrics {
    /// `q_min / prod ||W_i||`: the logged value, or for logs written before it was logged
    /// for non-homogeneous models, the same quotient of the logged `q_min` and product.
    pub fn paper_normalized_margin(&self) -> Option<f64> {
        self.layer_normalized_margin
            .or_else(|| (self.norm_product > 0.0).then(|| self.q_min / self.norm_product))
    }

    /// Metrics from a training evaluation, an optional test evaluation and the parameters.
    pub fn new(
        state: &TrainState,
        train: &Evaluation,
        test: Option<&Evaluation>,
        params: &Params,
        degree: Option<u32>,
        loss: LossKind,
        seconds: f64,
    ) -> Self {
        let layer_norms = params.layer_norms();
        let rho = params.norm();
        let norm_product: f64 = layer_norms.iter().product();
        let q_min = train.q_min();
        let ln_sum = train.ln_sum_loss();
        let near_min = (1..=5)
            .map(|k| {
                let tol = k as f64 * std::f64::consts::LN_10;
                train.margins.iter().filter(|&&q| q - q_min <= tol).count()
            })
            .collect();
        Self {
            epoch: state.epoch,
            retries: state.total_retries,
            lr: state.lr,
            log10_loss: train.ln_mean_loss() / std::f64::consts::LN_10,
            log10_loss_sum: ln_sum / std::f64::consts::LN_10,
            train_accuracy: train.accuracy,
            test_accuracy: test.map(|t| t.accuracy),
            q_min,
            q_max: train.q_max(),
            rho,
            norm_product,
            normalized_margin: degree.map(|l| q_min / rho.powi(l as i32)),
            layer_normalized_margin: Some(q_min / norm_product),
            smoothed_margin: degree.map(|l| smoothed_numerator(loss, ln_sum) / rho.powi(l as i32)),
            near_min,
            layer_norms,
            seconds,
        }
    }

    /// A one-line human summary.
    pub fn line(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4e}"));
        format!(
            "epoch {:>5}  log10 loss {:>10.3}  train acc {:.4}  test acc {}  q_min {:>9.4}  rho {:>8.3}  q/rho^L {}  q/prod {}  smoothed {}  lr {:.3e}",
            self.epoch,
            self.log10_loss,
            self.train_accuracy,
            self.test_accuracy
                .map_or("-".to_string(), |a| format!("{a:.4}")),
            self.q_min,
            self.rho,
            opt(self.normalized_margin),
            opt(self.layer_normalized_margin),
            opt(self.smoothed_margin),
            self.lr
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothed_margin_brackets_normalized_for_exponential() {
        // gamma_bar - rho^-L ln N <= gamma_tilde <= gamma_bar (paper). Margins 3, 4, 9.
        let ev = Evaluation {
            log_losses: vec![-3.0, -4.0, -9.0],
            margins: vec![3.0, 4.0, 9.0],
            accuracy: 1.0,
        };
        let num = smoothed_numerator(LossKind::Exponential, ev.ln_sum_loss());
        assert!(num <= ev.q_min() && num >= ev.q_min() - 3f64.ln());
    }

    #[test]
    fn smoothed_numerator_is_continuous_at_the_switch() {
        let a = smoothed_numerator(LossKind::Logistic, -30.0 + 1e-9);
        let b = smoothed_numerator(LossKind::Logistic, -30.0 - 1e-9);
        assert!((a - b).abs() < 1e-8, "{a} {b}");
    }
}
