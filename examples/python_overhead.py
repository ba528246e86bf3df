"""Overhead of the Python call over `margincert certify` on the same checkpoint and images.

    python examples/python_overhead.py [--runs 5] [--bin target/release/margincert]

For each case it times (median and minimum of `--runs`, interleaved): the CLI process (`margincert certify ... --json`,
whole process: start, reading, certify, writing), the Python `certify` call alone, and the
Python path end to end (model file read + data arrays + call), and checks that both give the
same certificate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import margincert

REPO = Path(__file__).resolve().parents[1]
CK = REPO / "fixtures" / "expected" / "tiny-cnn-last.safetensors"


def timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--bin", default=str(REPO / "target" / "release" / "margincert"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    # The same worker count as the CLI's --threads (rayon reads it when its pool starts).
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    cases = [
        ("5 images, no KKT", 5, ["--no-kkt"]),
        ("40 images, KKT", 40, []),
        ("1000 images, no KKT", 1000, ["--no-kkt"]),
        ("1000 images, KKT", 1000, []),
    ]
    print("| case | CLI process | Python call | Python end to end | call - CLI | check |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "c.json"
        for label, n, flags in cases:
            cmd = [args.bin, "--threads", str(args.threads), "certify", str(CK), "--data",
                   "embedded", "--subset", str(n), "--out", str(out), *flags]
            kkt = "--no-kkt" not in flags
            model = margincert.Model.from_safetensors(CK)
            data = margincert.load_data("embedded", subset=n)

            def end_to_end() -> None:
                m = margincert.Model.from_safetensors(CK)
                d = margincert.load_data("embedded", subset=n)
                margincert.certify(m, d.images, d.labels, kkt=kkt, name=d.name)

            # Interleaved, so that the three see the same load on a shared machine.
            times: dict = {"cli": [], "call": [], "e2e": []}
            for _ in range(args.runs):
                times["cli"].append(timed(lambda: subprocess.run(cmd, check=True, capture_output=True)))
                times["call"].append(timed(lambda: margincert.certify(model, data, kkt=kkt)))
                times["e2e"].append(timed(end_to_end))
            med = {k: statistics.median(v) for k, v in times.items()}
            best = {k: min(v) for k, v in times.items()}
            cert = margincert.certify(model, data, kkt=kkt)
            same = json.loads(cert.to_json()) == json.loads(out.read_text())
            print(
                f"| {label} | {med['cli']:.3f} s (min {best['cli']:.3f}) | {med['call']:.3f} s "
                f"(min {best['call']:.3f}) | {med['e2e']:.3f} s (min {best['e2e']:.3f}) | "
                f"{(med['call'] - med['cli']) * 1000:+.0f} ms (min {(best['call'] - best['cli']) * 1000:+.0f} ms) | "
                f"{'same certificate' if same else 'DIFFERENT'} |"
            )

if __name__ == "__main__":
    main()
