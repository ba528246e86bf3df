//! Verification of a certificate: recompute every certified quantity from the spec,
//! parameters and data, and check each claim against the recomputed enclosure
//! (proofs/verify.md).
//!
//! A claimed lower bound `c` is *confirmed* when `c ≤` the recomputed lower bound (then
//! `c ≤ truth`), *refuted* when `c >` the recomputed upper bound (then `c > truth`: the
//! claim is false), otherwise *unconfirmed*. Upper bounds symmetrically. The certificate
//! verifies when every claim is confirmed.

use rug::float::Round;
use serde::{Deserialize, Serialize};

use super::bounds::{Decision, Enclosure};
use super::certificate::{Certificate, certify_run, check_inputs};
use super::kkt::KktCertificate;
use super::loss::parse_decimal;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{ModelSpec, Params};

/// Outcome of one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The claim follows from the recomputed bounds.
    Confirmed,
    /// The claim contradicts the recomputed bounds: it is false.
    Refuted,
    /// Neither (the claim is tighter than the recomputation can confirm).
    Unconfirmed,
}

/// One checked claim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked, e.g. `margin.q_min`.
    pub claim: String,
    /// Outcome.
    pub status: Status,
    /// Explanation with the numbers.
    pub detail: String,
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Every claim checked.
    pub checks: Vec<Check>,
}

impl VerifyReport {
    /// True when every claim is confirmed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status == Status::Confirmed)
    }
    /// The claims that are not confirmed.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| c.status != Status::Confirmed)
            .collect()
    }
}

/// Status of a claimed enclosure against a recomputed one.
pub fn check_enclosure(claim: &str, claimed: &Enclosure, truth: &Enclosure) -> Check {
    let status = if claimed.lo > truth.hi || claimed.hi < truth.lo || claimed.lo > claimed.hi {
        Status::Refuted
    } else if claimed.lo <= truth.lo && claimed.hi >= truth.hi {
        Status::Confirmed
    } else {
        Status::Unconfirmed
    };
    let detail = match status {
        Status::Confirmed => format!("claimed {claimed} contains recomputed {truth}"),
        Status::Refuted => {
            format!("claimed {claimed} is FALSE: the true value lies in the recomputed {truth}")
        }
        Status::Unconfirmed => {
            format!("claimed {claimed} is tighter than the recomputed {truth}: not confirmed")
        }
    };
    Check {
        claim: claim.into(),
        status,
        detail,
    }
}

fn check_opt(claim: &str, claimed: Option<&Enclosure>, truth: Option<&Enclosure>) -> Check {
    match (claimed, truth) {
        (Some(c), Some(t)) => check_enclosure(claim, c, t),
        (None, _) => Check {
            claim: claim.into(),
            status: Status::Confirmed,
            detail: "not claimed".into(),
        },
        (Some(c), None) => Check {
            claim: claim.into(),
            status: Status::Refuted,
            detail: format!("claimed {c}, but the quantity is not certifiable for this model"),
        },
    }
}

fn check_decision(claim: &str, claimed: Decision, truth: Decision) -> Check {
    let status = match (claimed, truth) {
        (Decision::Undecided, _) => Status::Confirmed,
        (c, t) if c == t => Status::Confirmed,
        (_, Decision::Undecided) => Status::Unconfirmed,
        _ => Status::Refuted,
    };
    Check {
        claim: claim.into(),
        status,
        detail: format!("claimed {claimed:?}, recomputed {truth:?}"),
    }
}

