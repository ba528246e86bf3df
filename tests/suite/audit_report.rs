//! The audit computes each quantity once: `report.md`, `audit.json` and `certificate.json`
//! carry the same numbers (q_min bounds, KKT ε), the gates are judged on the certificate, and
//! `--loss` / `--no-kkt` reach the one certify pass (its KKT certificate included). A gate
//! over zero examples fails.

use std::path::{Path, PathBuf};

use crate::common::cli::{margincert, text};
use margincert::audit::{AuditReport, best_epsilon};
use margincert::certify::Certificate;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Runs `audit MODEL ARGS --out DIR` and returns (exit success, output, certificate.json,
/// audit.json, report.md).
fn audit(
    model: &str,
    args: &[&str],
    dir: &Path,
) -> (bool, String, Certificate, AuditReport, String) {
    let model = root().join(model);
    let mut all = vec!["audit", model.to_str().unwrap(), "--data", "embedded"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", dir.to_str().unwrap()]);
    let o = margincert(&all);
    let cert = Certificate::from_json(&read(dir, "certificate.json")).unwrap();
    let report: AuditReport = serde_json::from_str(&read(dir, "audit.json")).unwrap();
    (
        o.status.success(),
        text(&o),
        cert,
        report,
        read(dir, "report.md"),
    )
}

#[test]
fn report_md_audit_json_and_certificate_json_agree() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, cert, report, md) = audit(
        "fixtures/import/mlp.onnx",
        &[
            "--subset",
            "50",
            "--no-robust",
            "--require-kkt-epsilon",
            "1e9",
        ],
        dir.path(),
    );
    assert!(ok, "{out}");
    // One certificate: the audit's is the one written as certificate.json.
    assert_eq!(report.certificate, cert);
    // Bound to the audited file, and `verify` accepts the same ONNX file.
    let model = root().join("fixtures/import/mlp.onnx");
    assert_eq!(
        cert.checkpoint_sha256.as_deref(),
        Some(margincert::io::sha256_hex(&std::fs::read(&model).unwrap()).as_str())
    );
    let o = margincert(&[
        "verify",
        dir.path().join("certificate.json").to_str().unwrap(),
        model.to_str().unwrap(),
        "--data",
        "embedded",
        "--subset",
        "50",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let q = &cert.margin.q_min;
    assert!(q.lo > 0.0, "{q}");
    let row = format!("| q_min | {:.9e} | {:.9e} |", q.lo, q.hi);
    assert!(md.contains(&row), "{row} not in\n{md}");
    // The histogram's data come from the same pass.
    let min = report
        .margin_lower_bounds
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    assert_eq!(min, q.lo);
    assert_eq!(report.margin_lower_bounds.len(), cert.margin.examples);
    // One KKT computation: the report's and the gate's are the certificate's.
    let k = cert.kkt.as_ref().expect("a KKT certificate");
    assert_eq!(report.kkt.as_ref(), Some(k));
    let paper = format!(
        "| paper (λ = κ w) | {:.6e} | {:.6e} | {:.6} |",
        k.paper.epsilon_upper, k.paper.delta_upper, k.paper.epsilon_relative_upper
    );
    assert!(md.contains(&paper), "{paper} not in\n{md}");
    // The report names the tightest multipliers by the scale-free ε and says whether they
    // beat λ = 0.
    let best = k
        .nnls
        .iter()
        .map(|n| n.epsilon_relative_upper)
        .fold(k.paper.epsilon_relative_upper, f64::min);
    assert!(md.contains(&format!("(ε/‖θ̃‖ ≤ {best:.6})")), "{md}");
    assert!(
        md.contains(if best < 1.0 {
            "below the trivial bound 1"
        } else {
            "not below the trivial bound 1"
        }),
        "{md}"
    );
    let gate = format!("certified ε ≤ {:e}", best_epsilon(k));
    assert_eq!(report.requirements.len(), 1);
    assert_eq!(report.requirements[0].detail, gate);
    assert!(report.requirements[0].met);
    assert!(md.contains(&gate), "{gate} not in\n{md}");
}

#[test]
fn no_kkt_and_loss_reach_the_certify_pass() {
    // --no-kkt: no KKT certificate anywhere, and the KKT gate fails with the reason.
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, cert, report, md) = audit(
        "fixtures/import/mlp.onnx",
        &[
            "--subset",
            "50",
            "--no-robust",
            "--no-kkt",
            "--require-kkt-epsilon",
            "1e9",
        ],
        dir.path(),
    );
    assert!(
        !ok,
        "the KKT gate must fail without a KKT certificate: {out}"
    );
    assert!(cert.kkt.is_none() && cert.options.kkt.is_none());
    assert_eq!(cert.kkt_omitted.as_deref(), Some("not requested"));
    assert!(report.kkt.is_none());
    assert!(md.contains("Not certified: not requested"), "{md}");
    assert!(out.contains("not requested"), "{out}");

    // --loss: the certified loss and the KKT multipliers' loss are both the one asked for.
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, cert, report, md) = audit(
        "fixtures/expected/linear-last.safetensors",
        &[
            "--binary",
            "0,1",
            "--subset",
            "40",
            "--no-robust",
            "--loss",
            "exponential",
        ],
        dir.path(),
    );
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&read(dir.path(), "certificate.json")).unwrap();
    assert_eq!(v["options"]["loss"], "exponential", "{v}");
    assert_eq!(v["loss"]["kind"], "exponential");
    assert_eq!(v["kkt"]["loss"], "exponential", "{}", v["kkt"]);
    let k = cert
        .kkt
        .as_ref()
        .expect("the trained linear model separates its data");
    assert_eq!(report.kkt.as_ref(), Some(k));
    let paper = format!("| paper (λ = κ w) | {:.6e} |", k.paper.epsilon_upper);
    assert!(md.contains(&paper), "{paper} not in\n{md}");
}

#[test]
fn a_gate_over_zero_examples_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, _, report, _) = audit(
        "fixtures/import/mlp.onnx",
        &[
            "--subset",
            "20",
            "--no-kkt",
            "--robust-examples",
            "0",
            "--require-linf",
            "0.3",
        ],
        dir.path(),
    );
    assert!(!ok, "{out}");
    assert!(out.contains("zero examples"), "{out}");
    let unmet: Vec<_> = report.requirements.iter().filter(|r| !r.met).collect();
    assert_eq!(unmet.len(), 1, "{:?}", report.requirements);
    assert!(unmet[0].detail.contains("zero examples"), "{:?}", unmet[0]);
}
