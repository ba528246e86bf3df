//! Verification of a robustness report (`robust.json`): recompute the radii with the
//! report's own options and check each claim one-sidedly (proofs/verify.md, "Robustness
//! reports").
//!
//! A claimed certified radius `r` (IBP, CROWN, global Lipschitz, margin-only) is confirmed
//! when `r ≤` the recomputed radius of its method, itself a proven lower bound on the true
//! radius; the best radius `certified` likewise against the recomputed radius of the method
//! it names, and that method must be the recomputation's best (a fact of the reproducible
//! computation). A claimed attack radius `a` is confirmed when `a ≥` the recomputed one,
//! which is the distance of a point the certified pass proved misclassified (an upper bound
//! on the true radius); "none found" (`null`) must be the recomputation's outcome too. The
//! Lipschitz bound is an upper bound (claimed `≥` recomputed), the clean margins are
//! enclosures ([`check_enclosure`]), and the curve (its grid included) and the violation
//! count must be the ones the claimed radii give.

use super::{ROBUST_SCHEMA_VERSION, RobustReport, RobustSetup, curve};
use crate::certify::Enclosure;
use crate::certify::certificate::{from_value_versioned, parse_json};
use crate::certify::verify::{
    Check, Status, VerifyReport, check_enclosure, check_lower, check_upper, per_example,
};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params};

impl RobustReport {
    /// Parses a report strictly ([`from_value_versioned`]): schema version
    /// [`ROBUST_SCHEMA_VERSION`], no field missing, none unknown.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_value(parse_json(text, "robustness report")?)
    }

    /// [`RobustReport::from_json`] on already parsed JSON.
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        from_value_versioned(
            value,
            ROBUST_SCHEMA_VERSION,
            "robustness report",
            "run `margincert robust` again",
        )
    }
}

/// The recomputation [`verify`] compares a report with: the dataset's checksum checked,
/// then the radii computed with the report's options.
pub fn recompute(
    rep: &RobustReport,
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
) -> Result<RobustReport> {
    rep.dataset.check(data)?;
    RobustSetup::with_forward_mode(spec, params, data, rep.forward)?.run_capped(
        &rep.options(),
        rep.relaxation,
        rep.max_unstable,
    )
}

/// Recomputes the radii of `rep` and checks each claim ([`recompute`], [`compare`]).
pub fn verify(
    rep: &RobustReport,
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
) -> Result<VerifyReport> {
    compare(rep, &recompute(rep, spec, params, data)?)
}

/// `(status, detail)` of a check, the detail empty when confirmed (for [`per_example`]).
fn outcome(c: Check) -> (Status, String) {
    let detail = if c.status == Status::Confirmed {
        String::new()
    } else {
        format!("{}: not confirmed", c.detail)
    };
    (c.status, detail)
}

fn fact(claim: &str, equal: bool, claimed: String, recomputed: String) -> Check {
    Check {
        claim: claim.into(),
        status: if equal {
            Status::Confirmed
        } else {
            Status::Refuted
        },
        detail: if equal {
            "equals the recomputed value".into()
        } else {
            format!("claimed {claimed}, recomputed {recomputed}")
        },
    }
}

