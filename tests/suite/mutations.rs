//! The exhaustive mutation test of `verify` (issue 11): every leaf of real certificates
//! (linear and CNN, with and without a KKT certificate, homogeneous or not, with per-example
//! enclosures) is perturbed — one ulp in the favourable direction for bounds, flipped
//! booleans, edited strings and enum names, numbers and nulls replaced, array items added
//! and removed, object keys removed and added — and the judge (parse, bind to the model
//! file's hash, recompute, compare: what `margincert verify` does) must refuse every edit,
//! except the ones listed in [`Expect::MayAccept`] that provably weaken the claim or record
//! a computation setting that changes no claim. Weakening edits of bounds must be accepted
//! (so the checker is one-sided, not merely strict).
//!
//! The classification of each leaf is this file's own (by key names and paths), written
//! from the certificate's documentation, not read from `verify`'s code.

use margincert::certify::Certificate;
use margincert::certify::certificate::{CertifyOptions, CertifyRun, certify_run};
use margincert::certify::verify::{check_binding, check_hash, compare, recompute, verify};
use margincert::checkpoint::Checkpoint;
use margincert::config::RunConfig;
use margincert::data::Dataset;
use margincert::io::sha256_hex;
use margincert::model::{Layer, ModelSpec, Params, Shape};
use margincert::robust::verify as robust_verify;
use margincert::robust::{AttackOptions, Norm, RobustOptions, RobustReport};
use serde_json::{Value, json};

use crate::common::data::{crate_root, embedded_train};

/// Which document a case is: the mutation rules and the judge differ.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Doc {
    Certificate,
    Robust,
}

/// The recomputation `verify` compares a document with.
enum Recomputed {
    Certificate(Box<CertifyRun>),
    Robust(Box<RobustReport>),
}

/// One document (a certificate or a robustness report) with what it is about.
struct Case {
    name: &'static str,
    doc: Doc,
    value: Value,
    spec: ModelSpec,
    params: Params,
    data: Dataset,
    model_sha: String,
    re: Recomputed,
}

/// What the judge said.
#[derive(Debug, PartialEq)]
enum Verdict {
    Accepted,
    Refused(String),
}

impl Case {
    fn new(
        name: &'static str,
        cert: Certificate,
        spec: ModelSpec,
        params: Params,
        data: Dataset,
        model_sha: String,
    ) -> Self {
        let run = recompute(&cert, &spec, &params, &data).unwrap();
        let value: Value = serde_json::from_str(&cert.to_json()).unwrap();
        Self {
            name,
            doc: Doc::Certificate,
            value,
            spec,
            params,
            data,
            model_sha,
            re: Recomputed::Certificate(Box::new(run)),
        }
    }

    fn robust(
        name: &'static str,
        rep: RobustReport,
        spec: ModelSpec,
        params: Params,
        data: Dataset,
        model_sha: String,
    ) -> Self {
        let re = robust_verify::recompute(&rep, &spec, &params, &data).unwrap();
        let value: Value = serde_json::from_str(&serde_json::to_string(&rep).unwrap()).unwrap();
        Self {
            name,
            doc: Doc::Robust,
            value,
            spec,
            params,
            data,
            model_sha,
            re: Recomputed::Robust(Box::new(re)),
        }
    }

