"""Losses far below 1e-308 survive as exact decimals with a log10 enclosure; `watch` makes
a table without writing files; KeyboardInterrupt during a long certify returns control."""

from __future__ import annotations

import os
import signal
import time
from decimal import Decimal

import numpy as np
import pytest

import margincert as mc
from conftest import EXPECTED


def scaled_linear(factor: float) -> mc.Model:
    """The linear fixture with its weights multiplied by `factor` (margins scale with it)."""
    base = mc.Model.from_safetensors(EXPECTED / "linear-last.safetensors")
    w = base.state_dict()["1.weight"] * np.float32(factor)
    return mc.Model.from_arrays(base.spec, {"1.weight": w})


def test_losses_below_f64_range_survive() -> None:
    model = scaled_linear(2.0**12)
    cert = mc.certify(model, mc.load_data(binary=(0, 1), subset=40), loss="logistic")
    lo, hi = cert.loss
    assert isinstance(lo, Decimal) and 0 < lo <= hi < Decimal("1e-308")
    assert float(hi) == 0.0  # what a float would have made of it
    l10 = cert.loss_log10
    assert l10[1] < -308
    # The log10 enclosure and the decimals agree.
    assert Decimal(10) ** Decimal(l10[0] - 1e-9) <= lo and hi <= Decimal(10) ** Decimal(l10[1] + 1e-9)
    assert cert.loss_str == (str(cert.to_dict()["loss"]["lower"]), str(cert.to_dict()["loss"]["upper"]))


def test_watch_records_rows_at_the_chosen_steps(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = mc.Model.from_safetensors(EXPECTED / "linear-last.safetensors")
    x, y = mc.load_data(binary=(0, 1), subset=20)
    w = mc.watch(model, (x, y), every=2, at=[3], loss="logistic")
    for epoch in range(5):
        w.step(epoch)
    assert [r["step"] for r in w] == [0, 2, 3, 4]
    row = w[0]
    cert = mc.certify(model, x, y, loss="logistic", kkt=False, name="watch")
    assert (row["q_min_lo"], row["q_min_hi"]) == cert.q_min
    assert (row["normalized_margin_lo"], row["normalized_margin_hi"]) == cert.normalized_margin
    assert (row["loss_log10_lo"], row["loss_log10_hi"]) == cert.loss_log10
    assert row["loss_lower"] == cert.loss_str[0] and row["examples"] == 20
    assert os.listdir(tmp_path) == []  # no file written


def test_keyboard_interrupt_returns_control() -> None:
    # A call of seconds: the double-double pass on the 1,000 embedded images (5.8 s on the
    # loaded 2-core dev machine). Its worker thread finishes in the background.
    model = mc.Model.from_safetensors(EXPECTED / "tiny-cnn-last.safetensors")
    data = mc.load_data()
    fired = []

    def handler(signum, frame):
        fired.append(time.perf_counter())
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, handler)
    try:
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            # Repeated so that a fast machine is still inside a call when the alarm fires.
            for _ in range(100):
                mc.certify(model, data, precision_mode="dd", kkt=False)
        back = time.perf_counter()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert fired, "the alarm did not fire"
    # Control came back right after the signal (0.2 s), not when the computation ended: a
    # call that held on to the interpreter would run its handler only after seconds. (The
    # handler's own time is no guide: Python runs it when it gets control back.)
    assert back - start < 0.8, back - start
    # The module still works after an interrupted call.
    small = mc.certify(model, mc.load_data(subset=5), kkt=False)
    assert small.examples == 5
