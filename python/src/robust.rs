//! `margincert.robust` and `margincert.RobustReport`: certified and attack robustness radii
//! per example, computed by the library call the CLI's `robust` makes (`robust::run`).

use std::path::PathBuf;

use numpy::{PyArray1, PyArray2};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};

use margincert::certify::verify::check_hash;
use margincert::report::Summary;
use margincert::robust::{self as mr, AttackOptions, Norm, RobustOptions, RobustReport as Report};

use crate::cert::VerifyReport;
use crate::data::{dataset, model_dataset, unpack};
use crate::errors::{invalid, to_py};
use crate::interrupt;
use crate::model::{Model, json_value};

/// Per-example certified and attack robustness radii (the CLI's `robust.json`).
///
/// Invariant: `rep` is a report as the library produced or strictly parsed it.
#[pyclass(name = "RobustReport", module = "margincert", frozen)]
pub struct RobustReport {
    /// The report.
    pub rep: Report,
}

/// Certified robustness radii of every example (see the stubs for the arguments).
#[pyfunction]
#[pyo3(signature = (model, images, labels, *, norm="inf", eps_max=None,
    steps=mr::DEFAULT_STEPS, restarts=3, method="crown",
    max_unstable=mr::method::DEFAULT_MAX_UNSTABLE, classes=None, name="arrays"))]
#[allow(clippy::too_many_arguments)]
pub fn robust(
    py: Python<'_>,
    model: &Model,
    images: &Bound<'_, PyAny>,
    labels: &Bound<'_, PyAny>,
    norm: &str,
    eps_max: Option<f64>,
    steps: usize,
    restarts: usize,
    method: &str,
    max_unstable: usize,
    classes: Option<usize>,
    name: &str,
) -> PyResult<RobustReport> {
    let norm: Norm = norm.parse().map_err(to_py)?;
    let method: mr::Method = method.parse().map_err(to_py)?;
    if steps == 0 {
        return Err(invalid(format!(
            "steps=0: the bisection needs at least 1 step ({} by default)",
            mr::DEFAULT_STEPS
        )));
    }
    let opts = RobustOptions {
        norm,
        eps_max: eps_max.unwrap_or(norm.default_eps_max()),
        steps,
        attack: AttackOptions {
            restarts,
            ..Default::default()
        },
    };
    let data = model_dataset(&model.ckpt.spec, images, labels, classes, name)?;
    let ckpt = model.ckpt.clone();
    let mut rep = interrupt::run(py, move || {
        mr::RobustSetup::new(&ckpt.spec, &ckpt.params, &data)?.run_capped(
            &opts,
            method,
            max_unstable,
        )
    })?;
    rep.checkpoint_sha256 = Some(model.sha256.clone());
    Ok(RobustReport { rep })
}

impl RobustReport {
    fn column(&self, f: impl Fn(&mr::ExampleRadii) -> f64) -> Vec<f64> {
        self.rep.examples.iter().map(f).collect()
    }
}

#[pymethods]
impl RobustReport {
    /// Parses a report (`robust.json` text), strictly.
    #[classmethod]
    fn from_json(_cls: &Bound<'_, PyType>, text: &str) -> PyResult<Self> {
        Ok(Self {
            rep: Report::from_json(text).map_err(to_py)?,
        })
    }

    /// The report as JSON text (the CLI's `robust.json`).
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string_pretty(&self.rep).map_err(|e| invalid(e.to_string()))
    }

    /// The report as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_value(py, &self.to_json()?)
    }

    /// Writes the JSON (atomically), e.g. for `margincert verify`.
    fn save(&self, path: PathBuf) -> PyResult<()> {
        margincert::io::write_atomic(&path, self.to_json()?.as_bytes()).map_err(to_py)
    }

    /// The table the CLI prints.
    fn summary(&self) -> String {
        self.rep.summary()
    }

    /// Recomputes every radius and checks each claim, as `margincert verify` does; `images`
    /// may be a `Data` (then no `labels`).
    #[pyo3(signature = (model, images, labels=None))]
    fn verify(
        &self,
        py: Python<'_>,
        model: &Model,
        images: &Bound<'_, PyAny>,
        labels: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<VerifyReport> {
        let (images, labels) = unpack(images, labels)?;
        let (images, labels) = (&images, &labels);
        check_hash(
            self.rep.checkpoint_sha256.as_deref(),
            &model.sha256,
            "model",
        )
        .map_err(to_py)?;
        let d = &self.rep.dataset;
        let data = dataset(images, labels, model.ckpt.spec.input, d.classes, &d.name)?;
        let (ckpt, rep) = (model.ckpt.clone(), self.rep.clone());
        let report = interrupt::run(py, move || {
            mr::verify::verify(&rep, &ckpt.spec, &ckpt.params, &data)
        })?;
        Ok(VerifyReport { report })
    }

    /// The norm: `"2"` or `"inf"`.
    #[getter]
    fn norm(&self) -> &'static str {
        match self.rep.norm {
            Norm::L2 => "2",
            Norm::Inf => "inf",
        }
    }

    /// Largest radius searched.
    #[getter]
    fn eps_max(&self) -> f64 {
        self.rep.eps_max
    }

    /// Certified lower bounds of the radii (L2: Lipschitz; L-inf: IBP), one per example.
    #[getter]
    fn certified<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_vec(py, self.column(|e| e.certified))
    }

    /// Upper bounds from verified adversarial points (`inf` where the attack found none).
    #[getter]
    fn attack<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_vec(py, self.column(|e| e.attack))
    }

    /// L-inf only: certified radii from CROWN (None when not computed).
    #[getter]
    fn crown<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f64>>> {
        let v: Option<Vec<f64>> = self.rep.examples.iter().map(|e| e.crown).collect();
        v.map(|v| PyArray1::from_vec(py, v))
    }

    /// L2 only: certified radii from the minimum margin alone (0 for L-inf).
    #[getter]
    fn margin_only<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_vec(py, self.column(|e| e.margin_only))
    }

    /// Certified margin enclosures of the clean examples, shape `(N, 2)`.
    #[getter]
    fn margins<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let rows: Vec<Vec<f64>> = self
            .rep
            .examples
            .iter()
            .map(|e| e.margin.to_vec())
            .collect();
        if rows.is_empty() {
            return Ok(PyArray2::zeros(py, [0, 2], false));
        }
        PyArray2::from_vec2(py, &rows).map_err(|e| invalid(e.to_string()))
    }

    /// Certified upper bound on the network's L2 Lipschitz constant.
    #[getter]
    fn lipschitz(&self) -> f64 {
        self.rep.lipschitz
    }

    /// Examples whose certified radius exceeds the attack radius (0 unless a bug).
    #[getter]
    fn violations(&self) -> usize {
        self.rep.violations
    }

    /// Robust accuracy curves: `{"eps", "certified", "empirical"}` arrays.
    #[getter]
    fn curve<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = &self.rep.curve;
        let d = PyDict::new(py);
        d.set_item("eps", PyArray1::from_slice(py, &c.eps))?;
        d.set_item("certified", PyArray1::from_slice(py, &c.certified))?;
        d.set_item("empirical", PyArray1::from_slice(py, &c.empirical))?;
        Ok(d)
    }

    fn __len__(&self) -> usize {
        self.rep.examples.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "RobustReport(norm {}, {} examples, median certified {:?}, median attack {:?}, {} \
             violations)",
            self.norm(),
            self.rep.examples.len(),
            mr::median(self.rep.examples.iter().map(|e| e.certified)),
            mr::median(self.rep.examples.iter().map(|e| e.attack)),
            self.rep.violations
        )
    }
}