    /// What `margincert verify DOC MODEL` does, with the recomputation shared when the
    /// options are the original's (the recomputation depends only on spec, params, data and
    /// options; `compare` errors when spec or dataset differ).
    fn judge(&self, v: &Value) -> Verdict {
        let refused = |e: margincert::error::Error| Verdict::Refused(e.to_string());
        let text = v.to_string();
        let report = match &self.re {
            Recomputed::Certificate(run) => {
                let cert = match Certificate::from_json(&text) {
                    Ok(c) => c,
                    Err(e) => return refused(e),
                };
                if let Err(e) = check_binding(&cert, &self.model_sha, "model") {
                    return refused(e);
                }
                if v["options"] == self.value["options"] {
                    compare(&cert, run)
                } else {
                    verify(&cert, &self.spec, &self.params, &self.data)
                }
            }
            Recomputed::Robust(re) => {
                let rep = match RobustReport::from_json(&text) {
                    Ok(c) => c,
                    Err(e) => return refused(e),
                };
                if let Err(e) = check_hash(rep.checkpoint_sha256.as_deref(), &self.model_sha, "m") {
                    return refused(e);
                }
                let same = ["/norm", "/eps_max", "/steps", "/attack", "/forward"]
                    .iter()
                    .all(|p| v.pointer(p) == self.value.pointer(p));
                if same {
                    robust_verify::compare(&rep, re)
                } else {
                    robust_verify::verify(&rep, &self.spec, &self.params, &self.data)
                }
            }
        };
        match report {
            Err(e) => refused(e),
            Ok(r) if r.ok() => Verdict::Accepted,
            Ok(r) => Verdict::Refused(
                r.failures()
                    .iter()
                    .map(|c| format!("{}: {}", c.claim, c.detail))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        }
    }
}

/// What a mutation must do.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// A stronger or false claim: `verify` must refuse it.
    Refuse,
    /// A provably weaker claim of a one-sided bound: `verify` must accept it.
    Accept,
    /// Allowed either way, with the reason.
    MayAccept(&'static str),
}

/// One edit of a certificate.
struct Mutation {
    what: String,
    value: Value,
    expect: Expect,
}

fn last_key(path: &str) -> &str {
    path.rsplit('/')
        .find(|k| k.parse::<usize>().is_err())
        .unwrap_or("")
}

/// How a number at `path` is to be read: a lower bound, an upper bound, an estimate, a
/// computation setting, a count that may be lowered, or a fact.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Lower,
    Upper,
    Estimate,
    Setting,
    LowerCount,
    Fact,
}

fn kind_of(doc: Doc, path: &str) -> Kind {
    let key = last_key(path);
    if doc == Doc::Robust {
        // Certified radii are lower bounds, the attack radius and the Lipschitz constant
        // upper bounds, a clean margin `[lo, hi]` an enclosure.
        return match key {
            // The curve and the violation count are derived from the claimed radii.
            _ if path.starts_with("/curve") => Kind::Fact,
            "certified" | "margin_only" | "crown" | "ibp" | "global_lipschitz" => Kind::Lower,
            "attack" | "lipschitz" => Kind::Upper,
            "margin" if path.ends_with("/0") => Kind::Lower,
            "margin" => Kind::Upper,
            _ if is_setting(doc, path) => Kind::Setting,
            _ => Kind::Fact,
        };
    }
    // The ε/δ bounds of the KKT conditions and every `hi`/`*_upper` are upper bounds.
    if key == "hi" || key.ends_with("_upper") {
        return Kind::Upper;
    }
    if key == "lo" || key.ends_with("_lower") {
        return Kind::Lower;
    }
    if key.ends_with("_estimate")
        || matches!(
            key,
            "paper_scale" | "weight" | "lambda_paper" | "lambda_nnls" | "max_rel_radius"
        )
    {
        return Kind::Estimate;
    }
    if is_setting(doc, path) {
        return Kind::Setting;
    }
    if matches!(
        path,
        "/margin/certified_positive" | "/margin/certified_nonpositive"
    ) {
        return Kind::LowerCount;
    }
    Kind::Fact
}

/// Options are the inputs of the recomputation, not claims: an edited option makes `verify`
/// recompute with it, and a certificate whose every claim a sound recomputation confirms is
/// true whatever the options were. Except the KKT loss, which the pass overrides with the
/// certified loss: a different value would record a setting nothing used.
/// For a robustness report, the norm, range, steps, attack settings and the forward mode.
fn is_setting(doc: Doc, path: &str) -> bool {
    match doc {
        Doc::Certificate => path.starts_with("/options/") && path != "/options/kkt/loss",
        Doc::Robust => {
            matches!(
                path,
                "/norm" | "/eps_max" | "/steps" | "/forward" | "/max_unstable"
            ) || path.starts_with("/attack/")
        }
    }
}

