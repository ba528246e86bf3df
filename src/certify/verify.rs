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
use super::certificate::{Certificate, CertifyRun, certify_run, check_inputs};
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
    let (c, t) = (exact_digits(claimed), exact_digits(truth));
    let detail = match status {
        Status::Confirmed => format!("claimed {c} contains recomputed {t}"),
        Status::Refuted => {
            format!("claimed {c} is FALSE: the true value lies in the recomputed {t}")
        }
        Status::Unconfirmed => {
            format!("claimed {c} is tighter than the recomputed {t}: not confirmed")
        }
    };
    Check {
        claim: claim.into(),
        status,
        detail,
    }
}

/// `[lo, hi]` with the shortest decimals that read back to the same f64s, so that claims
/// one ulp apart print differently.
fn exact_digits(e: &Enclosure) -> String {
    format!("[{:e}, {:e}]", e.lo, e.hi)
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

/// Checks that `cert` is about the model file whose SHA-256 is `model_sha256` (`what` names
/// the file in the error): [`check_hash`] of its `checkpoint_sha256`.
pub fn check_binding(cert: &Certificate, model_sha256: &str, what: &str) -> Result<()> {
    check_hash(cert.checkpoint_sha256.as_deref(), model_sha256, what)
}

/// Checks that a document recording the model hash `recorded` is about the file whose
/// SHA-256 is `model_sha256`. A document without a model hash is bound to nothing and is
/// refused: compute it again from the model file.
pub fn check_hash(recorded: Option<&str>, model_sha256: &str, what: &str) -> Result<()> {
    let Some(want) = recorded else {
        return Err(Error::Certify(
            "the document records no model file hash (checkpoint_sha256): it is not bound \
             to a model and cannot be verified; compute it again from the model file \
             (`certify`, `audit` or `robust`)"
                .into(),
        ));
    };
    if want != model_sha256 {
        return Err(Error::Checksum {
            what: what.into(),
            expected: want.into(),
            got: model_sha256.into(),
        });
    }
    Ok(())
}

/// Recomputes every quantity of `cert` and checks each claim: [`recompute`] then
/// [`compare`]. Errors (not a report) when the inputs do not match the certificate: a
/// different dataset checksum or spec, bad parameters, shapes that do not fit. The binding
/// to the model file is [`check_binding`]'s (the file is not an argument here).
pub fn verify(
    cert: &Certificate,
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
) -> Result<VerifyReport> {
    compare(cert, &recompute(cert, spec, params, data)?)
}

/// The recomputation [`verify`] compares a certificate with: the inputs checked against
/// it (options bounded before any work, dataset checksum, spec), then the certify pass with
/// the certificate's options.
pub fn recompute(
    cert: &Certificate,
    spec: &ModelSpec,
    params: &Params,
    data: &Dataset,
) -> Result<CertifyRun> {
    // Bounded before any work: the options come from the (untrusted) certificate.
    cert.options.validate()?;
    check_inputs(spec, params, data)?;
    cert.dataset.check(data)?;
    if *spec != cert.spec {
        return Err(Error::Certify(
            "the certificate is about a different model spec".into(),
        ));
    }
    certify_run(spec, params, data, &cert.options)
}

/// Checks every claim of `cert` against `run`, a recomputation with the same spec, dataset
/// and options ([`recompute`]); an error when `run` is about other inputs.
pub fn compare(cert: &Certificate, run: &CertifyRun) -> Result<VerifyReport> {
    if cert.dataset.sha256 != run.certificate.dataset.sha256 || cert.spec != run.certificate.spec {
        return Err(Error::Certify(
            "the recomputation is about another dataset or model spec than the certificate".into(),
        ));
    }
    let (re, re_loss) = (&run.certificate, &run.loss);
    let mut checks = Vec::new();
    let mut push = |c: Check| checks.push(c);

    // The options are the recomputation's input; recorded as used (`normalized`), so a
    // setting that differs from what the recomputation ran with is false.
    let mut diffs = Vec::new();
    json_diff(
        "/options",
        &json(&cert.options)?,
        &json(&re.options)?,
        Role::Fact,
        &mut diffs,
    );
    push(fact_check("options", &diffs));
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
        push(one_sided(
            name,
            claimed <= truth,
            format!("claimed {claimed}, recomputed {truth}"),
        ));
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
    for c in derived_checks(cert, run)? {
        push(c);
    }
    Ok(VerifyReport { checks })
}

/// Fields that are not bounds of the margins, norms or loss but facts derived from the
/// recomputation (names, counts, flags, threshold text, omission reasons, the homogeneity
/// witness, the whole KKT record apart from its ε/δ bounds, the forward statistics, the
/// versions): compared leaf by leaf by [`json_diff`] (exact, except the KKT record's own
/// bounds, one-sided, and estimates, to [`ESTIMATE_RTOL`]). So none is carried on trust
/// (proofs/verify.md).
const DERIVED: [&str; 12] = [
    "/schema_version",
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

/// The KKT bounds compared one-sidedly by [`kkt_checks`] (with their own messages): left
/// out of [`DERIVED`]'s comparison.
const KKT_BOUNDS: [(&str, &str); 4] = [
    ("paper", "epsilon_upper"),
    ("paper", "delta_upper"),
    ("nnls", "epsilon_upper"),
    ("nnls", "delta_upper"),
];

/// Relative tolerance of estimates (f64 values of non-certified computations, e.g.
/// `rho_estimate`): the same certificate recomputed on a CPU with other SIMD kernels may
/// differ in the last bits. An estimate claims nothing certified.
pub const ESTIMATE_RTOL: f64 = 1e-9;

/// How a leaf of a derived record is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A fact of a deterministic computation: must equal the recomputation.
    Fact,
    /// A certified lower bound (`*_lower`): must be ≤ the recomputed one.
    Lower,
    /// A certified upper bound (`*_upper`): must be ≥ the recomputed one.
    Upper,
    /// An f64 estimate: within [`ESTIMATE_RTOL`] relative of the recomputed one.
    Estimate,
}

impl Role {
    /// The role of the value under key `key` of the KKT record or the homogeneity witness
    /// (the names say what a number is: `*_lower`/`*_upper` bounds, `*_estimate`s, and the
    /// f64 values of the multipliers and the witness's radii, which are estimates too).
    fn of(key: &str) -> Self {
        match key {
            "paper_scale" | "weight" | "lambda_paper" | "lambda_nnls" | "max_rel_radius" => {
                Role::Estimate
            }
            k if k.ends_with("_lower") => Role::Lower,
            k if k.ends_with("_upper") => Role::Upper,
            k if k.ends_with("_estimate") => Role::Estimate,
            _ => Role::Fact,
        }
    }
}

/// A certificate part as JSON.
fn json<T: Serialize>(t: &T) -> Result<serde_json::Value> {
    serde_json::to_value(t).map_err(|e| Error::Certify(format!("certificate to JSON: {e}")))
}

/// A check over a derived record from its list of differences ([`json_diff`]): confirmed
/// when there are none; refuted when a fact differs (the record is false); otherwise not
/// confirmed (a bound tighter than the recomputation, an estimate off).
fn fact_check(claim: &str, diffs: &[Diff]) -> Check {
    let status = if diffs.is_empty() {
        Status::Confirmed
    } else if diffs.iter().any(|d| d.refutes) {
        Status::Refuted
    } else {
        Status::Unconfirmed
    };
    let detail = if diffs.is_empty() {
        "equals the recomputed value".into()
    } else {
        let shown: Vec<&str> = diffs.iter().take(4).map(|d| d.text.as_str()).collect();
        format!(
            "differs from the recomputation: {}{}",
            shown.join("; "),
            if diffs.len() > 4 {
                format!(" (and {} more)", diffs.len() - 4)
            } else {
                String::new()
            }
        )
    };
    Check {
        claim: claim.into(),
        status,
        detail,
    }
}

/// The checks of [`DERIVED`], that every listed support index is an example, and of the
/// per-example enclosures.
fn derived_checks(cert: &Certificate, run: &CertifyRun) -> Result<Vec<Check>> {
    let re = &run.certificate;
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
        // The forward statistics are optional: `null` claims nothing.
        if !(path == "/forward" && c.is_null()) {
            json_diff(path, c, r, Role::Fact, &mut diffs);
        }
        out.push(fact_check(
            &path.trim_start_matches('/').replace('/', "."),
            &diffs,
        ));
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
    if let Some(claimed) = &cert.per_example {
        out.push(per_example_check(claimed, &run.margins));
    }
    Ok(out)
}

/// One check over every example: refuted when any example's claim is false, not confirmed
/// when any is only tighter than the recomputation.
pub(crate) fn per_example(claim: &str, outcomes: Vec<(usize, Status, String)>) -> Check {
    let bad: Vec<&(usize, Status, String)> = outcomes
        .iter()
        .filter(|o| o.1 != Status::Confirmed)
        .collect();
    let status = if bad.iter().any(|o| o.1 == Status::Refuted) {
        Status::Refuted
    } else if bad.is_empty() {
        Status::Confirmed
    } else {
        Status::Unconfirmed
    };
    let detail = if bad.is_empty() {
        format!("all {} examples confirmed", outcomes.len())
    } else {
        let shown: Vec<String> = bad
            .iter()
            .take(4)
            .map(|(n, _, d)| format!("example {n}: {d}"))
            .collect();
        format!(
            "{} of {} examples fail: {}",
            bad.len(),
            outcomes.len(),
            shown.join("; ")
        )
    };
    Check {
        claim: claim.into(),
        status,
        detail,
    }
}

/// Every claimed per-example margin enclosure against the recomputed one, as one check
/// ([`per_example`]); refuted when the list has the wrong length.
fn per_example_check(claimed: &[Enclosure], truth: &[Enclosure]) -> Check {
    if claimed.len() != truth.len() {
        return Check {
            claim: "per_example".into(),
            status: Status::Refuted,
            detail: format!(
                "{} enclosures claimed for {} examples",
                claimed.len(),
                truth.len()
            ),
        };
    }
    let outcomes = claimed
        .iter()
        .zip(truth)
        .enumerate()
        .map(|(n, (c, t))| {
            let k = check_enclosure(&format!("q_{n}"), c, t);
            (n, k.status, k.detail)
        })
        .collect();
    per_example("per_example", outcomes)
}

/// One difference found by [`json_diff`].
struct Diff {
    /// `path: claimed X, recomputed Y`.
    text: String,
    /// True when it shows the claim false (a fact that differs), false when the claim is
    /// only not confirmed (a bound tighter than the recomputed one, an estimate off).
    refutes: bool,
}

/// Appends a [`Diff`] for every leaf where `c` (claimed) and `r` (recomputed) differ, each
/// leaf compared by its [`Role`] (the key's, inherited by array items; `role` at the top).
/// Objects must have the same keys, arrays the same length.
fn json_diff(
    path: &str,
    c: &serde_json::Value,
    r: &serde_json::Value,
    role: Role,
    out: &mut Vec<Diff>,
) {
    use serde_json::Value;
    let fact = |text: String| Diff {
        text,
        refutes: true,
    };
    match (c, r) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, av) in a {
                match b.get(k) {
                    Some(bv) => json_diff(&format!("{path}/{k}"), av, bv, Role::of(k), out),
                    None => out.push(fact(format!(
                        "{path}/{k}: claimed {av}, not in the recomputation"
                    ))),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(fact(format!("{path}/{k}: missing, recomputed {}", b[k])));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (av, bv)) in a.iter().zip(b).enumerate() {
                json_diff(&format!("{path}/{i}"), av, bv, role, out);
            }
        }
        (Value::Number(a), Value::Number(b)) if role != Role::Fact => {
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            // `{:e}` prints the shortest decimals that read back to the same f64.
            let (ok, what) = match role {
                Role::Lower => (x <= y, "a lower bound above the recomputed one"),
                Role::Upper => (x >= y, "an upper bound below the recomputed one"),
                _ => (
                    x == y || (x - y).abs() <= ESTIMATE_RTOL * x.abs().max(y.abs()),
                    "an estimate off by more than 1e-9 relative",
                ),
            };
            if !ok {
                out.push(Diff {
                    text: format!("{path}: claimed {x:e}, recomputed {y:e} ({what})"),
                    refutes: false,
                });
            }
        }
        _ if c == r => {}
        _ => out.push(fact(format!("{path}: claimed {c}, recomputed {r}"))),
    }
}

/// A one-sided claim: confirmed when `holds`, otherwise not confirmed (never refuted: the
/// claim is only tighter than the recomputation).
fn one_sided(claim: &str, holds: bool, detail: String) -> Check {
    Check {
        claim: claim.into(),
        status: if holds {
            Status::Confirmed
        } else {
            Status::Unconfirmed
        },
        detail,
    }
}

/// A claimed upper bound is confirmed when the recomputed certified upper bound is no larger
/// (then the truth ≤ recomputed ≤ claimed).
pub(crate) fn check_upper(claim: &str, claimed: f64, recomputed: f64) -> Check {
    let detail = format!("claimed ≤ {claimed:e}, recomputed ≤ {recomputed:e}");
    one_sided(claim, recomputed <= claimed, detail)
}

/// A claimed lower bound is confirmed when the recomputed certified lower bound is no
/// smaller (then claimed ≤ recomputed ≤ the truth).
pub(crate) fn check_lower(claim: &str, claimed: f64, recomputed: f64) -> Check {
    let detail = format!("claimed ≥ {claimed:e}, recomputed ≥ {recomputed:e}");
    one_sided(claim, claimed <= recomputed, detail)
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
