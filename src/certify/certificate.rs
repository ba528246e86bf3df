//! The certificate: every certified quantity about a checkpoint on a dataset, as JSON with
//! every bound named lower/upper, and [`certify`] that produces it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ball::BallVec;
use super::bounds::{Enclosure, div_pos, exact};
use super::forward::{CertifiedNet, ForwardMode, ForwardStats, PreparedNet};
use super::homogeneity::{HomogeneityCert, homogeneity};
use super::kkt::{KktCertificate, KktOptions, certify_kkt_prepared};
use super::loss::{LossCert, LossKind, loss_bounds, loss_cert, smoothed_margin};
use super::margin::{MarginSummary, Task, gaps, margin_of, summarize};
use super::norms::{FloatBounds, NormsCert, norms};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params};

/// What to certify and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Options given without it (e.g. in an audit configuration) mean binary64; a
    /// certificate must state it ([`Certificate::from_json`] refuses a missing field).
    #[serde(default)]
    pub forward: ForwardMode,
}

impl Default for CertifyOptions {
    fn default() -> Self {
        Self {
            loss: LossKind::CrossEntropy,
            witness_examples: 16,
            precision: 128,
            kkt: Some(KktOptions::default()),
            forward: ForwardMode::Auto,
        }
    }
}

/// The version of the certificate schema this margincert writes and reads. A certificate
/// of any other version (or none: those written before versioning) is refused with a clear
/// error; certify the model again. History: 2 adds this field and the optional
/// [`Certificate::per_example`] enclosures, and makes every field required.
pub const SCHEMA_VERSION: u32 = 2;

/// The largest MPFR precision (bits) a certificate may ask for. Far above what any bound
/// needs (the default is 128), and low enough that a tampered certificate cannot make
/// `verify` run for minutes or exhaust memory (at 10⁶ bits one `verify` ran past 150 s).
pub const MAX_PRECISION: u32 = 4096;

impl CertifyOptions {
    /// The options as a certificate records them: the KKT loss set to
    /// [`CertifyOptions::loss`] (the one the KKT pass runs with), so that no recorded
    /// setting is one that nothing used.
    pub fn normalized(&self) -> Self {
        let mut o = self.clone();
        if let Some(k) = &mut o.kkt {
            k.loss = o.loss;
        }
        o
    }

    /// Checks the options: `precision` in `[64, MAX_PRECISION]` bits.
    pub fn validate(&self) -> Result<()> {
        if !(64..=MAX_PRECISION).contains(&self.precision) {
            return Err(Error::Invalid(format!(
                "precision must be between 64 and {MAX_PRECISION} bits, got {} (the default, \
                 128, bounds every quantity to far more digits than f64 holds)",
                self.precision
            )));
        }
        Ok(())
    }
}

/// The dataset a certificate is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

impl DatasetInfo {
    /// Checks that `data` is the dataset described (same SHA-256): an [`Error::Checksum`]
    /// naming it otherwise.
    pub fn check(&self, data: &Dataset) -> Result<()> {
        let sha = data.sha256();
        if sha != self.sha256 {
            return Err(Error::Checksum {
                what: format!("dataset {}", data.name),
                expected: self.sha256.clone(),
                got: sha,
            });
        }
        Ok(())
    }

    /// The description of `data` (its SHA-256 computed here).
    pub fn of(data: &Dataset) -> Self {
        Self {
            name: data.name.clone(),
            size: data.len(),
            classes: data.classes,
            sha256: data.sha256(),
        }
    }
}

/// Normalized margins (homogeneous specs only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// The schema version, [`SCHEMA_VERSION`].
    pub schema_version: u32,
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
    /// double-double); `null` claims nothing.
    #[serde(default)]
    pub forward: Option<ForwardStats>,
    /// The certified enclosure of every example's margin `q_n`, in data order, from the pass
    /// the certificate's margins summarize (`certify --per-example`); `None` when not asked.
    #[serde(default)]
    pub per_example: Option<Vec<Enclosure>>,
}

