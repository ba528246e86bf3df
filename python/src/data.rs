//! Python arrays → a [`Dataset`] of exact pixels `p / 255`.
//!
//! Images are uint8 arrays of the raw pixels `p`, or float arrays whose every value is
//! exactly `p / 255` as float32 computes it (what `torchvision.transforms.ToTensor` gives):
//! anything else (normalized or augmented pixels) is refused, so that a certificate stays a
//! claim about the exact inputs `p / 255`.

use numpy::prelude::*;
use numpy::{PyArrayDyn, PyUntypedArray};
use pyo3::prelude::*;

use margincert::data::Dataset;
use margincert::model::{ModelSpec, Shape};

use crate::errors::{invalid, to_py};

/// `numpy.asarray(obj)` as an untyped array.
fn asarray<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyUntypedArray>> {
    let np = obj.py().import("numpy")?;
    let arr = np.call_method1("asarray", (obj,)).map_err(|e| {
        invalid(format!(
            "{what}: not convertible to a numpy array ({e}); pass a numpy array (for a torch \
             tensor: t.detach().cpu().numpy())"
        ))
    })?;
    Ok(arr.cast_into::<PyUntypedArray>()?)
}

/// The dtype of `arr` as numpy names it (`uint8`, `float32`, ...).
fn dtype_name(arr: &Bound<'_, PyUntypedArray>) -> String {
    arr.dtype().to_string()
}

/// The number of examples of `images` after checking that each example has the model's input
/// shape `shape`: `(N, C, H, W)`, `(N, H, W)` when `C = 1`, or flat `(N, C·H·W)`.
fn examples(dims: &[usize], shape: Shape) -> PyResult<usize> {
    let per = dims.get(1..).unwrap_or(&[]);
    let fits = per == [shape.c, shape.h, shape.w]
        || (shape.c == 1 && per == [shape.h, shape.w])
        || per == [shape.len()];
    if dims.is_empty() || !fits {
        return Err(to_py(margincert::Error::Shape(format!(
            "images have shape {dims:?}; the model's input is {shape} per example: pass an \
             array of shape (N, {}, {}, {}){}, or flat (N, {})",
            shape.c,
            shape.h,
            shape.w,
            if shape.c == 1 {
                format!(", (N, {}, {})", shape.h, shape.w)
            } else {
                String::new()
            },
            shape.len()
        ))));
    }
    Ok(dims[0])
}

/// `p` for a float pixel that is exactly `p / 255` in float32; `None` otherwise.
pub fn pixel_of(v: f64) -> Option<u8> {
    if !(0.0..=1.0).contains(&v) {
        return None;
    }
    let p = (v * 255.0).round() as u8;
    // f32 division is correctly rounded: `p as f32 / 255.0` is float32's `p / 255`.
    let f = f32::from(p) / 255.0;
    (f64::from(f) == v || f64::from(p) / 255.0 == v).then_some(p)
}

/// The raw pixels `p` of `images` (see the module doc), example-major in C order.
fn pixels(arr: &Bound<'_, PyUntypedArray>) -> PyResult<Vec<u8>> {
    if let Ok(a) = arr.cast::<PyArrayDyn<u8>>() {
        return Ok(a.readonly().as_array().iter().copied().collect());
    }
    let refuse = |i: usize, v: f64| {
        let near = (v * 255.0).round().clamp(0.0, 255.0);
        invalid(format!(
            "float pixels must be exactly k/255 in float32 (k = 0..255, as ToTensor gives), so \
             that the certificate is about the exact inputs k/255: value {v:e} at flat index \
             {i} is not (the nearest is {near}/255 = {:e}). Pass the uint8 pixels, or undo \
             the normalization (x * std + mean) before certifying",
            f32::from(near as u8) / 255.0
        ))
    };
    let convert = |it: &mut dyn Iterator<Item = f64>| -> PyResult<Vec<u8>> {
        it.enumerate()
            .map(|(i, v)| pixel_of(v).ok_or_else(|| refuse(i, v)))
            .collect()
    };
    if let Ok(a) = arr.cast::<PyArrayDyn<f32>>() {
        let r = a.readonly();
        return convert(&mut r.as_array().iter().map(|&v| f64::from(v)));
    }
    if let Ok(a) = arr.cast::<PyArrayDyn<f64>>() {
        let r = a.readonly();
        return convert(&mut r.as_array().iter().copied());
    }
    Err(invalid(format!(
        "images must be uint8 pixels p, or float32/float64 values exactly p/255; got dtype {}",
        dtype_name(arr)
    )))
}