/// Recomputes every quantity of `cert` and checks each claim. Errors (not a report) when
/// the inputs do not match the certificate: a different dataset checksum or spec, bad
/// parameters, shapes that do not fit.
pub fn verify(
    cert: &Certificate,
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
) -> Result<VerifyReport> {
    // Bounded before any work: the options come from the (untrusted) certificate.
    cert.options.validate()?;
    check_inputs(spec, params, data)?;
    let sha = data.sha256();
    if sha != cert.dataset.sha256 {
        return Err(Error::Checksum {
            what: format!("dataset {}", data.name),
            expected: cert.dataset.sha256.clone(),
            got: sha,
        });
    }
    if *spec != cert.spec {
        return Err(Error::Certify(
            "the certificate is about a different model spec".into(),
        ));
    }
    let run = certify_run(spec, params, data, &cert.options)?;
    let (re, re_loss) = (&run.certificate, &run.loss);
    let mut checks = Vec::new();
    let mut push = |c: Check| checks.push(c);

    push(Check {
        claim: "dataset.size".into(),
        status: if cert.dataset.size == re.dataset.size {
            Status::Confirmed
        } else {
            Status::Refuted
        },
        detail: format!("claimed {}, actual {}", cert.dataset.size, re.dataset.size),
    });
    push(check_enclosure(
        "margin.q_min",
        &cert.margin.q_min,
        &re.margin.q_min,
    ));
    // Support: every example that may attain q_min must be listed.
    let missing: Vec<usize> = re
        .margin
        .support
        .iter()
        .filter(|i| cert.margin.support.binary_search(i).is_err())
        .copied()
        .collect();
    push(Check {
        claim: "margin.support".into(),
        status: if missing.is_empty() {
            Status::Confirmed
        } else {
            Status::Refuted
        },
        detail: if missing.is_empty() {
            format!("all {} possible minimisers listed", re.margin.support.len())
        } else {
            format!(
                "examples {:?} may attain q_min but are not listed",
                &missing[..missing.len().min(8)]
            )
        },
    });
    for (name, claimed, truth) in [
        (
            "margin.certified_positive",
            cert.margin.certified_positive,
            re.margin.certified_positive,
        ),
        (
            "margin.certified_nonpositive",
            cert.margin.certified_nonpositive,
            re.margin.certified_nonpositive,
        ),
    ] {
        push(Check {
            claim: name.into(),
            status: if claimed <= truth {
                Status::Confirmed
            } else {
                Status::Unconfirmed
            },
            detail: format!("claimed {claimed}, recomputed {truth}"),
        });
    }
    push(check_enclosure("norms.rho", &cert.norms.rho, &re.norms.rho));
    push(check_enclosure(
        "norms.product",
        &cert.norms.product,
        &re.norms.product,
    ));
    if cert.norms.layers.len() != re.norms.layers.len() {
        push(Check {
            claim: "norms.layers".into(),
            status: Status::Refuted,
            detail: format!(
                "{} layer norms claimed, the model has {}",
                cert.norms.layers.len(),
                re.norms.layers.len()
            ),
        });
    }
    for (i, (c, t)) in cert.norms.layers.iter().zip(&re.norms.layers).enumerate() {
        push(check_enclosure(&format!("norms.layers[{i}]"), c, t));
    }
    push(check_opt(
        "norms.rho_pow_l",
        cert.norms.rho_pow_l.as_ref(),
        re.norms.rho_pow_l.as_ref(),
    ));
    push(Check {
        claim: "homogeneity.degree".into(),
        status: if cert.homogeneity.degree == re.homogeneity.degree {
            Status::Confirmed
        } else {
            Status::Refuted
        },
        detail: format!(
            "claimed {:?}, structural {:?}",
            cert.homogeneity.degree, re.homogeneity.degree
        ),
    });
    let witness_ok = cert.homogeneity.witness.iter().all(|w| {
        re.homogeneity
            .witness
            .iter()
            .any(|r| r.c == w.c && (r.consistent || !w.consistent))
    });
    push(Check {
        claim: "homogeneity.witness".into(),
        status: if witness_ok {
            Status::Confirmed
        } else {
            Status::Refuted
        },
        detail: "recomputed witness agrees".into(),
    });
    let (cn, rn) = (cert.normalized.as_ref(), re.normalized.as_ref());
    push(check_opt(
        "normalized.by_rho",
        cn.map(|n| &n.by_rho),
        rn.map(|n| &n.by_rho),
    ));
    push(check_opt(
        "normalized.by_layer_product",
        cn.map(|n| &n.by_layer_product),
        rn.map(|n| &n.by_layer_product),
    ));
    push(check_opt(
        "normalized.smoothed",
        cn.map(|n| &n.smoothed),
        rn.map(|n| &n.smoothed),
    ));

    // Loss: compare the decimal claims with the recomputed MPFR bounds (binary floats of
    // `prec` bits). A claimed lower bound c is parsed rounded UP to c' ≥ c, so c' ≤ lo
    // implies c ≤ lo ≤ truth; an honest claim (lo rounded down to decimal) always passes,
    // since the smallest prec-bit float ≥ c is ≤ lo. Symmetrically for the upper bound.
    let prec = re_loss.lo.prec();
    let loss_check = (|| -> Result<Check> {
        let c_lo_up = parse_decimal(&cert.loss.lower, prec, Round::Up)?;
        let c_lo_down = parse_decimal(&cert.loss.lower, prec, Round::Down)?;
        let c_hi_down = parse_decimal(&cert.loss.upper, prec, Round::Down)?;
        let c_hi_up = parse_decimal(&cert.loss.upper, prec, Round::Up)?;
        let status =
            if cert.loss.kind != re.loss.kind || c_lo_down > re_loss.hi || c_hi_up < re_loss.lo {
                Status::Refuted
            } else if c_lo_up <= re_loss.lo && c_hi_down >= re_loss.hi {
                Status::Confirmed
            } else {
                Status::Unconfirmed
            };
        Ok(Check {
            claim: "loss".into(),
            status,
            detail: format!(
                "claimed [{}, {}], recomputed [{}, {}]",
                cert.loss.lower, cert.loss.upper, re.loss.lower, re.loss.upper
            ),
        })
    })()?;
    push(loss_check);
    push(check_enclosure(
        "loss.log10",
        &cert.loss.log10,
        &re.loss.log10,
    ));
    push(check_decision(
        "loss.below_threshold",
        cert.loss.below_threshold,
        re.loss.below_threshold,
    ));
    for c in kkt_checks(cert.kkt.as_ref(), re.kkt.as_ref()) {
        push(c);
    }
    for c in derived_checks(cert, re)? {
        push(c);
    }
    Ok(VerifyReport { checks })
}