/// "layer i (description) breaks it" for the layer that breaks homogeneity.
fn breaking_layer(spec: &ModelSpec, layer: Option<usize>) -> String {
    match layer.and_then(|i| Some((i, spec.layers.get(i)?))) {
        Some((i, l)) => format!("layer {i} ({}) breaks it", l.describe()),
        None => "no single layer breaks it".into(),
    }
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

/// What one certify pass computed: the [`Certificate`] and the per-example data it was
/// summarized from, so that consumers (the audit, the verifier, reproduce) read them instead
/// of recomputing them.
///
/// Invariants: `logits` are the enclosures of the pass whose mode and statistics are
/// `certificate.forward`; `margins[n]` is the margin enclosure of example `n` (data order)
/// computed from them, and `certificate.margin` summarizes exactly these (so `q_min.lo` is the
/// least `margins[n].lo`); `loss` are the MPFR bounds `certificate.loss` was rounded from; the
/// KKT certificate (or why it is absent) is `certificate.kkt` (`certificate.kkt_omitted`).
#[derive(Clone, Debug)]
pub struct CertifyRun {
    /// The certificate.
    pub certificate: Certificate,
    /// Certified logit enclosures of every example (example-major).
    pub logits: BallVec,
    /// Certified enclosure of every example's margin `q_n`, in data order.
    pub margins: Vec<Enclosure>,
    /// MPFR bounds of the summed loss (at `certificate.options.precision` bits).
    pub loss: FloatBounds,
    /// The prepared network the pass ran on (shared with later passes: robustness radii).
    pub prepared: Arc<PreparedNet>,
}

impl CertifyRun {
    /// The KKT certificate of the pass, when one was certified.
    pub fn kkt(&self) -> Option<&KktCertificate> {
        self.certificate.kkt.as_ref()
    }

    /// The forward-pass arithmetic used (and how many examples needed double-double).
    pub fn forward(&self) -> Option<&ForwardStats> {
        self.certificate.forward.as_ref()
    }
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
    Ok(certify_run(spec, params, data, opts)?.certificate)
}

/// [`certify`], also returning what the pass computed on the way ([`CertifyRun`]).
pub fn certify_run(
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
    opts: &CertifyOptions,
) -> Result<CertifyRun> {
    let task = check_inputs(spec, params, data)?;
    opts.validate()?;
    let opts = &opts.normalized();
    let prec = opts.precision;
    let n = data.len();
    // The network is prepared once: the margins' pass and the KKT pass share it.
    let net = CertifiedNet::new(spec, params)?.with_forward_mode(opts.forward)?;
    let (logits, forward) = net.logits_with_stats(&data.pixels, n)?;
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
            Some(format!(
                "the spec is not homogeneous ({}): problem (P) is not defined",
                breaking_layer(spec, h.offending_layer)
            )),
        ),
        (Some(_), Some(_)) if margin.q_min.lo <= 0.0 => (
            None,
            Some(format!(
                "q_min is not certified positive (lower bound {:e}): the KKT rescaling needs q_min > 0",
                margin.q_min.lo
            )),
        ),
        (Some(k), Some(_)) => {
            // `k.loss == opts.loss`: the options are normalized.
            let c = certify_kkt_prepared(net.prepared(), data, k, margin.q_min.lo, Some(&logits))?;
            (Some(c), None)
        }
    };
    let cert = Certificate {
        schema_version: SCHEMA_VERSION,
        margincert_version: env!("CARGO_PKG_VERSION").to_string(),
        dataset: DatasetInfo::of(data),
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
        per_example: None,
    };
    Ok(CertifyRun {
        certificate: cert,
        logits,
        margins: q,
        loss: lb,
        prepared: net.prepared().clone(),
    })
}

impl Certificate {
    /// JSON text (pretty).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a certificate always serializes")
    }

    /// Parses a certificate from JSON, strictly: the schema version must be
    /// [`SCHEMA_VERSION`], unknown fields at any depth are refused, and so is a missing one
    /// (a field whose value is "none" is written as `null`, never left out), so that what
    /// was parsed is exactly what the text says.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_value(parse_json(text, "certificate")?)
    }

    /// [`Certificate::from_json`] on already parsed JSON.
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        from_value_versioned(
            value,
            SCHEMA_VERSION,
            "certificate",
            "certify the model again with this version",
        )
    }
}

/// JSON text as a value; `what` names the document in the error.
pub fn parse_json(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| Error::Certify(format!("invalid {what} JSON: {e}")))
}

/// [`from_value_exact`] after checking the document's `schema_version` is `version` (an
/// error naming `what` and saying what to do, `again`, otherwise).
pub fn from_value_versioned<T: Serialize + serde::de::DeserializeOwned>(
    value: serde_json::Value,
    version: u32,
    what: &str,
    again: &str,
) -> Result<T> {
    match value.get("schema_version") {
        Some(v) if v.as_u64() == Some(u64::from(version)) => from_value_exact(value, what),
        found => Err(Error::Certify(format!(
            "{what} schema version {} is not supported: this margincert reads version \
             {version}; {again}",
            found.map_or_else(|| "(none)".to_string(), |v| v.to_string())
        ))),
    }
}

/// Parses `value` as a `T` and checks that what was parsed, written back and read again, is
/// the text: no field missing, none ignored (serde skips unknown keys of some enum
/// variants), no number that reads as another (an f32 given to more digits than it holds).
/// `what` names the document in errors.
pub fn from_value_exact<T: Serialize + serde::de::DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
) -> Result<T> {
    let bad = |e: String| Error::Certify(format!("invalid {what} JSON: {e}"));
    let parsed: T = serde_json::from_value(value.clone()).map_err(|e| bad(e.to_string()))?;
    let text = serde_json::to_string(&parsed).map_err(|e| bad(e.to_string()))?;
    let canonical: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut diffs = Vec::new();
    text_differences("", &canonical, &value, &mut diffs);
    match diffs.first() {
        None => Ok(parsed),
        Some(first) => Err(bad(format!(
            "{first}{}",
            if diffs.len() > 1 {
                format!(" (and {} more)", diffs.len() - 1)
            } else {
                String::new()
            }
        ))),
    }
}

/// Appends where `given` (the text as read) differs from `canonical` (the certificate it
/// parsed to, written back): missing keys, unknown keys, other values.
fn text_differences(
    path: &str,
    canonical: &serde_json::Value,
    given: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (canonical, given) {
        (Value::Object(c), Value::Object(g)) => {
            for (k, cv) in c {
                let p = format!("{path}/{k}");
                match g.get(k) {
                    Some(gv) => text_differences(&p, cv, gv, out),
                    None => out.push(format!("field {p} is missing (write null for none)")),
                }
            }
            for k in g.keys().filter(|k| !c.contains_key(*k)) {
                out.push(format!("unknown field {path}/{k}"));
            }
        }
        (Value::Array(c), Value::Array(g)) if c.len() == g.len() => {
            for (i, (cv, gv)) in c.iter().zip(g).enumerate() {
                text_differences(&format!("{path}/{i}"), cv, gv, out);
            }
        }
        _ if canonical == given => {}
        _ => out.push(format!(
            "field {path}: the text says {given}, which reads as {canonical}"
        )),
    }
}
