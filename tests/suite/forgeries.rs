//! `verify` is the judge of a whole certificate: each field an auditor could forge (the
//! cases found by hand when certificates were attacked as a hostile user would) is either
//! recomputed and compared or derived from the recomputation, so every forgery below is
//! refused, while the untouched certificate is confirmed.

use margincert::certify::{Certificate, verify};
use margincert::checkpoint::Checkpoint;
use margincert::config::RunConfig;
use serde_json::{Value, json};

use crate::common::data::crate_root;

/// Scales the number at `ptr` by `k`.
fn scale(v: &mut Value, ptr: &str, k: f64) {
    let x = v.pointer(ptr).and_then(Value::as_f64).expect(ptr);
    *v.pointer_mut(ptr).unwrap() = json!(x * k);
}

fn set(v: &mut Value, ptr: &str, new: Value) {
    *v.pointer_mut(ptr).unwrap_or_else(|| panic!("{ptr}")) = new;
}

#[test]
fn every_forged_field_is_refused() {
    let root = crate_root();
    let expected = root.join("fixtures/expected");
    let ckpt = Checkpoint::load(&expected.join("tiny-cnn-last.safetensors")).unwrap();
    let cfg = RunConfig::from_file(&root.join("fixtures/configs/tiny-cnn.toml")).unwrap();
    let data = cfg.data.load().unwrap().train;
    let text = std::fs::read_to_string(expected.join("tiny-cnn-last.cert.json")).unwrap();
    let base: Value = serde_json::from_str(&text).unwrap();
    let judge = |v: &Value| -> Result<bool, String> {
        let cert = Certificate::from_json(&v.to_string()).map_err(|e| e.to_string())?;
        verify(&cert, &ckpt.spec, &ckpt.params, &data)
            .map(|r| r.ok())
            .map_err(|e| e.to_string())
    };
    assert_eq!(judge(&base), Ok(true), "the untouched certificate verifies");
    assert!(
        base["kkt"].is_object(),
        "the fixture carries a KKT certificate"
    );

    type Forge = Box<dyn Fn(&mut Value)>;
    let forgeries: Vec<(&str, Forge)> = vec![
        (
            "kkt.q_min_lower x10",
            Box::new(|v| scale(v, "/kkt/q_min_lower", 10.0)),
        ),
        // (×10 would loosen this upper bound: a weaker, true claim, which `verify` accepts;
        // tests/suite/mutations.rs checks that weakening edits are accepted.)
        (
            "kkt.q_min_upper /10",
            Box::new(|v| scale(v, "/kkt/q_min_upper", 0.1)),
        ),
        ("kkt.q_lo x10", Box::new(|v| scale(v, "/kkt/q_lo", 10.0))),
        (
            "kkt.q_lo_source",
            Box::new(|v| set(v, "/kkt/q_lo_source", json!("this_pass"))),
        ),
        ("kkt.degree", Box::new(|v| set(v, "/kkt/degree", json!(7)))),
        (
            "kkt.euler sample",
            Box::new(|v| scale(v, "/kkt/euler/samples/0/dot_lower", 10.0)),
        ),
        (
            "kkt.multipliers emptied",
            Box::new(|v| set(v, "/kkt/multipliers", json!([]))),
        ),
        (
            "loss.threshold",
            Box::new(|v| set(v, "/loss/threshold", json!("1e-100"))),
        ),
        (
            "homogeneity.witness consistent",
            Box::new(|v| {
                for w in v["homogeneity"]["witness"].as_array_mut().unwrap() {
                    w["consistent"] = json!(false);
                }
            }),
        ),
        (
            "homogeneity.witness examples",
            Box::new(|v| set(v, "/homogeneity/witness/0/examples", json!(3))),
        ),
        (
            "homogeneity.reasons",
            Box::new(|v| set(v, "/homogeneity/reasons/0", json!("forged"))),
        ),
        (
            "homogeneity.offending_layer",
            Box::new(|v| set(v, "/homogeneity/offending_layer", json!(0))),
        ),
        (
            "margin.examples halved",
            Box::new(|v| set(v, "/margin/examples", json!(20))),
        ),
        (
            "margin.support out of range",
            Box::new(|v| {
                v["margin"]["support"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!(999))
            }),
        ),
        (
            "dataset.name",
            Box::new(|v| set(v, "/dataset/name", json!("other"))),
        ),
        (
            "dataset.classes",
            Box::new(|v| set(v, "/dataset/classes", json!(9))),
        ),
        (
            "kkt_omitted",
            Box::new(|v| set(v, "/kkt_omitted", json!("forged reason"))),
        ),
        (
            "normalized_omitted",
            Box::new(|v| set(v, "/normalized_omitted", json!("forged reason"))),
        ),
        (
            "version",
            Box::new(|v| set(v, "/margincert_version", json!("9.9.9"))),
        ),
    ];
    let mut accepted = Vec::new();
    for (what, forge) in &forgeries {
        let mut v = base.clone();
        forge(&mut v);
        assert_ne!(v, base, "{what}: the forgery must change the certificate");
        if judge(&v) == Ok(true) {
            accepted.push(*what);
        }
    }
    assert!(
        accepted.is_empty(),
        "verify accepted forged fields: {accepted:?}"
    );
    eprintln!("{} forgeries refused", forgeries.len());
}