/// Fields that are not bounds but are derived from the recomputation (names, counts, flags,
/// threshold text, omission reasons, the homogeneity witness, the whole KKT record apart from
/// its ε/δ bounds, the forward statistics, the tool version): each must equal the recomputed
/// value (floats among them, estimates of deterministic computations, to 1e-9 relative). So
/// none is carried on trust (proofs/verify.md).
const DERIVED: [&str; 11] = [
    "/margincert_version",
    "/dataset/name",
    "/dataset/classes",
    "/margin/examples",
    "/homogeneity",
    "/loss/kind",
    "/loss/threshold",
    "/normalized_omitted",
    "/kkt_omitted",
    "/forward",
    "/kkt",
];

/// The KKT bounds compared one-sidedly by [`kkt_checks`]: left out of the equality check.
const KKT_BOUNDS: [(&str, &str); 4] = [
    ("paper", "epsilon_upper"),
    ("paper", "delta_upper"),
    ("nnls", "epsilon_upper"),
    ("nnls", "delta_upper"),
];

/// The checks of [`DERIVED`], and that every listed support index is an example.
fn derived_checks(cert: &Certificate, re: &Certificate) -> Result<Vec<Check>> {
    let json = |c: &Certificate| {
        serde_json::to_value(c).map_err(|e| Error::Certify(format!("certificate to JSON: {e}")))
    };
    let (mut cv, mut rv) = (json(cert)?, json(re)?);
    for v in [&mut cv, &mut rv] {
        if let Some(k) = v.pointer_mut("/kkt").and_then(|k| k.as_object_mut()) {
            for (outer, inner) in KKT_BOUNDS {
                if let Some(o) = k.get_mut(outer).and_then(|o| o.as_object_mut()) {
                    o.remove(inner);
                }
            }
        }
    }
    let null = serde_json::Value::Null;
    let mut out = Vec::new();
    for path in DERIVED {
        let (c, r) = (
            cv.pointer(path).unwrap_or(&null),
            rv.pointer(path).unwrap_or(&null),
        );
        let mut diffs = Vec::new();
        // The forward statistics are optional (certificates written before they existed
        // carry none): no claim, nothing to check.
        if !(path == "/forward" && c.is_null()) {
            json_diff(path, c, r, &mut diffs);
        }
        let claim = path.trim_start_matches('/').replace('/', ".");
        out.push(if diffs.is_empty() {
            Check {
                claim,
                status: Status::Confirmed,
                detail: "equals the recomputed value".into(),
            }
        } else {
            Check {
                claim,
                status: Status::Refuted,
                detail: format!(
                    "differs from the recomputation: {}{}",
                    diffs[..diffs.len().min(4)].join("; "),
                    if diffs.len() > 4 {
                        format!(" (and {} more)", diffs.len() - 4)
                    } else {
                        String::new()
                    }
                ),
            }
        });
    }
    let n = re.margin.examples;
    let bad: Vec<usize> = cert
        .margin
        .support
        .iter()
        .copied()
        .filter(|&i| i >= n)
        .collect();
    let sorted = cert.margin.support.windows(2).all(|w| w[0] < w[1]);
    out.push(Check {
        claim: "margin.support indices".into(),
        status: if bad.is_empty() && sorted {
            Status::Confirmed
        } else {
            Status::Refuted
        },
        detail: if !bad.is_empty() {
            format!("indices {bad:?} are not examples (there are {n})")
        } else if !sorted {
            "the support is not a strictly increasing list of example indices".into()
        } else {
            format!("every listed index is one of the {n} examples")
        },
    });
    Ok(out)
}

