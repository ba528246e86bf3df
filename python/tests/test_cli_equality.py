"""The Python results equal the CLI's bit for bit: the stored certificates of
fixtures/expected (made by `margincert certify` with its defaults) and fresh runs of the
built binary with other options."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import margincert as mc
from conftest import EXPECTED

# (checkpoint, data selection the checkpoint trained on)
CASES = [
    ("linear-loss-1e-5", dict(binary=(0, 1), subset=40)),
    ("linear-last", dict(binary=(0, 1), subset=40)),
    ("tiny-cnn-loss-1e-5", dict(subset=40)),
    ("tiny-cnn-last", dict(subset=40)),
]


@pytest.mark.parametrize("stem,sel", CASES, ids=[c[0] for c in CASES])
def test_certificate_equals_the_stored_cli_certificate(stem: str, sel: dict) -> None:
    model = mc.Model.from_safetensors(EXPECTED / f"{stem}.safetensors")
    data = mc.load_data("embedded", "train", **sel)
    cert = mc.certify(model, data)
    expected = (EXPECTED / f"{stem}.cert.json").read_text()
    # Every number, flag and text of the certificate, the model's and the data's hashes.
    assert json.loads(cert.to_json()) == json.loads(expected)
    assert cert.to_json().strip() == expected.strip()
    # The typed accessors read the same numbers.
    d = json.loads(expected)
    assert cert.q_min == (d["margin"]["q_min"]["lo"], d["margin"]["q_min"]["hi"])
    assert cert.loss_str == (d["loss"]["lower"], d["loss"]["upper"])
    assert cert.loss_log10 == (d["loss"]["log10"]["lo"], d["loss"]["log10"]["hi"])
    n = d["normalized"]
    assert cert.normalized_margin == (n["by_rho"]["lo"], n["by_rho"]["hi"])
    assert cert.kkt == d["kkt"]


def run_cli(cli: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(cli), "--threads", "2", *args], capture_output=True, text=True)


def test_certificate_equals_a_fresh_cli_run_with_other_options(cli: Path, tmp_path: Path) -> None:
    ck = EXPECTED / "tiny-cnn-last.safetensors"
    out = tmp_path / "c.json"
    r = run_cli(
        cli, "certify", str(ck), "--subset", "25", "--split", "test", "--no-kkt",
        "--per-example", "--precision", "96", "--precision-mode", "dd", "--loss",
        "cross-entropy", "--witness-examples", "5", "--out", str(out),
    )
    assert r.returncode == 0, r.stderr
    model = mc.Model.from_safetensors(ck)
    cert = mc.certify(
        model, mc.load_data(split="test", subset=25), kkt=False, per_example=True,
        precision=96, precision_mode="dd", loss="ce", witness_examples=5,
    )
    assert cert.to_json() == out.read_text()
    assert cert.per_example is not None and cert.per_example.shape == (25, 2)


def test_cli_verifies_a_python_certificate_and_python_verifies_it(cli: Path, tmp_path: Path) -> None:
    ck = EXPECTED / "linear-last.safetensors"
    model = mc.Model.from_safetensors(ck)
    data = mc.load_data(binary=(0, 1), subset=40)
    cert = mc.certify(model, data, kkt=False)
    path = tmp_path / "py.cert.json"
    cert.save(path)
    r = run_cli(cli, "verify", str(path), str(ck))
    assert r.returncode == 0, r.stdout + r.stderr
    rep = mc.verify(cert, model, data)
    assert rep.ok and bool(rep)
    assert cert.verify(model, data).ok and cert.verify(model, *data).ok
    assert all(c["status"] == "confirmed" for c in rep.checks)


def test_verify_refutes_a_tampered_certificate() -> None:
    ck = EXPECTED / "linear-last.safetensors"
    model = mc.Model.from_safetensors(ck)
    data = mc.load_data(binary=(0, 1), subset=40)
    d = json.loads((EXPECTED / "linear-last.cert.json").read_text())
    d["margin"]["q_min"]["lo"] = d["margin"]["q_min"]["hi"] * 2 + 1
    forged = mc.Certificate.from_json(json.dumps(d))
    rep = forged.verify(model, *data)
    assert not rep.ok
    assert any(f["claim"] == "margin.q_min" and f["status"] == "refuted" for f in rep.failures)


def test_verify_refuses_another_model() -> None:
    cert = mc.Certificate.load(EXPECTED / "linear-last.cert.json")
    other = mc.Model.from_safetensors(EXPECTED / "linear-loss-1e-5.safetensors")
    with pytest.raises(mc.MargincertError, match="checksum mismatch"):
        mc.verify(cert, other, mc.load_data(binary=(0, 1), subset=40))


def test_robust_equals_the_cli(cli: Path, tmp_path: Path) -> None:
    ck = EXPECTED / "linear-last.safetensors"
    out = tmp_path / "rob"
    # The CLI's robust defaults to the training split and 100 attack steps; the call below
    # gives the test split and the library's 20 steps.
    r = run_cli(cli, "robust", str(ck), "--norm", "2", "--split", "test", "--subset", "12",
                "--steps", "4", "--attack-steps", "20", "--restarts", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    model = mc.Model.from_safetensors(ck)
    data = mc.load_data(split="test", binary=(0, 1), subset=12)
    rep = mc.robust(model, data, norm="2", steps=4, restarts=1)
    cli_rep = json.loads((out / "robust.json").read_text())
    assert json.loads(rep.to_json()) == cli_rep
    assert list(rep.certified) == [e["certified"] for e in cli_rep["examples"]]
    assert rep.verify(model, data).ok and mc.verify(rep, model, *data).ok
    assert (rep.certified <= rep.attack).all() and rep.margins.shape == (12, 2)
