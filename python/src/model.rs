//! `margincert.Model`: a network margincert certifies (spec + f32 parameters), read from a
//! native checkpoint, a PyTorch `state_dict` in safetensors, an ONNX graph, or a live
//! `torch.nn.Sequential`.

use std::path::PathBuf;
use std::sync::Arc;

use numpy::prelude::*;
use numpy::{PyArray1, PyArrayDyn, PyUntypedArray};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use margincert::checkpoint::Checkpoint;
use margincert::import::{Format, ImportOptions, TensorMap};
use margincert::io::sha256_hex;
use margincert::model::{LayerParams, ModelSpec, Params};

use crate::errors::{invalid, to_py};

/// A network to certify: spec and parameters, checked against each other once.
///
/// Invariant: `ckpt.params` matches `ckpt.spec` (every import checks it); `sha256` is the
/// SHA-256 of the model file it was read from, or of the checkpoint bytes [`Model::save`]
/// writes for a model built in memory, so a certificate records what it is about.
#[pyclass(name = "Model", module = "margincert", frozen)]
pub struct Model {
    /// The network (with its training record for a native checkpoint).
    pub ckpt: Arc<Checkpoint>,
    /// SHA-256 (hex) the certificates of this model record.
    pub sha256: String,
    /// What the import converted or renamed.
    pub notes: Vec<String>,
    /// Where it came from (a path, or `torch`).
    pub source: String,
}

/// `json.dumps(obj)`.
fn json_text(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    obj.py()
        .import("json")?
        .call_method1("dumps", (obj,))?
        .extract()
}

/// `json.loads(text)`.
pub fn json_value<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (text,))
}

/// A spec given as a dict (the JSON form) or the path of a JSON/TOML spec file.
fn spec_arg(obj: &Bound<'_, PyAny>) -> PyResult<ModelSpec> {
    if obj.is_instance_of::<PyDict>() {
        ModelSpec::parse(&json_text(obj)?).map_err(to_py)
    } else {
        let path: PathBuf = obj.extract().map_err(|_| {
            invalid(
                "spec must be a dict (the spec's JSON form) or the path of a JSON/TOML spec file",
            )
        })?;
        ModelSpec::from_file(&path).map_err(to_py)
    }
}

/// A tensor map given as a dict `{layer index: tensor stem}` or the path of a map file.
fn map_arg(obj: &Bound<'_, PyAny>) -> PyResult<TensorMap> {
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut m = TensorMap::default();
        for (k, v) in d.iter() {
            m.layers.insert(k.extract()?, v.extract()?);
        }
        Ok(m)
    } else {
        let path: PathBuf = obj.extract().map_err(|_| {
            invalid("map must be a dict {layer index: tensor name} or the path of a map file")
        })?;
        TensorMap::from_file(&path).map_err(to_py)
    }
}

/// The values of a weight array as f32, exactly: float32 as it is, float16 widened, float64
/// only when every value is a float32.
fn f32_values(arr: &Bound<'_, PyAny>, name: &str, shape: &[usize]) -> PyResult<Vec<f32>> {
    let np = arr.py().import("numpy")?;
    let arr = np
        .call_method1("asarray", (arr,))?
        .cast_into::<PyUntypedArray>()?;
    if arr.shape() != shape {
        return Err(to_py(margincert::Error::Shape(format!(
            "tensor '{name}' has shape {:?}, the spec wants {shape:?}",
            arr.shape()
        ))));
    }
    let values: Vec<f32> = if let Ok(a) = arr.cast::<PyArrayDyn<f32>>() {
        a.readonly().as_array().iter().copied().collect()
    } else if let Ok(a) = arr.cast::<PyArrayDyn<f64>>() {
        let v: Vec<f64> = a.readonly().as_array().iter().copied().collect();
        margincert::import::f64_to_f32(&v, name, false)
            .map_err(to_py)?
            .0
    } else if arr.dtype().to_string() == "float16" {
        let wide = arr.call_method1("astype", ("float32",))?;
        let a = wide.cast::<PyArrayDyn<f32>>()?;
        a.readonly().as_array().iter().copied().collect()
    } else {
        return Err(invalid(format!(
            "tensor '{name}' has dtype {}; weights must be float32, float16 or float64 (for \
             bfloat16 torch tensors, .float() widens them exactly)",
            arr.dtype()
        )));
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(to_py(margincert::Error::NonFinite(format!(
            "tensor '{name}' value {i} is {}",
            values[i]
        ))));
    }
    Ok(values)
}

