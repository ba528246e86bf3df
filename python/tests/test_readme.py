"""The README's Python example runs as written (it needs torch: skipped without it)."""

from __future__ import annotations

import re

import pytest

from conftest import REPO


def test_readme_python_example_runs() -> None:
    pytest.importorskip("torch", reason="torch is not installed: the README example uses it")
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    scope: dict = {}
    exec(compile(code.group(1), "README.md", "exec"), scope)
    cert = scope["cert"]
    assert cert.examples == 100 and scope["radii"].shape == (100,)
    history = scope["history"]
    history.step(0)
    assert len(history) == 1 and history[0]["examples"] == 100
