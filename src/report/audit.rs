//! The audit's Markdown report and files, rendered from an [`AuditReport`] alone (the
//! numbers of `report.md` are those of `certificate.json`: the same struct).

use std::fmt::Write;
use std::path::Path;

use super::Summary;
use crate::audit::{AuditReport, ROBUST_PLOTS, offending};
use crate::certify::Enclosure;
use crate::error::{Error, Result};
use crate::io::write_atomic;

/// The rendered forms of an [`AuditReport`]: `report.md`, `margins.svg` and the files of
/// [`AuditDocument::write`].
pub trait AuditDocument {
    /// The human report (Markdown): what is proven, what is only measured.
    fn markdown(&self) -> String;
    /// The margin histogram ([`super::svg::histogram_svg`]) in `bins` bins.
    fn histogram_svg(&self, bins: usize) -> String;
    /// Writes `audit.json`, `certificate.json`, `report.md`, `margins.svg` and, with
    /// robustness radii, the [`ROBUST_PLOTS`] into `dir`.
    fn write(&self, dir: &Path, bins: usize) -> Result<()>;
}

impl AuditDocument for AuditReport {
    fn markdown(&self) -> String {
        markdown(self)
    }

    fn histogram_svg(&self, bins: usize) -> String {
        super::svg::histogram_svg(&self.margin_lower_bounds, bins.max(1))
    }

    fn write(&self, dir: &Path, bins: usize) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_atomic(&dir.join("audit.json"), self.to_json().as_bytes())?;
        write_atomic(
            &dir.join("certificate.json"),
            self.certificate.to_json().as_bytes(),
        )?;
        write_atomic(&dir.join("report.md"), self.markdown().as_bytes())?;
        write_atomic(
            &dir.join("margins.svg"),
            self.histogram_svg(bins).as_bytes(),
        )?;
        if let Some(rb) = &self.robust {
            for (file, rep) in ROBUST_PLOTS.iter().zip([&rb.l2, &rb.linf]) {
                write_atomic(&dir.join(file), super::svg::robust_curves(rep)?.as_bytes())?;
                // The report alone, for `margincert verify` (robust_l2.json, robust_linf.json).
                let json = serde_json::to_string_pretty(rep)
                    .map_err(|e| Error::Invalid(format!("serializing {file}: {e}")))?;
                write_atomic(&dir.join(file).with_extension("json"), json.as_bytes())?;
            }
        }
        Ok(())
    }
}

