"""Download throughput and peak RSS: provision vs the hub's own client vs curl, same files.

For each hub fake (Hugging Face, ModelScope; each its own process, serving a folder from disk)
and each shape (shards of 512 MiB, as real checkpoints ship; the issue's 5 x 100 MiB; many
small files), every repeat runs, one after another into an empty folder:

- ``provision apply --json`` of a one-model manifest (``hf://`` or ``ms://``), lock removed first
  (the human summary instead of ``--json`` imports rich: about 20 ms more);
- the hub's client: ``huggingface_hub.snapshot_download`` (plain HTTP, Xet off) or
  ``modelscope.snapshot_download``;
- ``curl`` in one process, files one after another on one connection;
- ``curl -Z --parallel-max 8``: as parallel as provision, and the fake server's own ceiling.

Times are process wall times (interpreter start-up and imports included: what a user waits).
"in-process s" is provision's own apply phase (``apply --json``'s ``seconds``: listing, download,
hashing, placing, lock), without interpreter start-up, imports and manifest parsing. Peak RSS is
the kernel's high-water mark for the process (``wait4``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from _common import (
    MS_SDK,
    Config,
    MiB,
    Sample,
    Section,
    Stats,
    make_files,
    one_model_manifest,
    provision_cmd,
    run_measured,
    start_server,
    verdict,
)

REPO = "bench/model"
HF_SDK = (
    "import sys; from huggingface_hub import snapshot_download; "
    "snapshot_download(sys.argv[1], local_dir=sys.argv[2], endpoint=sys.argv[3], token=False)"
)


@dataclass(frozen=True)
class Hub:
    label: str
    module: str  # the fake's module, run with ``python -m``
    scheme: str
    sdk_label: str
    sdk_code: str

    def file_url(self, url: str, name: str) -> str:
        if self.scheme == "hf":
            return f"{url}/{REPO}/resolve/main/{name}"
        return f"{url}/api/v1/models/{REPO}/repo?Revision=master&FilePath={name}"


HUBS = (
    Hub("Hugging Face", "tests.fakes.hf_hub", "hf", "huggingface_hub.snapshot_download", HF_SDK),
    Hub("ModelScope", "tests.fakes.modelscope_hub", "ms", "modelscope.snapshot_download", MS_SDK),
)


@dataclass(frozen=True)
class Row:
    hub: str
    shape: str
    client: str
    seconds: Stats
    mib_s: Stats
    rss_mib: float
    in_process: Stats | None  # provision only: the apply phase, from ``apply --json``


def shapes(config: Config) -> list[tuple[int, int]]:
    """(file count, file size) pairs."""
    return [(5, 10 * MiB), (20, MiB)] if config.quick else [(4, 512 * MiB), (5, 100 * MiB), (200, MiB)]


def clients(hub: Hub, url: str, work: Path, names: list[str]) -> dict[str, list[str]]:
    manifest = one_model_manifest(work, hub.scheme, url, REPO)
    outputs = [arg for name in names for arg in ("-o", str(work / "out" / name), hub.file_url(url, name))]
    return {
        "provision apply": provision_cmd("apply", str(manifest), "--json"),
        hub.sdk_label: [sys.executable, "-c", hub.sdk_code, REPO, str(work / "out"), url],
        "curl, sequential": ["curl", "-sSf", *outputs],
        "curl -Z (8 parallel)": ["curl", "-sSf", "-Z", "--parallel-max", "8", *outputs],
    }


def clean(work: Path) -> None:
    for name in ("models", "out", "state", "home", "bench.lock.json"):
        target = work / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    (work / "out").mkdir()
    # Flush the previous client's writes (and the deletion) now, so that the kernel's
    # write-back of them does not land in the next client's measurement.
    os.sync()


def measure(config: Config) -> list[Row]:
    rows = []
    for count, size in shapes(config):
        shape = f"{count} x {size // MiB} MiB"
        data = config.work / "download-data"
        make_files(data, count, size)
        names = sorted(p.name for p in data.iterdir())
        total_mib = sum((data / n).stat().st_size for n in names) / MiB
        for hub in HUBS:
            work = config.work / "download"
            work.mkdir(exist_ok=True)
            env = {
                "PROVISION_STATE_DIR": str(work / "state"),
                "HF_HUB_DISABLE_XET": "1",
                "HF_HOME": str(work / "home"),
                "MODELSCOPE_CACHE": str(work / "home"),
                "NO_PROXY": "127.0.0.1",
                "no_proxy": "127.0.0.1",
            }
            server, url = start_server(hub.module, data, REPO)
            try:
                commands = clients(hub, url, work, names)
                samples: dict[str, list[Sample]] = {name: [] for name in commands}
                for _ in range(config.repeat):  # interleaved, so a noisy moment hits every client alike
                    for name, cmd in commands.items():
                        clean(work)
                        samples[name].append(run_measured(cmd, env=env))
            finally:
                server.kill()
                server.wait()
            for name, runs in samples.items():
                seconds = Stats.of([s.seconds for s in runs])
                mib_s = Stats.of([total_mib / s.seconds for s in runs])
                in_process = (
                    Stats.of([json.loads(s.stdout)["seconds"] for s in runs]) if name == "provision apply" else None
                )
                rows.append(
                    Row(hub.label, shape, name, seconds, mib_s, max(s.peak_rss for s in runs) / MiB, in_process)
                )
            shutil.rmtree(work)
        shutil.rmtree(data)
    return rows


def section(rows: list[Row], config: Config) -> Section:
    out = Section(
        "Download throughput and peak RSS",
        __doc__.split("\n\n", 1)[1].strip() + f"\n\n{config.repeat} run(s) per client; median (min–max).",
        [
            "hub",
            "shape",
            "client",
            "seconds",
            "MiB/s",
            "vs best curl (≥ 0.8x)",
            "vs hub client (≥ 2x)",
            "peak RSS MiB (≤ 100)",
            "in-process s",
            "verdict",
        ],
    )
    for row in rows:
        group = [r for r in rows if (r.hub, r.shape) == (row.hub, row.shape)]
        curl = min(r.seconds.median for r in group if r.client.startswith("curl"))
        sdk = next(r for r in group if r.client.endswith("snapshot_download"))
        vs_curl, vs_sdk = curl / row.seconds.median, sdk.seconds.median / row.seconds.median
        result = "—"
        if row.client == "provision apply":
            misses = [
                what
                for what, ok in (("curl", vs_curl >= 0.8), ("hub client", vs_sdk >= 2), ("RSS", row.rss_mib <= 100))
                if not ok
            ]
            result = verdict(not misses) + (f" ({', '.join(misses)})" if misses else "")
        out.rows.append(
            [
                row.hub,
                row.shape,
                row.client,
                row.seconds.fmt(),
                row.mib_s.fmt(0),
                f"{vs_curl:.2f}x",
                f"{vs_sdk:.2f}x",
                f"{row.rss_mib:.0f}",
                row.in_process.fmt() if row.in_process else "",
                result,
            ]
        )
    return out


def plot(rows: list[Row], path: Path) -> None:
    """Grouped bars: MiB/s per client, one group per hub and shape, min–max as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r.hub, r.shape) for r in rows))
    kinds = ["provision apply", "hub client", "curl, sequential", "curl -Z (8 parallel)"]

    def kind(client: str) -> str:
        return "hub client" if client.endswith("snapshot_download") else client

    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(kinds)
    for k, name in enumerate(kinds):
        picked = [next(r for r in rows if (r.hub, r.shape) == g and kind(r.client) == name) for g in groups]
        xs = [i + (k - (len(kinds) - 1) / 2) * width for i in range(len(groups))]
        heights = [r.mib_s.median for r in picked]
        errors = [
            [h - r.mib_s.min for h, r in zip(heights, picked, strict=True)],
            [r.mib_s.max - h for h, r in zip(heights, picked, strict=True)],
        ]
        ax.bar(xs, heights, width, yerr=errors, capsize=2, label=name)
    ax.set_xticks(range(len(groups)), [f"{hub}\n{shape}" for hub, shape in groups])
    ax.set_ylabel("MiB/s (median; bars: min–max)")
    ax.set_title("Download throughput on loopback fakes")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
