//! The constraints of (P), their certified values, and the loss weights that choose the
//! paper's multipliers and the active set.

use crate::certify::backward::Constraint;
use crate::certify::ball::BallVec;
use crate::certify::forward::CertifiedNet;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::loss::{LossKind, softplus};

/// Every constraint of (P) for `data` on a model with `outputs` outputs, example-major.
pub fn constraints(data: &Dataset, outputs: usize) -> Result<Vec<Constraint>> {
    let mut out = Vec::new();
    if outputs == 1 {
        if data.classes != 2 {
            return Err(Error::Invalid(format!(
                "a one-output model needs a binary dataset (labels 1/0), {} has {} classes",
                data.name, data.classes
            )));
        }
        for (example, &l) in data.labels.iter().enumerate() {
            out.push(Constraint::Binary {
                example,
                positive: l == 1,
            });
        }
    } else {
        if data.classes != outputs {
            return Err(Error::Invalid(format!(
                "the model has {outputs} outputs, the dataset {} has {} classes",
                data.name, data.classes
            )));
        }
        for (example, &l) in data.labels.iter().enumerate() {
            for other in (0..outputs).filter(|&j| j != l as usize) {
                out.push(Constraint::Pair {
                    example,
                    label: l as usize,
                    other,
                });
            }
        }
    }
    Ok(out)
}

/// Log of the (unnormalised) loss weight `−ℓ'` of each constraint, from margin estimates
/// `est` (same order as `cons`).
pub(super) fn log_weights(cons: &[Constraint], est: &[f64], loss: LossKind) -> Vec<f64> {
    let mut lw = vec![0.0; cons.len()];
    match loss {
        LossKind::Exponential => {
            for (l, &s) in lw.iter_mut().zip(est) {
                *l = -s;
            }
        }
        LossKind::Logistic | LossKind::CrossEntropy => {
            // group the constraints of each example (they are contiguous).
            let mut i = 0;
            while i < cons.len() {
                let ex = cons[i].example();
                let mut j = i;
                while j < cons.len() && cons[j].example() == ex {
                    j += 1;
                }
                // LSE_k(−s_k)
                let mx = est[i..j].iter().fold(f64::NEG_INFINITY, |a, &s| a.max(-s));
                let lse = mx + est[i..j].iter().map(|&s| (-s - mx).exp()).sum::<f64>().ln();
                let norm = softplus(lse);
                for k in i..j {
                    lw[k] = -est[k] - norm;
                }
                i = j;
            }
        }
    }
    lw
}

/// Certified enclosures of each constraint's value `q_c(θ)`, same order as `cons`.
pub(super) fn margins(
    net: &CertifiedNet,
    data: &Dataset,
    cons: &[Constraint],
    logits: Option<&BallVec>,
) -> Result<Vec<(f64, f64, f64)>> {
    let k = net.outputs();
    let owned;
    let logits = match logits {
        Some(l) => {
            if l.mid.len() != data.len() * k || l.rad.len() != data.len() * k {
                return Err(Error::Shape(format!(
                    "logit enclosure of {} values for {} examples x {k} outputs",
                    l.mid.len(),
                    data.len()
                )));
            }
            l
        }
        None => {
            owned = net.logits(&data.pixels, data.len())?;
            &owned
        }
    };
    cons.iter()
        .map(|c| {
            let e = c.example();
            let (m, r) = (
                &logits.mid[e * k..(e + 1) * k],
                &logits.rad[e * k..(e + 1) * k],
            );
            let (lo, hi) = c.value_enclosure(m, r)?;
            let adj = c.adjoint(k)?;
            let est: f64 = adj.iter().zip(m).map(|(a, b)| a * b).sum();
            Ok((lo, hi, est))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_weights_match_cross_entropy_formula() {
        let cons = vec![
            Constraint::Pair {
                example: 0,
                label: 0,
                other: 1,
            },
            Constraint::Pair {
                example: 0,
                label: 0,
                other: 2,
            },
        ];
        let est = [1.0, 2.0];
        let lw = log_weights(&cons, &est, LossKind::CrossEntropy);
        let den = 1.0 + (-1.0f64).exp() + (-2.0f64).exp();
        assert!((lw[0].exp() - (-1.0f64).exp() / den).abs() < 1e-15);
        assert!((lw[1].exp() - (-2.0f64).exp() / den).abs() < 1e-15);
        let lw = log_weights(&cons, &est, LossKind::Exponential);
        assert_eq!(lw, vec![-1.0, -2.0]);
    }
}
