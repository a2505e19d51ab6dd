"""Helpers shared by the benchmarks: timed subprocesses with peak RSS, fixtures, report sections."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


@dataclass(frozen=True)
class Config:
    """What one run of ``run.py`` was asked for; the sections size themselves from it."""

    quick: bool
    repeat: int
    work: Path  # a fresh temp folder for generated data, removed at the end


@dataclass
class Sample:
    seconds: float
    peak_rss: int  # bytes, the process and its children


@dataclass(frozen=True)
class Stats:
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        return cls(statistics.median(values), min(values), max(values))

    def fmt(self, digits: int = 2) -> str:
        return f"{self.median:.{digits}f} ({self.min:.{digits}f}–{self.max:.{digits}f})"


@dataclass
class Section:
    """One benchmark's part of the report: a paragraph, then one table."""

    title: str
    about: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # measured facts that explain the table

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", self.about, "", "| " + " | ".join(self.columns) + " |",
                 "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines) + "\n"


def summarize(samples: list[Sample]) -> dict[str, float]:
    """Seconds (median, min, max) and the largest peak RSS in MiB (used by modelscope_bench.py)."""
    seconds = Stats.of([s.seconds for s in samples])
    return {"median": seconds.median, "min": seconds.min, "max": seconds.max,
            "rss_mib": max(s.peak_rss for s in samples) / MiB}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "**MISS**"


def run_measured(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Sample:
    """Run ``cmd``; wall time and peak RSS (polled every 10 ms over the process tree)."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd or REPO_ROOT,
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
    assert process.stderr is not None
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {process.stderr.read().decode()[-2000:]}")
    return Sample(seconds, peak)


def provision_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "provision", *args]


def make_files(root: Path, count: int, size: int) -> None:
    """``count`` files of ``size`` bytes with distinct, cheap pseudo-random content, and a config.json."""
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(MiB)
    for i in range(count):
        salt = hashlib.sha256(str(i).encode()).digest()  # makes each file's content (and digest) distinct
        with (root / f"shard-{i:05d}.safetensors").open("wb") as out:
            written = 0
            while written < size:
                chunk = (salt + block)[: min(size - written, MiB)]
                out.write(chunk)
                written += len(chunk)
    (root / "config.json").write_text('{"hidden_size": 64}')


def make_sparse(root: Path, size: int) -> None:
    """One ``size``-byte shard of zeros, sparse: instant to create, full cost to send and hash."""
    root.mkdir(parents=True)
    with (root / "model.safetensors").open("wb") as out:
        out.truncate(size)
    (root / "config.json").write_text('{"hidden_size": 64}')


def start_server(module: str, root: Path, repo: str) -> tuple[subprocess.Popen[str], str]:
    """Run a fake hub's CLI (``python -m tests.fakes.X --root --repo``) as its own process; its URL."""
    process = subprocess.Popen([sys.executable, "-m", module, "--root", str(root), "--repo", repo],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http"):
        process.kill()
        raise RuntimeError(f"{module} did not start: {url!r}")
    return process, url


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def machine() -> str:
    mem = psutil.virtual_memory().total / (1 << 30)
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {psutil.cpu_count()} logical cores, {mem:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}; load average at start: {load}")
