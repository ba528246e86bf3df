//! Certified margins: per-example enclosures of `q_n`, of the class gaps `s_nj`, of
//! `q_min`, and the support set of examples that may attain the minimum
//! (proofs/margin.md).

use serde::{Deserialize, Serialize};

use super::ball::BallVec;
use super::bounds::Enclosure;
use super::round::{down, up};
use crate::error::{Error, Result};

/// The task a margin is taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// One output, labels 1 (y = +1) / 0 (y = −1): `q = y·Φ`.
    Binary,
    /// `k ≥ 2` outputs: `q = min_{j≠y} Φ_y − Φ_j`.
    Multi(usize),
}

impl Task {
    /// The task for a model with `outputs` outputs on data with `classes` classes.
    pub fn new(outputs: usize, classes: usize) -> Result<Self> {
        match (outputs, classes) {
            (1, 2) => Ok(Task::Binary),
            (1, c) => Err(Error::Shape(format!(
                "a one-output (binary) model needs two classes, the data has {c}"
            ))),
            (k, c) if k == c => Ok(Task::Multi(k)),
            (k, c) => Err(Error::Shape(format!(
                "the model has {k} outputs, the data {c} classes"
            ))),
        }
    }
    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        match self {
            Task::Binary => 1,
            Task::Multi(k) => *k,
        }
    }
}

/// Enclosures of the gaps of one example: binary `[q]`; multi-class `s_j = Φ_y − Φ_j` for
/// every `j ≠ y` in increasing `j` (length `k − 1`).
///
/// Invariant: the exact gap lies in each enclosure (`lo = down(lo_y − hi_j)` with
/// `lo_y ≤ Φ_y`, `hi_j ≥ Φ_j` — Lemma 1 of proofs/forward.md).
pub fn gaps(logits: &BallVec, n: usize, label: u8, task: Task) -> Vec<Enclosure> {
    match task {
        Task::Binary => {
            let (lo, hi) = (logits.lo(n), logits.hi(n));
            // y = ±1: negation is exact.
            vec![if label == 1 {
                Enclosure::new(lo, hi)
            } else {
                Enclosure::new(-hi, -lo)
            }]
        }
        Task::Multi(k) => {
            let y = label as usize;
            let (lo_y, hi_y) = (logits.lo(n * k + y), logits.hi(n * k + y));
            (0..k)
                .filter(|&j| j != y)
                .map(|j| {
                    let (lo_j, hi_j) = (logits.lo(n * k + j), logits.hi(n * k + j));
                    Enclosure::new(down(lo_y - hi_j), up(hi_y - lo_j))
                })
                .collect()
        }
    }
}

/// `q_n ∈ [min_j lo(s_j), min_j hi(s_j)]` (min is monotone in each argument).
pub fn margin_of(gaps: &[Enclosure]) -> Enclosure {
    let lo = gaps.iter().map(|g| g.lo).fold(f64::INFINITY, f64::min);
    let hi = gaps.iter().map(|g| g.hi).fold(f64::INFINITY, f64::min);
    Enclosure::new(lo, hi)
}

/// Per-example margin enclosures for a batch of logit enclosures.
pub fn margins(logits: &BallVec, labels: &[u8], task: Task) -> Result<Vec<Enclosure>> {
    if logits.len() != labels.len() * task.outputs() {
        return Err(Error::Shape(format!(
            "{} logit enclosures for {} examples of {} outputs",
            logits.len(),
            labels.len(),
            task.outputs()
        )));
    }
    Ok(labels
        .iter()
        .enumerate()
        .map(|(n, &l)| margin_of(&gaps(logits, n, l, task)))
        .collect())
}

/// Certified facts about the minimum margin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarginSummary {
    /// Enclosure of `q_min = min_n q_n`.
    pub q_min: Enclosure,
    /// Every example that may attain the minimum: `lo(q_n) ≤ hi(q_min)` (sorted). Any
    /// example outside it provably has `q_n > q_min`.
    pub support: Vec<usize>,
    /// Number of examples with `lo(q_n) > 0`: provably classified correctly (with margin).
    pub certified_positive: usize,
    /// Number of examples with `hi(q_n) ≤ 0`: provably misclassified or on the boundary.
    pub certified_nonpositive: usize,
    /// Number of examples.
    pub examples: usize,
}

/// `q_min ∈ [min_n lo_n, min_n hi_n]`, support `{n : lo_n ≤ min_m hi_m}`.
pub fn summarize(q: &[Enclosure]) -> Result<MarginSummary> {
    if q.is_empty() {
        return Err(Error::Certify("no examples: q_min is undefined".into()));
    }
    let lo = q.iter().map(|e| e.lo).fold(f64::INFINITY, f64::min);
    let hi = q.iter().map(|e| e.hi).fold(f64::INFINITY, f64::min);
    Ok(MarginSummary {
        q_min: Enclosure::new(lo, hi),
        support: (0..q.len()).filter(|&n| q[n].lo <= hi).collect(),
        certified_positive: q.iter().filter(|e| e.lo > 0.0).count(),
        certified_nonpositive: q.iter().filter(|e| e.hi <= 0.0).count(),
        examples: q.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_negative_label_flips() {
        let l = BallVec {
            mid: vec![2.0],
            rad: vec![0.5],
        };
        let g = gaps(&l, 0, 0, Task::Binary);
        assert!(g[0].lo <= -2.5 && g[0].hi >= -1.5 && g[0].hi < -1.49);
    }

    #[test]
    fn support_contains_every_possible_minimiser() {
        let q = [
            Enclosure::new(1.0, 2.0),
            Enclosure::new(1.5, 3.0),
            Enclosure::new(2.5, 4.0),
        ];
        let s = summarize(&q).unwrap();
        assert_eq!(s.q_min, Enclosure::new(1.0, 2.0));
        assert_eq!(s.support, vec![0, 1]);
        assert!(Task::new(1, 3).is_err() && Task::new(10, 9).is_err());
    }
}
