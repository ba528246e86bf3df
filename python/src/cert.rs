//! `margincert.certify` and `margincert.Certificate`: the CLI's certificate, computed by the
//! same library call (`certify::certify_run`), with its numbers as Python values.

use std::path::PathBuf;

use numpy::PyArray2;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};

use margincert::certify::certificate::{Certificate as Cert, CertifyOptions, certify_run};
use margincert::certify::kkt::KktOptions;
use margincert::certify::verify::{Check, Status, VerifyReport as Report, check_binding, verify};
use margincert::certify::{Enclosure, ForwardMode};
use margincert::report::Summary;

use crate::data::{dataset, model_dataset, unpack};
use crate::errors::{invalid, to_py};
use crate::interrupt;
use crate::model::{Model, json_value, loss_name, parse_loss};

/// `(lo, hi)` of an enclosure.
fn pair(e: &Enclosure) -> (f64, f64) {
    (e.lo, e.hi)
}

/// The forward mode named `f64`, `dd` or `auto`.
pub fn parse_mode(s: &str) -> PyResult<ForwardMode> {
    match s {
        "f64" => Ok(ForwardMode::F64),
        "dd" => Ok(ForwardMode::DoubleDouble),
        "auto" => Ok(ForwardMode::Auto),
        other => Err(invalid(format!(
            "unknown precision_mode '{other}': use \"f64\", \"dd\" or \"auto\""
        ))),
    }
}

/// Every certified quantity about a model on a dataset (the CLI's certificate).
///
/// Invariant: `cert` is a certificate as the library produced or strictly parsed it.
#[pyclass(name = "Certificate", module = "margincert", frozen)]
pub struct Certificate {
    /// The certificate.
    pub cert: Cert,
}

/// Certifies `model` on `images`/`labels` (see the stubs for every argument).
#[pyfunction]
#[pyo3(signature = (model, images, labels, *, loss=None, kkt=true, kkt_active=None,
    precision=None, witness_examples=None, precision_mode="auto", per_example=false,
    classes=None, name="arrays"))]
#[allow(clippy::too_many_arguments)]
pub fn certify(
    py: Python<'_>,
    model: &Model,
    images: &Bound<'_, PyAny>,
    labels: &Bound<'_, PyAny>,
    loss: Option<&str>,
    kkt: bool,
    kkt_active: Option<usize>,
    precision: Option<u32>,
    witness_examples: Option<usize>,
    precision_mode: &str,
    per_example: bool,
    classes: Option<usize>,
    name: &str,
) -> PyResult<Certificate> {
    let d = CertifyOptions::default();
    let kkt = if kkt {
        let k = d.kkt.clone().unwrap_or_default();
        let max_active = kkt_active.unwrap_or(k.max_active);
        if max_active == 0 {
            return Err(invalid(
                "kkt_active=0 leaves the KKT certificate no constraint: give at least 1, or \
                 kkt=False to skip it",
            ));
        }
        Some(KktOptions { max_active, ..k })
    } else {
        None
    };
    let trained = model.ckpt.train.as_ref().map(|t| t.config.loss);
    let opts = CertifyOptions {
        loss: match loss {
            Some(l) => parse_loss(l)?,
            None => trained.unwrap_or(d.loss),
        },
        witness_examples: witness_examples.unwrap_or(d.witness_examples),
        precision: precision.unwrap_or(d.precision),
        kkt,
        forward: parse_mode(precision_mode)?,
    };
    let data = model_dataset(&model.ckpt.spec, images, labels, classes, name)?;
    let ckpt = model.ckpt.clone();
    let mut cert = interrupt::run(py, move || {
        let run = certify_run(&ckpt.spec, &ckpt.params, &data, &opts)?;
        let mut cert = run.certificate;
        if per_example {
            cert.per_example = Some(run.margins);
        }
        Ok(cert)
    })?;
    cert.checkpoint_sha256 = Some(model.sha256.clone());
    Ok(Certificate { cert })
}

/// Recomputes every claim of `cert` about `model` on `images`/`labels` (the dataset named and
/// counted as the certificate records it), as `margincert verify` does.
#[pyfunction]
pub fn verify_certificate(
    py: Python<'_>,
    cert: &Certificate,
    model: &Model,
    images: &Bound<'_, PyAny>,
    labels: &Bound<'_, PyAny>,
) -> PyResult<VerifyReport> {
    let c = &cert.cert;
    check_binding(c, &model.sha256, "model").map_err(to_py)?;
    let data = dataset(
        images,
        labels,
        model.ckpt.spec.input,
        c.dataset.classes,
        &c.dataset.name,
    )?;
    let (ckpt, c) = (model.ckpt.clone(), c.clone());
    let report = interrupt::run(py, move || verify(&c, &ckpt.spec, &ckpt.params, &data))?;
    Ok(VerifyReport { report })
}

