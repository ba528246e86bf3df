//! The audit: one report on a checkpoint (native or imported) on a dataset — homogeneity
//! (structural proof and numeric witness), certified margin and normalized margins, loss and
//! smoothed margin, certified KKT (ε, δ) bounds — with exit gates on the certified numbers.
//!
//! Every gate is decided on **certified** bounds only: `--require-margin X` passes when the
//! certified lower bound of the normalized margin `q_min / ρ^L` is at least `X`;
//! `--require-kkt-epsilon E` when a certified upper bound on ε (paper or NNLS multipliers)
//! is at most `E`; `--require-homogeneous` when the structural proof gives a degree and no
//! witness refutes it. Estimates appear in the report, labelled as such, and never decide.
//!
//! Robustness radii ([`crate::robust`]): certified L2 and L∞ radii with verified attack
//! radii on the first [`RobustAudit::examples`] examples of the split.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::certify::certificate::{Certificate, CertifyOptions, certify};
use crate::certify::enclosure::CertifiedNet;
use crate::certify::kkt::{KktCertificate, KktOptions, certify_kkt_with_logits};
use crate::certify::margin::{Task, margins};
use crate::checkpoint::Checkpoint;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::io::write_atomic;

/// Files of the robust-accuracy-against-ε plots written by [`AuditReport::write`] (L2, L∞).
pub const ROBUST_PLOTS: [&str; 2] = ["robust_l2.svg", "robust_linf.svg"];

/// Settings of the robustness part of an audit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustAudit {
    /// Examples (the first ones of the split) whose radii are certified and attacked.
    pub examples: usize,
    /// Largest L2 radius searched.
    pub eps_max_l2: f64,
    /// Largest L∞ radius searched.
    pub eps_max_linf: f64,
    /// Bisection steps (certified and attack).
    pub steps: usize,
    /// PGD random restarts.
    pub restarts: usize,
}

impl Default for RobustAudit {
    fn default() -> Self {
        Self {
            examples: 16,
            eps_max_l2: 3.0,
            eps_max_linf: 0.3,
            steps: 10,
            restarts: 3,
        }
    }
}

/// Certified and attack radii in both norms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobustnessAudit {
    /// L2 radii (certified from the margin and a certified Lipschitz bound).
    pub l2: crate::robust::RobustReport,
    /// L∞ radii (certified by interval bound propagation, CROWN on MLPs).
    pub linf: crate::robust::RobustReport,
}

impl RobustnessAudit {
    /// The smallest certified L∞ radius over the audited examples, each the larger of its
    /// IBP and (where computed) CROWN radius — both proven lower bounds.
    pub fn min_certified_linf(&self) -> f64 {
        self.linf
            .examples
            .iter()
            .map(|x| x.crown.map_or(x.certified, |c| c.max(x.certified)))
            .fold(f64::INFINITY, f64::min)
    }
}

fn robustness(
    spec: &crate::model::ModelSpec,
    params: &crate::model::Params,
    data: &Dataset,
    ra: &RobustAudit,
) -> Result<RobustnessAudit> {
    use crate::robust::{AttackOptions, Norm, RobustOptions, run};
    let data = data.take(ra.examples.min(data.len()));
    let go = |norm, eps_max| {
        run(
            spec,
            params,
            &data,
            &RobustOptions {
                norm,
                eps_max,
                steps: ra.steps,
                attack: AttackOptions {
                    restarts: ra.restarts,
                    ..AttackOptions::default()
                },
            },
        )
    };
    Ok(RobustnessAudit {
        l2: go(Norm::L2, ra.eps_max_l2)?,
        linf: go(Norm::Inf, ra.eps_max_linf)?,
    })
}

/// Requirements that decide the audit's exit status. Each is checked on certified bounds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    /// The certified lower bound of `q_min / ρ^L` must be at least this.
    pub margin: Option<f64>,
    /// The network must be proven homogeneous (structural degree, witness consistent).
    pub homogeneous: bool,
    /// A certified upper bound on the KKT ε must be at most this.
    pub kkt_epsilon: Option<f64>,
    /// Every audited example's certified L∞ radius must be at least this.
    #[serde(default)]
    pub linf: Option<f64>,
}

