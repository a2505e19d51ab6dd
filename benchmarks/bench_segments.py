"""Ranged downloads on a hub that caps each connection, as mirrors and cross-border links do.

The Hugging Face fake (its own process, serving a folder from disk) runs three times: with every
response's body capped at ``CAP`` bytes per second (``--throttle-bps``: per connection, so more
connections go faster); uncapped; and capped with one slow connection per file (``--slow-range``:
the range that starts at the file's middle, a boundary for provision and aria2c alike, at ``SLOW``
bytes per second, as a congested path or a busy mirror node gives one connection; no target, and
only the clients that split a file). For each shape (one 256 MiB file; 4 x 64 MiB) every repeat
runs, one after another into an empty folder:

- ``provision apply --json`` (default settings; on the capped hub also with
  ``max_connections_per_host`` 4, 8 and 16, the measurement behind the default of 32; and with
  1, one stream that is never split, for the single file on both hubs, beside curl);
- ``aria2c -x4 -s4 -j5 -k1M`` from an input file, as hf-mirror's ``hfd.sh`` runs it;
- ``aria2c -x16 -s16 -j5 -k1M``: aria2c's most connections per file;
- ``curl``, files one after another on one connection;
- ``huggingface_hub.snapshot_download`` (plain HTTP, Xet off; 8 files at once, one connection each);
- the start-up floor, ``python -c "import click, http.client, ssl, yaml; from pydantic import
  BaseModel"``: what a Python hub client driven by a typed manifest pays before its first byte.
  Added to the least time the bytes can take (curl's, uncapped; 32 connections at the cap, capped)
  it bounds the wall-time ratio any such client can reach on transfers this short.

Times are process wall times (interpreter start-up included); "in-process s" is provision's
own apply phase (``apply --json``'s ``seconds``), without start-up and imports. Peak RSS is
the kernel's high-water mark (GNU time). Targets (issue 16): capped, provision ≥ 1.0x aria2c-hfd on both
shapes and ≥ 3x curl on the single file; uncapped ≥ 0.8x curl; RSS ≤ 100 MiB.

    python benchmarks/bench_segments.py [--repeat N] [--quick]   # replaces its section of REPORT.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import (
    REPO_ROOT,
    Config,
    MiB,
    Sample,
    Section,
    Stats,
    machine,
    make_files,
    one_model_manifest,
    provision_cmd,
    replace_section,
    run_measured,
    start_server,
    verdict,
)

from provision.hosts import DEFAULT_CONNECTIONS_PER_HOST

REPO = "bench/model"
CAP = 16 * MiB  # bytes per second per connection, the capped hub
SLOW = 2 * MiB  # the one slow connection's rate on the third hub
CAPPED_HUB = f"capped {CAP // MiB} MiB/s per connection"
UNCAPPED_HUB = "uncapped"
SLOW_HUB = f"capped, and the range from each file's middle at {SLOW // MiB} MiB/s"
HF_SDK = (
    "import sys; from huggingface_hub import snapshot_download; "
    "snapshot_download(sys.argv[1], local_dir=sys.argv[2], endpoint=sys.argv[3], token=False)"
)
PROVISION = "provision apply"
HFD = "aria2c -x4 -s4 -j5 -k1M (hfd.sh)"
ARIA16 = "aria2c -x16 -s16"
CURL = "curl (one connection)"
# What any Python CLI on provision's stack pays before its first byte: the interpreter and the
# imports no manifest-driven hub client can skip (``import pydantic`` alone is lazy: a model
# class costs pydantic.main and its validators too).
FLOOR = "start-up floor: python importing click, yaml, http.client, ssl, pydantic.BaseModel (no transfer)"
FLOOR_CMD = [sys.executable, "-c", "import click, http.client, ssl, yaml; from pydantic import BaseModel"]


@dataclass(frozen=True)
class Row:
    hub: str
    shape: str
    client: str
    seconds: Stats
    rss_mib: float
    in_process: Stats | None  # provision only: the apply phase, from ``apply --json``
    payload: int  # bytes the shape transfers


def shapes(quick: bool) -> list[tuple[int, int]]:
    return [(1, 64 * MiB), (4, 16 * MiB)] if quick else [(1, 256 * MiB), (4, 64 * MiB)]


def aria2c(work: Path, url: str, names: list[str], per_file: int) -> list[str]:
    """aria2c as hfd.sh runs it: an input file of URLs with their output names, -j5 files at once."""
    listing = work / f"aria2-{per_file}.txt"
    listing.write_text("".join(f"{url}/{REPO}/resolve/main/{n}\n  dir={work / 'out'}\n  out={n}\n" for n in names))
    return [
        "aria2c",
        "--console-log-level=error",
        "--file-allocation=none",
        "--summary-interval=0",
        f"-x{per_file}",
        f"-s{per_file}",
        "-k1M",
        "-j5",
        "-i",
        str(listing),
    ]


def clients(work: Path, url: str, names: list[str], *, hub: str) -> dict[str, list[str]]:
    commands = {PROVISION: provision_cmd("apply", str(one_model_manifest(work, "hf", url, REPO)), "--json")}
    if hub == SLOW_HUB:  # the clients that split a file, beside the floor
        return commands | {HFD: aria2c(work, url, names, 4), ARIA16: aria2c(work, url, names, 16), FLOOR: FLOOR_CMD}
    capped = hub == CAPPED_HUB
    # the default's measurement (capped), and one connection: one stream never split, next to curl
    counts = ((1, 4, 8, 16) if capped else (1,)) if len(names) == 1 else ((4, 8, 16) if capped else ())
    for connections in counts:
        manifest = work / f"bench-{connections}.yaml"
        manifest.write_text(
            one_model_manifest(work, "hf", url, REPO)
            .read_text()
            .replace("models_dir: models,", f"models_dir: models, max_connections_per_host: {connections},")
        )
        label = f"{connections} connection" + ("s" if connections > 1 else "")
        commands[f"{PROVISION}, {label} per host"] = provision_cmd("apply", str(manifest), "--json")
    outputs = [arg for n in names for arg in ("-o", str(work / "out" / n), f"{url}/{REPO}/resolve/main/{n}")]
    commands |= {
        HFD: aria2c(work, url, names, 4),
        ARIA16: aria2c(work, url, names, 16),
        CURL: ["curl", "-sSf", *outputs],
        "huggingface_hub.snapshot_download": [sys.executable, "-c", HF_SDK, REPO, str(work / "out"), url],
    }
    commands[FLOOR] = FLOOR_CMD
    return commands


def clean(work: Path) -> None:
    for name in ("models", "out", "state", "home"):
        shutil.rmtree(work / name, ignore_errors=True)
    for lock in work.glob("*.lock.json"):
        lock.unlink()
    (work / "out").mkdir()


def measure(config: Config) -> list[Row]:
    rows = []
    for count, size in shapes(config.quick):
        shape = "one 256 MiB file" if count == 1 and not config.quick else f"{count} x {size // MiB} MiB"
        data = config.work / "segments-data"
        make_files(data, count, size)
        (data / "config.json").unlink()  # only the shape's files, for every client alike
        names = sorted(p.name for p in data.iterdir())
        for hub in (CAPPED_HUB, UNCAPPED_HUB, SLOW_HUB):
            work = config.work / "segments"
            work.mkdir(exist_ok=True)
            env = {
                "PROVISION_STATE_DIR": str(work / "state"),
                "HF_HUB_DISABLE_XET": "1",
                "HF_HOME": str(work / "home"),
                "NO_PROXY": "127.0.0.1",
                "no_proxy": "127.0.0.1",
            }
            extra = ("--throttle-bps", str(CAP)) if hub != UNCAPPED_HUB else ()
            if hub == SLOW_HUB:  # a range boundary of provision's plan and of aria2c's -s4 and -s16
                extra += ("--slow-range", f"{size // 2}:{SLOW}")
            server, url = start_server("tests.fakes.hf_hub", data, REPO, *extra)
            try:
                commands = clients(work, url, names, hub=hub)
                samples: dict[str, list[Sample]] = {name: [] for name in commands}
                for _ in range(config.repeat):  # interleaved, so a noisy moment hits every client alike
                    for name, cmd in commands.items():
                        clean(work)
                        samples[name].append(run_measured(cmd, env=env))
                        if name.startswith(PROVISION):
                            assert json.loads(samples[name][-1].stdout)["ok"], samples[name][-1].stdout
            finally:
                server.kill()
                server.wait()
            rows += [
                Row(
                    hub,
                    shape,
                    name,
                    Stats.of([s.seconds for s in runs]),
                    max(s.peak_rss for s in runs) / MiB,
                    Stats.of([json.loads(s.stdout)["seconds"] for s in runs]) if name.startswith(PROVISION) else None,
                    count * size,
                )
                for name, runs in samples.items()
            ]
            shutil.rmtree(work)
        shutil.rmtree(data)
    return rows


def section(rows: list[Row], config: Config) -> Section:
    out = Section(
        "Ranged downloads on a capped hub (issue 16)",
        __doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0].strip()
        + f"\n\n{config.repeat} run(s) per client; median (min–max) seconds.",
        [
            "hub",
            "shape",
            "client",
            "seconds",
            "in-process s",
            "vs aria2c-hfd",
            "vs curl",
            "peak RSS MiB",
            "target",
            "verdict",
        ],
    )
    for row in rows:
        group = {r.client: r for r in rows if (r.hub, r.shape) == (row.hub, row.shape)}
        transfers = row.client != FLOOR
        vs_hfd = group[HFD].seconds.median / row.seconds.median if HFD in group and transfers else None
        vs_curl = group[CURL].seconds.median / row.seconds.median if transfers and CURL in group else None
        target, result = "", "—"
        if row.client == PROVISION and row.hub != SLOW_HUB:  # the targets are for its two hubs
            capped = row.hub == CAPPED_HUB
            checks = [("RSS", row.rss_mib <= 100)]
            if capped:
                checks.append(("aria2c-hfd", vs_hfd is not None and vs_hfd >= 1.0))
                if row.shape.startswith("one"):
                    checks.append(("curl", vs_curl is not None and vs_curl >= 3.0))
                target = "≥ 1.0x hfd" + (", ≥ 3x curl" if row.shape.startswith("one") else "") + ", ≤ 100 MiB"
            else:
                checks.append(("curl", vs_curl is not None and vs_curl >= 0.8))
                target = "≥ 0.8x curl, ≤ 100 MiB"
            misses = [what for what, ok in checks if not ok]
            result = verdict(not misses) + (f" ({', '.join(misses)})" if misses else "")
        if row.client == PROVISION and row.in_process and CURL in group:
            out.notes.append(
                f"{row.hub}, {row.shape}: provision's start-up and exit took "
                f"{row.seconds.median - row.in_process.median:.2f} s of its {row.seconds.median:.2f} s; its apply "
                f"phase alone is {group[HFD].seconds.median / row.in_process.median:.2f}x aria2c-hfd's wall time "
                f"and {group[CURL].seconds.median / row.in_process.median:.2f}x curl's (both start in milliseconds)."
            )
        floor = group.get(FLOOR)
        if row.client == PROVISION and floor and row.hub != SLOW_HUB:
            out.notes.append(_bound(row, group, floor.seconds.median))
        single = group.get(f"{PROVISION}, 1 connection per host")
        if row.client == CURL and single and single.in_process:
            out.notes.append(
                f"{row.hub}, {row.shape}: one connection (one stream, never split) spent "
                f"{single.in_process.median:.2f} s in its apply phase against curl's {row.seconds.median:.2f} s "
                f"wall ({row.seconds.median / single.in_process.median:.2f}x); the rest of its "
                f"{single.seconds.median:.2f} s wall time is start-up, not the transfer."
            )
        out.rows.append(
            [
                row.hub,
                row.shape,
                row.client,
                row.seconds.fmt(),
                row.in_process.fmt() if row.in_process else "",
                f"{vs_hfd:.2f}x" if vs_hfd else "",
                f"{vs_curl:.2f}x" if vs_curl else "",
                f"{row.rss_mib:.0f}",
                target,
                result,
            ]
        )
    return out


def _bound(row: Row, group: dict[str, Row], floor: float) -> str:
    """The best wall time any Python client on provision's stack could have here: the floor plus
    the least time the bytes can take (curl's, uncapped; every default connection at the cap, capped)."""
    if row.hub == CAPPED_HUB:
        transfer, than = row.payload / (DEFAULT_CONNECTIONS_PER_HOST * CAP), HFD
        how = f"{DEFAULT_CONNECTIONS_PER_HOST} connections at the cap need {transfer:.2f} s for the bytes"
    else:
        transfer, than = group[CURL].seconds.median, CURL
        how = f"a transfer as fast as curl's takes {transfer:.2f} s"
    best, theirs = floor + transfer, group[than].seconds.median
    return (
        f"{row.hub}, {row.shape}: bound: a Python client on this stack pays {floor:.2f} s before its first "
        f"byte (the floor row) and {how}, so none can finish in under {best:.2f} s: at most "
        f"{theirs / best:.2f}x {than} (provision: {theirs / row.seconds.median:.2f}x)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "REPORT.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="provision-bench-segments-"))
    started, header = time.monotonic(), machine()
    startup = min(run_measured([sys.executable, "-c", "pass"]).seconds for _ in range(3))
    try:
        config = Config(quick=args.quick, repeat=args.repeat, work=work)
        result = section(measure(config), config)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.notes.insert(
        0,
        f"`python benchmarks/bench_segments.py --repeat {args.repeat}` on "
        f"{time.strftime('%Y-%m-%d')}, {(time.monotonic() - started) / 60:.1f} min; {header}; "
        f"`python -c pass` took {startup:.2f} s at the start (a quiet machine: ~0.02 s).",
    )
    replace_section(args.out, result)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    main()