#[pymethods]
impl Certificate {
    /// Parses a certificate (JSON text), strictly, as `margincert verify` reads it.
    #[classmethod]
    fn from_json(_cls: &Bound<'_, PyType>, text: &str) -> PyResult<Self> {
        Ok(Self {
            cert: Cert::from_json(text).map_err(to_py)?,
        })
    }

    /// Reads a certificate file (`.cert.json`).
    #[classmethod]
    fn load(_cls: &Bound<'_, PyType>, path: PathBuf) -> PyResult<Self> {
        let text = margincert::io::read_text_limited(&path, &margincert::limits::TEXT_BYTES)
            .map_err(to_py)?;
        Ok(Self {
            cert: Cert::from_json(&text).map_err(to_py)?,
        })
    }

    /// The certificate as JSON text, exactly as the CLI writes it.
    fn to_json(&self) -> String {
        self.cert.to_json()
    }

    /// The certificate as a dict (its JSON form).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_value(py, &self.cert.to_json())
    }

    /// Writes the JSON (atomically), e.g. for `margincert verify`.
    fn save(&self, path: PathBuf) -> PyResult<()> {
        margincert::io::write_atomic(&path, self.cert.to_json().as_bytes()).map_err(to_py)
    }

    /// The summary the CLI prints: what is proven, with the numbers.
    fn summary(&self) -> String {
        self.cert.summary()
    }

    /// Recomputes every claim (see `margincert.verify`); `images` may be a `Data` (then
    /// no `labels`).
    #[pyo3(signature = (model, images, labels=None))]
    fn verify(
        slf: &Bound<'_, Self>,
        model: &Model,
        images: &Bound<'_, PyAny>,
        labels: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<VerifyReport> {
        let (x, y) = unpack(images, labels)?;
        verify_certificate(slf.py(), slf.get(), model, &x, &y)
    }

    /// Certified enclosure `(lo, hi)` of the minimum margin `q_min`.
    #[getter]
    fn q_min(&self) -> (f64, f64) {
        pair(&self.cert.margin.q_min)
    }

    /// The examples that may attain `q_min`.
    #[getter]
    fn support(&self) -> Vec<usize> {
        self.cert.margin.support.clone()
    }

    /// Number of examples whose margin is certified positive.
    #[getter]
    fn certified_positive(&self) -> usize {
        self.cert.margin.certified_positive
    }

    /// Number of examples.
    #[getter]
    fn examples(&self) -> usize {
        self.cert.margin.examples
    }

    /// Enclosure of the normalized margin `q_min / rho^L` (None when not homogeneous).
    #[getter]
    fn normalized_margin(&self) -> Option<(f64, f64)> {
        self.cert.normalized.as_ref().map(|n| pair(&n.by_rho))
    }

    /// Enclosure of `q_min / prod ||W_i||_F` (the paper's plots; None when not homogeneous).
    #[getter]
    fn layer_normalized_margin(&self) -> Option<(f64, f64)> {
        self.cert
            .normalized
            .as_ref()
            .map(|n| pair(&n.by_layer_product))
    }

    /// Enclosure of the smoothed margin of the certified loss (None when not homogeneous).
    #[getter]
    fn smoothed_margin(&self) -> Option<(f64, f64)> {
        self.cert.normalized.as_ref().map(|n| pair(&n.smoothed))
    }

    /// Enclosure of `rho = ||theta||_2`.
    #[getter]
    fn rho(&self) -> (f64, f64) {
        pair(&self.cert.norms.rho)
    }

    /// Enclosures of every `||W_i||_F`.
    #[getter]
    fn layer_norms(&self) -> Vec<(f64, f64)> {
        self.cert.norms.layers.iter().map(pair).collect()
    }

    /// The homogeneity degree (None when the network is not homogeneous).
    #[getter]
    fn degree(&self) -> Option<u32> {
        self.cert.homogeneity.degree
    }

    /// The loss certified (`cross-entropy`, `logistic`, `exponential`).
    #[getter]
    fn loss_kind(&self) -> String {
        loss_name(self.cert.loss.kind)
    }

    /// Bounds on the summed loss as `decimal.Decimal` (exact decimals, valid far below
    /// 1e-308: `float()` of them would underflow to 0).
    #[getter]
    fn loss<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let dec = py.import("decimal")?.getattr("Decimal")?;
        Ok((
            dec.call1((&self.cert.loss.lower,))?,
            dec.call1((&self.cert.loss.upper,))?,
        ))
    }

    /// Lower and upper bound on the summed loss as decimal strings (mpmath.mpf reads them).
    #[getter]
    fn loss_str(&self) -> (String, String) {
        (self.cert.loss.lower.clone(), self.cert.loss.upper.clone())
    }

    /// Enclosure `(lo, hi)` of `log10(Loss)` (finite far below f64 range).
    #[getter]
    fn loss_log10(&self) -> (f64, f64) {
        pair(&self.cert.loss.log10)
    }

    /// Whether `Loss <` the theorem's threshold is proven: `true`, `false` or `undecided`.
    #[getter]
    fn below_threshold(&self) -> String {
        serde_json::to_value(self.cert.loss.below_threshold)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The approximate-KKT certificate as a dict (None when absent: see `kkt_omitted`).
    #[getter]
    fn kkt<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.cert
            .kkt
            .as_ref()
            .map(|k| {
                json_value(
                    py,
                    &serde_json::to_string(k).map_err(|e| invalid(e.to_string()))?,
                )
            })
            .transpose()
    }

    /// Why the KKT certificate is absent.
    #[getter]
    fn kkt_omitted(&self) -> Option<String> {
        self.cert.kkt_omitted.clone()
    }

    /// Every example's certified margin enclosure as an `(N, 2)` array (with
    /// `per_example=True`; None otherwise).
    #[getter]
    fn per_example<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyArray2<f64>>>> {
        self.cert
            .per_example
            .as_ref()
            .map(|v| {
                let rows: Vec<Vec<f64>> = v.iter().map(|e| vec![e.lo, e.hi]).collect();
                PyArray2::from_vec2(py, &rows).map_err(|e| invalid(e.to_string()))
            })
            .transpose()
    }

    /// SHA-256 of the model the certificate is about.
    #[getter]
    fn checkpoint_sha256(&self) -> Option<String> {
        self.cert.checkpoint_sha256.clone()
    }

    /// The dataset: `{"name", "size", "classes", "sha256"}`.
    #[getter]
    fn dataset<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_value(
            py,
            &serde_json::to_string(&self.cert.dataset).map_err(|e| invalid(e.to_string()))?,
        )
    }

    fn __repr__(&self) -> String {
        let q = self.cert.margin.q_min;
        format!(
            "Certificate(q_min in [{:e}, {:e}], log10 loss in [{:e}, {:e}], {} of {} examples \
             certified positive, dataset {})",
            q.lo,
            q.hi,
            self.cert.loss.log10.lo,
            self.cert.loss.log10.hi,
            self.cert.margin.certified_positive,
            self.cert.margin.examples,
            self.cert.dataset.name
        )
    }
}