/// Options of [`audit`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditOptions {
    /// Options of the margin / loss / homogeneity certificate.
    pub certify: CertifyOptions,
    /// Options of the KKT certificate; `None` skips it.
    pub kkt: Option<KktOptions>,
    /// Bins of the margin histogram (≥ 1).
    pub bins: usize,
    /// Robustness radii; `None` skips them.
    pub robust: Option<RobustAudit>,
    /// The exit gates.
    pub require: Requirements,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            certify: CertifyOptions::default(),
            kkt: Some(KktOptions {
                nnls: false,
                ..KktOptions::default()
            }),
            bins: 30,
            robust: Some(RobustAudit::default()),
            require: Requirements::default(),
        }
    }
}

/// One requirement and whether the certificate meets it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequirementCheck {
    /// E.g. `margin >= 0.001`.
    pub requirement: String,
    /// True only when the certified bound meets it.
    pub met: bool,
    /// The certified number it was decided on, or why it could not be.
    pub detail: String,
}

/// The audit report. Invariant: `requirements` lists exactly the gates of the options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Where the model came from (file and format).
    pub source: String,
    /// Notes of the import (dtype conversions, renamed tensors, rounding warnings).
    pub import_notes: Vec<String>,
    /// The margin / loss / homogeneity certificate.
    pub certificate: Certificate,
    /// The KKT certificate, when computed.
    pub kkt: Option<KktCertificate>,
    /// Why [`AuditReport::kkt`] is absent.
    pub kkt_omitted: Option<String>,
    /// Certified and attack radii (L2 and L∞).
    pub robust: Option<RobustnessAudit>,
    /// Why [`AuditReport::robust`] is absent.
    pub robust_omitted: Option<String>,
    /// Certified lower bounds of every example's margin `q_n`, in data order (the
    /// histogram's data).
    pub margin_lower_bounds: Vec<f64>,
    /// The gates and their outcome.
    pub requirements: Vec<RequirementCheck>,
}

/// Audits `checkpoint` on `data`. `source` and `import_notes` are carried into the report.
pub fn audit(
    checkpoint: &Checkpoint,
    data: &Dataset,
    source: &str,
    import_notes: &[String],
    opts: &AuditOptions,
) -> Result<AuditReport> {
    if opts.bins == 0 {
        return Err(Error::Invalid(
            "the histogram needs at least one bin".into(),
        ));
    }
    let spec = &checkpoint.spec;
    let params = &checkpoint.params;
    let certificate = certify(spec, params, data, &opts.certify)?;
    let task = Task::new(spec.outputs()?, data.classes)?;
    let logits = CertifiedNet::new(spec, params)?.logits(&data.pixels, data.len())?;
    let q = margins(&logits, &data.labels, task)?;
    let margin_lower_bounds = q.iter().map(|e| e.lo).collect();

    let (kkt, kkt_omitted) = match (&opts.kkt, certificate.homogeneity.degree) {
        (None, _) => (None, Some("not requested".to_string())),
        (Some(_), None) => (
            None,
            Some(format!(
                "the network is not homogeneous ({}): the KKT conditions of (P) do not apply",
                offending(&certificate)
            )),
        ),
        (Some(_), Some(_)) if certificate.margin.q_min.lo <= 0.0 => (
            None,
            Some(format!(
                "the certified lower bound of q_min is {:e} ≤ 0: the data is not certified \
                 separated, so the KKT point of (P) is not defined",
                certificate.margin.q_min.lo
            )),
        ),
        (Some(ko), Some(_)) => {
            let k = certify_kkt_with_logits(
                spec,
                params,
                data,
                ko,
                certificate.margin.q_min.lo,
                Some(&logits),
            )?;
            (Some(k), None)
        }
    };
    let (robust, robust_omitted) = match &opts.robust {
        None => (None, Some("not requested".to_string())),
        Some(ra) => (Some(robustness(spec, params, data, ra)?), None),
    };
    let mut report = AuditReport {
        source: source.to_string(),
        import_notes: import_notes.to_vec(),
        certificate,
        kkt,
        kkt_omitted,
        robust,
        robust_omitted,
        margin_lower_bounds,
        requirements: Vec::new(),
    };
    report.requirements = check_requirements(&report, &opts.require);
    Ok(report)
}

/// "layer i (description)" of the layer that breaks homogeneity.
fn offending(c: &Certificate) -> String {
    match c.homogeneity.offending_layer {
        Some(i) => format!(
            "layer {i} ({})",
            c.spec
                .layers
                .get(i)
                .map(|l| l.describe())
                .unwrap_or_default()
        ),
        None => "no single layer".into(),
    }
}

/// The best certified upper bound on ε (paper or NNLS multipliers), if any.
pub fn best_epsilon(k: &KktCertificate) -> f64 {
    let p = k.paper.epsilon_upper;
    k.nnls.as_ref().map_or(p, |n| p.min(n.epsilon_upper))
}

