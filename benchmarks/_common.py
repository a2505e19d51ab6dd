"""Helpers shared by the benchmarks: timed subprocesses with peak RSS, fixtures, report sections."""

from __future__ import annotations

import compileall
import functools
import hashlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
GNU_TIME = "/usr/bin/time"  # Debian's `time` package; reports a command's peak RSS
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
    peak_rss: int  # bytes: the client's high-water mark (its largest descendant's, if larger)
    stdout: str = ""


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
        lines = [
            f"## {self.title}",
            "",
            self.about,
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "---|" * len(self.columns),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines) + "\n"


def replace_section(report: Path, section: Section) -> None:
    """Print ``section`` and put it in REPORT.md in place of its previous version (or at the end), others untouched."""
    markdown = section.markdown()
    print(markdown)
    text = report.read_text() if report.exists() else ""
    title = markdown.splitlines()[0]
    if title in text:
        before, _, after = text.partition(title)
        rest = after.split("\n## ", 1)
        text = before + markdown + ("\n## " + rest[1] if len(rest) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + markdown
    report.write_text(text)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "**MISS**"


def run_measured(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Sample:
    """Run ``cmd``; its wall time, peak RSS and stdout.

    Peak RSS is the kernel's own high-water mark (``ru_maxrss``), read by GNU time: exact, and
    free. Polling ``/proc`` took CPU from the client being measured (more from one that uses both
    cores than from one that uses one); reading ``ru_maxrss`` here would count the forked
    benchmark process (~30 MiB) that execs the client.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".rss") as rss,
    ):
        started = time.perf_counter()
        process = subprocess.run(
            [GNU_TIME, "-f", "%M", "-o", rss.name, *cmd],
            env={**os.environ, **(env or {})},
            cwd=cwd or REPO_ROOT,
            stdout=out,
            stderr=err,
            check=False,
        )
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:4])} failed: {err.read().decode(errors='replace')[-2000:]}")
        return Sample(seconds, int(rss.read().split()[-1]) * 1024, out.read().decode(errors="replace"))


MS_SDK = (
    "import sys, modelscope; modelscope.snapshot_download(sys.argv[1], local_dir=sys.argv[2], endpoint=sys.argv[3])"
)
_SETTINGS_KEY = {"hf": "huggingface", "ms": "modelscope"}


def one_model_manifest(folder: Path, scheme: str, endpoint: str, repo: str) -> Path:
    """``folder/bench.yaml``: model ``bench`` from ``scheme://repo`` at ``endpoint``, under ``models/``."""
    path = folder / "bench.yaml"
    path.write_text(
        f"version: 1\nsettings: {{models_dir: models, {_SETTINGS_KEY[scheme]}: {{endpoint: '{endpoint}'}}}}\n"
        f"models:\n  bench: {{source: '{scheme}://{repo}'}}\n"
    )
    return path


def provision_cmd(*args: str) -> list[str]:
    """``python -m provision ARGS``, run as an installed provision runs: from bytecode."""
    _compile_provision()
    return [sys.executable, "-m", "provision", *args]


@functools.cache
def _compile_provision() -> None:
    # `pip install` compiles a package's bytecode, as it did the hub clients' being compared; an
    # editable checkout under PYTHONDONTWRITEBYTECODE=1 (as on these machines) would compile
    # provision's ~50 modules from source on every run instead (0.05-0.1 s of a 0.6 s apply here).
    compileall.compile_dir(REPO_ROOT / "provision", quiet=1)


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


def start_server(module: str, root: Path, repo: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """Run a fake hub's CLI (``python -m tests.fakes.X --root --repo [extra]``) as its own process; its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--root", str(root), "--repo", repo, *extra],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
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
    return (
        f"{cpu}, {psutil.cpu_count()} logical cores, {mem:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; load average at start: {load}"
    )