/// The human report (Markdown) of `r`: what is proven, what is only measured.
pub fn markdown(r: &AuditReport) -> String {
    let c = &r.certificate;
    let mut s = String::new();
    let _ = writeln!(s, "# margincert audit: {}\n", r.source);
    let _ = writeln!(
        s,
        "Model `{}` ({} layers, input {}) on `{}` ({} examples, {} classes, sha256 `{}`).\n",
        c.spec.name,
        c.spec.layers.len(),
        c.spec.input,
        c.dataset.name,
        c.dataset.size,
        c.dataset.classes,
        c.dataset.sha256
    );
    let _ = writeln!(
        s,
        "**Proven** numbers are certified bounds on the exact real-number network defined by \
         the stored f32 weights on the exact inputs p/255 (outward-rounded interval \
         arithmetic and MPFR at {} bits). **Measured** numbers are floating-point estimates \
         and prove nothing.\n",
        c.options.precision
    );
    if !r.import_notes.is_empty() {
        let _ = writeln!(s, "## Import\n");
        for n in &r.import_notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Requirements\n");
    if r.requirements.is_empty() {
        let _ = writeln!(s, "None given.\n");
    } else {
        let _ = writeln!(
            s,
            "| requirement | status | certified basis |\n|---|---|---|"
        );
        for q in &r.requirements {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                q.requirement,
                if q.met { "met" } else { "**NOT MET**" },
                q.detail.replace('|', "\\|")
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Homogeneity\n");
    match c.homogeneity.degree {
        Some(l) => {
            let _ = writeln!(
                s,
                "**Proven** (structural): positively homogeneous of degree L = {l}.\n"
            );
        }
        None => {
            let _ = writeln!(
                s,
                "**Proven: not homogeneous** — {} breaks homogeneity; normalized \
                 margins and KKT conditions do not apply.\n",
                offending(c)
            );
        }
    }
    for reason in &c.homogeneity.reasons {
        let _ = writeln!(s, "- {reason}");
    }
    for w in &c.homogeneity.witness {
        let _ = writeln!(
            s,
            "- witness c = {}: {}",
            w.c,
            match &w.skipped {
                Some(why) => format!("skipped ({why})"),
                None if w.consistent => format!(
                    "enclosures of Φ(cθ) and c^L Φ(θ) overlap on {} examples (consistent; a \
                     check that could refute, not a proof)",
                    w.examples
                ),
                None => "enclosures DISAGREE: the claimed degree is refuted".into(),
            }
        );
    }
    let _ = writeln!(s, "\n## Margins (proven)\n");
    let _ = writeln!(s, "| quantity | lower bound | upper bound |\n|---|---|---|");
    let row = |s: &mut String, name: &str, e: &Enclosure| {
        let _ = writeln!(s, "| {name} | {:.9e} | {:.9e} |", e.lo, e.hi);
    };
    row(&mut s, "q_min", &c.margin.q_min);
    row(&mut s, "ρ = ‖θ‖₂", &c.norms.rho);
    row(&mut s, "∏ ‖W_i‖_F", &c.norms.product);
    if let Some(n) = &c.normalized {
        row(&mut s, "q_min / ρ^L", &n.by_rho);
        row(&mut s, "q_min / ∏ ‖W_i‖_F", &n.by_layer_product);
        row(&mut s, "smoothed margin γ̃", &n.smoothed);
    }
    let _ = writeln!(
        s,
        "\nProvably correct with positive margin: {} / {}; provably q_n ≤ 0: {}; examples \
         that may attain q_min: {}.",
        c.margin.certified_positive,
        c.margin.examples,
        c.margin.certified_nonpositive,
        c.margin.support.len()
    );
    if let Some(why) = &c.normalized_omitted {
        let _ = writeln!(s, "\nNormalized margins not certified: {why}.");
    }
    let _ = writeln!(s, "\n## Loss (proven)\n");
    let l = &c.loss;
    let _ = writeln!(
        s,
        "| loss | lower bound | upper bound | log10 |\n|---|---|---|---|\n| {:?} (sum) | {} | {} | {} |",
        l.kind, l.lower, l.upper, l.log10
    );
    let _ = writeln!(
        s,
        "\nLoss below the theorem's threshold {}: {:?}.",
        l.threshold, l.below_threshold
    );
    let _ = writeln!(s, "\n## KKT\n");
    match (&r.kkt, &r.kkt_omitted) {
        (Some(k), _) => {
            let _ = writeln!(
                s,
                "| multipliers | ε (proven upper bound) | δ (proven upper bound) | ε/‖θ̃‖ (proven upper bound; λ = 0 gives 1) | ε (measured) |\n|---|---|---|---|---|"
            );
            let _ = writeln!(
                s,
                "| paper (λ = κ w) | {:.6e} | {:.6e} | {:.6} | {:.6e} |",
                k.paper.epsilon_upper,
                k.paper.delta_upper,
                k.paper.epsilon_relative_upper,
                k.paper.epsilon_estimate
            );
            if let Some(n) = &k.nnls {
                let _ = writeln!(
                    s,
                    "| NNLS | {:.6e} | {:.6e} | {:.6} | {:.6e} |",
                    n.epsilon_upper, n.delta_upper, n.epsilon_relative_upper, n.epsilon_estimate
                );
            }
            let best = k
                .nnls
                .iter()
                .map(|n| ("NNLS", n.epsilon_relative_upper))
                .chain([("paper", k.paper.epsilon_relative_upper)])
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("the paper multipliers are always there");
            let _ = writeln!(
                s,
                "\nTightest: the {} multipliers (ε/‖θ̃‖ ≤ {:.6}), {}. β (cosine of θ and −∇Loss over \
                 the active set): {}. The absolute ε shrinks whenever the normalized margin grows \
                 (‖θ̃‖ = γ̄^(−1/L)); ε/‖θ̃‖ does not.",
                best.0,
                best.1,
                if best.1 < 1.0 {
                    "below the trivial bound 1 of λ = 0"
                } else {
                    "not below the trivial bound 1 of λ = 0: no approximate KKT point is shown"
                },
                k.beta_active_lower.map_or(
                    "not certified (paper ε/‖θ̃‖ ≥ 1)".to_string(),
                    |b| format!("≥ {b:.6}, proven")
                )
            );
            let _ = writeln!(
                s,
                "\n{} active constraints of {}; measured β = {:.6} (estimate). Multipliers of \
                 the {:?} loss at q_lo = {:e}; these are the numbers of `certificate.json` \
                 (`kkt`), on which the KKT gate is judged.",
                k.active, k.constraints, k.beta_estimate, k.loss, k.q_lo
            );
        }
        (None, why) => {
            let _ = writeln!(
                s,
                "Not certified: {}.",
                why.as_deref().unwrap_or("not computed")
            );
        }
    }
    let _ = writeln!(s, "\n## Robustness\n");
    match &r.robust {
        Some(rb) => {
            let _ = writeln!(
                s,
                "Certified radii are proven lower bounds on the distance to a changed \
                 prediction; attack radii are measured upper bounds (points found by PGD \
                 and verified misclassified by the certified forward pass).\n"
            );
            for ((name, rep), file) in [("L2", &rb.l2), ("L∞", &rb.linf)]
                .into_iter()
                .zip(ROBUST_PLOTS)
            {
                let _ = writeln!(
                    s,
                    "### {name}\n\n```\n{}```\n\n![robust accuracy against ε, {name}]({file})\n",
                    rep.summary()
                );
            }
        }
        None => {
            let _ = writeln!(
                s,
                "Not computed: {}.",
                r.robust_omitted.as_deref().unwrap_or("not requested")
            );
        }
    }
    let _ = writeln!(
        s,
        "\n## Margin histogram\n\n![certified lower bounds of q_n](margins.svg)\n\nThe \
         histogram shows the certified lower bound of every example's margin q_n (each \
         true margin is at least its bar's value)."
    );
    s
}