/// True when the spec is structurally homogeneous and no witness refutes it.
pub fn proven_homogeneous(c: &Certificate) -> bool {
    c.homogeneity.degree.is_some() && c.homogeneity.witness.iter().all(|w| w.consistent)
}

fn check_requirements(r: &AuditReport, req: &Requirements) -> Vec<RequirementCheck> {
    let c = &r.certificate;
    let mut out = Vec::new();
    if req.homogeneous {
        let met = proven_homogeneous(c);
        out.push(RequirementCheck {
            requirement: "homogeneous".into(),
            met,
            detail: match c.homogeneity.degree {
                Some(l) if met => format!("proven: degree L = {l}"),
                Some(l) => format!("degree {l} claimed but a numeric witness refutes it"),
                None => format!(
                    "not homogeneous: {} — {}",
                    offending(c),
                    c.homogeneity.reasons.last().cloned().unwrap_or_default()
                ),
            },
        });
    }
    if let Some(x) = req.margin {
        let (met, detail) = match &c.normalized {
            Some(n) => (
                n.by_rho.lo >= x,
                format!("certified q_min/ρ^L ≥ {:e}", n.by_rho.lo),
            ),
            None => (
                false,
                c.normalized_omitted
                    .clone()
                    .unwrap_or_else(|| "no normalized margin".into()),
            ),
        };
        out.push(RequirementCheck {
            requirement: format!("normalized margin ≥ {x:e}"),
            met,
            detail,
        });
    }
    if let Some(e) = req.linf {
        let (met, detail) = match &r.robust {
            Some(rb) => {
                let worst = rb.min_certified_linf();
                (
                    worst >= e,
                    format!(
                        "smallest certified L∞ radius over {} examples: {worst:e}",
                        rb.linf.examples.len()
                    ),
                )
            }
            None => (
                false,
                r.robust_omitted
                    .clone()
                    .unwrap_or_else(|| "no robustness radii".into()),
            ),
        };
        out.push(RequirementCheck {
            requirement: format!("certified L∞ radius ≥ {e:e} on every audited example"),
            met,
            detail,
        });
    }
    if let Some(e) = req.kkt_epsilon {
        let (met, detail) = match &r.kkt {
            Some(k) => {
                let eps = best_epsilon(k);
                (eps <= e, format!("certified ε ≤ {eps:e}"))
            }
            None => (
                false,
                r.kkt_omitted
                    .clone()
                    .unwrap_or_else(|| "no KKT certificate".into()),
            ),
        };
        out.push(RequirementCheck {
            requirement: format!("KKT ε ≤ {e:e}"),
            met,
            detail,
        });
    }
    out
}

impl AuditReport {
    /// True when every requirement is met.
    pub fn passed(&self) -> bool {
        self.requirements.iter().all(|r| r.met)
    }

    /// The requirements that are not met.
    pub fn unmet(&self) -> Vec<&RequirementCheck> {
        self.requirements.iter().filter(|r| !r.met).collect()
    }

