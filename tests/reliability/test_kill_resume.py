"""``kill -9`` at random points of ``provision apply``, then a plain ``apply`` must finish the job.

Per source, ten kills land on one manifest folder in a row, each resuming what the previous
run left: kills during start-up (a random delay), at the very first requests (the n-th request
to arrive, before it is answered), at a random body byte (fired from inside the throttled fake,
so it lands mid-file), and right after the last byte the hub sends. After every kill: a file at
its final path is whole and right, and lock and state parse. After the final apply: exit 0,
``verify`` exit 0, every file matches the lock, and nothing partial or orphaned remains.

The seed is printed (``-s``) and can be pinned with ``PROVISION_RELIABILITY_SEED``.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli_runner import run_cli, start_cli
from tests.manifest_files import lock_of
from tests.reliability._support import (
    KillableHFHub,
    KillableMSHub,
    KillableOllama,
    KillSwitch,
    assert_bookkeeping_parses,
    assert_final_paths_hold_only_good_bytes,
    assert_no_stray_temp,
    hf_settings,
    leftovers,
    models_manifest,
    ms_settings,
    ollama_settings,
    orphans,
    payload,
    read_json,
)

pytestmark = pytest.mark.slow

TRIALS = 10
FILES = {
    "config.json": b'{"architectures": ["Qwen3ForCausalLM"], "hidden_size": 64}',
    "tokenizer.json": b'{"version": "1.0"}',
    "model-00001-of-00002.safetensors": payload(8 << 20, 1),
    "model-00002-of-00002.safetensors": payload(4 << 20, 2),
    "sub/extra.bin": payload(200_000, 3),
}
TOTAL = sum(map(len, FILES.values()))
THROTTLE = 4 << 20  # per response: the largest file takes 2 s, so kills land mid-file


@pytest.fixture()
def seed() -> int:
    value = int(os.environ.get("PROVISION_RELIABILITY_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"\nreliability seed: {value} (rerun with PROVISION_RELIABILITY_SEED={value})")
    return value


def schedule(rng: random.Random) -> list[str]:
    """Ten kill points: every kind at least once, the last one right after the last byte."""
    kinds = ["delay", "delay", "request", "request", "bytes", "bytes", "bytes", "bytes", "bytes"]
    rng.shuffle(kinds)
    return [*kinds, "last-byte"]


def on_disk(model_dir: Path) -> int:
    """Bytes already there: placed files plus partials (what a resume does not fetch again)."""
    placed = sum(len(data) for rel, data in FILES.items() if (model_dir / rel).is_file())
    partial = model_dir / ".cache" / "provision" / "partial"
    return placed + (sum(p.stat().st_size for p in partial.glob("*.part")) if partial.exists() else 0)


def kill_once(
    manifest: Path, kill: KillSwitch, kind: str, rng: random.Random, remaining: int, first_requests: int
) -> str:
    """Start an apply, kill it at the chosen point; return what was done, for the log."""
    process = start_cli("apply", manifest)
    if kind == "delay":
        # Start-up is about 0.2 s. A later kill lets whole files land at the throttled rate, and
        # two of them could leave the later trials nothing to interrupt.
        delay = rng.uniform(0.0, 0.4)
        what = f"after {delay:.2f} s"
        kill.arm(process.pid)
        time.sleep(delay)
        if process.poll() is None:
            kill.fire()
    elif kind == "request":
        n = rng.randint(1, first_requests)
        what = f"at request {n}"
        kill.arm(process.pid, at_request=n)
    elif kind == "bytes":
        # at most a third of what is left, so later trials still find work to interrupt
        n = rng.randint(1, max(remaining // 3, 1))
        what = f"after {n} of {remaining} body bytes"
        kill.arm(process.pid, at_bytes=n)
    else:
        what = f"right after the last byte ({remaining})"
        kill.arm(process.pid, at_bytes=max(remaining, 1))
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    finally:
        kill.disarm()
        process.communicate()
    return f"{what}: {'killed' if code == -signal.SIGKILL else f'exited {code} first'}"


def run_trials(
    tmp_path: Path,
    manifest: Path,
    kill: KillSwitch,
    seed: int,
    *,
    remaining: Callable[[], int],
    first_requests: int,
    after_kill: Callable[[], None],
    before_final: Callable[[], None],
) -> None:
    rng = random.Random(seed)
    landed = 0
    for trial, kind in enumerate(schedule(rng), 1):
        outcome = kill_once(manifest, kill, kind, rng, remaining(), first_requests)
        print(f"  trial {trial:2}: kill {outcome}")
        landed += outcome.endswith("killed")
        after_kill()
        assert_bookkeeping_parses(manifest, tmp_path / "state")
    assert landed >= 8, "too few kills interrupted a run: the trials would prove little"
    before_final()
    time.sleep(0.2)  # let the fake's handlers for the killed clients notice the closed sockets
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    verify = run_cli("verify", manifest)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert_bookkeeping_parses(manifest, tmp_path / "state")
    assert_no_stray_temp(manifest, tmp_path / "state")


def check_file_model(tmp_path: Path, manifest: Path) -> None:
    models = tmp_path / "models"
    lock = lock_of(manifest)
    for rel, data in FILES.items():
        assert (models / "tiny" / rel).read_bytes() == data
        assert lock["models"]["tiny"]["files"][rel]["sha256"] == hashlib.sha256(data).hexdigest()
    assert set(lock["models"]["tiny"]["files"]) == set(FILES)
    assert leftovers(models) == []
    assert orphans(models, lock) == []


# scheme -> (hub fake, manifest settings, requests before the first file GET)
HUBS: dict[str, tuple[type[KillableHFHub] | type[KillableMSHub], Callable[[str], str], int]] = {
    "hf": (KillableHFHub, hf_settings, 4),  # model info, tree listing, then the first file GETs
    "ms": (KillableMSHub, ms_settings, 3),  # the listing, then the first file GETs
}


@pytest.mark.parametrize("scheme", sorted(HUBS))
def test_hub_apply_survives_ten_kills(tmp_path: Path, scheme: str, seed: int) -> None:
    hub_class, settings, first_requests = HUBS[scheme]
    with hub_class() as hub:
        hub.add_repo("org/tiny", FILES)
        hub.faults.throttle_bps = THROTTLE
        manifest = models_manifest(tmp_path, settings(hub.url), f"  tiny: {{source: {scheme}://org/tiny}}\n")
        model_dir = tmp_path / "models" / "tiny"
        run_trials(
            tmp_path,
            manifest,
            hub.kill,
            seed,
            remaining=lambda: TOTAL - on_disk(model_dir),
            first_requests=first_requests,
            after_kill=lambda: assert_final_paths_hold_only_good_bytes(model_dir, FILES),
            before_final=lambda: setattr(hub.faults, "throttle_bps", None),
        )
        check_file_model(tmp_path, manifest)


@pytest.fixture()
def ollama() -> Iterator[KillableOllama]:
    with KillableOllama() as server:
        server.registry_add("qwen3:0.6b", [payload(4096, 7), b"license text", b"{}"])
        yield server


def test_ollama_pull_survives_ten_kills(tmp_path: Path, ollama: KillableOllama, seed: int) -> None:
    manifest = models_manifest(tmp_path, ollama_settings(ollama.url), "  qwen: {source: 'ollama://qwen3:0.6b'}\n")

    def lines_left() -> int:
        """NDJSON lines a pull still streams: "bytes" for this source (see KillableOllama)."""
        if "qwen3:0.6b" in ollama.local:
            return 0
        lines = 1 + 3  # "pulling manifest"; "verifying", "writing manifest", "success"
        for digest in ollama.registry["qwen3:0.6b"].layers:
            left = 0 if digest in ollama.blobs else len(ollama._registry_blobs[digest]) - ollama.partial.get(digest, 0)
            lines += 1 + min(4, left)  # where the layer stands, then up to four progress steps
        return lines

    # /api/tags, then the pull
    run_trials(
        tmp_path,
        manifest,
        ollama.kill,
        seed,
        remaining=lines_left,
        first_requests=2,
        after_kill=lambda: None,
        before_final=lambda: setattr(ollama, "line_delay", 0.0),
    )
    digest = ollama.registry["qwen3:0.6b"].digest
    assert "qwen3:0.6b" in ollama.local and not ollama.partial
    assert lock_of(manifest)["models"]["qwen"]["digest"] == digest
    [entry] = read_json(tmp_path / "state" / "state.json")["manifests"].values()
    record = entry["models"]["qwen"]
    # provision pulled it: destroy must remove it, even when a kill hit right after the pull
    assert record["digest"] == digest and record["created"] is True, record
    assert leftovers(tmp_path / "models") == []
