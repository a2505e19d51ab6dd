"""Run every benchmark side by side and write one Markdown report with a plot.

    python benchmarks/run.py [--quick] [--repeat N] [--out benchmarks/REPORT.md]

Sections (each module's docstring says what it measures and how): download throughput and
peak RSS (bench_download.py), ranged downloads on a capped hub vs aria2c (bench_segments.py),
no-op apply, verify and resume (bench_files.py), CLI start-up and smoke-test overhead (bench_cli.py),
embedding throughput in-process vs transformers (bench_embed.py). Servers are the loopback fakes of
tests/fakes/; generated data lives in a temp folder, removed at the end. ``--quick`` shrinks every size
and runs once, to check the script itself; its numbers mean little.

Targets are read from the table as PASS/MISS; nothing here fails a build: the machines are
shared and noisy, so the report states the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, Config, machine

sys.path.insert(0, str(REPO_ROOT))  # the fakes are imported as tests.fakes.*

import bench_cli
import bench_download
import bench_embed
import bench_files
import bench_segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run: checks the script (< 3 min)")
    parser.add_argument("--repeat", type=int, help="runs per measurement (default 3; 1 with --quick)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "REPORT.md")
    args = parser.parse_args()
    os.environ.setdefault("NO_PROXY", "127.0.0.1")  # loopback servers only

    out: Path = args.out.resolve()
    work = Path(tempfile.mkdtemp(prefix="provision-bench-"))
    config = Config(quick=args.quick, repeat=args.repeat or (1 if args.quick else 3), work=work)
    header = machine()
    started = time.monotonic()
    try:
        rows = bench_download.measure(config)
        ranged = bench_segments.section(bench_segments.measure(config), config)
        sections = [
            bench_download.section(rows, config),
            ranged,
            *bench_files.sections(config),
            *bench_cli.sections(config),
            *bench_embed.sections(config),
        ]
        plot = out.with_suffix(".png")
        bench_download.plot(rows, plot)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    minutes = (time.monotonic() - started) / 60
    mode = "--quick" if config.quick else f"--repeat {config.repeat}"
    text = "\n".join(
        [
            "# provision benchmarks",
            "",
            f"`python benchmarks/run.py {mode}` on {time.strftime('%Y-%m-%d')}, {minutes:.1f} min.",
            "",
            (
                f"Machine: {header}. Every server is a loopback fake from `tests/fakes/` (Python, on the same cores as "
                "the client being measured), so absolute numbers are bounded by the fake; compare the rows with each "
                "other."
            ),
            "",
            f"![download throughput per client]({os.path.relpath(plot, out.parent)})",
            "",
            *(s.markdown() for s in sections),
        ]
    )
    out.write_text(text)
    print(text)
    print(f"wrote {out} and {plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