/// The labels as bytes, each `< classes`.
fn labels(obj: &Bound<'_, PyAny>, n: usize, classes: usize) -> PyResult<Vec<u8>> {
    let arr = asarray(obj, "labels")?;
    let kind: String = arr.dtype().getattr("kind")?.extract()?;
    if kind != "i" && kind != "u" {
        return Err(invalid(format!(
            "labels must be integers (class indices; for a one-output model 1 = positive, 0 = \
             negative); got dtype {}",
            dtype_name(&arr)
        )));
    }
    if arr.shape() != [n] {
        return Err(to_py(margincert::Error::Shape(format!(
            "labels have shape {:?}, the images hold {n} examples: pass one label per image, \
             shape ({n},)",
            arr.shape()
        ))));
    }
    let arr = arr.call_method1("astype", ("int64",))?;
    let a = arr.cast::<PyArrayDyn<i64>>()?;
    let mut out = Vec::with_capacity(n);
    for (i, &l) in a.readonly().as_array().iter().enumerate() {
        if l < 0 || l as u64 >= classes as u64 {
            return Err(invalid(format!(
                "label {l} at index {i} is out of range for {classes} classes (labels are 0..{})",
                classes - 1
            )));
        }
        out.push(l as u8);
    }
    Ok(out)
}

/// The number of classes of a model with `outputs` outputs when not given: one class per
/// output, or 2 (labels 1 / 0) for a one-output model.
fn default_classes(outputs: usize) -> usize {
    if outputs == 1 { 2 } else { outputs }
}

/// Builds the dataset `name` of `images` and `labels` for a model whose input is `shape`.
pub fn dataset(
    images: &Bound<'_, PyAny>,
    label_obj: &Bound<'_, PyAny>,
    shape: Shape,
    classes: usize,
    name: &str,
) -> PyResult<Dataset> {
    if !(1..=256).contains(&classes) {
        return Err(invalid(format!(
            "classes must be between 1 and 256 (labels are stored as bytes), got {classes}"
        )));
    }
    let arr = asarray(images, "images")?;
    let n = examples(arr.shape(), shape)?;
    let px = pixels(&arr)?;
    let lb = labels(label_obj, n, classes)?;
    Dataset::new(name, shape, px, lb, classes).map_err(to_py)
}

/// [`dataset`] for the input of `spec`, with `classes` defaulting to the model's
/// ([`default_classes`]).
pub fn model_dataset(
    spec: &ModelSpec,
    images: &Bound<'_, PyAny>,
    labels: &Bound<'_, PyAny>,
    classes: Option<usize>,
    name: &str,
) -> PyResult<Dataset> {
    let classes = match classes {
        Some(c) => c,
        None => default_classes(spec.outputs().map_err(to_py)?),
    };
    dataset(images, labels, spec.input, classes, name)
}

/// `(images, labels)` from the two arguments, or from a `margincert.Data` (anything with
/// `images` and `labels` attributes) given as `images` with `labels` left out.
pub fn unpack<'py>(
    images: &Bound<'py, PyAny>,
    labels: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    match labels {
        Some(l) => Ok((images.clone(), l.clone())),
        None if images.hasattr("images")? && images.hasattr("labels")? => {
            Ok((images.getattr("images")?, images.getattr("labels")?))
        }
        None => Err(invalid(
            "labels are missing: pass images and labels (or a margincert.Data)",
        )),
    }
}
