"""The tree passes scripts/check: ruff's rules and formatter, and mypy --strict (pyproject.toml)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # mypy from a cold cache: a minute or two
def test_scripts_check_passes() -> None:
    # This interpreter's ruff and mypy: the pinned ones of the test extra.
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "check")],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
        timeout=540,  # under the suite's per-test limit (600 s)
    )
    assert result.returncode == 0, result.stdout + result.stderr