/// The outcome of a verification: every claim Confirmed, Refuted or Unconfirmed.
#[pyclass(name = "VerifyReport", module = "margincert", frozen)]
pub struct VerifyReport {
    /// The report.
    pub report: Report,
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Confirmed => "confirmed",
        Status::Refuted => "refuted",
        Status::Unconfirmed => "unconfirmed",
    }
}

/// One check as a dict.
fn check_dict<'py>(py: Python<'py>, c: &Check) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("claim", &c.claim)?;
    d.set_item("status", status_name(c.status))?;
    d.set_item("detail", &c.detail)?;
    Ok(d)
}

#[pymethods]
impl VerifyReport {
    /// True when every claim is confirmed.
    #[getter]
    fn ok(&self) -> bool {
        self.report.ok()
    }

    /// Every claim: `{"claim", "status", "detail"}` dicts, status `confirmed`, `refuted` or
    /// `unconfirmed`.
    #[getter]
    fn checks<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.report
            .checks
            .iter()
            .map(|c| check_dict(py, c))
            .collect()
    }

    /// The claims that are not confirmed (same dicts as `checks`).
    #[getter]
    fn failures<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.report
            .failures()
            .into_iter()
            .map(|c| check_dict(py, c))
            .collect()
    }

    /// The text `margincert verify` prints.
    fn summary(&self) -> String {
        self.report.summary()
    }

    fn __bool__(&self) -> bool {
        self.report.ok()
    }

    fn __repr__(&self) -> String {
        let f = self.report.failures().len();
        format!(
            "VerifyReport(ok={}, {} claims, {f} not confirmed)",
            if self.report.ok() { "True" } else { "False" },
            self.report.checks.len()
        )
    }
}