/// Parameters for `spec` from a mapping of `nn.Sequential` tensor names (`"{i}.weight"`,
/// `"{i}.bias"`) to arrays; every tensor must be used.
fn params_from_dict(spec: &ModelSpec, tensors: &Bound<'_, PyDict>) -> PyResult<Params> {
    let plans = spec.plan().map_err(to_py)?;
    let mut used = std::collections::HashSet::new();
    let mut layers = Vec::new();
    let names = || -> String {
        tensors
            .keys()
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for p in plans.iter().filter(|p| p.layer.has_weights()) {
        let wshape = p.weight_shape().expect("a weight layer has a weight shape");
        let wname = format!("{}.weight", p.index);
        let w = tensors.get_item(&wname)?.ok_or_else(|| {
            to_py(margincert::Error::Shape(format!(
                "layer {} ({}): missing tensor '{wname}' (shape {wshape:?}); given: {}",
                p.index,
                p.layer.describe(),
                names()
            )))
        })?;
        let weight = f32_values(&w, &wname, &wshape)?;
        used.insert(wname);
        let bname = format!("{}.bias", p.index);
        let given = tensors.get_item(&bname)?;
        let bias = match (p.bias_len(), given) {
            (Some(n), Some(b)) => {
                let v = f32_values(&b, &bname, &[n])?;
                used.insert(bname);
                Some(v)
            }
            (Some(n), None) => {
                return Err(to_py(margincert::Error::Shape(format!(
                    "layer {} ({}): missing tensor '{bname}' (shape [{n}])",
                    p.index,
                    p.layer.describe()
                ))));
            }
            (None, Some(_)) => {
                return Err(to_py(margincert::Error::Shape(format!(
                    "layer {} ({}): a bias '{bname}' the spec does not declare (set bias = true \
                     on that layer, or the network is not the spec's)",
                    p.index,
                    p.layer.describe()
                ))));
            }
            (None, None) => None,
        };
        layers.push(LayerParams {
            index: p.index,
            weight_shape: wshape,
            weight,
            bias,
        });
    }
    let extra: Vec<String> = tensors
        .keys()
        .iter()
        .map(|k| k.to_string())
        .filter(|k| !used.contains(k))
        .collect();
    if !extra.is_empty() {
        return Err(to_py(margincert::Error::Shape(format!(
            "tensors not used by the model spec: {}",
            extra.join(", ")
        ))));
    }
    let params = Params { layers };
    params.check(spec).map_err(to_py)?;
    Ok(params)
}

/// The parsed loss name: `ce` / `cross-entropy`, `logistic`, `exp` / `exponential`.
pub fn parse_loss(s: &str) -> PyResult<margincert::loss::LossKind> {
    use margincert::loss::LossKind;
    match s.to_ascii_lowercase().replace('_', "-").as_str() {
        "ce" | "cross-entropy" | "crossentropy" => Ok(LossKind::CrossEntropy),
        "logistic" => Ok(LossKind::Logistic),
        "exp" | "exponential" => Ok(LossKind::Exponential),
        other => Err(invalid(format!(
            "unknown loss '{other}': use \"ce\" (cross-entropy), \"logistic\" or \"exponential\""
        ))),
    }
}

/// The serde name of a loss (`cross-entropy`, `logistic`, `exponential`).
pub fn loss_name(l: margincert::loss::LossKind) -> String {
    serde_json::to_value(l)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl Model {
    /// A model built in memory: its hash is the one of the checkpoint bytes `save` writes.
    fn in_memory(ckpt: Checkpoint, notes: Vec<String>, source: &str) -> PyResult<Self> {
        let bytes = ckpt.to_bytes().map_err(to_py)?;
        Ok(Self {
            ckpt: Arc::new(ckpt),
            sha256: sha256_hex(&bytes),
            notes,
            source: source.into(),
        })
    }

    /// Reads a model file as `certify` does (same format detection and import rules).
    fn from_file(
        path: PathBuf,
        format: Option<Format>,
        spec: Option<ModelSpec>,
        opts: ImportOptions,
    ) -> PyResult<Self> {
        let bytes = margincert::import::read_model_file(&path).map_err(to_py)?;
        let sha256 = sha256_hex(&bytes);
        let format = match format {
            Some(f) => f,
            None => Format::detect(&path, &bytes).map_err(to_py)?,
        };
        let native =
            format == Format::Safetensors && spec.is_none() && opts == ImportOptions::default();
        let (ckpt, notes) = if native {
            (
                Checkpoint::from_bytes(&bytes, &path).map_err(to_py)?,
                Vec::new(),
            )
        } else {
            let imp =
                margincert::import::from_bytes(&bytes, &path, Some(format), spec.as_ref(), &opts)
                    .map_err(to_py)?;
            (imp.checkpoint, imp.notes)
        };
        Ok(Self {
            ckpt: Arc::new(ckpt),
            sha256,
            notes,
            source: path.display().to_string(),
        })
    }

    /// An error naming the layer that breaks homogeneity, unless the spec is homogeneous.
    fn require_homogeneous(spec: &ModelSpec) -> PyResult<()> {
        let h = spec.homogeneity();
        if h.degree.is_none() {
            return Err(invalid(format!(
                "the network is not homogeneous: {}. margincert's normalized margins and KKT \
                 bounds need a homogeneous network (no bias after the first weight layer); pass \
                 require_homogeneous=False to import it anyway",
                h.reasons.last().cloned().unwrap_or_default()
            )));
        }
        Ok(())
    }
}

#[pymethods]
impl Model {
    /// Reads a safetensors file: a margincert checkpoint (spec in its metadata), or a PyTorch
    /// `state_dict` with `spec` (a dict or a JSON/TOML spec file) naming its layers, the
    /// tensor names `prefix` (detected when None) and an optional `map` (dict or file) from
    /// layer index to tensor name. float16/bfloat16 are widened exactly; float64 is refused
    /// unless every value is a float32, or `round_f64=True` (loudly, see `notes`).
    #[staticmethod]
    #[pyo3(signature = (path, spec=None, *, prefix=None, map=None, round_f64=false))]
    fn from_safetensors(
        path: PathBuf,
        spec: Option<&Bound<'_, PyAny>>,
        prefix: Option<String>,
        map: Option<&Bound<'_, PyAny>>,
        round_f64: bool,
    ) -> PyResult<Self> {
        let spec = spec.map(spec_arg).transpose()?;
        let opts = ImportOptions {
            prefix,
            map: map.map(map_arg).transpose()?,
            round_f64,
        };
        Self::from_file(path, Some(Format::Safetensors), spec, opts)
    }

    /// Reads an ONNX model of a sequential network (Gemm/MatMul, Conv, Relu, LeakyRelu,
    /// MaxPool, AveragePool, Flatten/Reshape); `spec`, when given, is checked against it.
    #[staticmethod]
    #[pyo3(signature = (path, spec=None, *, round_f64=false))]
    fn from_onnx(
        path: PathBuf,
        spec: Option<&Bound<'_, PyAny>>,
        round_f64: bool,
    ) -> PyResult<Self> {
        let spec = spec.map(spec_arg).transpose()?;
        let opts = ImportOptions {
            round_f64,
            ..Default::default()
        };
        Self::from_file(path, Some(Format::Onnx), spec, opts)
    }

    /// A model from a spec (dict or file) and a mapping of `nn.Sequential` tensor names
    /// (`"0.weight"`, `"0.bias"`, `"3.weight"`, ...) to arrays in PyTorch layout.
    #[staticmethod]
    #[pyo3(signature = (spec, tensors, *, require_homogeneous=false))]
    fn from_arrays(
        spec: &Bound<'_, PyAny>,
        tensors: &Bound<'_, PyDict>,
        require_homogeneous: bool,
    ) -> PyResult<Self> {
        let spec = spec_arg(spec)?;
        if require_homogeneous {
            Self::require_homogeneous(&spec)?;
        }
        let params = params_from_dict(&spec, tensors)?;
        Self::in_memory(
            Checkpoint {
                spec,
                params,
                train: None,
            },
            Vec::new(),
            "arrays",
        )
    }

    /// A model from a bias-free `torch.nn.Sequential` (Linear, Conv2d, ReLU, LeakyReLU,
    /// MaxPool2d, AvgPool2d, Flatten; a bias is allowed in the first weight layer).
    /// `input_shape` is `(C, H, W)` (or `(D,)`); it may be left out when the first layer is
    /// a Linear. Non-homogeneous networks are refused unless `require_homogeneous=False`.
    #[staticmethod]
    #[pyo3(signature = (module, input_shape=None, *, require_homogeneous=true))]
    fn from_torch(
        module: &Bound<'_, PyAny>,
        input_shape: Option<&Bound<'_, PyAny>>,
        require_homogeneous: bool,
    ) -> PyResult<Self> {
        let py = module.py();
        let described = py
            .import("margincert._torch")?
            .call_method1("describe", (module, input_shape))?;
        let (spec_dict, tensors, notes): (Bound<'_, PyDict>, Bound<'_, PyDict>, Vec<String>) =
            described.extract()?;
        let spec = spec_arg(spec_dict.as_any())?;
        if require_homogeneous {
            Self::require_homogeneous(&spec)?;
        }
        let params = params_from_dict(&spec, &tensors)?;
        Self::in_memory(
            Checkpoint {
                spec,
                params,
                train: None,
            },
            notes,
            "torch",
        )
    }

    /// The structural homogeneity degree: `{"degree": L or None, "reasons": [one line per
    /// layer], "offending_layer": index or None}`.
    fn homogeneity<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.ckpt.spec.homogeneity();
        json_value(
            py,
            &serde_json::to_string(&h).map_err(|e| invalid(e.to_string()))?,
        )
    }

    /// The model spec as a dict (its JSON form).
    #[getter]
    fn spec<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_value(py, &self.ckpt.spec.to_json())
    }

    /// SHA-256 (hex) of the model file (or, for a model built in memory, of the checkpoint
    /// `save` writes): certificates record it and `verify` checks it.
    #[getter]
    fn sha256(&self) -> &str {
        &self.sha256
    }

    /// What the import converted, renamed or rounded.
    #[getter]
    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    /// Number of outputs (logits) of the network.
    #[getter]
    fn outputs(&self) -> PyResult<usize> {
        self.ckpt.spec.outputs().map_err(to_py)
    }

    /// Input shape of one example, `(C, H, W)`.
    #[getter]
    fn input_shape(&self) -> (usize, usize, usize) {
        let s = self.ckpt.spec.input;
        (s.c, s.h, s.w)
    }

    /// The loss the checkpoint was trained with (`None` when not recorded): the default loss
    /// of `certify`, as for the CLI.
    #[getter]
    fn trained_loss(&self) -> Option<String> {
        self.ckpt.train.as_ref().map(|t| loss_name(t.config.loss))
    }

    /// Number of scalar parameters.
    #[getter]
    fn num_params(&self) -> usize {
        self.ckpt
            .params
            .layers
            .iter()
            .map(|l| l.weight.len() + l.bias.as_ref().map_or(0, Vec::len))
            .sum()
    }

    /// The parameters as `{"0.weight": array, ...}` (copies, PyTorch layout and names).
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for l in &self.ckpt.params.layers {
            let w = PyArray1::from_slice(py, &l.weight).reshape(l.weight_shape.clone())?;
            d.set_item(format!("{}.weight", l.index), w)?;
            if let Some(b) = &l.bias {
                d.set_item(format!("{}.bias", l.index), PyArray1::from_slice(py, b))?;
            }
        }
        Ok(d)
    }

    /// Writes the model as a margincert checkpoint (safetensors), which the CLI reads. For a
    /// model built in memory the file's SHA-256 is `sha256`.
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.ckpt.save(&path).map_err(to_py)
    }

    /// One line per layer, as `margincert inspect` describes them.
    fn layers(&self) -> Vec<String> {
        self.ckpt.spec.layers.iter().map(|l| l.describe()).collect()
    }

    fn __repr__(&self) -> String {
        let h = self.ckpt.spec.homogeneity();
        format!(
            "Model({} layers [{}], input {}, {} parameters, degree {}, from {})",
            self.ckpt.spec.layers.len(),
            self.layers().join(", "),
            self.ckpt.spec.input,
            self.num_params(),
            h.degree.map_or("none".into(), |d| d.to_string()),
            self.source
        )
    }
}