/// Appends `path: claimed X, recomputed Y` for every leaf where `c` and `r` differ (floats
/// to 1e-9 relative; objects must have the same keys, arrays the same length).
fn json_diff(path: &str, c: &serde_json::Value, r: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (c, r) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, av) in a {
                match b.get(k) {
                    Some(bv) => json_diff(&format!("{path}/{k}"), av, bv, out),
                    None => out.push(format!(
                        "{path}/{k}: claimed {av}, not in the recomputation"
                    )),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}/{k}: missing, recomputed {}", b[k]));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (av, bv)) in a.iter().zip(b).enumerate() {
                json_diff(&format!("{path}/{i}"), av, bv, out);
            }
        }
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            let close = x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs());
            if !close {
                out.push(format!("{path}: claimed {x:e}, recomputed {y:e}"));
            }
        }
        _ if c == r => {}
        _ => out.push(format!("{path}: claimed {c}, recomputed {r}")),
    }
}

/// A claimed upper bound is confirmed when the recomputed certified upper bound is no larger
/// (then the truth ≤ recomputed ≤ claimed); otherwise it is not confirmed.
fn check_upper(claim: &str, claimed: f64, recomputed: f64) -> Check {
    let status = if recomputed <= claimed {
        Status::Confirmed
    } else {
        Status::Unconfirmed
    };
    Check {
        claim: claim.into(),
        status,
        detail: format!("claimed ≤ {claimed:e}, recomputed ≤ {recomputed:e}"),
    }
}

/// Checks of the KKT claims: ε and δ upper bounds for the paper's and the NNLS multipliers.
fn kkt_checks(claimed: Option<&KktCertificate>, re: Option<&KktCertificate>) -> Vec<Check> {
    let (c, r) = match (claimed, re) {
        (None, _) => return vec![],
        (Some(_), None) => {
            return vec![Check {
                claim: "kkt".into(),
                status: Status::Refuted,
                detail: "a KKT certificate is claimed, but the recomputation cannot certify one"
                    .into(),
            }];
        }
        (Some(c), Some(r)) => (c, r),
    };
    let mut out = vec![
        check_upper(
            "kkt.paper.epsilon",
            c.paper.epsilon_upper,
            r.paper.epsilon_upper,
        ),
        check_upper("kkt.paper.delta", c.paper.delta_upper, r.paper.delta_upper),
    ];
    match (&c.nnls, &r.nnls) {
        (Some(cn), Some(rn)) => {
            out.push(check_upper(
                "kkt.nnls.epsilon",
                cn.epsilon_upper,
                rn.epsilon_upper,
            ));
            out.push(check_upper(
                "kkt.nnls.delta",
                cn.delta_upper,
                rn.delta_upper,
            ));
        }
        (Some(_), None) => out.push(Check {
            claim: "kkt.nnls".into(),
            status: Status::Unconfirmed,
            detail: "the recomputation found no NNLS multipliers".into(),
        }),
        (None, _) => {}
    }
    out
}
