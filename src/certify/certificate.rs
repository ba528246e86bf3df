//! The certificate: every certified quantity about a checkpoint on a dataset, as JSON with
//! every bound named lower/upper, and [`certify`] that produces it.

use serde::{Deserialize, Serialize};

use super::bounds::{Decision, Enclosure, div_pos, exact};
use super::forward::{CertifiedNet, ForwardMode, ForwardStats};
use super::homogeneity::{HomogeneityCert, homogeneity};
use super::kkt::{KktCertificate, KktOptions, certify_kkt_with_logits};
use super::loss::{LossCert, LossKind, loss_bounds, loss_cert, smoothed_margin};
use super::margin::{MarginSummary, Task, gaps, margin_of, summarize};
use super::norms::{FloatBounds, NormsCert, norms};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params};

/// What to certify and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CertifyOptions {
    /// The loss whose value (and smoothed margin, threshold) is certified.
    pub loss: LossKind,
    /// Number of examples (the first ones) of the homogeneity witness.
    pub witness_examples: usize,
    /// MPFR precision in bits of the norm and loss bounds (≥ 64).
    pub precision: u32,
    /// Settings of the approximate-KKT certificate (`None`: skip it). Its `loss` is
    /// overridden by [`CertifyOptions::loss`].
    #[serde(default)]
    pub kkt: Option<KktOptions>,
    /// Arithmetic of the certified forward pass of the margins (proofs/forward-dd.md).
    /// Certificates written before this option existed used binary64 and parse as such.
    #[serde(default)]
    pub forward: ForwardMode,
}

impl Default for CertifyOptions {
    fn default() -> Self {
        Self {
            loss: LossKind::CrossEntropy,
            witness_examples: 16,
            precision: 128,
            kkt: Some(KktOptions {
                max_active: 64,
                nnls_memory_bytes: 1 << 29,
                ..KktOptions::default()
            }),
            forward: ForwardMode::Auto,
        }
    }
}

/// The dataset a certificate is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Name.
    pub name: String,
    /// Number of examples.
    pub size: usize,
    /// Number of classes.
    pub classes: usize,
    /// [`Dataset::sha256`].
    pub sha256: String,
}

/// Normalized margins (homogeneous specs only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormalizedCert {
    /// `γ̄ = q_min / ρ^L`.
    pub by_rho: Enclosure,
    /// `q_min / ∏_i ||W_i||_F` (the paper's plots).
    pub by_layer_product: Enclosure,
    /// Smoothed margin `γ̃` of the certified loss.
    pub smoothed: Enclosure,
}

/// Everything certified about the real network (stored f32 weights as exact reals, inputs
/// `p/255`) on a dataset. Every number is an [`Enclosure`] (`lo ≤ truth ≤ hi`) or a
/// decimal bound named `lower` / `upper`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    /// Version of margincert that produced it.
    pub margincert_version: String,
    /// The dataset.
    pub dataset: DatasetInfo,
    /// SHA-256 of the checkpoint file (filled by the CLI).
    pub checkpoint_sha256: Option<String>,
    /// The model spec.
    pub spec: ModelSpec,
    /// The options (loss, witness size, MPFR precision in bits).
    pub options: CertifyOptions,
    /// Margins: `q_min`, support set, counts.
    pub margin: MarginSummary,
    /// Norms.
    pub norms: NormsCert,
    /// Homogeneity: structural degree and numeric witness.
    pub homogeneity: HomogeneityCert,
    /// Normalized and smoothed margins (`None` for non-homogeneous specs).
    pub normalized: Option<NormalizedCert>,
    /// Why [`Certificate::normalized`] is absent.
    pub normalized_omitted: Option<String>,
    /// The summed loss.
    pub loss: LossCert,
    /// Approximate-KKT bounds of problem (P) (homogeneous specs with a certified positive
    /// `q_min` only).
    #[serde(default)]
    pub kkt: Option<KktCertificate>,
    /// Why [`Certificate::kkt`] is absent.
    #[serde(default)]
    pub kkt_omitted: Option<String>,
    /// How the margins' forward pass was computed (how many examples needed
    /// double-double); absent in certificates written before it existed.
    #[serde(default)]
    pub forward: Option<ForwardStats>,
}

/// Checks the inputs of [`certify`] and [`super::verify::verify`].
pub(crate) fn check_inputs(spec: &ModelSpec, params: &Params, data: &Dataset) -> Result<Task> {
    params.check(spec)?;
    if data.shape != spec.input {
        return Err(Error::Shape(format!(
            "the data's examples have shape {}, the model's input {}",
            data.shape, spec.input
        )));
    }
    if data.is_empty() {
        return Err(Error::Invalid(format!("dataset {} is empty", data.name)));
    }
    Task::new(spec.outputs()?, data.classes)
}

