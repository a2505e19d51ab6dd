"""A full disk: ``models_dir`` is an 8 MiB tmpfs mounted by the test (we run as root; a failed
mount fails the test, it is never skipped). A model larger than the space is refused by the
preflight before a byte moves; a disk that fills mid-download (a ballast file the hub writes
after the first body bytes) fails that model naming ENOSPC, places nothing, and once the
ballast is gone a plain apply resumes from the partial and completes."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_runner import run_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.manifest_files import lock_path
from tests.reliability._support import (
    hf_settings,
    leftovers,
    models_manifest,
    payload,
)

SIZE = "8m"
BIG = {"config.json": b"{}", "model.safetensors": payload(12 << 20, 31)}
FITS = {"config.json": b"{}", "model.safetensors": payload(5 << 20, 32)}


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "models"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount_point)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"cannot mount a tmpfs (the suite needs root): {done.stderr}"
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


class BallastHub(FakeHFHub):
    """Fills the disk at ``ballast`` (all but ``leave`` bytes) once the first body bytes went out."""

    def __init__(self, ballast: Path, leave: int) -> None:
        super().__init__()
        self.ballast, self.leave = ballast, leave
        self.filled = False

    def _count(self, n: int) -> None:
        super()._count(n)
        if not self.filled:
            self.filled = True
            free = shutil.disk_usage(self.ballast.parent).free
            with self.ballast.open("wb") as out:
                out.truncate(0)
                out.write(b"\0" * max(free - self.leave, 0))


def test_preflight_refuses_a_model_larger_than_the_disk(tmp_path: Path, small_disk: Path) -> None:
    with FakeHFHub() as hub:
        hub.add_repo("org/big", BIG)
        manifest = models_manifest(tmp_path, hf_settings(hub.url), "  big: {source: hf://org/big}\n")
        result = run_cli("apply", manifest)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "not enough disk" in result.stderr and "12.0 MiB to download" in result.stderr, result.stderr
        assert str(small_disk) in result.stderr and "hint:" in result.stderr and "Traceback" not in result.stderr
        assert hub.file_gets() == 0, "the preflight must refuse before the first byte moves"
    assert not any(small_disk.rglob("*.safetensors")) and leftovers(small_disk) == []


def test_disk_full_mid_download_fails_cleanly_then_resumes(tmp_path: Path, small_disk: Path) -> None:
    ballast = small_disk / "ballast.bin"  # someone else's file, on the same disk
    with BallastHub(ballast, leave=2 << 20) as hub:
        hub.add_repo("org/fits", FITS)
        hub.faults.throttle_bps = 8 << 20  # the ballast lands while the body still streams
        manifest = models_manifest(tmp_path, hf_settings(hub.url), "  fits: {source: hf://org/fits}\n")
        result = run_cli("apply", manifest)
        assert hub.filled
        assert result.returncode == 1, result.stdout + result.stderr
        assert "No space left on device" in result.stderr and "model.safetensors" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        model_dir = small_disk / "fits"
        assert not (model_dir / "model.safetensors").exists(), "a partial file was placed at the final path"
        assert not lock_path(manifest).exists(), "the only model failed: there is nothing to lock"
        kept = sum(p.stat().st_size for p in model_dir.rglob("*.part"))

        os.unlink(ballast)  # room again
        served = hub.bytes_served
        again = run_cli("apply", manifest)
        assert again.returncode == 0, again.stdout + again.stderr
        refetched = hub.bytes_served - served
        assert refetched <= len(FITS["model.safetensors"]) - kept + len(FITS["config.json"]), "must resume"
    assert (model_dir / "model.safetensors").read_bytes() == FITS["model.safetensors"]
    assert run_cli("verify", manifest).returncode == 0
    assert leftovers(small_disk) == []
