//! Files of a robustness run.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::robust::RobustReport;

/// Pretty JSON of `value`.
fn json<T: serde::Serialize>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|e| Error::Invalid(format!("serializing {what}: {e}")))
}

/// Writes `robust.json` (the whole report), `robust-curve.json` and `robust.svg`
/// ([`super::svg::robust_curves`]) into `dir` (created if missing).
pub fn write(rep: &RobustReport, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(
        &dir.join("robust.json"),
        json(rep, "robust.json")?.as_bytes(),
    )?;
    write_atomic(
        &dir.join("robust-curve.json"),
        json(&rep.curve, "robust-curve.json")?.as_bytes(),
    )?;
    write_atomic(
        &dir.join("robust.svg"),
        super::svg::robust_curves(rep)?.as_bytes(),
    )?;
    Ok(())
}
