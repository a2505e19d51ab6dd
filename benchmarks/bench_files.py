"""What provision does with files already on disk: no-op apply, verify, resume after kill -9.

All three use one Hugging Face fake running in this process (``FakeHFHub``), so its request
log and byte counter can be read directly:

- no-op ``apply``: models are applied once (the lock is written), then ``provision apply`` is
  timed again; the hub's request count shows that the no-op made no request. Many models:
  1, 10, 50 tiny repos. Size: one model of one shard, 100 MB vs 2 GB, served from sparse files
  (instant to create; the first apply really downloads and hashes every byte). The source
  protocol does not matter to a no-op (it sends nothing), but ``hf://`` with a lock is the
  common case, so that is what is measured.
- ``verify`` re-hashes the 2 GB model against the lock; ``sha256sum`` hashes the same files.
  Both read from the page cache (the files were just written; the machine has the RAM).
- ModelScope's second call: one ``ms://`` model (one sparse shard, 0.5 GB vs 2 GB) applied once,
  then the second ``provision apply`` against the modelscope SDK's second ``snapshot_download``
  into the same folder (which re-hashes every file); the ModelScope fake runs as its own process.
- resume: the hub is throttled, ``provision apply`` is killed with SIGKILL when its ``.part``
  file holds half the shard, then the hub is unthrottled and ``apply`` runs again. Re-fetched =
  bytes the second run downloaded beyond what was missing on disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _common import (
    MS_SDK,
    Config,
    MiB,
    Section,
    Stats,
    make_files,
    make_sparse,
    one_model_manifest,
    provision_cmd,
    run_measured,
    start_server,
    verdict,
)

from provision.download import CHUNK_SIZE, PARTIAL_DIR
from tests.apply_support import partial_sizes
from tests.fakes.hf_hub import FakeHFHub


@dataclass
class Lab:
    """A hub, and a folder per manifest with its own models and state."""

    hub: FakeHFHub
    work: Path

    def manifest(self, name: str, repos: list[str]) -> Path:
        folder = self.work / name
        folder.mkdir(parents=True, exist_ok=True)
        models = "".join(f"  m{i}: {{source: 'hf://{repo}'}}\n" for i, repo in enumerate(repos))
        path = folder / "provision.yaml"
        path.write_text(
            f"version: 1\nsettings: {{models_dir: models, huggingface: {{endpoint: '{self.hub.url}'}}}}\n"
            f"models:\n{models}"
        )
        return path

    def env(self, manifest: Path) -> dict[str, str]:
        return {"PROVISION_STATE_DIR": str(manifest.parent / "state"), "NO_PROXY": "127.0.0.1"}

    def apply(self, manifest: Path) -> float:
        return run_measured(provision_cmd("apply", str(manifest)), env=self.env(manifest)).seconds


def no_op(lab: Lab, config: Config, sizes: list[int]) -> tuple[Section, Path]:
    """The no-op table, and the manifest of the largest model (for ``verify``)."""
    out = Section(
        "No-op apply with a lock",
        "Second `provision apply` with the lock written and every file in place (process wall time, "
        "interpreter start-up included). Served by `hf://`; the no-op sends no request (counted at the "
        f"hub). {config.repeat} run(s); median (min–max).",
        ["case", "first apply s", "no-op s", "requests in no-op", "target", "verdict"],
    )
    tiny = {"config.json": b'{"hidden_size": 64}', "model.safetensors": os.urandom(64 * 1024)}
    cases: list[tuple[str, list[str]]] = []
    for count in (1, 10, 50):
        repos = [f"tiny/m{i}" for i in range(count)]
        for repo in repos:
            if repo not in lab.hub.repos:
                lab.hub.add_repo(repo, {**tiny, "README.md": repo.encode()})  # distinct commits
        cases.append((f"{count} model(s), 2 files of ≤ 64 KiB each", repos))
    for size in sizes:
        data = config.work / f"sparse-{size}"
        make_sparse(data, size)
        lab.hub.add_repo(f"big/{size}", {p.name: p for p in data.iterdir()})
        cases.append((f"1 model, one {size / 1e9:g} GB shard", [f"big/{size}"]))
    medians: list[float] = []
    manifest = lab.work
    for label, repos in cases:
        manifest = lab.manifest(f"noop-{label.split()[0]}-{len(repos)}-{len(medians)}", repos)
        first = lab.apply(manifest)
        before = len(lab.hub.requests)
        seconds = Stats.of([lab.apply(manifest) for _ in range(config.repeat)])
        requests = len(lab.hub.requests) - before
        medians.append(seconds.median)
        ok = seconds.median < 0.5 and requests == 0
        out.rows.append([label, f"{first:.2f}", seconds.fmt(3), str(requests), "< 0.5 s, 0 requests", verdict(ok)])
    small, big = medians[-2], medians[-1]
    out.rows.append(
        [
            f"{sizes[-1] / 1e9:g} GB minus {sizes[0] / 1e9:g} GB",
            "",
            f"{(big - small) * 1000:+.0f} ms",
            "",
            "flat in size (≤ +50 ms)",
            verdict(big - small <= 0.05),
        ]
    )
    return out, manifest


def verify(lab: Lab, config: Config, manifest: Path) -> Section:
    files = sorted(p for p in (manifest.parent / "models" / "m0").iterdir() if p.is_file())
    total_mib = sum(p.stat().st_size for p in files) / MiB
    commands = {
        "provision verify": provision_cmd("verify", str(manifest)),
        "sha256sum": ["sha256sum", *map(str, files)],
    }
    runs: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(config.repeat):
        for name, cmd in commands.items():
            runs[name].append(run_measured(cmd, env=lab.env(manifest)).seconds)
    out = Section(
        "verify hashing throughput",
        f"`provision verify` (process wall time, start-up included) vs `sha256sum` on the same "
        f"{total_mib:.0f} MiB, from the page cache. {config.repeat} run(s); median (min–max).",
        ["command", "seconds", "MiB/s", "vs sha256sum (≥ 0.9x)", "verdict"],
    )
    base = Stats.of(runs["sha256sum"]).median
    for name, seconds in runs.items():
        stats = Stats.of(seconds)
        ratio = base / stats.median
        result = verdict(ratio >= 0.9) if name == "provision verify" else "—"
        out.rows.append([name, stats.fmt(), f"{total_mib / stats.median:.0f}", f"{ratio:.2f}x", result])
    return out


def resume(lab: Lab, config: Config) -> Section:
    size = (16 if config.quick else 64) * MiB
    data = config.work / "resume-data"
    make_files(data, 1, size)
    repo = "resume/model"
    lab.hub.add_repo(repo, {p.name: p for p in data.iterdir()})
    repo_bytes = sum(p.stat().st_size for p in data.iterdir())
    out = Section(
        "Resume after kill -9",
        "The hub is throttled to a quarter of the shard per second; `provision apply` is killed "
        "(SIGKILL) when the `.part` file holds half of the shard; then the hub is unthrottled and `apply` "
        f"runs again. The shard is {size // MiB} MiB; one chunk (provision's read and write size) is "
        f"{CHUNK_SIZE // 1024} KiB. Re-fetched = bytes "
        "the second apply downloaded beyond what was missing on disk. Lost in flight = bytes the hub sent "
        f"to the killed process that never reached its disk (not the client's to save). {config.repeat} run(s).",
        [
            "run",
            "on disk at kill MiB",
            "lost in flight KiB",
            "resumed from (Range)",
            "served on resume MiB",
            "re-fetched KiB",
            "target",
            "verdict",
        ],
    )
    for trial in range(config.repeat):
        manifest = lab.manifest(f"resume-{trial}", [repo])
        lab.hub.faults.throttle_bps = size // 4
        served_before = lab.hub.bytes_served
        on_disk = kill_at_half(manifest, lab.env(manifest), size)
        time.sleep(0.5)  # the killed download's handler sends one more paced write, then sees the broken pipe
        config_json = manifest.parent / "models" / "m0" / "config.json"
        on_disk += config_json.stat().st_size if config_json.exists() else 0
        served_kill = lab.hub.bytes_served - served_before
        lab.hub.faults.throttle_bps = None
        log_at = len(lab.hub.requests)
        lab.apply(manifest)
        served = lab.hub.bytes_served - served_before - served_kill
        ranges = [r.headers.get("range", "") for r in lab.hub.requests[log_at:] if r.method == "GET"]
        refetched = served - (repo_bytes - on_disk)
        out.rows.append(
            [
                str(trial + 1),
                f"{on_disk / MiB:.1f}",
                f"{(served_kill - on_disk) / 1024:.0f}",
                ", ".join(filter(None, ranges)) or "none",
                f"{served / MiB:.1f}",
                f"{refetched / 1024:.0f}",
                f"≤ {CHUNK_SIZE // 1024} KiB",
                verdict(refetched <= CHUNK_SIZE),
            ]
        )
    return out


def kill_at_half(manifest: Path, env: dict[str, str], size: int) -> int:
    """Start ``apply``, SIGKILL its process group once a ``.part`` file holds half of ``size``."""
    partial = manifest.parent / "models" / "m0" / PARTIAL_DIR
    process = subprocess.Popen(
        provision_cmd("apply", str(manifest)),
        env={**os.environ, **env},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and process.poll() is None:
            largest = max(partial_sizes(partial).values(), default=0)
            if largest >= size // 2:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return max(partial_sizes(partial).values())
            time.sleep(0.005)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    raise RuntimeError("provision apply finished or stalled before its .part file reached half the shard")


def modelscope_second_call(config: Config, sizes: list[int]) -> Section:
    out = Section(
        "ModelScope: second call, files in place",
        "One `ms://` model of one sparse shard, applied once; then the second call of each client into "
        "the same folder (process wall time, start-up included): `provision apply` (reads the lock, "
        "stats the files) and `modelscope.snapshot_download` (lists, then re-hashes every file). "
        f"{config.repeat} run(s); median (min–max).",
        ["model", "provision no-op s", "snapshot_download again s", "target", "verdict"],
    )
    medians: list[tuple[float, float]] = []
    for size in sizes:
        work = config.work / f"ms-second-{size}"
        make_sparse(work / "data", size)
        server, url = start_server("tests.fakes.modelscope_hub", work / "data", "bench/model")
        manifest = one_model_manifest(work, "ms", url, "bench/model")
        env = {
            "PROVISION_STATE_DIR": str(work / "state"),
            "MODELSCOPE_CACHE": str(work / "ms-cache"),
            "NO_PROXY": "127.0.0.1",
        }
        apply = provision_cmd("apply", str(manifest))
        sdk = [sys.executable, "-c", MS_SDK, "bench/model", str(work / "models" / "bench"), url]
        try:
            run_measured(apply, env=env)
            ours = Stats.of([run_measured(apply, env=env).seconds for _ in range(config.repeat)])
            theirs = Stats.of([run_measured(sdk, env=env).seconds for _ in range(config.repeat)])
        finally:
            server.kill()
            server.wait()
        medians.append((ours.median, theirs.median))
        out.rows.append([f"{size / 1e9:g} GB", ours.fmt(3), theirs.fmt(), "< 0.5 s", verdict(ours.median < 0.5)])
    (ours_small, sdk_small), (ours_big, sdk_big) = medians[0], medians[-1]
    out.rows.append(
        [
            f"{sizes[-1] / 1e9:g} GB minus {sizes[0] / 1e9:g} GB",
            f"{(ours_big - ours_small) * 1000:+.0f} ms",
            f"{(sdk_big - sdk_small) * 1000:+.0f} ms",
            "provision flat in size (≤ +50 ms)",
            verdict(ours_big - ours_small <= 0.05),
        ]
    )
    return out


def sections(config: Config) -> list[Section]:
    sizes = [10_000_000, 200_000_000] if config.quick else [100_000_000, 2_000_000_000]
    with FakeHFHub() as hub:
        lab = Lab(hub, config.work / "files")
        noop_section, big = no_op(lab, config, sizes)
        verify_section, resume_section = verify(lab, config, big), resume(lab, config)
    ms_sizes = [50_000_000, 200_000_000] if config.quick else [500_000_000, 2_000_000_000]
    return [noop_section, modelscope_second_call(config, ms_sizes), verify_section, resume_section]
