"""Helpers shared by the benchmark scripts: timed subprocesses with peak RSS, fixtures, tables."""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sample:
    seconds: float
    peak_rss: int  # bytes, the process and its children


def run_measured(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Sample:
    """Run ``cmd``; wall time and peak RSS (polled every 10 ms over the process tree)."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    proc = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {process.stderr.read().decode()[-2000:]}")
    return Sample(seconds, peak)


def make_files(root: Path, count: int, size: int) -> dict[str, bytes]:
    """``count`` files of ``size`` bytes with distinct, cheap pseudo-random content."""
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)
    for i in range(count):
        path = root / f"shard-{i:05d}.safetensors"
        if path.exists() and path.stat().st_size == size:
            continue
        with path.open("wb") as out:
            salt = hashlib.sha256(str(i).encode()).digest()
            written = 0
            while written < size:
                chunk = (salt + block)[: min(size - written, 1 << 20)]
                out.write(chunk)
                written += len(chunk)
    (root / "config.json").write_text('{"hidden_size": 64}')
    return {}


def start_server(module: str, root: Path, repo: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, "-m", module, "--root", str(root), "--repo", repo],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http"):
        process.kill()
        raise RuntimeError(f"{module} did not start: {url!r}")
    return process, url


def summarize(samples: list[Sample]) -> dict[str, float]:
    seconds = [s.seconds for s in samples]
    return {
        "median": statistics.median(seconds),
        "min": min(seconds),
        "max": max(seconds),
        "rss_mib": max(s.peak_rss for s in samples) / (1 << 20),
    }


def machine() -> str:
    mem = psutil.virtual_memory().total / (1 << 30)
    return (f"{platform.machine()}, {psutil.cpu_count()} cores, {mem:.0f} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")
