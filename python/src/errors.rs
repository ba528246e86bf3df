//! The Python exception of margincert: every [`margincert::Error`] becomes a
//! `margincert.MargincertError` (a `ValueError`: the errors are about the inputs) carrying the
//! message the CLI prints after `error: `.

use pyo3::PyErr;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;

create_exception!(
    margincert,
    MargincertError,
    PyValueError,
    "An error of margincert (bad model, data, options or certificate), with the CLI's message."
);

/// The Python exception of a library error: the same text as the CLI's `error: ...` line.
pub fn to_py(e: margincert::Error) -> PyErr {
    MargincertError::new_err(e.to_string())
}

/// A `MargincertError` with `msg` (for checks done in the binding itself).
pub fn invalid(msg: impl Into<String>) -> PyErr {
    MargincertError::new_err(msg.into())
}
