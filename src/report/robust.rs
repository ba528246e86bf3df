//! Files of a robustness run.

use std::path::Path;

use super::Summary;
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::robust::{AttackKind, ExampleRadii, RadiusMethod, RobustReport};

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

/// At most this many rows in the printed table ([`table_rows`]).
pub const TABLE_ROWS: usize = 16;

/// The rows of the printed table: the whole curve grid when it has at most [`TABLE_ROWS`]
/// points (the grid is the radii themselves), otherwise that many grid points at evenly
/// spaced ranks (quantiles of the radii), the first (0) and last (`eps_max`) included.
pub fn table_rows(points: usize) -> Vec<usize> {
    if points <= TABLE_ROWS {
        return (0..points).collect();
    }
    let mut rows: Vec<usize> = (0..TABLE_ROWS)
        .map(|i| i * (points - 1) / (TABLE_ROWS - 1))
        .collect();
    rows.dedup();
    rows
}

/// The median of `v` for the table: `-` when there is none, `>= eps_max` when infinite.
fn median_text(v: impl Iterator<Item = f64>, eps_max: f64) -> String {
    match crate::robust::median(v) {
        None => "-".into(),
        Some(m) if m.is_infinite() => format!(">= {eps_max:.4e}"),
        Some(m) => format!("{m:.4e}"),
    }
}

/// A short description of the attack of `rep`.
pub fn attack_text(rep: &RobustReport) -> String {
    let a = &rep.attack;
    match a.kind {
        AttackKind::Pgd => format!(
            "PGD ({} steps, {} restarts, {} bisection steps)",
            a.steps, a.restarts, a.bisection
        ),
        AttackKind::Cw => format!(
            "Carlini-Wagner L2 ({} Adam steps, {} searches on c)",
            a.steps, a.bisection
        ),
        AttackKind::None => "none".into(),
    }
}

/// The text table of the curves and medians (what `robust` prints).
impl Summary for RobustReport {
    fn summary(&self) -> String {
        let n = self.examples.len();
        let mut s = format!(
            "norm {:?}, {n} examples, eps_max {:e} (resolution {:.2e}: {} bisection steps), \
             certified Lipschitz bound {:.4e}, attack {}, violations {}\n",
            self.norm,
            self.eps_max,
            self.eps_max / 2f64.powi(self.steps.min(1000) as i32),
            self.steps,
            self.lipschitz,
            attack_text(self),
            self.violations
        );
        let methods: Vec<RadiusMethod> = RadiusMethod::ALL
            .into_iter()
            .filter(|&m| self.examples.iter().any(|e| e.radius(m).is_some()))
            .collect();
        let proved: Vec<String> = methods
            .iter()
            .map(|&m| {
                let k = self
                    .examples
                    .iter()
                    .filter(|e| e.method == m && e.certified > 0.0)
                    .count();
                format!("{} {k}", m.name())
            })
            .collect();
        let zero = self.examples.iter().filter(|e| e.certified <= 0.0).count();
        s += &format!(
            "best certified radius proved by: {} (radius 0: {zero})\n",
            proved.join(", ")
        );
        let med = |f: &dyn Fn(&ExampleRadii) -> f64| {
            median_text(self.examples.iter().map(f), self.eps_max)
        };
        let mut parts = vec![format!("certified (best) {}", med(&|e| e.certified))];
        for &m in &methods {
            parts.push(format!(
                "{} {}",
                m.name(),
                med(&|e| e.radius(m).unwrap_or(0.0))
            ));
        }
        if self.attack.kind != AttackKind::None {
            parts.push(format!(
                "attack {} (none found for {} examples)",
                med(&|e| e.attack),
                self.examples
                    .iter()
                    .filter(|e| e.attack.is_infinite())
                    .count()
            ));
        }
        s += &format!(
            "median radius over all {n} examples (not certified: 0; no attack point: inf): {}\n",
            parts.join(", ")
        );
        s += "robust accuracy at the radii (grid: quantiles of the certified and attack radii)\n";
        s += "         eps   certified   empirical\n";
        let c = &self.curve;
        let attacked = self.attack.kind != AttackKind::None;
        for i in table_rows(c.eps.len()) {
            let emp = if attacked {
                format!("{:10.3}", c.empirical[i])
            } else {
                format!("{:>10}", "-")
            };
            s += &format!("{:12.4e}  {:10.3}  {emp}\n", c.eps[i], c.certified[i]);
        }
        s
    }
}
