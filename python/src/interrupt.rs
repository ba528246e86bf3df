//! Long computations that Ctrl-C can interrupt.
//!
//! The library has no cancellation points, so the work runs on its own thread while the
//! calling thread, without the GIL, waits for it in short slices and checks Python's signal
//! handlers between them. A `KeyboardInterrupt` (or any exception a signal handler raises)
//! returns control to Python at once; the worker thread then finishes in the background and
//! its result is dropped (it touches no Python object).

use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use pyo3::prelude::*;

use crate::errors::{invalid, to_py};

/// How often the waiting thread checks for signals.
const POLL: Duration = Duration::from_millis(20);

/// Runs `work` on a new thread and waits for it, raising the exception of a Python signal
/// handler (`KeyboardInterrupt` for Ctrl-C) as soon as one runs, and a `MargincertError`
/// for a library error.
pub fn run<T: Send + 'static>(
    py: Python<'_>,
    work: impl FnOnce() -> margincert::Result<T> + Send + 'static,
) -> PyResult<T> {
    let (tx, rx) = channel();
    std::thread::Builder::new()
        .name("margincert-work".into())
        .spawn(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            // The receiver is gone when the caller was interrupted: nothing to report.
            let _ = tx.send(out);
        })
        .map_err(|e| invalid(format!("could not start a worker thread: {e}")))?;
    let mut rx = rx;
    loop {
        // The receiver moves into the GIL-free closure and back (it is Send, not Sync).
        let (got, back) = py.detach(move || (rx.recv_timeout(POLL), rx));
        rx = back;
        match got {
            Ok(Ok(result)) => return result.map_err(to_py),
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "internal error in margincert (please report it): {what}"
                )));
            }
            Err(RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "internal error in margincert: the worker thread ended without a result",
                ));
            }
        }
    }
}