const SETTING: &str = "a computation setting: the claims are re-checked by a recomputation with it";

/// The mutations of the number `x` at `path`.
fn number_mutations(doc: Doc, path: &str, n: &serde_json::Number) -> Vec<Mutation> {
    let m = |what: &str, value: Value, expect| Mutation {
        what: format!("{path} {what}"),
        value,
        expect,
    };
    let kind = kind_of(doc, path);
    if let Some(i) = n.as_u64().filter(|_| !n.is_f64()) {
        let (up, down) = match kind {
            Kind::Setting => (Expect::MayAccept(SETTING), Expect::MayAccept(SETTING)),
            // Fewer examples claimed decided: weaker.
            Kind::LowerCount => (Expect::Refuse, Expect::Accept),
            _ => (Expect::Refuse, Expect::Refuse),
        };
        let mut v = vec![m("+1", json!(i + 1), up)];
        if i > 0 {
            v.push(m("-1", json!(i - 1), down));
        }
        v.push(m("-> -1", json!(-1), Expect::Refuse));
        return v;
    }
    let x = n.as_f64().unwrap();
    let (stronger, weaker) = match kind {
        Kind::Lower => (x.next_up(), x.next_down()),
        Kind::Upper => (x.next_down(), x.next_up()),
        Kind::Estimate => {
            return vec![
                m(
                    "x(1+1e-6)",
                    json!(x * (1.0 + 1e-6) + 1e-300),
                    Expect::Refuse,
                ),
                m(
                    "+1 ulp",
                    json!(x.next_up()),
                    Expect::MayAccept("an estimate claims nothing certified (1e-9 relative)"),
                ),
            ];
        }
        Kind::Setting => {
            return vec![m("+1 ulp", json!(x.next_up()), Expect::MayAccept(SETTING))];
        }
        Kind::LowerCount | Kind::Fact => {
            return vec![
                m("+1 ulp", json!(x.next_up()), Expect::Refuse),
                m("-1 ulp", json!(x.next_down()), Expect::Refuse),
            ];
        }
    };
    vec![
        m("1 ulp stronger", json!(stronger), Expect::Refuse),
        m("1 ulp weaker", json!(weaker), Expect::Accept),
    ]
}

/// Raises (`up`) or lowers the last digit of a decimal `ddd.ddd[e±x]` (`None` for a zero
/// that cannot be lowered).
fn nudge_decimal(s: &str, up: bool) -> Option<String> {
    let (mant, exp) = match s.split_once('e') {
        Some((m, e)) => (m, format!("e{e}")),
        None => (s, String::new()),
    };
    let frac_len = mant.split_once('.').map_or(0, |(_, f)| f.len());
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    let v: u128 = digits.parse().unwrap();
    let v = if up { v + 1 } else { v.checked_sub(1)? };
    let d = format!("{v:0width$}", width = digits.len());
    let (int, frac) = d.split_at(d.len() - frac_len);
    let dot = if frac_len > 0 { "." } else { "" };
    Some(format!("{int}{dot}{frac}{exp}"))
}

