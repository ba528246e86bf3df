//! End-to-end tests of the command-line tool: train → certify → verify on the embedded
//! data, and bad input that must give a clear error and a non-zero exit, never a panic.

use crate::common::cli::{assert_clean_failure, margincert, text, train_small};

#[test]
fn train_certify_verify_round_trip_and_tampering() {
    let dir = tempfile::tempdir().unwrap();
    train_small(dir.path());
    let ckpt = dir.path().join("last.safetensors");
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 5, "initial line + 4 epochs");
    let svg = std::fs::read_to_string(dir.path().join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("epoch"));

    let cert = dir.path().join("cert.json");
    let o = margincert(&[
        "certify",
        ckpt.to_str().unwrap(),
        "--out",
        cert.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let summary = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(summary.contains("q_min"), "{summary}");
    assert!(summary.contains("degree L = 2"), "{summary}");

    let o = margincert(&["verify", cert.to_str().unwrap(), ckpt.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    // Raise the claimed lower bound on q_min above its upper bound: refuted.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cert).unwrap()).unwrap();
    let hi = v["margin"]["q_min"]["hi"].as_f64().unwrap();
    v["margin"]["q_min"]["lo"] = serde_json::json!(hi + 1.0);
    v["margin"]["q_min"]["hi"] = serde_json::json!(hi + 2.0);
    let bad = dir.path().join("tampered.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    let o = margincert(&["verify", bad.to_str().unwrap(), ckpt.to_str().unwrap()]);
    assert_clean_failure(&o, "refuted");

    // The same certificate against other data: a checksum error.
    let o = margincert(&[
        "verify",
        cert.to_str().unwrap(),
        ckpt.to_str().unwrap(),
        "--subset",
        "10",
    ]);
    assert_clean_failure(&o, "checksum");
}

#[test]
fn corrupt_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    train_small(dir.path());
    let ckpt = dir.path().join("last.safetensors");
    let bytes = std::fs::read(&ckpt).unwrap();

    // Truncated.
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_failure(
        &margincert(&["certify", cut.to_str().unwrap()]),
        "checkpoint",
    );

    // A NaN weight: the first f32 of the data section.
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut nan = bytes.clone();
    nan[8 + header..8 + header + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let p = dir.path().join("nan.safetensors");
    std::fs::write(&p, &nan).unwrap();
    assert_clean_failure(&margincert(&["certify", p.to_str().unwrap()]), "finite");

    // An unknown layer type in the stored spec.
    let head = String::from_utf8(bytes[8..8 + header].to_vec()).unwrap();
    let renamed = head.replacen("\\\"relu\\\"", "\\\"gelu\\\"", 1);
    assert_ne!(head, renamed, "the spec should contain a relu layer");
    let mut unk = bytes[..8].to_vec();
    unk.extend_from_slice(renamed.as_bytes());
    unk.extend_from_slice(&bytes[8 + header..]);
    let p = dir.path().join("unknown.safetensors");
    std::fs::write(&p, &unk).unwrap();
    assert_clean_failure(&margincert(&["certify", p.to_str().unwrap()]), "gelu");

    // Data of the wrong shape for the model (CIFAR-like shape is not available offline;
    // a binary task on a ten-output model is the mismatch here).
    assert_clean_failure(
        &margincert(&["certify", ckpt.to_str().unwrap(), "--binary", "0,1"]),
        "class",
    );

    // A missing file.
    assert_clean_failure(
        &margincert(&[
            "certify",
            dir.path().join("nope.safetensors").to_str().unwrap(),
        ]),
        "no such file",
    );
}

#[test]
fn inspect_reports_degree_and_the_offending_bias() {
    let o = margincert(&["inspect", "mnist-cnn"]);
    assert!(o.status.success());
    assert!(text(&o).contains("degree L = 4"));
    let o = margincert(&["inspect", "mnist-cnn-bias"]);
    assert!(o.status.success());
    let t = text(&o);
    assert!(
        t.contains("NOT homogeneous") && t.contains("layer 3"),
        "{t}"
    );
    let o = margincert(&["inspect", "no-such-model"]);
    assert_clean_failure(&o, "unknown preset");
}

#[test]
fn every_subcommand_explains_itself() {
    for cmd in [
        "demo", "train", "certify", "verify", "inspect", "fetch", "plot",
    ] {
        let o = margincert(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).len() > 200,
            "{cmd} help too short"
        );
    }
}

/// No command writes over one of its inputs: the checkpoint (by path or through a hard link)
/// or a data file, and the input is left byte for byte as it was.
#[test]
fn out_never_overwrites_an_input() {
    let dir = tempfile::tempdir().unwrap();
    train_small(dir.path());
    let ckpt = dir.path().join("last.safetensors");
    let before = std::fs::read(&ckpt).unwrap();
    let arg = |p: &std::path::Path| p.to_str().unwrap().to_string();

    // The checkpoint itself.
    let o = margincert(&["certify", &arg(&ckpt), "--out", &arg(&ckpt)]);
    assert_clean_failure(&o, "refusing to write");
    // A hard link of it in another directory.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let link = other.join("linked.json");
    std::fs::hard_link(&ckpt, &link).unwrap();
    let o = margincert(&["certify", &arg(&ckpt), "--out", &arg(&link)]);
    assert_clean_failure(&o, "refusing to write");
    // robust's output directory named as the checkpoint.
    let o = margincert(&["robust", &arg(&ckpt), "--norm", "inf", "--out", &arg(&ckpt)]);
    assert_clean_failure(&o, "refusing to write");
    assert_eq!(
        std::fs::read(&ckpt).unwrap(),
        before,
        "the checkpoint changed"
    );

    // A data file of an explicit data directory.
    let data = dir.path().join("mnist");
    std::fs::create_dir(&data).unwrap();
    let embedded = crate::common::data::crate_root().join("fixtures/embedded");
    for f in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(embedded.join(f), data.join(f)).unwrap();
    }
    let images = data.join("train-images-idx3-ubyte.gz");
    let images_before = std::fs::read(&images).unwrap();
    let source = format!("mnist:{}", arg(&data));
    let (ck, img) = (arg(&ckpt), arg(&images));
    let certify_20 = ["certify", &ck, "--data", &source, "--subset", "20"];
    let out_images = ["--out", img.as_str()];
    let refused: [Vec<&str>; 3] = [
        [&certify_20[..], &out_images].concat(),
        [
            &["train", "--model", "small-mlp", "--data", &source][..],
            &["--epochs", "1", "--quiet"],
            &out_images,
        ]
        .concat(),
        [&["audit", &ck, "--data", &source][..], &out_images].concat(),
    ];
    for args in &refused {
        assert_clean_failure(&margincert(args), "refusing to write");
    }
    assert_eq!(
        std::fs::read(&images).unwrap(),
        images_before,
        "the data changed"
    );

    // The same data with a fresh output path works.
    let cert = arg(&dir.path().join("fresh.cert.json"));
    let o = margincert(&[&certify_20[..], &["--no-kkt", "--out", &cert]].concat());
    assert!(o.status.success(), "{}", text(&o));
}

/// The MPFR precision is bounded, on the command line and in a (possibly tampered)
/// certificate, so neither can make the checker run for minutes or exhaust memory.
#[test]
fn precision_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    train_small(dir.path());
    let ckpt = dir.path().join("last.safetensors");
    let cert = dir.path().join("cert.json");
    let o = margincert(&[
        "certify",
        ckpt.to_str().unwrap(),
        "--precision",
        "1000000",
        "--out",
        cert.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "precision must be between 64 and");
    assert!(!cert.exists());

    let o = margincert(&[
        "certify",
        ckpt.to_str().unwrap(),
        "--no-kkt",
        "--out",
        cert.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cert).unwrap()).unwrap();
    v["options"]["precision"] = serde_json::json!(1_000_000u32);
    let bad = dir.path().join("huge-precision.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    let started = std::time::Instant::now();
    let o = margincert(&["verify", bad.to_str().unwrap(), ckpt.to_str().unwrap()]);
    assert_clean_failure(&o, "precision must be between 64 and");
    // Not a timing assertion on speed: the refusal happens before any work, so the run is
    // the same few-second start-up as any failing command (a 10⁶-bit verify took > 150 s).
    eprintln!("refused in {:.2} s", started.elapsed().as_secs_f64());
}

/// A certificate is bound to the exact model file it was computed from: `certify` and `audit`
/// record its SHA-256, `verify` refuses a certificate without one and a file with another
/// one (here: the fixture checkpoint with two weights swapped), and `certify`/`verify` read
/// what `audit` reads (a PyTorch safetensors with `--spec`, an ONNX graph).
#[test]
fn certificates_are_bound_to_the_model_file() {
    let root = crate::common::data::crate_root();
    let dir = tempfile::tempdir().unwrap();
    let arg = |p: &std::path::Path| p.to_str().unwrap().to_string();

    // A shipped certificate, and its checkpoint with two weights swapped.
    let expected = root.join("fixtures/expected");
    let ckpt = expected.join("linear-last.safetensors");
    let cert = expected.join("linear-last.cert.json");
    let o = margincert(&["verify", &arg(&cert), &arg(&ckpt)]);
    assert!(o.status.success(), "{}", text(&o));
    let mut c = margincert::checkpoint::Checkpoint::load(&ckpt).unwrap();
    let w = &mut c.params.layers[0].weight;
    let (a, b) = (0, w.len() - 1);
    assert_ne!(w[a], w[b], "the swap must change the model");
    w.swap(a, b);
    let swapped = dir.path().join("swapped.safetensors");
    c.save(&swapped).unwrap();
    let o = margincert(&["verify", &arg(&cert), &arg(&swapped)]);
    assert_clean_failure(&o, "checksum");

    // The same certificate with its hash removed is bound to nothing.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cert).unwrap()).unwrap();
    v["checkpoint_sha256"] = serde_json::Value::Null;
    let unbound = dir.path().join("unbound.json");
    std::fs::write(&unbound, v.to_string()).unwrap();
    let o = margincert(&["verify", &arg(&unbound), &arg(&ckpt)]);
    assert_clean_failure(&o, "not bound");
    v.as_object_mut().unwrap().remove("checkpoint_sha256");
    std::fs::write(&unbound, v.to_string()).unwrap();
    let o = margincert(&["verify", &arg(&unbound), &arg(&ckpt)]);
    assert_clean_failure(&o, "checkpoint_sha256 is missing");

    // A PyTorch state_dict with its spec, and an ONNX graph: certify, then verify against the
    // very same file; the certificate records that file's SHA-256.
    let fx = root.join("fixtures/import");
    let spec = fx.join("cnn_bias.toml");
    let cases: [(&str, Vec<String>); 2] = [
        ("cnn_bias.safetensors", vec!["--spec".into(), arg(&spec)]),
        ("mlp.onnx", vec![]),
    ];
    for (file, extra) in cases {
        let model = fx.join(file);
        let out = dir.path().join(format!("{file}.cert.json"));
        let mut args: Vec<String> = vec!["certify".into(), arg(&model)];
        args.extend(extra.iter().cloned());
        args.extend(
            ["--data", "embedded", "--subset", "20", "--no-kkt", "--out"]
                .iter()
                .map(|s| s.to_string()),
        );
        args.push(arg(&out));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = margincert(&refs);
        assert!(o.status.success(), "{file}: {}", text(&o));
        let c =
            margincert::certify::Certificate::from_json(&std::fs::read_to_string(&out).unwrap())
                .unwrap();
        assert_eq!(
            c.checkpoint_sha256.as_deref(),
            Some(margincert::io::sha256_hex(&std::fs::read(&model).unwrap()).as_str()),
            "{file}"
        );
        let mut args: Vec<String> = vec!["verify".into(), arg(&out), arg(&model)];
        args.extend(extra);
        args.extend(
            ["--data", "embedded", "--subset", "20"]
                .iter()
                .map(|s| s.to_string()),
        );
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = margincert(&refs);
        assert!(o.status.success(), "{file}: {}", text(&o));
    }
}

/// Certificates are parsed strictly: a field the schema does not have, at any depth, is
/// refused with its name (it would otherwise be carried along unchecked), and so is an
/// unknown key in a model spec.
#[test]
fn unknown_fields_are_refused() {
    let root = crate::common::data::crate_root();
    let expected = root.join("fixtures/expected");
    let ckpt = expected.join("tiny-cnn-last.safetensors");
    let cert = expected.join("tiny-cnn-last.cert.json");
    let dir = tempfile::tempdir().unwrap();
    let text_of = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    let base: serde_json::Value = serde_json::from_str(&text_of(&cert)).unwrap();
    let edits: [(&str, &[&str]); 5] = [
        ("top level", &[]),
        ("margin.q_min", &["margin", "q_min"]),
        ("kkt", &["kkt"]),
        ("spec", &["spec"]),
        ("spec layer", &["spec", "layers", "0"]),
    ];
    for (what, path) in edits {
        let mut v = base.clone();
        let mut node = &mut v;
        for key in path {
            node = match key.parse::<usize>() {
                Ok(i) => &mut node[i],
                Err(_) => &mut node[*key],
            };
        }
        node.as_object_mut()
            .unwrap_or_else(|| panic!("{what} is an object"))
            .insert("claimed_extra".into(), serde_json::json!(true));
        let bad = dir.path().join("extra.json");
        std::fs::write(&bad, v.to_string()).unwrap();
        let o = margincert(&["verify", bad.to_str().unwrap(), ckpt.to_str().unwrap()]);
        assert_clean_failure(&o, "unknown field `claimed_extra`");
    }
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        "input = { c = 1, h = 4, w = 4 }\n[[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"dense\"\nout = 2\nunits = 3\n",
    )
    .unwrap();
    let o = margincert(&["inspect", spec.to_str().unwrap()]);
    assert_clean_failure(&o, "unknown field `units`");
}

/// `certify --per-example` records every q_n enclosure and `verify` re-checks each; its
/// messages say which claim, the claimed and recomputed values to every digit, and call a
/// certificate refuted only when a claim is shown false. A certificate without the schema
/// version (written before versioning) is refused with what to do.
#[test]
fn per_example_enclosures_and_verify_messages() {
    let root = crate::common::data::crate_root();
    let ckpt = root.join("fixtures/expected/linear-last.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let arg = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let out = dir.path().join("c.json");
    let o = margincert(&[
        "certify",
        &arg(&ckpt),
        "--no-kkt",
        "--per-example",
        "--out",
        &arg(&out),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("per-example enclosures of q_n recorded"));
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let n = base["margin"]["examples"].as_u64().unwrap() as usize;
    assert_eq!(base["per_example"].as_array().unwrap().len(), n);
    let o = margincert(&["verify", &arg(&out), &arg(&ckpt)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("all confirmed"), "{}", text(&o));

    let edited = dir.path().join("edited.json");
    let verify_edit = |v: &serde_json::Value| {
        std::fs::write(&edited, v.to_string()).unwrap();
        margincert(&["verify", &arg(&edited), &arg(&ckpt)])
    };
    // One ulp tighter: not confirmed, not refuted; both numbers printed in full.
    let lo = base["per_example"][3]["lo"].as_f64().unwrap();
    let mut v = base.clone();
    v["per_example"][3]["lo"] = serde_json::json!(lo.next_up());
    let o = verify_edit(&v);
    assert_clean_failure(&o, "none was shown false");
    let t = text(&o);
    assert!(t.contains("[Unconfirmed] per_example"), "{t}");
    assert!(
        t.contains(&format!("{:e}", lo.next_up())) && t.contains(&format!("{lo:e}")),
        "{t}"
    );
    assert!(!t.contains("refuted"), "{t}");
    // Above the recomputed upper bound: shown false.
    let hi = base["per_example"][3]["hi"].as_f64().unwrap();
    v["per_example"][3]["lo"] = serde_json::json!(hi + 1.0);
    v["per_example"][3]["hi"] = serde_json::json!(hi + 2.0);
    let o = verify_edit(&v);
    assert_clean_failure(&o, "refuted: 1 claims are false");
    assert!(text(&o).contains("[Refuted] per_example"), "{}", text(&o));
    // One enclosure too few.
    let mut v = base.clone();
    v["per_example"].as_array_mut().unwrap().pop();
    assert_clean_failure(&verify_edit(&v), "refuted");
    // No schema version, another one.
    for bad in [serde_json::Value::Null, serde_json::json!(1)] {
        let mut v = base.clone();
        match bad {
            serde_json::Value::Null => {
                v.as_object_mut().unwrap().remove("schema_version");
            }
            b => v["schema_version"] = b,
        }
        assert_clean_failure(&verify_edit(&v), "certify the model again");
    }
}

/// `robust` writes a report bound to the model file that `verify` re-checks: confirmed as
/// written, not confirmed when a certified radius is raised, refused against another file.
#[test]
fn robustness_reports_are_verified() {
    let root = crate::common::data::crate_root();
    let ckpt = root.join("fixtures/expected/linear-last.safetensors");
    let other = root.join("fixtures/expected/linear-loss-1e-5.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let arg = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let out = dir.path().join("r");
    let (c, d) = (arg(&ckpt), arg(&out));
    let o = margincert(&[
        "robust",
        &c,
        "--norm",
        "inf",
        "--subset",
        "5",
        "--steps",
        "6",
        "--restarts",
        "1",
        "--out",
        &d,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let rep = out.join("robust.json");
    let verify = |r: &std::path::Path, model: &std::path::Path| {
        margincert(&["verify", &arg(r), &arg(model), "--subset", "5"])
    };
    let o = verify(&rep, &ckpt);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("all confirmed"), "{}", text(&o));
    assert_clean_failure(&verify(&rep, &other), "checksum");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    let r = v["examples"][0]["certified"].as_f64().unwrap();
    v["examples"][0]["certified"] = serde_json::json!(r.next_up());
    let edited = dir.path().join("edited.json");
    std::fs::write(&edited, v.to_string()).unwrap();
    let o = verify(&edited, &ckpt);
    assert_clean_failure(&o, "none was shown false");
    assert!(
        text(&o).contains("[Unconfirmed] examples.certified"),
        "{}",
        text(&o)
    );
}

/// The paper's entry points: `inspect` builds every preset on its own input (the VGG on
/// 3x32x32), and `reproduce mnist` says where it looks for the data and how to get it
/// (`fetch` puts it in data/mnist; `--data DIR` points elsewhere).
#[test]
fn paper_entry_points_explain_themselves() {
    let o = margincert(&["inspect", "cifar-vgg"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("input [3, 32, 32]"), "{}", text(&o));
    // Run in an empty directory: data/mnist (the default) is certainly absent there.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let out = out.to_str().unwrap();
    let o = crate::common::cli::command()
        .current_dir(dir.path())
        .args(["--threads", "2", "reproduce", "mnist", "--out", out])
        .output()
        .unwrap();
    assert_clean_failure(&o, "margincert fetch mnist");
    let missing = dir.path().join("nowhere");
    let o = margincert(&[
        "reproduce",
        "mnist",
        "--out",
        out,
        "--data",
        missing.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "nowhere");
}

/// An audit's robustness reports are verifiable on their own: `robust_l2.json` and
/// `robust_linf.json` are confirmed by `verify` given the same examples (the first
/// `--robust-examples` of the audited split).
#[test]
fn audit_robustness_reports_verify() {
    let root = crate::common::data::crate_root();
    let ckpt = root.join("fixtures/expected/tiny-cnn-last.safetensors");
    let ckpt = ckpt.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit");
    let out = out.to_str().unwrap();
    let o = margincert(&[
        "audit",
        ckpt,
        "--data",
        "embedded",
        "--subset",
        "40",
        "--split",
        "train",
        "--out",
        out,
        "--robust-examples",
        "4",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["robust_l2.json", "robust_linf.json"] {
        let rep = dir.path().join("audit").join(f);
        let o = margincert(&[
            "verify",
            rep.to_str().unwrap(),
            ckpt,
            "--data",
            "embedded",
            "--subset",
            "4",
            "--split",
            "train",
        ]);
        assert!(o.status.success(), "{f}: {}", text(&o));
        assert!(text(&o).contains("all confirmed"), "{f}: {}", text(&o));
    }
}
