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
//! One computation, one truth: the audit runs ONE certify pass ([`certify_run`], the KKT
//! certificate inside it, with the audit's options) and decides every gate on exactly what
//! that pass put in the certificate (`certificate.json`); the report renders the same
//! numbers. The margin histogram's data are the per-example enclosures of that same pass.
//! A gate over zero examples fails.
//!
//! Robustness radii ([`crate::robust`]): certified L2 and L∞ radii with verified attack
//! radii on the first [`RobustAudit::examples`] examples of the split.
//!
//! Rendering (Markdown, SVG, the files) is in [`crate::report::audit`].

use serde::{Deserialize, Serialize};

use crate::certify::certificate::{Certificate, CertifyOptions, CertifyRun, certify_run};
use crate::certify::kkt::{KktCertificate, KktOptions};
use crate::checkpoint::Checkpoint;
use crate::data::Dataset;
use crate::error::{Error, Result};

/// Files of the robust-accuracy-against-ε plots an audit writes (L2, L∞).
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
            eps_max_l2: crate::robust::Norm::L2.default_eps_max(),
            eps_max_linf: crate::robust::Norm::Inf.default_eps_max(),
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

/// Radii of the first `ra.examples` examples in L2 and L∞, on the certify pass's prepared
/// network and in its forward arithmetic. The clean logits of those examples are certified
/// again on exactly them (a pass over a few examples), so that each robustness report is
/// reproducible by `verify` from its own data: a certified pass's midpoints depend on the
/// batch they are computed in.
fn robustness(run: &CertifyRun, data: &Dataset, ra: &RobustAudit) -> Result<RobustnessAudit> {
    use crate::robust::{AttackOptions, Norm, RobustOptions, RobustSetup};
    let k = ra.examples.min(data.len());
    let data = data.take(k);
    let setup =
        RobustSetup::from_prepared(run.prepared.clone(), &data, run.certificate.options.forward)?;
    let go = |norm, eps_max| {
        setup.run(&RobustOptions {
            norm,
            eps_max,
            steps: ra.steps,
            attack: AttackOptions {
                restarts: ra.restarts,
                ..AttackOptions::default()
            },
        })
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
    /// Options of the one certify pass: margins, loss, homogeneity, and the KKT certificate
    /// (`certify.kkt`; `None` skips it; its loss is `certify.loss`).
    pub certify: CertifyOptions,
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
            certify: CertifyOptions {
                kkt: Some(KktOptions {
                    nnls: false,
                    ..KktOptions::default()
                }),
                ..CertifyOptions::default()
            },
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

/// The audit report. Invariants: `requirements` lists exactly the gates of the options and
/// was decided on `certificate` (and `robust`); `kkt`/`kkt_omitted` are the certificate's
/// (one KKT computation); `margin_lower_bounds` are the lower ends of the per-example margin
/// enclosures `certificate.margin` summarizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Where the model came from (file and format).
    pub source: String,
    /// Notes of the import (dtype conversions, renamed tensors, rounding warnings).
    pub import_notes: Vec<String>,
    /// The margin / loss / homogeneity certificate.
    pub certificate: Certificate,
    /// The KKT certificate, when computed: `certificate.kkt`.
    pub kkt: Option<KktCertificate>,
    /// Why [`AuditReport::kkt`] is absent: `certificate.kkt_omitted`.
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
    let run = certify_run(spec, params, data, &opts.certify)?;
    let margin_lower_bounds = run.margins.iter().map(|e| e.lo).collect();
    let (robust, robust_omitted) = match &opts.robust {
        None => (None, Some("not requested".to_string())),
        Some(ra) if ra.examples == 0 => (
            None,
            Some(
                "zero examples requested: no radius computed, and a gate over zero examples \
                 is not met"
                    .to_string(),
            ),
        ),
        Some(ra) => (Some(robustness(&run, data, ra)?), None),
    };
    let certificate = run.certificate;
    let (kkt, kkt_omitted) = (certificate.kkt.clone(), certificate.kkt_omitted.clone());
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
pub fn offending(c: &Certificate) -> String {
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
            Some(rb) if rb.linf.examples.is_empty() => (
                false,
                "no example was audited for robustness (--robust-examples 0): a gate over \
                 zero examples is not met"
                    .to_string(),
            ),
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
}