fn string_mutations(path: &str, s: &str) -> Vec<Mutation> {
    let m = |what: &str, value: Value, expect| Mutation {
        what: format!("{path} {what}"),
        value,
        expect,
    };
    let mut v = vec![m("edited", json!(format!("{s}x")), Expect::Refuse)];
    match path {
        "/loss/lower" | "/loss/upper" => {
            // The last digit moved towards the truth (stronger) and away (weaker).
            let lower = path == "/loss/lower";
            for (up, expect) in [(lower, Expect::Refuse), (!lower, Expect::Accept)] {
                if let Some(d) = nudge_decimal(s, up) {
                    v.push(m(
                        if up { "last digit +1" } else { "last digit -1" },
                        json!(d),
                        expect,
                    ));
                }
            }
        }
        "/loss/below_threshold" => {
            for d in ["true", "false", "undecided"]
                .into_iter()
                .filter(|d| *d != s)
            {
                let e = if d == "undecided" {
                    Expect::MayAccept("undecided claims nothing")
                } else {
                    Expect::Refuse
                };
                v.push(m(&format!("-> {d}"), json!(d), e));
            }
        }
        _ => {
            // Every other name of an enum the field may hold.
            for other in [
                "cross-entropy",
                "logistic",
                "exponential",
                "auto",
                "f64",
                "dd",
                "pair",
                "class",
                "same",
                "valid",
                "l2",
                "inf",
                "ibp",
                "crown",
                "global_lipschitz",
                "margin_only",
                "pgd",
                "cw",
                "none",
            ]
            .into_iter()
            .filter(|o| *o != s)
            {
                v.push(m(&format!("-> {other}"), json!(other), Expect::Refuse));
            }
        }
    }
    v
}

/// Optional claims: setting one to `null` claims nothing (weaker).
const OPTIONAL_CLAIMS: [&str; 5] = [
    "/kkt",
    "/normalized",
    "/forward",
    "/per_example",
    "/norms/rho_pow_l",
];

/// Optional claims of a robustness report: a CROWN, IBP or global-Lipschitz radius (`null`:
/// not claimed).
fn is_optional(doc: Doc, path: &str) -> bool {
    match doc {
        Doc::Certificate => OPTIONAL_CLAIMS.contains(&path),
        Doc::Robust => {
            path.starts_with("/examples/")
                && ["/crown", "/ibp", "/global_lipschitz"]
                    .iter()
                    .any(|k| path.ends_with(k))
        }
    }
}

/// Every mutation of the leaf or node `v` at `path`, appended to `out` (recursively).
fn mutations(doc: Doc, path: &str, v: &Value, out: &mut Vec<(String, Mutation)>) {
    let leaf = !matches!(v, Value::Array(_) | Value::Object(_));
    let mut push = |mut m: Mutation| {
        if is_setting(doc, path) && leaf && m.expect == Expect::Refuse {
            m.expect = Expect::MayAccept(SETTING);
        }
        out.push((path.to_string(), m))
    };
    if !leaf && !path.is_empty() {
        let e = if is_optional(doc, path) {
            Expect::MayAccept("no claim: weaker")
        } else {
            Expect::Refuse
        };
        push(Mutation {
            what: format!("{path} -> null"),
            value: Value::Null,
            expect: if is_setting(doc, path) {
                Expect::MayAccept(SETTING)
            } else {
                e
            },
        });
    }
    let m = |what: &str, value: Value, expect| Mutation {
        what: format!("{path} {what}"),
        value,
        expect,
    };
    match v {
        Value::Null => {
            push(m("null -> string", json!("forged"), Expect::Refuse));
            push(m("null -> 0", json!(0), Expect::Refuse));
            push(m("null -> []", json!([]), Expect::Refuse));
        }
        Value::Bool(b) => push(m("flipped", json!(!b), Expect::Refuse)),
        Value::Number(n) => {
            for x in number_mutations(doc, path, n) {
                push(x);
            }
            let e = if is_optional(doc, path) {
                Expect::MayAccept("no claim: weaker")
            } else {
                Expect::Refuse
            };
            push(m("-> null", Value::Null, e));
        }
        Value::String(s) => {
            for x in string_mutations(path, s) {
                push(x);
            }
            push(m("-> null", Value::Null, Expect::Refuse));
        }
        Value::Array(a) => {
            if let Some(last) = a.last() {
                let mut shorter = a.clone();
                shorter.pop();
                push(m("last item removed", json!(shorter), Expect::Refuse));
                let mut longer = a.clone();
                longer.push(last.clone());
                push(m("last item repeated", json!(longer), Expect::Refuse));
            }
            for (i, x) in a.iter().enumerate() {
                mutations(doc, &format!("{path}/{i}"), x, out);
            }
        }
        Value::Object(o) => {
            for k in o.keys() {
                let mut less = o.clone();
                less.remove(k);
                push(m(&format!("key {k} removed"), json!(less), Expect::Refuse));
            }
            let mut more = o.clone();
            more.insert("forged".into(), json!(true));
            push(m("unknown key added", json!(more), Expect::Refuse));
            for (k, x) in o {
                mutations(doc, &format!("{path}/{k}"), x, out);
            }
        }
    }
}

