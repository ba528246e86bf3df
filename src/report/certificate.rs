//! Text summaries of the checker's results: [`Certificate`], [`KktCertificate`],
//! [`VerifyReport`].

use std::fmt::Write;

use super::Summary;
use crate::certify::bounds::Decision;
use crate::certify::certificate::Certificate;
use crate::certify::kkt::{KktCertificate, MultiplierBounds, QLoSource};
use crate::certify::verify::{Check, Status, VerifyReport};

/// How a three-valued decision reads in a summary.
pub fn decision(d: Decision) -> &'static str {
    match d {
        Decision::True => "PROVEN",
        Decision::False => "DISPROVEN",
        Decision::Undecided => "undecided",
    }
}

impl Summary for Certificate {
    fn summary(&self) -> String {
        let mut s = String::new();
        let d = &self.dataset;
        let _ = writeln!(
            s,
            "margincert {} certificate: model '{}' on {} ({} examples, sha256 {}…)",
            self.margincert_version,
            self.spec.name,
            d.name,
            d.size,
            &d.sha256[..12.min(d.sha256.len())]
        );
        if let Some(c) = &self.checkpoint_sha256 {
            let _ = writeln!(s, "checkpoint sha256 {c}");
        }
        let _ = writeln!(
            s,
            "All bounds hold for the exact real network (f32 weights as exact reals, inputs p/255); \
             MPFR precision {} bits.",
            self.options.precision
        );
        if let Some(f) = &self.forward {
            let _ = writeln!(
                s,
                "forward pass: {:?} mode, {} / {} examples in double-double",
                f.mode, f.dd_examples, f.examples
            );
        }
        let m = &self.margin;
        let _ = writeln!(s, "q_min ∈ {}", m.q_min);
        let _ = writeln!(
            s,
            "  examples that may attain q_min: {} (first: {:?})",
            m.support.len(),
            &m.support[..m.support.len().min(8)]
        );
        let _ = writeln!(
            s,
            "  provably correct (q_n > 0): {} / {}; provably q_n ≤ 0: {}",
            m.certified_positive, m.examples, m.certified_nonpositive
        );
        if let Some(q) = &self.per_example {
            let undecided: Vec<usize> = (0..q.len())
                .filter(|&n| q[n].lo <= 0.0 && q[n].hi > 0.0)
                .collect();
            let _ = writeln!(
                s,
                "  per-example enclosures of q_n recorded: {} ({} undecided{})",
                q.len(),
                undecided.len(),
                if undecided.is_empty() {
                    String::new()
                } else {
                    format!(", first: {:?}", &undecided[..undecided.len().min(8)])
                }
            );
        }
        let nm = &self.norms;
        let _ = writeln!(s, "rho = ||theta||_2 ∈ {}", nm.rho);
        for (i, l) in nm.layers.iter().enumerate() {
            let _ = writeln!(s, "  ||W_{}||_F ∈ {l}", i + 1);
        }
        let _ = writeln!(s, "  prod ||W_i||_F ∈ {}", nm.product);
        match self.homogeneity.degree {
            Some(l) => {
                let _ = writeln!(s, "homogeneous of degree L = {l} (structural proof):");
                for r in &self.homogeneity.reasons {
                    let _ = writeln!(s, "  {r}");
                }
                for w in &self.homogeneity.witness {
                    match &w.skipped {
                        Some(why) => {
                            let _ = writeln!(s, "  witness c = {}: skipped ({why})", w.c);
                        }
                        None => {
                            let _ = writeln!(
                                s,
                                "  witness c = {}: Φ(cθ) and c^L Φ(θ) enclosures {} on {} examples (max rel. radius {:.1e})",
                                w.c,
                                if w.consistent { "overlap" } else { "DISAGREE" },
                                w.examples,
                                w.max_rel_radius
                            );
                        }
                    }
                }
            }
            None => {
                let _ = writeln!(
                    s,
                    "NOT homogeneous (offending layer {:?}): {}",
                    self.homogeneity.offending_layer,
                    self.homogeneity.reasons.last().cloned().unwrap_or_default()
                );
            }
        }
        if let Some(nc) = &self.normalized {
            let _ = writeln!(s, "normalized margin q_min/rho^L ∈ {}", nc.by_rho);
            let _ = writeln!(
                s,
                "normalized margin q_min/prod||W_i|| ∈ {}",
                nc.by_layer_product
            );
            let _ = writeln!(s, "smoothed margin ∈ {}", nc.smoothed);
        }
        if let Some(why) = &self.normalized_omitted {
            let _ = writeln!(s, "normalized/smoothed margins not certified: {why}");
        }
        let l = &self.loss;
        let _ = writeln!(
            s,
            "{:?} loss (sum) ∈ [{}, {}], log10 ∈ {}",
            l.kind, l.lower, l.upper, l.log10
        );
        let _ = writeln!(
            s,
            "  Loss < {} (theorem threshold): {}",
            l.threshold,
            decision(l.below_threshold)
        );
        match (&self.kkt, &self.kkt_omitted) {
            (Some(k), _) => s.push_str(&Summary::summary(k)),
            (None, Some(why)) => {
                let _ = writeln!(s, "KKT: not certified ({why})");
            }
            (None, None) => {}
        }
        s
    }
}

