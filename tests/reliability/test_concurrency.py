"""Two ``provision apply`` at once on one manifest: the second fails fast naming the first's pid
(exit 1, nothing touched), the first completes, and ``verify`` passes afterwards."""

from __future__ import annotations

import time
from pathlib import Path

from tests.cli_runner import run_cli, start_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.manifest_files import lock_of
from tests.reliability._support import (
    hf_settings,
    leftovers,
    models_manifest,
    payload,
)

FILES = {"config.json": b"{}", "model.safetensors": payload(4 << 20, 21)}


def test_second_apply_fails_fast_naming_the_holder(tmp_path: Path) -> None:
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", FILES)
        hub.faults.throttle_bps = 2 << 20  # the first apply holds the run lock for ~2 s
        manifest = models_manifest(tmp_path, hf_settings(hub.url), "  tiny: {source: hf://org/tiny}\n")
        first = start_cli("apply", manifest)
        partial = tmp_path / "models" / "tiny" / ".cache" / "provision" / "partial"
        deadline = time.monotonic() + 30
        while not (partial.exists() and any(partial.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.02)  # wait until the first one is downloading, so it holds the lock
        assert first.poll() is None, "the first apply ended before the second could race it"
        gets = hub.file_gets()
        second = run_cli("apply", manifest, timeout=20)
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"pid {first.pid}" in second.stderr and "another provision run" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert hub.file_gets() == gets, "the refused apply must not download anything"
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, out + err
    assert run_cli("verify", manifest).returncode == 0
    assert (tmp_path / "models" / "tiny" / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert leftovers(tmp_path / "models") == []
    assert lock_of(manifest)["models"]["tiny"]["files"].keys() == FILES.keys()
    # the lock is free again: a third apply is a no-op
    again = run_cli("apply", manifest)
    assert again.returncode == 0 and "no changes" in again.stdout