    /// Pretty JSON of the whole report.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// The human report (Markdown): what is proven, what is only measured.
    pub fn markdown(&self) -> String {
        use std::fmt::Write;
        let c = &self.certificate;
        let mut s = String::new();
        let _ = writeln!(s, "# margincert audit: {}\n", self.source);
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
        if !self.import_notes.is_empty() {
            let _ = writeln!(s, "## Import\n");
            for n in &self.import_notes {
                let _ = writeln!(s, "- {n}");
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "## Requirements\n");
        if self.requirements.is_empty() {
            let _ = writeln!(s, "None given.\n");
        } else {
            let _ = writeln!(
                s,
                "| requirement | status | certified basis |\n|---|---|---|"
            );
            for r in &self.requirements {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} |",
                    r.requirement,
                    if r.met { "met" } else { "**NOT MET**" },
                    r.detail.replace('|', "\\|")
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
        for r in &c.homogeneity.reasons {
            let _ = writeln!(s, "- {r}");
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
        let row = |s: &mut String, name: &str, e: &crate::certify::Enclosure| {
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
        match (&self.kkt, &self.kkt_omitted) {
            (Some(k), _) => {
                let _ = writeln!(
                    s,
                    "| multipliers | ε (proven upper bound) | δ (proven upper bound) | ε (measured) |\n|---|---|---|---|"
                );
                let _ = writeln!(
                    s,
                    "| paper (λ = κ w) | {:.6e} | {:.6e} | {:.6e} |",
                    k.paper.epsilon_upper, k.paper.delta_upper, k.paper.epsilon_estimate
                );
                if let Some(n) = &k.nnls {
                    let _ = writeln!(
                        s,
                        "| NNLS | {:.6e} | {:.6e} | {:.6e} |",
                        n.epsilon_upper, n.delta_upper, n.epsilon_estimate
                    );
                }
                let _ = writeln!(
                    s,
                    "\n{} active constraints of {}; measured β = {:.6} (estimate).",
                    k.active, k.constraints, k.beta_estimate
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
        match &self.robust {
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
                        rep.table()
                    );
                }
            }
            None => {
                let _ = writeln!(
                    s,
                    "Not computed: {}.",
                    self.robust_omitted.as_deref().unwrap_or("not requested")
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

    /// The margin histogram as a standalone SVG: [`crate::plot::histogram`] (plotters' SVG
    /// backend), or the hand-written [`histogram_svg`] where plotters cannot draw it (no
    /// finite value, all values equal).
    pub fn histogram_svg(&self, bins: usize) -> String {
        let v = &self.margin_lower_bounds;
        let finite = || v.iter().copied().filter(|x| x.is_finite());
        let distinct =
            finite().fold(f64::INFINITY, f64::min) < finite().fold(f64::NEG_INFINITY, f64::max);
        if distinct
            && let Ok(svg) = crate::plot::histogram(
                &format!(
                    "certified lower bounds of the margins q_n ({} examples)",
                    v.len()
                ),
                "lower bound of q_n",
                v,
                bins.max(1),
            )
        {
            return svg;
        }
        histogram_svg(v, bins.max(1))
    }

    /// Writes `audit.json`, `certificate.json`, `report.md` and `margins.svg` into `dir`.
    pub fn write(&self, dir: &Path, bins: usize) -> Result<()> {
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
                write_atomic(&dir.join(file), rep.svg().as_bytes())?;
            }
        }
        Ok(())
    }
}

/// A hand-written histogram of finite `values` as SVG (non-finite values are counted in the
/// caption); the fallback of [`AuditReport::histogram_svg`].
pub fn histogram_svg(values: &[f64], bins: usize) -> String {
    use std::fmt::Write;
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let (w, h, pad) = (640.0, 360.0, 50.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut counts = vec![0usize; bins];
    if !finite.is_empty() {
        let span = if hi > lo { hi - lo } else { 1.0 };
        for v in &finite {
            let b = (((v - lo) / span) * bins as f64) as usize;
            counts[b.min(bins - 1)] += 1;
        }
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bw = (w - 2.0 * pad) / bins as f64;
    for (i, &c) in counts.iter().enumerate() {
        let bh = (h - 2.0 * pad) * c as f64 / max;
        let _ = writeln!(
            s,
            "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"steelblue\"><title>{c}</title></rect>",
            pad + i as f64 * bw,
            h - pad - bh,
            (bw - 1.0).max(0.5),
            bh
        );
    }
    if lo < 0.0 && hi > 0.0 {
        // q_n = 0: the decision boundary (bars left of it may be misclassified).
        let x = pad + (w - 2.0 * pad) * (-lo / (hi - lo));
        let _ = writeln!(
            s,
            "<line x1=\"{x:.2}\" y1=\"{pad}\" x2=\"{x:.2}\" y2=\"{}\" stroke=\"crimson\" stroke-dasharray=\"4 3\"><title>q = 0</title></line>",
            h - pad
        );
    }
    let _ = writeln!(
        s,
        "<line x1=\"{pad}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/>",
        h - pad,
        w - pad
    );
    let label = |v: f64| {
        if v.is_finite() {
            format!("{v:.3e}")
        } else {
            "–".into()
        }
    };
    let _ = writeln!(
        s,
        "<text x=\"{pad}\" y=\"{}\" font-size=\"12\" font-family=\"sans-serif\">{}</text>\n\
         <text x=\"{}\" y=\"{}\" font-size=\"12\" font-family=\"sans-serif\" text-anchor=\"end\">{}</text>\n\
         <text x=\"{pad}\" y=\"24\" font-size=\"14\" font-family=\"sans-serif\">certified lower bounds of the margins q_n ({} examples, max bin {}{})</text>",
        h - pad + 18.0,
        label(lo),
        w - pad,
        h - pad + 18.0,
        label(hi),
        finite.len(),
        max as usize,
        if finite.len() < values.len() {
            format!(", {} non-finite", values.len() - finite.len())
        } else {
            String::new()
        }
    );
    s.push_str("</svg>\n");
    s
}
