//! Issue 14, "report the radius that was proven" and "a `robust` a user can drive": every
//! curve, table, median and gate of a robustness report uses the best certified radius of
//! each example (with the method that proved it); unknown radii are `null`, never strings;
//! medians count every example; the curve grid follows the radii; the plots have axes and a
//! legend; `robust` reads a PyTorch model with the import flags and defaults to `certify`'s
//! split. Each test failed on the code before these changes.

use margincert::checkpoint::Checkpoint;
use margincert::data::{Dataset, embedded};
use margincert::import;
use margincert::report::Summary;
use margincert::robust::{
    self, AttackKind, AttackOptions, Method, Norm, RadiusMethod, RobustOptions, RobustReport,
    RobustSetup,
};

use crate::common::cli::{assert_clean_failure, margincert, text};
use crate::common::data::fixture;

/// The PyTorch-exported MLP of `fixtures/import` (784-16-10, ReLU, no bias), read from ONNX.
fn torch_mlp() -> Checkpoint {
    import::load(&fixture("import/mlp.onnx"), None, None, &Default::default())
        .unwrap()
        .checkpoint
}

fn data(n: usize) -> Dataset {
    embedded().unwrap().train.take(n)
}

/// A quick L∞ report of the PyTorch MLP on 16 examples.
fn linf_report(relax: Method, attack: AttackKind) -> RobustReport {
    let ck = torch_mlp();
    let d = data(16);
    let opts = RobustOptions {
        norm: Norm::Inf,
        eps_max: 0.3,
        steps: 10,
        attack: AttackOptions {
            kind: attack,
            steps: 20,
            restarts: 2,
            ..AttackOptions::default()
        },
    };
    RobustSetup::new(&ck.spec, &ck.params, &d)
        .unwrap()
        .run_with(&opts, relax)
        .unwrap()
}

/// Found: the curve (and the table, the median, the audit gate) counted only the IBP radius,
/// so on a PyTorch MLP the certified accuracy was 0 where CROWN certified most examples.
#[test]
fn the_curve_table_and_median_use_the_best_radius() {
    let rep = linf_report(Method::Crown, AttackKind::Pgd);
    assert_eq!(rep.violations, 0);
    let mut crown_better = 0;
    for e in &rep.examples {
        let (ibp, crown) = (e.ibp.unwrap(), e.crown.unwrap());
        assert_eq!(e.certified, ibp.max(crown), "{e:?}");
        let want = if crown > ibp {
            RadiusMethod::Crown
        } else {
            RadiusMethod::Ibp
        };
        assert_eq!(e.method, want, "{e:?}");
        assert!(e.certified <= e.attack, "{e:?}");
        crown_better += (crown > ibp) as usize;
    }
    assert!(crown_better >= 8, "CROWN beats IBP on {crown_better} of 16");
    let n = rep.examples.len() as f64;
    let frac = |f: &dyn Fn(&robust::ExampleRadii) -> f64, eps: f64| {
        rep.examples.iter().filter(|e| f(e) > eps).count() as f64 / n
    };
    let mut differs = false;
    for (i, &eps) in rep.curve.eps.iter().enumerate() {
        assert_eq!(rep.curve.certified[i], frac(&|e| e.certified, eps));
        differs |= rep.curve.certified[i] > frac(&|e| e.ibp.unwrap(), eps);
    }
    assert!(
        differs,
        "the best-radius curve is above the IBP curve somewhere"
    );
    // The median of the table is the best radius's, over all examples.
    let med = robust::median(rep.examples.iter().map(|e| e.certified)).unwrap();
    let s = rep.summary();
    assert!(
        s.contains(&format!("certified (best) {med:.4e}")),
        "{s}\nwants median {med:.4e}"
    );
    assert!(s.contains("proved by: ibp") && s.contains("crown"), "{s}");
    println!("{s}");
    // `--method ibp` reports IBP alone, and says so.
    let ibp_only = linf_report(Method::Ibp, AttackKind::None);
    for (a, b) in ibp_only.examples.iter().zip(&rep.examples) {
        assert_eq!((a.crown, a.method), (None, RadiusMethod::Ibp));
        assert_eq!(a.certified, b.ibp.unwrap());
    }
}