impl Summary for KktCertificate {
    fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "KKT of (P) at theta~ = theta / q_lo^(1/L), L = {}, q_lo = {:e}\n  ({}; certified q_min in [{:e}, {:e}])",
            self.degree,
            self.q_lo,
            match self.q_lo_source {
                QLoSource::ThisPass => "q_lo <= q_min proved by this pass",
                QLoSource::Caller =>
                    "q_lo <= q_min proved by the margin certificate; this pass's pairwise enclosures are slightly wider",
            },
            self.q_min_lower,
            self.q_min_upper
        );
        let _ = writeln!(
            s,
            "  active constraints: {} of {} (relative weight cutoff {:e}, cap {}; dropped weight fraction ~ {:.3e})",
            self.active,
            self.constraints,
            self.cutoff,
            self.max_active,
            self.dropped_weight_fraction_estimate
        );
        let _ = writeln!(
            s,
            "  paper multipliers: epsilon <= {:.6e}, delta <= {:.6e} (estimates: beta ~ {:.9}, epsilon ~ {:.6e}, identity sqrt(2(1-beta))/gamma^(1/L) ~ {})",
            self.paper.epsilon_upper,
            self.paper.delta_upper,
            self.beta_estimate,
            self.paper.epsilon_estimate,
            self.epsilon_identity_estimate
                .map_or("n/a".to_string(), |v| format!("{v:.6e}"))
        );
        match &self.nnls {
            Some(n) => {
                let _ = writeln!(
                    s,
                    "  NNLS multipliers ({} considered, {} positive): epsilon <= {:.6e}, delta <= {:.6e}",
                    self.nnls_considered, n.positive, n.epsilon_upper, n.delta_upper
                );
            }
            None => {
                let _ = writeln!(s, "  NNLS multipliers: not computed");
            }
        }
        // The scale-free figures: epsilon / ||theta~|| (lambda = 0 gives 1) and beta.
        let rel = |m: &MultiplierBounds| m.epsilon_relative_upper;
        let (best, name) = match &self.nnls {
            Some(n) if rel(n) < rel(&self.paper) => (rel(n), "NNLS"),
            _ => (rel(&self.paper), "paper"),
        };
        let _ = writeln!(
            s,
            "  scale-free: epsilon/||theta~|| <= {:.6} (paper){}, ||theta~|| >= {:.6e}; tightest: {name} multipliers, {}",
            rel(&self.paper),
            self.nnls
                .as_ref()
                .map_or(String::new(), |n| format!(", <= {:.6} (NNLS)", rel(n))),
            self.theta_tilde_norm_lower,
            if best < 1.0 {
                "below the trivial bound 1 (lambda = 0)"
            } else {
                "NOT below the trivial bound 1 (lambda = 0 does as well)"
            }
        );
        let _ = writeln!(
            s,
            "  beta (cosine of theta and -grad Loss over the active set) {}",
            self.beta_active_lower.map_or(
                "not certified (paper epsilon/||theta~|| >= 1)".to_string(),
                |b| format!(">= {b:.6} (certified)")
            )
        );
        let _ = writeln!(
            s,
            "  Euler identity <grad q, theta> = L q: {} of {} samples consistent{}",
            self.euler.samples.iter().filter(|e| e.overlap).count(),
            self.euler.samples.len(),
            if self.euler.all_overlap {
                ""
            } else {
                " -- FAILED"
            }
        );
        let _ = writeln!(
            s,
            "  nonsmooth points met: {} ReLU units, {} max-pool windows",
            self.kinks.ambiguous_units, self.kinks.ambiguous_pools
        );
        s
    }
}

impl Summary for VerifyReport {
    fn summary(&self) -> String {
        let count = |st: Status| self.checks.iter().filter(|c| c.status == st).count();
        let (refuted, unconfirmed) = (count(Status::Refuted), count(Status::Unconfirmed));
        let verdict = match (refuted, unconfirmed) {
            (0, 0) => "all confirmed".to_string(),
            (0, u) => format!(
                "VERIFICATION FAILED: {u} not confirmed (tighter than the recomputation can \
                 prove, or a recorded estimate that differs; none shown false)"
            ),
            (r, u) => format!("VERIFICATION FAILED: {r} refuted (shown false), {u} not confirmed"),
        };
        let mut s = format!("{} claims checked: {verdict}\n", self.checks.len());
        // Failures first, so that a person sees what to act on.
        let mut order: Vec<&Check> = self.checks.iter().collect();
        order.sort_by_key(|c| match c.status {
            Status::Refuted => 0,
            Status::Unconfirmed => 1,
            Status::Confirmed => 2,
        });
        for c in order {
            let _ = writeln!(s, "  [{:?}] {}: {}", c.status, c.claim, c.detail);
        }
        s
    }
}
