"""Helpers shared by the `provision apply` tests against the hub fakes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any


def payload(n: int, seed: int) -> bytes:
    """``n`` deterministic bytes that differ per ``seed`` (so a mix-up is visible)."""
    block = hashlib.sha256(str(seed).encode()).digest()
    return block * (n // 32) + block[: n % 32]


def lock_of(manifest: Path) -> dict[str, Any]:
    """The lock file written beside ``manifest``."""
    return json.loads(manifest.with_name(manifest.name.rsplit(".", 1)[0] + ".lock.json").read_text())


def kill_when_partial(process: subprocess.Popen[str], partial_dir: Path, *, at_least: int,
                      timeout: float = 30) -> int:
    """SIGKILL ``process`` once a ``.part`` file under ``partial_dir`` holds ``at_least`` bytes;
    returns how many bytes that partial file kept."""
    parts: list[Path] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = list(partial_dir.glob("*.part")) if partial_dir.exists() else []
        if parts and parts[0].stat().st_size > at_least:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert parts, f"no partial file appeared under {partial_dir} within {timeout} s"
    return parts[0].stat().st_size