/// Found: infinite radii were written as the string "inf" in the JSON. Now an unknown attack
/// radius is `null` (and the certified radii are capped at `eps_max`), and such a report
/// reads back and verifies.
#[test]
fn unknown_radii_are_null_never_strings() {
    let rep = linf_report(Method::Ibp, AttackKind::None);
    let json = serde_json::to_string_pretty(&rep).unwrap();
    // (`"norm": "inf"` names the norm.)
    let radii = json.replace("\"norm\": \"inf\"", "");
    assert!(
        !radii.contains("\"inf\"") && !radii.contains("\"nan\""),
        "{json}"
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for e in v["examples"].as_array().unwrap() {
        assert!(e["attack"].is_null(), "{e}");
        assert!(e["certified"].as_f64().unwrap() <= 0.3);
        assert_eq!(e["crown"], serde_json::Value::Null);
    }
    let back = RobustReport::from_json(&json).unwrap();
    assert_eq!(back, rep);
    assert!(back.examples.iter().all(|e| e.attack == f64::INFINITY));
    // The curve's empirical side is then 1 everywhere, and the table prints no number.
    assert!(rep.curve.empirical.iter().all(|&x| x == 1.0));
    assert!(rep.summary().contains("         -"), "{}", rep.summary());
    // A report of schema 1 is refused with the fix.
    let mut old = v.clone();
    old["schema_version"] = serde_json::json!(1);
    let e = RobustReport::from_value(old).unwrap_err().to_string();
    assert!(e.contains("margincert robust"), "{e}");
}

/// Found: medians skipped the examples whose attack found nothing (`inf`), which biased
/// them; every example counts now (a non-robust one as 0, an unknown attack radius as inf).
#[test]
fn medians_count_every_example() {
    let inf = f64::INFINITY;
    assert_eq!(
        robust::median([0.0, 0.0, 0.5, inf, inf].into_iter()),
        Some(0.5)
    );
    assert_eq!(robust::median([0.0, inf, inf].into_iter()), Some(inf));
    assert_eq!(robust::median([0.0, 1.0].into_iter()), Some(0.5));
    assert_eq!(robust::median([f64::NAN].into_iter()), None);
}

/// Found: the curve and the table had 21 fixed points in `[0, eps_max]`, so that radii
/// between two points (e.g. everything below eps_max/20) were invisible. The grid now holds
/// every radius (to three digits), and the table shows quantiles of it.
#[test]
fn the_curve_grid_follows_the_radii() {
    let rep = linf_report(Method::Crown, AttackKind::Pgd);
    let g = &rep.curve.eps;
    assert_eq!((g[0], *g.last().unwrap()), (0.0, 0.3));
    assert!(g.windows(2).all(|w| w[0] < w[1]), "{g:?}");
    assert!(g.len() <= 2 * rep.examples.len() + 2);
    for e in &rep.examples {
        for r in [e.certified, e.attack] {
            if r > 0.0 && r < 0.3 {
                assert!(
                    g.iter().any(|&x| (x - r).abs() <= 5e-3 * r),
                    "radius {r} not on the grid {g:?}"
                );
            }
        }
    }
    assert_eq!(
        robust::grid([1e-5, 2e-5].into_iter(), 0.3),
        vec![0.0, 1e-5, 2e-5, 0.3]
    );
    let rows = margincert::report::robust::table_rows(1000);
    assert_eq!((rows.len(), rows[0], rows[rows.len() - 1]), (16, 0, 999));
}

/// `verify` confirms a report of the new schema and refuses an edited method or an attack
/// radius set to "none found".
#[test]
fn verify_checks_the_method_and_the_unknown_attack() {
    let ck = torch_mlp();
    let d = data(6);
    let opts = RobustOptions {
        norm: Norm::Inf,
        eps_max: 0.3,
        steps: 8,
        attack: AttackOptions {
            steps: 10,
            restarts: 1,
            ..AttackOptions::default()
        },
    };
    let rep = robust::run(&ck.spec, &ck.params, &d, &opts).unwrap();
    let ok = robust::verify::verify(&rep, &ck.spec, &ck.params, &d).unwrap();
    assert!(ok.ok(), "{}", ok.summary());
    let k = rep
        .examples
        .iter()
        .position(|e| e.method == RadiusMethod::Crown)
        .expect("CROWN proves some radius");
    let mut m = rep.clone();
    m.examples[k].method = RadiusMethod::Ibp;
    let r = robust::verify::verify(&m, &ck.spec, &ck.params, &d).unwrap();
    assert!(
        !r.ok() && r.summary().contains("examples.method"),
        "{}",
        r.summary()
    );
    let mut a = rep.clone();
    a.examples[k].attack = f64::INFINITY;
    let r = robust::verify::verify(&a, &ck.spec, &ck.params, &d).unwrap();
    assert!(
        !r.ok() && r.summary().contains("examples.attack"),
        "{}",
        r.summary()
    );
}

/// Found: the plot had no legend naming the methods. It has axes with labels and ticks, one
/// step curve per method, the best one and the attack's, each in the legend.
#[test]
fn the_plot_has_axes_ticks_and_a_legend() {
    let rep = linf_report(Method::Crown, AttackKind::Pgd);
    let svg = margincert::report::svg::robust_curves(&rep).unwrap();
    for needle in [
        "eps (Inf radius)",
        "robust accuracy (fraction of examples)",
        "certified: best of ibp, crown (lower bound)",
        "certified: ibp only",
        "certified: crown only",
        "attack: PGD",
        "\n0.1\n</text>",
    ] {
        assert!(svg.contains(needle), "no {needle:?} in the SVG");
    }
    let none = linf_report(Method::Ibp, AttackKind::None);
    let svg = margincert::report::svg::robust_curves(&none).unwrap();
    assert!(svg.contains("certified by ibp)") && !svg.contains("attack:"));
}

/// Found: `robust` read native checkpoints only, on the test split (certify: train), with
/// a 2.9e-4 resolution at eps 0.3 and always the attack. Now: a PyTorch state_dict with
/// `--spec`/`--map`, the train split by default (which `verify` defaults to as well),
/// `--no-attack`, and `--help` naming the methods.
#[test]
fn robust_reads_a_pytorch_model_like_certify() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let (m, s, map) = (
        fixture("import/mlp.safetensors"),
        fixture("import/mlp.toml"),
        fixture("import/mlp.map.toml"),
    );
    let a = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let model = [a(&m), "--spec".into(), a(&s), "--map".into(), a(&map)];
    let mut args: Vec<String> = vec!["robust".into()];
    args.extend(model.iter().cloned());
    for x in [
        "--data",
        "embedded",
        "--subset",
        "5",
        "--norm",
        "inf",
        "--no-attack",
        "--out",
    ] {
        args.push(x.into());
    }
    args.push(a(&out));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = margincert(&argv);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("resolution 1.83e-5") && t.contains("attack none"),
        "{t}"
    );
    let rep = RobustReport::from_json(&std::fs::read_to_string(out.join("robust.json")).unwrap())
        .unwrap();
    assert_eq!(rep.dataset.name, "mnist-embedded-train[:5]");
    assert_eq!(rep.attack.kind, AttackKind::None);
    assert!(rep.examples.iter().all(|e| e.crown.is_some()));
    let mut v: Vec<String> = vec!["verify".into(), a(&out.join("robust.json"))];
    v.extend(model.iter().cloned());
    v.extend([
        "--data".into(),
        "embedded".into(),
        "--subset".into(),
        "5".into(),
    ]);
    let argv: Vec<&str> = v.iter().map(String::as_str).collect();
    let o = margincert(&argv);
    assert!(
        o.status.success() && text(&o).contains("all confirmed"),
        "{}",
        text(&o)
    );
    let o = margincert(&["robust", "--help"]);
    let h = text(&o);
    assert!(
        h.contains("CROWN-IBP") && h.contains("--no-attack") && h.contains("cw"),
        "{h}"
    );
    let o = margincert(&["robust", &a(&m), "--norm", "inf", "--attack", "cw"]);
    assert_clean_failure(&o, "L2 attack");
}
