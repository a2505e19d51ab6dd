"""Download throughput, peak RSS, no-op apply and start-up time, side by side in one run.

    python benchmarks/download_hf.py [--repeat 3] [--files 5] [--size-mib 100] [--out benchmarks/REPORT-hf.md]

Serves the same files from the loopback Hugging Face fake (tests/fakes/hf_hub.py, run as a
separate process) and, in one run, times: ``provision apply``, huggingface_hub's
``snapshot_download`` (plain HTTP, Xet disabled), and ``curl`` (one process fetching every
file sequentially, and one process per file in parallel). Not a pass/fail test: the machines
are shared and noisy; read the ratios.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO_ROOT, Sample, machine, make_files, run_measured, start_server, summarize

REPO = "bench/model"


def manifest(work: Path, url: str) -> Path:
    path = work / "bench.yaml"
    path.write_text(f"version: 1\nsettings: {{models_dir: models, huggingface: {{endpoint: '{url}'}}}}\n"
                    f"models:\n  bench: {{source: 'hf://{REPO}'}}\n")
    return path


def clean(work: Path) -> None:
    for name in ("models", "state", "hf", "curl", "bench.lock.json"):
        target = work / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="provision-bench-"))
    data = work / "data"
    make_files(data, args.files, args.size_mib << 20)
    server, url = start_server("tests.fakes.hf_hub", data, REPO)
    names = sorted(p.name for p in data.iterdir())
    total = sum((data / n).stat().st_size for n in names)
    env = {"PROVISION_STATE_DIR": str(work / "state"), "HF_HUB_DISABLE_XET": "1",
           "HF_HOME": str(work / "hf-home"), "NO_PROXY": "127.0.0.1"}
    results: dict[str, list[Sample]] = {k: [] for k in
                                        ("provision apply", "snapshot_download", "curl (sequential)",
                                         "curl (parallel)")}
    noop: list[Sample] = []
    try:
        for _ in range(args.repeat):
            clean(work)
            m = manifest(work, url)
            results["provision apply"].append(
                run_measured([sys.executable, "-m", "provision", "apply", str(m)], env=env, cwd=REPO_ROOT))
            noop.append(run_measured([sys.executable, "-m", "provision", "apply", str(m)], env=env, cwd=REPO_ROOT))
            clean(work)
            results["snapshot_download"].append(run_measured(
                [sys.executable, "-c",
                 "import sys; from huggingface_hub import snapshot_download; "
                 f"snapshot_download('{REPO}', local_dir=sys.argv[1], endpoint='{url}', token=False)",
                 str(work / "hf")], env=env))
            clean(work)
            (work / "curl").mkdir()
            urls = [f"{url}/{REPO}/resolve/main/{n}" for n in names]
            seq = ["curl", "-sf"]
            for n, u in zip(names, urls):
                seq += ["-o", str(work / "curl" / n), u]
            results["curl (sequential)"].append(run_measured(seq))
            clean(work)
            (work / "curl").mkdir()
            par = ["curl", "-sf", "-Z", "--parallel-max", "8"]
            for n, u in zip(names, urls):
                par += ["-o", str(work / "curl" / n), u]
            results["curl (parallel)"].append(run_measured(par))
        help_times = {
            "provision --help": [run_measured([sys.executable, "-m", "provision", "--help"]) for _ in range(5)],
            "hf --help": [run_measured(["hf", "--help"]) for _ in range(5)],
        }
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)

    mib = total / (1 << 20)
    curl_best = min(summarize(results["curl (sequential)"])["median"], summarize(results["curl (parallel)"])["median"])
    lines = [
        f"## Hugging Face download: {args.files} x {args.size_mib} MiB, {args.repeat} runs",
        "",
        f"Machine: {machine()}. Server: tests/fakes/hf_hub.py on loopback (a Python process on the same cores).",
        "",
        "| client | median s | min s | max s | MiB/s (median) | vs best curl | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, samples in results.items():
        s = summarize(samples)
        lines.append(f"| {name} | {s['median']:.2f} | {s['min']:.2f} | {s['max']:.2f} | {mib / s['median']:.0f} | "
                     f"{curl_best / s['median']:.2f}x | {s['rss_mib']:.0f} |")
    p, h = summarize(results["provision apply"]), summarize(results["snapshot_download"])
    n = summarize(noop)
    lines += [
        "",
        f"provision vs snapshot_download: {h['median'] / p['median']:.2f}x faster.",
        f"No-op `provision apply` (lock present, files in place): median {n['median']:.3f} s "
        f"(min {n['min']:.3f}, max {n['max']:.3f}); process wall time including Python start-up.",
        "",
        "| start-up | median s | min s |",
        "|---|---|---|",
    ]
    for name, samples in help_times.items():
        s = summarize(samples)
        lines.append(f"| `{name}` | {s['median']:.3f} | {s['min']:.3f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
