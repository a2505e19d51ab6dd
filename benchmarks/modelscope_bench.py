"""ModelScope download throughput, peak RSS and no-op cost, side by side in one run.

    python benchmarks/modelscope_bench.py [--repeat 3] [--files 5] [--size-mib 100] [--noop-gib 2]
                                          [--append benchmarks/NOTES-modelscope.md]

Serves the same files from the loopback ModelScope fake (``python -m tests.fakes.modelscope_hub``,
a separate process) and times: ``provision apply``, the modelscope SDK's ``snapshot_download``,
``curl -s -o`` once per file sequentially and with ``xargs -P5``. Peak RSS is measured twice:
``/usr/bin/time -v`` (the largest single process) and psutil polling (the whole process tree,
which matters for five parallel curls).

Then, for those files and for a ``--noop-gib`` model (sparse shards: cheap to create, real
bytes to hash), the model is applied once and the second call is timed for both: a no-op
``provision apply`` (reads the lock, stats the files) and ``snapshot_download`` into the same
folder (lists, then re-hashes every file).
Not a pass/fail test: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _common import REPO_ROOT, Sample, machine, make_files, start_server, summarize

REPO = "bench/model"
TIME = Path("/usr/bin/time")
SDK = ("import sys, modelscope; "
       "modelscope.snapshot_download(sys.argv[1], local_dir=sys.argv[2], endpoint=sys.argv[3])")


def measure(cmd: list[str], env: dict[str, str]) -> tuple[Sample, int | None]:
    """Wall time and psutil tree peak RSS; plus ``time -v``'s max RSS (bytes) when available."""
    with tempfile.NamedTemporaryFile(suffix=".time", delete=False) as handle:
        report = Path(handle.name)
    wrapped = [str(TIME), "-v", "-o", str(report), *cmd] if TIME.exists() else cmd
    started = time.perf_counter()
    process = subprocess.Popen(wrapped, env={**os.environ, **env}, cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            tree = root.children(recursive=True) if TIME.exists() else [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    max_rss = None
    if report.exists():
        for line in report.read_text().splitlines():
            if "Maximum resident set size" in line:
                max_rss = int(line.rsplit(":", 1)[1]) * 1024
        report.unlink()
    return Sample(seconds, peak), max_rss


def write_manifest(work: Path, url: str) -> Path:
    path = work / "bench.yaml"
    path.write_text(f"version: 1\nsettings: {{models_dir: models, modelscope: {{endpoint: '{url}'}}}}\n"
                    f"models:\n  bench: {{source: 'ms://{REPO}'}}\n")
    return path


def clean(work: Path) -> None:
    for name in ("models", "state", "sdk", "curl", "bench.lock.json", "ms-cache"):
        target = work / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def make_sparse(root: Path, gib: int) -> None:
    """``gib`` shards of 1 GiB each, sparse (zeros): instant to create, full cost to hash."""
    root.mkdir(parents=True)
    for i in range(gib):
        with (root / f"shard-{i:05d}.safetensors").open("wb") as out:
            out.truncate(1 << 30)
    (root / "config.json").write_text('{"hidden_size": 64}')


def throughput(args: argparse.Namespace, work: Path, env: dict[str, str]) -> list[str]:
    data = work / "data"
    make_files(data, args.files, args.size_mib << 20)
    server, url = start_server("tests.fakes.modelscope_hub", data, REPO)
    names = sorted(p.name for p in data.iterdir())
    total_mib = sum((data / n).stat().st_size for n in names) / (1 << 20)
    urls = [f"{url}/api/v1/models/{REPO}/repo?Revision=master&FilePath={n}" for n in names]
    pairs = "".join(f"{work / 'curl' / n} {u}\n" for n, u in zip(names, urls))
    clients = {
        "provision apply": lambda: [sys.executable, "-m", "provision", "apply", str(write_manifest(work, url))],
        "snapshot_download": lambda: [sys.executable, "-c", SDK, REPO, str(work / "sdk"), url],
        "curl -s -o, sequential": lambda: ["sh", "-c", " && ".join(
            f"curl -s -o {work / 'curl' / n} '{u}'" for n, u in zip(names, urls))],
        "curl -s -o, xargs -P5": lambda: ["sh", "-c", f"printf '{pairs}' | xargs -P5 -n2 curl -s -o"],
    }
    results: dict[str, list[tuple[Sample, int | None]]] = {k: [] for k in clients}
    try:
        for _ in range(args.repeat):
            for name, cmd in clients.items():
                clean(work)
                (work / "curl").mkdir()
                results[name].append(measure(cmd(), env))
        import_only = [measure([sys.executable, "-c", "import modelscope"], env)[0] for _ in range(3)]
    finally:
        server.kill()
    curl_best = min(summarize([s for s, _ in results[k]])["median"] for k in clients if k.startswith("curl"))
    lines = [
        f"### Download: {args.files} x {args.size_mib} MiB, {args.repeat} runs each",
        "",
        "| client | median s | min s | max s | MiB/s | vs best curl | peak RSS MiB (time -v) | tree RSS MiB (psutil) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        s = summarize([sample for sample, _ in runs])
        time_v = max((rss or 0) for _, rss in runs) / (1 << 20)
        lines.append(f"| {name} | {s['median']:.2f} | {s['min']:.2f} | {s['max']:.2f} | {total_mib / s['median']:.0f} "
                     f"| {curl_best / s['median']:.2f}x | {time_v:.0f} | {s['rss_mib']:.0f} |")
    lines += ["", (f"`python -c 'import modelscope'` alone: median {summarize(import_only)['median']:.2f} s "
                   "(included in the snapshot_download row).")]
    return lines


def second_call(args: argparse.Namespace, work: Path, env: dict[str, str], data: Path, label: str) -> str:
    """Apply ``data`` once, then time the second call of provision and of the SDK (same folder)."""
    clean(work)
    server, url = start_server("tests.fakes.modelscope_hub", data, REPO)
    manifest = write_manifest(work, url)
    folder = work / "models" / "bench"
    try:
        first, _ = measure([sys.executable, "-m", "provision", "apply", str(manifest)], env)
        again = [measure([sys.executable, "-m", "provision", "apply", str(manifest)], env)[0]
                 for _ in range(args.repeat)]
        sdk = [measure([sys.executable, "-c", SDK, REPO, str(folder), url], env)[0] for _ in range(args.repeat)]
    finally:
        server.kill()
        clean(work)
    p, s = summarize(again), summarize(sdk)
    return (f"| {label} | {first.seconds:.1f} | {p['median']:.3f} ({p['min']:.3f}-{p['max']:.3f}) "
            f"| {s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f}) |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--noop-gib", type=int, default=2)
    parser.add_argument("--append", type=Path, help="append the report to this Markdown file")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="provision-ms-bench-"))
    env = {"PROVISION_STATE_DIR": str(work / "state"), "MODELSCOPE_CACHE": str(work / "ms-cache"),
           "MODELSCOPE_HOME": str(work / "ms-home"), "NO_PROXY": "127.0.0.1"}
    try:
        lines = ["## modelscope", "", (f"Machine: {machine()}. Server: tests/fakes/modelscope_hub.py on loopback "
                                       "(a Python process on the same cores). Run: `python benchmarks/modelscope_bench.py`."),
                 "", *throughput(args, work, env), "",
                 "### Second call, files in place (process wall time, Python start-up included)", "",
                 "| model | first apply s | provision no-op median s (min-max) | snapshot_download median s (min-max) |",
                 "|---|---|---|---|"]
        lines.append(second_call(args, work, env, work / "data", f"{args.files} x {args.size_mib} MiB"))
        make_sparse(work / "big", args.noop_gib)
        lines.append(second_call(args, work, env, work / "big", f"{args.noop_gib} GiB (sparse shards)"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = "\n".join(lines) + "\n"
    print(report)
    if args.append:
        with args.append.open("a", encoding="utf-8") as out:
            out.write(("\n" if args.append.stat().st_size else "") + report)


if __name__ == "__main__":
    main()