/// Runs every mutation of `case`; returns (mutations, refused, accepted-as-allowed).
fn run_case(case: &Case) -> (usize, usize, usize) {
    assert_eq!(
        case.judge(&case.value),
        Verdict::Accepted,
        "{}: the untouched certificate verifies",
        case.name
    );
    let mut all = Vec::new();
    mutations(case.doc, "", &case.value, &mut all);
    let (mut refused, mut allowed) = (0, 0);
    let mut wrong = Vec::new();
    for (path, mu) in &all {
        let mut v = case.value.clone();
        if path.is_empty() {
            v = mu.value.clone();
        } else {
            *v.pointer_mut(path).unwrap() = mu.value.clone();
        }
        let verdict = case.judge(&v);
        match (&verdict, mu.expect) {
            (Verdict::Refused(_), Expect::Refuse) => refused += 1,
            (Verdict::Accepted, Expect::Accept) => allowed += 1,
            (Verdict::Refused(_), Expect::MayAccept(_)) => refused += 1,
            (Verdict::Accepted, Expect::MayAccept(_)) => allowed += 1,
            (v, e) => wrong.push(format!("{}: expected {e:?}, got {v:?}", mu.what)),
        }
    }
    assert!(
        wrong.is_empty(),
        "{}: {} of {} mutations judged wrongly:\n{}",
        case.name,
        wrong.len(),
        all.len(),
        wrong.join("\n")
    );
    eprintln!(
        "{}: {} mutations, {refused} refused, {allowed} accepted (weaker or allowed)",
        case.name,
        all.len()
    );
    (all.len(), refused, allowed)
}

/// A fixture checkpoint (`fixtures/expected/CKPT`), the SHA-256 of its file, and the
/// training data of its config (`fixtures/configs/CONFIG`).
fn fixture(ckpt: &str, config: &str) -> (Checkpoint, String, Dataset) {
    let root = crate_root();
    let path = root.join("fixtures/expected").join(ckpt);
    let c = Checkpoint::load(&path).unwrap();
    let sha = sha256_hex(&std::fs::read(&path).unwrap());
    let cfg = RunConfig::from_file(&root.join("fixtures/configs").join(config)).unwrap();
    (c, sha, cfg.data.load().unwrap().train)
}

/// A fixture checkpoint, its certificate (as shipped), its data and the file's hash.
fn fixture_case(name: &'static str, ckpt: &str, cert: &str, config: &str) -> Case {
    let root = crate_root();
    let (c, sha, data) = fixture(ckpt, config);
    let text = std::fs::read_to_string(root.join("fixtures/expected").join(cert)).unwrap();
    let cert = Certificate::from_json(&text).unwrap();
    Case::new(name, cert, c.spec, c.params, data, sha)
}

/// A fixture checkpoint certified here without KKT, with per-example enclosures.
fn per_example_case(name: &'static str, ckpt: &str, config: &str) -> Case {
    let (c, sha, data) = fixture(ckpt, config);
    let opts = CertifyOptions {
        kkt: None,
        ..CertifyOptions::default()
    };
    let run = certify_run(&c.spec, &c.params, &data, &opts).unwrap();
    let mut cert = run.certificate;
    cert.per_example = Some(run.margins);
    cert.checkpoint_sha256 = Some(sha.clone());
    Case::new(name, cert, c.spec, c.params, data, sha)
}

