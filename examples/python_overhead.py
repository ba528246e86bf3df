"""Overhead of the Python call over `margincert certify` on the same checkpoint and images.

    python examples/python_overhead.py [--runs 5] [--bin target/release/margincert]

For each case it times (median of `--runs`): the CLI process (`margincert certify ... --json`,
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


def median_time(f, runs: int) -> float:
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bin", default=str(REPO / "target" / "release" / "margincert"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    # The same worker count as the CLI's --threads (rayon reads it when its pool starts).
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    cases = [
        ("40 images, KKT", 40, []),
        ("1000 images, KKT", 1000, []),
        ("1000 images, no KKT", 1000, ["--no-kkt"]),
    ]
    print("| case | CLI process | Python call | Python end to end | call vs CLI | check |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "c.json"
        for label, n, flags in cases:
            cmd = [args.bin, "--threads", str(args.threads), "certify", str(CK), "--data",
                   "embedded", "--subset", str(n), "--out", str(out), *flags]
            cli = median_time(lambda: subprocess.run(cmd, check=True, capture_output=True), args.runs)
            model = margincert.Model.from_safetensors(CK)
            data = margincert.load_data("embedded", subset=n)
            kkt = "--no-kkt" not in flags
            call = median_time(lambda: margincert.certify(model, data, kkt=kkt), args.runs)

            def end_to_end() -> None:
                m = margincert.Model.from_safetensors(CK)
                d = margincert.load_data("embedded", subset=n)
                margincert.certify(m, d.images, d.labels, kkt=kkt, name=d.name)

            e2e = median_time(end_to_end, args.runs)
            same = json.loads(margincert.certify(model, data, kkt=kkt).to_json()) == json.loads(out.read_text())
            print(f"| {label} | {cli:.3f} s | {call:.3f} s | {e2e:.3f} s | "
                  f"{(call - cli) / cli * 100:+.1f}% | {'same certificate' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
