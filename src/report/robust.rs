//! Files of a robustness run.

use std::path::Path;

use super::Summary;
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::robust::{ExampleRadii, RobustReport};

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

/// The text table of the curves and medians (what `robust` prints).
impl Summary for RobustReport {
    fn summary(&self) -> String {
        let mut s = format!(
            "norm {:?}, {} examples, certified Lipschitz bound {:.4e}, violations {}\n",
            self.norm,
            self.examples.len(),
            self.lipschitz,
            self.violations
        );
        let med = |f: fn(&ExampleRadii) -> f64| {
            crate::robust::median(self.examples.iter().map(f))
                .map_or("-".into(), |m| format!("{m:.4e}"))
        };
        s += &format!(
            "median radius: certified {}, attack {} (attack found nothing for {} examples)\n",
            med(|e| e.certified),
            med(|e| e.attack),
            self.examples
                .iter()
                .filter(|e| e.attack.is_infinite())
                .count()
        );
        if self.examples.iter().any(|e| e.crown.is_some()) {
            s += &format!(
                "median radius: CROWN(+IBP) {}\n",
                med(|e| e.crown.unwrap_or(f64::NAN))
            );
        }
        s += "     eps   certified   empirical\n";
        for i in 0..self.curve.eps.len() {
            s += &format!(
                "{:8.4}  {:10.3}  {:10.3}\n",
                self.curve.eps[i], self.curve.certified[i], self.curve.empirical[i]
            );
        }
        s
    }
}
