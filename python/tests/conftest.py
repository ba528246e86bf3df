"""Shared fixtures of the Python tests: paths in the repository and the CLI binary."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPECTED = REPO / "fixtures" / "expected"
IMPORT = REPO / "fixtures" / "import"


def cli_binary() -> Optional[Path]:
    """The margincert CLI: $MARGINCERT_BIN, else the repository's release or debug build,
    else `margincert` on the PATH."""
    env = os.environ.get("MARGINCERT_BIN")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    for profile in ("release", "debug"):
        p = target / profile / "margincert"
        if p.is_file():
            return p
    found = shutil.which("margincert")
    return Path(found) if found else None


@pytest.fixture
def cli() -> Path:
    p = cli_binary()
    if p is None:
        pytest.skip("no margincert binary: build it with `cargo build` (or set MARGINCERT_BIN)")
    return p