/// Certifies margins, norms, loss, homogeneity, normalized and smoothed margins of
/// `params` on `data`. Errors on non-finite weights, shape mismatches, or an enclosure that
/// leaves f64 range — never a wrong certificate.
pub fn certify(
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
    opts: &CertifyOptions,
) -> Result<Certificate> {
    Ok(certify_full(spec, params, data, opts)?.0)
}

/// [`certify`], also returning the MPFR bounds on the loss (for [`super::verify::verify`]).
pub(crate) fn certify_full(
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
    opts: &CertifyOptions,
) -> Result<(Certificate, FloatBounds)> {
    let task = check_inputs(spec, params, data)?;
    if opts.precision < 64 {
        return Err(Error::Invalid("precision must be at least 64 bits".into()));
    }
    let prec = opts.precision;
    let n = data.len();
    let (logits, forward) = CertifiedNet::new(spec, params)?
        .with_forward_mode(opts.forward)?
        .logits_with_stats(&data.pixels, n)?;
    let all_gaps: Vec<_> = (0..n)
        .map(|i| gaps(&logits, i, data.labels[i], task))
        .collect();
    let q: Vec<Enclosure> = all_gaps.iter().map(|g| margin_of(g)).collect();
    let margin = summarize(&q)?;

    let h = spec.homogeneity();
    let nm = norms(params, prec);
    let norms_cert = nm.cert(h.degree);
    let lb = loss_bounds(opts.loss, &all_gaps, prec);
    let loss = loss_cert(opts.loss, &lb);

    let w = opts.witness_examples.min(n);
    let homog = homogeneity(
        spec,
        params,
        &data.pixels[..w * data.shape.len()],
        w,
        opts.forward,
    )?;

    let (normalized, normalized_omitted) = match h.degree {
        None => (
            None,
            Some(format!(
                "the spec is not homogeneous (layer {:?} breaks it): normalized and smoothed \
                 margins are not defined",
                h.offending_layer
            )),
        ),
        Some(l) => {
            let rho_l = nm.rho.pow(l);
            if rho_l.lo <= 0 || nm.product.lo <= 0 {
                (
                    None,
                    Some(
                        "a parameter norm may be zero: the normalized margins are unbounded".into(),
                    ),
                )
            } else {
                let q_lo = exact(prec, margin.q_min.lo);
                let q_hi = exact(prec, margin.q_min.hi);
                let (a, b) = div_pos(&q_lo, &q_hi, &rho_l.lo, &rho_l.hi);
                let (c, d) = div_pos(&q_lo, &q_hi, &nm.product.lo, &nm.product.hi);
                let smoothed = smoothed_margin(opts.loss, &lb, &rho_l).expect("ρ^L > 0 checked");
                (
                    Some(NormalizedCert {
                        by_rho: Enclosure::from_floats(&a, &b),
                        by_layer_product: Enclosure::from_floats(&c, &d),
                        smoothed,
                    }),
                    None,
                )
            }
        }
    };
    let (kkt, kkt_omitted) = match (&opts.kkt, h.degree) {
        (None, _) => (None, Some("not requested".to_string())),
        (Some(_), None) => (
            None,
            Some("the spec is not homogeneous: problem (P) is not defined".to_string()),
        ),
        (Some(_), Some(_)) if margin.q_min.lo <= 0.0 => (
            None,
            Some(format!(
                "q_min is not certified positive (lower bound {:e}): the KKT rescaling needs q_min > 0",
                margin.q_min.lo
            )),
        ),
        (Some(k), Some(_)) => {
            let k = KktOptions {
                loss: opts.loss,
                ..k.clone()
            };
            let c =
                certify_kkt_with_logits(spec, params, data, &k, margin.q_min.lo, Some(&logits))?;
            (Some(c), None)
        }
    };
    let cert = Certificate {
        margincert_version: env!("CARGO_PKG_VERSION").to_string(),
        dataset: DatasetInfo {
            name: data.name.clone(),
            size: n,
            classes: data.classes,
            sha256: data.sha256(),
        },
        checkpoint_sha256: None,
        spec: spec.clone(),
        options: opts.clone(),
        margin,
        norms: norms_cert,
        homogeneity: homog,
        normalized,
        normalized_omitted,
        loss,
        kkt,
        kkt_omitted,
        forward: Some(forward),
    };
    Ok((cert, lb))
}

fn decision(d: Decision) -> &'static str {
    match d {
        Decision::True => "PROVEN",
        Decision::False => "DISPROVEN",
        Decision::Undecided => "undecided",
    }
}

impl Certificate {
    /// JSON text (pretty).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a certificate always serializes")
    }

    /// Parses a certificate from JSON.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text)
            .map_err(|e| Error::Certify(format!("invalid certificate JSON: {e}")))
    }

    /// A readable multi-line summary: what is proven, with the numbers.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
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
            (Some(k), _) => {
                let _ = write!(s, "{}", k.summary());
            }
            (None, Some(why)) => {
                let _ = writeln!(s, "KKT: not certified ({why})");
            }
            (None, None) => {}
        }
        s
    }
}