/// Checks every claim of `rep` against `re`, a recomputation with the same options and data
/// ([`recompute`]); an error when `re` is about other data or options.
pub fn compare(rep: &RobustReport, re: &RobustReport) -> Result<VerifyReport> {
    if rep.dataset.sha256 != re.dataset.sha256
        || rep.options() != re.options()
        || rep.forward != re.forward
        || rep.relaxation != re.relaxation
        || rep.max_unstable != re.max_unstable
    {
        return Err(Error::Certify(
            "the recomputation is about other data or options than the report".into(),
        ));
    }
    let mut checks = vec![
        fact(
            "schema_version",
            rep.schema_version == re.schema_version,
            rep.schema_version.to_string(),
            re.schema_version.to_string(),
        ),
        fact(
            "dataset",
            rep.dataset == re.dataset,
            format!("{:?}", rep.dataset),
            format!("{:?}", re.dataset),
        ),
    ];
    checks.push(if rep.lipschitz.is_infinite() && re.lipschitz.is_finite() {
        fact(
            "lipschitz",
            false,
            "null (overflowed)".into(),
            format!("{:e}", re.lipschitz),
        )
    } else {
        check_upper("lipschitz", rep.lipschitz, re.lipschitz)
    });
    if rep.examples.len() != re.examples.len() {
        checks.push(fact(
            "examples",
            false,
            format!("{} examples", rep.examples.len()),
            format!("{}", re.examples.len()),
        ));
        return Ok(VerifyReport { checks });
    }
    let pairs = || rep.examples.iter().zip(&re.examples).enumerate();
    checks.push(per_example(
        "examples.index, label",
        pairs()
            .map(|(n, (c, r))| {
                let ok = c.index == r.index && c.label == r.label;
                let st = if ok {
                    Status::Confirmed
                } else {
                    Status::Refuted
                };
                let d = format!(
                    "claimed index {} label {}, recomputed {} {}",
                    c.index, c.label, r.index, r.label
                );
                (n, st, d)
            })
            .collect(),
    ));
    checks.push(per_example(
        "examples.margin",
        pairs()
            .map(|(n, (c, r))| {
                let e = |m: [f64; 2]| Enclosure { lo: m[0], hi: m[1] };
                let k = check_enclosure("margin", &e(c.margin), &e(r.margin));
                (n, k.status, k.detail)
            })
            .collect(),
    ));
    // The best certified radius: a lower bound proven by its method, so confirmed when no
    // larger than the method's recomputed radius.
    checks.push(per_example(
        "examples.certified",
        pairs()
            .map(|(n, (c, r))| match r.radius(c.method) {
                Some(x) => {
                    let (s, d) = outcome(check_lower("certified", c.certified, x));
                    (n, s, d)
                }
                None => (
                    n,
                    Status::Refuted,
                    format!(
                        "claimed {:e} proven by {}, which does not apply to this model or norm",
                        c.certified,
                        c.method.name()
                    ),
                ),
            })
            .collect(),
    ));
    // The method is a fact of the (reproducible) computation: the recomputed best method.
    checks.push(per_example(
        "examples.method",
        pairs()
            .map(|(n, (c, r))| {
                let st = if c.method == r.method {
                    Status::Confirmed
                } else {
                    Status::Refuted
                };
                let d = format!(
                    "claimed {}, the recomputed best radius is {}'s",
                    c.method.name(),
                    r.method.name()
                );
                (n, st, d)
            })
            .collect(),
    ));
    checks.push(per_example(
        "examples.margin_only",
        pairs()
            .map(|(n, (c, r))| {
                let (s, d) = outcome(check_lower("margin_only", c.margin_only, r.margin_only));
                (n, s, d)
            })
            .collect(),
    ));
    // Per-method radii: optional lower bounds (`null` claims nothing).
    for m in [
        super::RadiusMethod::Ibp,
        super::RadiusMethod::Crown,
        super::RadiusMethod::GlobalLipschitz,
    ] {
        let name = format!("examples.{}", m.name());
        checks.push(per_example(
            &name,
            pairs()
                .map(|(n, (c, r))| match (c.radius(m), r.radius(m)) {
                    (None, _) => (n, Status::Confirmed, String::new()),
                    (Some(x), Some(y)) => {
                        let (s, d) = outcome(check_lower(m.name(), x, y));
                        (n, s, d)
                    }
                    (Some(x), None) => (
                        n,
                        Status::Refuted,
                        format!(
                            "claimed {x:e}, but {} does not apply to this model or norm",
                            m.name()
                        ),
                    ),
                })
                .collect(),
        ));
    }
    // The attack radius: an upper bound; "none found" (+inf, `null`) is a fact of the
    // reproducible attack, refuted when the recomputed attack finds a point.
    checks.push(per_example(
        "examples.attack",
        pairs()
            .map(|(n, (c, r))| {
                if c.attack.is_infinite() && r.attack.is_finite() {
                    let d = format!(
                        "claimed no adversarial point, the attack finds one at {:e}",
                        r.attack
                    );
                    return (n, Status::Refuted, d);
                }
                let (s, d) = outcome(check_upper("attack", c.attack, r.attack));
                (n, s, d)
            })
            .collect(),
    ));
    // The summaries are the claimed radii's: derived from the claims, not recomputed.
    let want = curve(&rep.examples, rep.eps_max);
    let first_diff = |a: &[f64], b: &[f64]| {
        (a.len() != b.len())
            .then(|| format!("{} points", a.len()))
            .or_else(|| {
                let i = a.iter().zip(b).position(|(x, y)| x != y)?;
                Some(format!("point {i}: {:e} (the radii give {:e})", a[i], b[i]))
            })
    };
    let diff = [
        ("eps", &rep.curve.eps, &want.eps),
        ("certified", &rep.curve.certified, &want.certified),
        ("empirical", &rep.curve.empirical, &want.empirical),
    ]
    .into_iter()
    .find_map(|(name, a, b)| first_diff(a, b).map(|d| format!("curve.{name} {d}")));
    checks.push(fact(
        "curve",
        diff.is_none(),
        diff.unwrap_or_default(),
        "the curve of the claimed radii".into(),
    ));
    let violations = super::violations(&rep.examples);
    checks.push(fact(
        "violations",
        rep.violations == violations,
        rep.violations.to_string(),
        violations.to_string(),
    ));
    Ok(VerifyReport { checks })
}
