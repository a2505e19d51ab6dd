"""Peak memory of a ranged download (issue 16: "peak RSS stays <= 100 MiB whatever the file size
and connection count"), measured by the kernel for the real CLI against the fake hub.

The file is sparse on the hub's side (instant to make; sent and hashed in full), large enough
that holding it, or a connection's share of it, in memory would show, and fetched with the most
connections a manifest allows.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provision import segments
from tests.fakes.hf_hub import FakeHFHub
from tests.manifest_files import lock_of
from tests.reliability._support import hf_settings, leftovers, models_manifest

pytestmark = pytest.mark.slow

MiB = 1 << 20
SIZE = 1024 * MiB
MOST_CONNECTIONS = 64  # the manifest's maximum for max_connections_per_host
RSS_LIMIT = 100 * MiB
# Capped per connection so the one stream proves slow and is split (segments.Ramp), but so
# that 64 at once are more than this machine can move: every range runs, bounded by the CPU.
CAP = 32 * MiB

# ``python -c PEAK_RSS OUT CMD...`` runs CMD and writes its peak RSS in bytes to OUT: the kernel's
# own high-water mark (ru_maxrss, KiB on Linux) of that process alone, the wrapper's only child.
PEAK_RSS = (
    "import pathlib, resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
    "pathlib.Path(sys.argv[1]).write_text(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)); "
    "sys.exit(code)"
)


def sparse_file(path: Path, size: int) -> str:
    """A ``size``-byte file of zeros that takes no disk; its sha256."""
    with path.open("wb") as out:
        out.truncate(size)
    digest = hashlib.sha256()
    block = bytes(8 * MiB)
    for _ in range(size // len(block)):
        digest.update(block)
    return digest.hexdigest()


def test_peak_rss_of_a_1_gib_file_over_64_connections_stays_under_100_mib(tmp_path: Path) -> None:
    assert SIZE % (8 * MiB) == 0 and segments.is_large(SIZE)
    source = tmp_path / "hub" / "model.safetensors"
    source.parent.mkdir()
    sha256 = sparse_file(source, SIZE)
    with FakeHFHub() as hub:
        hub.add_repo("org/big", {"config.json": b"{}", "model.safetensors": source})
        hub.faults.throttle_bps = CAP
        manifest = models_manifest(
            tmp_path,
            hf_settings(hub.url) + f"  max_connections_per_host: {MOST_CONNECTIONS}\n",
            "  big: {source: hf://org/big}\n",
        )
        rss = tmp_path / "peak-rss"
        done = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, rss, sys.executable, "-m", "provision", "apply", manifest, "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PROVISION_STATE_DIR": str(tmp_path / "state")},
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["ok"], done.stdout
        # many connections really were open at once: the bound is tested where it is hardest
        assert hub.bodies_peak > 16, hub.bodies_peak
    placed = tmp_path / "models" / "big" / "model.safetensors"
    assert placed.stat().st_size == SIZE
    assert lock_of(manifest)["models"]["big"]["files"]["model.safetensors"]["sha256"] == sha256
    assert leftovers(tmp_path / "models") == []
    peak = int(rss.read_text())
    assert peak <= RSS_LIMIT, f"peak RSS {peak / MiB:.0f} MiB"
