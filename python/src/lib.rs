//! `margincert._margincert`: the Python face of the margincert crate (pyo3). Every number
//! comes from the crate; this layer converts arrays, maps errors to `MargincertError`, and
//! runs long calls so that Ctrl-C interrupts them. The Python package `margincert` re-exports
//! it and adds `Model.from_torch`'s module walk and the `watch` training-loop helper.
#![deny(unsafe_op_in_unsafe_fn)]

mod cert;
mod data;
mod errors;
mod interrupt;
mod model;
mod robust;

use numpy::PyArray1;
use numpy::prelude::*;
use pyo3::prelude::*;

use margincert::data::DataSource;

use crate::errors::to_py;

/// What `load_data` returns: images, labels, name, classes.
type Arrays<'py> = (Bound<'py, PyAny>, Bound<'py, PyArray1<u8>>, String, usize);

/// A dataset margincert knows, as arrays: `(images uint8 (N, C, H, W), labels uint8 (N,),
/// name, classes)`, with the name `margincert certify` records for the same selection.
#[pyfunction]
#[pyo3(signature = (source="embedded", split="train", *, binary=None, subset=None))]
fn load_data<'py>(
    py: Python<'py>,
    source: &str,
    split: &str,
    binary: Option<(u8, u8)>,
    subset: Option<usize>,
) -> PyResult<Arrays<'py>> {
    let mut s = source
        .parse::<DataSource>()
        .map_err(to_py)?
        .load()
        .map_err(to_py)?;
    if let Some((p, n)) = binary {
        s = s.binary(p, n).map_err(to_py)?;
    }
    let d = match split {
        "train" => s.train,
        "test" => s.test,
        other => {
            return Err(errors::invalid(format!(
                "unknown split '{other}': use \"train\" or \"test\""
            )));
        }
    };
    let d = match subset {
        Some(n) => d.take(n),
        None => d,
    };
    let shape = [d.len(), d.shape.c, d.shape.h, d.shape.w];
    let images = PyArray1::from_vec(py, d.pixels).reshape(shape)?.into_any();
    Ok((images, PyArray1::from_vec(py, d.labels), d.name, d.classes))
}

#[pymodule]
fn _margincert(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "MargincertError",
        m.py().get_type::<errors::MargincertError>(),
    )?;
    m.add_class::<model::Model>()?;
    m.add_class::<cert::Certificate>()?;
    m.add_class::<cert::VerifyReport>()?;
    m.add_class::<robust::RobustReport>()?;
    m.add_function(wrap_pyfunction!(cert::certify, m)?)?;
    m.add_function(wrap_pyfunction!(cert::verify_certificate, m)?)?;
    m.add_function(wrap_pyfunction!(robust::robust, m)?)?;
    m.add_function(wrap_pyfunction!(load_data, m)?)?;
    Ok(())
}
