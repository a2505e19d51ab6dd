"""Run the real ``provision`` CLI in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``provision ARGS`` with the test's environment (plus ``env``, which may set COLUMNS; else
    200); never raises on exit codes."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "provision", *map(str, args)],
        check=False,
        env=full_env,
        cwd=cwd or REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def start_cli(
    *args: str | os.PathLike[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[str]:
    """Start ``provision ARGS`` in the background (e.g. to kill it mid-download)."""
    full_env = {**os.environ, **(env or {}), "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "provision", *map(str, args)],
        env=full_env,
        cwd=cwd or REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
