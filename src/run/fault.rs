//! Fault injection for the kill-and-resume tests. TEST-ONLY: nothing sets these variables in
//! normal use, and with them unset a run behaves exactly as without this module.
//!
//! - `MARGINCERT_FAULT=POINT:EPOCH` aborts the process (`SIGABRT`: no destructor runs, no
//!   buffer is flushed, as under `kill -9`) at `POINT` of epoch `EPOCH` (epoch 0 is the
//!   initial evaluation of a fresh run). The points, in the order a run passes them:
//!   `torn-metrics` (half of the epoch's metrics line written, then abort), `after-metrics`
//!   (the line written and synced, before any checkpoint), `after-kept` (threshold
//!   checkpoints written, before `last.safetensors`), `after-checkpoint` (`last.safetensors`
//!   renamed into place) and `before-plots` (the run's final checkpoint written, before the
//!   plots).
//! - `MARGINCERT_TEST_CLOCK=zero` records 0 in every `seconds` field, so that two runs write
//!   byte-identical metrics and checkpoint metadata.

use crate::error::{Error, Result};

/// The environment variable naming the fault point.
pub const FAULT_VAR: &str = "MARGINCERT_FAULT";

/// The environment variable that stops the clock.
pub const CLOCK_VAR: &str = "MARGINCERT_TEST_CLOCK";

/// A place in the run loop where a fault can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// Inside the metrics append: half the line written.
    TornMetrics,
    /// After the metrics line, before any checkpoint.
    AfterMetrics,
    /// After the threshold checkpoints, before `last.safetensors`.
    AfterKept,
    /// After `last.safetensors`.
    AfterCheckpoint,
    /// After the final checkpoint, before the plots.
    BeforePlots,
}

impl Point {
    /// Every point, with its name in [`FAULT_VAR`].
    pub const ALL: [(Point, &'static str); 5] = [
        (Point::TornMetrics, "torn-metrics"),
        (Point::AfterMetrics, "after-metrics"),
        (Point::AfterKept, "after-kept"),
        (Point::AfterCheckpoint, "after-checkpoint"),
        (Point::BeforePlots, "before-plots"),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("?", |(_, n)| n)
    }
}

/// The faults armed for this process (none in normal use).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    at: Option<(Point, usize)>,
    zero_clock: bool,
}

impl Faults {
    /// Reads [`FAULT_VAR`] and [`CLOCK_VAR`]; a value that does not parse is an error (a test
    /// that misspells a point must not pass by running undisturbed).
    pub fn from_env() -> Result<Self> {
        let mut f = Faults::default();
        if let Ok(v) = std::env::var(FAULT_VAR) {
            let bad = || {
                Error::Invalid(format!(
                    "{FAULT_VAR}={v}: expected POINT:EPOCH with POINT one of {} (a test-only \
                     variable; unset it)",
                    Point::ALL.map(|(_, n)| n).join(", ")
                ))
            };
            let (p, e) = v.split_once(':').ok_or_else(bad)?;
            let point = Point::ALL
                .iter()
                .find(|(_, n)| *n == p)
                .map(|(p, _)| *p)
                .ok_or_else(bad)?;
            f.at = Some((point, e.parse().map_err(|_| bad())?));
        }
        if let Ok(v) = std::env::var(CLOCK_VAR) {
            if v != "zero" {
                return Err(Error::Invalid(format!(
                    "{CLOCK_VAR}={v}: the only value is `zero` (a test-only variable; unset it)"
                )));
            }
            f.zero_clock = true;
        }
        Ok(f)
    }

    /// True when the fault at `point` of `epoch` is armed.
    pub fn armed(&self, point: Point, epoch: usize) -> bool {
        self.at == Some((point, epoch))
    }

    /// Aborts the process when the fault at `point` of `epoch` is armed.
    pub fn hit(&self, point: Point, epoch: usize) {
        if self.armed(point, epoch) {
            eprintln!("{FAULT_VAR}: aborting at {} of epoch {epoch}", point.name());
            std::process::abort();
        }
    }

    /// True when the clock is stopped ([`CLOCK_VAR`]).
    pub fn zero_clock(&self) -> bool {
        self.zero_clock
    }
}