/// A non-homogeneous net (a bias after the first layer) at initialisation: margins of both signs,
/// normalized margins and KKT omitted with their reasons.
fn biased_case() -> Case {
    let spec = ModelSpec {
        name: "biased-mlp".into(),
        input: Shape::new(1, 28, 28),
        layers: vec![
            Layer::Flatten,
            Layer::dense(12, false),
            Layer::Relu,
            Layer::dense(10, true),
        ],
    };
    let params = Params::he_normal(&spec, 7).unwrap();
    let data = embedded_train(24);
    let mut cert = certify_run(&spec, &params, &data, &CertifyOptions::default())
        .unwrap()
        .certificate;
    let sha = "0".repeat(64);
    cert.checkpoint_sha256 = Some(sha.clone());
    assert!(cert.normalized.is_none() && cert.kkt.is_none());
    Case::new("biased-mlp", cert, spec, params, data, sha)
}

/// A robustness report of a fixture checkpoint on its first 6 examples.
fn robust_case(name: &'static str, ckpt: &str, config: &str, norm: Norm) -> Case {
    let root = crate_root();
    let path = root
        .join("fixtures/expected")
        .join(format!("{ckpt}.safetensors"));
    let c = Checkpoint::load(&path).unwrap();
    let sha = sha256_hex(&std::fs::read(&path).unwrap());
    let cfg = RunConfig::from_file(&root.join("fixtures/configs").join(config)).unwrap();
    let data = cfg.data.load().unwrap().train.take(6);
    let opts = RobustOptions {
        norm,
        eps_max: if norm == Norm::L2 { 3.0 } else { 0.3 },
        steps: 6,
        attack: AttackOptions {
            steps: 8,
            restarts: 1,
            ..AttackOptions::default()
        },
    };
    let mut rep = margincert::robust::run(&c.spec, &c.params, &data, &opts).unwrap();
    rep.checkpoint_sha256 = Some(sha.clone());
    Case::robust(name, rep, c.spec, c.params, data, sha)
}

#[test]
fn every_leaf_mutation_is_refused_unless_weaker() {
    let cases = [
        fixture_case(
            "tiny-cnn (KKT + NNLS)",
            "tiny-cnn-last.safetensors",
            "tiny-cnn-last.cert.json",
            "tiny-cnn.toml",
        ),
        fixture_case(
            "linear (KKT)",
            "linear-last.safetensors",
            "linear-last.cert.json",
            "linear-svm.toml",
        ),
        per_example_case(
            "tiny-cnn (no KKT, per-example)",
            "tiny-cnn-loss-1e-5.safetensors",
            "tiny-cnn.toml",
        ),
        per_example_case(
            "linear (no KKT, per-example)",
            "linear-loss-1e-5.safetensors",
            "linear-svm.toml",
        ),
        biased_case(),
        robust_case(
            "tiny-cnn robust L-inf (IBP + CROWN)",
            "tiny-cnn-last",
            "tiny-cnn.toml",
            Norm::Inf,
        ),
        robust_case(
            "tiny-cnn robust L2",
            "tiny-cnn-last",
            "tiny-cnn.toml",
            Norm::L2,
        ),
        robust_case(
            "linear robust L-inf",
            "linear-last",
            "linear-svm.toml",
            Norm::Inf,
        ),
    ];
    let (mut total, mut refused) = (0, 0);
    for case in &cases {
        let (n, r, _) = run_case(case);
        total += n;
        refused += r;
    }
    eprintln!("all cases: {total} mutations, {refused} refused");
    assert!(total > 10000, "every leaf of eight documents: {total}");
}
