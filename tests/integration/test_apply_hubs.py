"""The guarantees `hf://` and `ms://` share, checked once against each hub's fake through the CLI.

Each hub's own behaviour (listing, revisions, tokens, its client's view of the folder) is in
test_apply_hf.py and test_apply_modelscope.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.apply_support import OTHER_FILES, TINY_FILES, hub_manifest, kill_when_partial, payload
from tests.cli_runner import run_cli, start_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.fakes.modelscope_hub import FakeModelScopeHub
from tests.manifest_files import lock_of, lock_path


@dataclass
class Hub:
    """One hub's fake, and its scheme in ``source:``."""

    server: FakeHFHub | FakeModelScopeHub
    scheme: str  # "hf" or "ms"

    def manifest(self, tmp_path: Path, **repos: str) -> Path:
        return hub_manifest(tmp_path, self.server.url, self.scheme, **repos)


@pytest.fixture(params=["hf", "ms"])
def hub(request: pytest.FixtureRequest) -> Iterator[Hub]:
    server = FakeHFHub() if request.param == "hf" else FakeModelScopeHub()
    with server:
        server.add_repo("org/tiny", TINY_FILES)
        server.add_repo("org/other", OTHER_FILES)
        yield Hub(server, request.param)


def test_second_apply_and_plan_make_no_hub_request(tmp_path: Path, hub: Hub) -> None:
    manifest = hub.manifest(tmp_path, tiny="org/tiny")
    assert run_cli("apply", manifest).returncode == 0
    before = len(hub.server.requests)
    result = run_cli("apply", manifest)
    assert result.returncode == 0
    assert "no changes" in result.stdout
    plan = run_cli("plan", manifest, "--detailed-exitcode")
    assert plan.returncode == 0
    assert len(hub.server.requests) == before


def test_kill_mid_download_then_resume_fetches_only_the_rest(tmp_path: Path, hub: Hub) -> None:
    big = payload(24 << 20, 9)
    hub.server.add_repo("org/big", {"config.json": b"{}", "model.safetensors": big})
    hub.server.faults.throttle_bps = 8 << 20  # 3 s for the file: time to kill it half-way
    manifest = hub.manifest(tmp_path, big="org/big")
    partial_dir = tmp_path / "models" / "big" / ".cache" / "provision" / "partial"
    kept = kill_when_partial(start_cli("apply", manifest), partial_dir, at_least=8 << 20)
    assert 0 < kept < len(big)
    assert not (tmp_path / "models" / "big" / "model.safetensors").exists()  # never a partial at the final path

    hub.server.faults.throttle_bps = None
    time.sleep(1)  # let the server's handler for the killed client notice the closed socket
    served_before = hub.server.bytes_served
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stderr
    refetched = hub.server.bytes_served - served_before
    assert refetched <= len(big) - kept + len(b"{}"), "resume must fetch only the missing bytes"
    assert (tmp_path / "models" / "big" / "model.safetensors").read_bytes() == big
    assert not list(partial_dir.glob("*")), "no orphan partial file may remain"


def test_server_side_corruption_fails_that_model_only(tmp_path: Path, hub: Hub) -> None:
    hub.server.faults.corrupt = {"model.safetensors"}
    manifest = hub.manifest(tmp_path, tiny="org/tiny", other="org/other")
    result = run_cli("apply", manifest)
    assert result.returncode == 1
    assert "tiny" in result.stderr and "model.safetensors" in result.stderr and "sha256" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "models" / "tiny" / "model.safetensors").exists()
    assert not list((tmp_path / "models" / "tiny").rglob("*.part"))
    assert (tmp_path / "models" / "other" / "weights.bin").read_bytes() == OTHER_FILES["weights.bin"]
    assert "tiny" not in lock_of(manifest)["models"] and "other" in lock_of(manifest)["models"]


def test_verify_catches_local_corruption_missing_and_extra(tmp_path: Path, hub: Hub) -> None:
    manifest = hub.manifest(tmp_path, tiny="org/tiny")
    assert run_cli("apply", manifest).returncode == 0
    model_dir = tmp_path / "models" / "tiny"
    data = bytearray((model_dir / "model.safetensors").read_bytes())
    data[100] ^= 0xFF
    (model_dir / "model.safetensors").write_bytes(bytes(data))
    (model_dir / "config.json").unlink()
    (model_dir / "stray.txt").write_text("?")
    result = run_cli("verify", manifest, "--json")
    assert result.returncode == 1
    problems = {(p["path"], p["problem"]) for p in json.loads(result.stdout)["problems"]}
    assert problems == {("model.safetensors", "corrupt"), ("config.json", "missing"), ("stray.txt", "extra")}
    # apply repairs what is missing (a same-size corruption is verify's to find)
    assert run_cli("apply", manifest).returncode == 0
    assert (model_dir / "config.json").read_bytes() == TINY_FILES["config.json"]


def test_unreachable_endpoint_is_one_line_with_a_hint(tmp_path: Path, hub: Hub) -> None:
    manifest = hub_manifest(tmp_path, "http://127.0.0.1:9", hub.scheme, x="org/x")
    result = run_cli("apply", manifest)
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in result.stderr and "hint:" in result.stderr
    assert "Traceback" not in result.stderr


def test_files_placed_before_the_lock_was_written_get_locked(tmp_path: Path, hub: Hub) -> None:
    """An apply killed after placing the last file but before writing the lock: the next apply
    records the files (no download), so the lock pins them and verify checks them."""
    manifest = hub.manifest(tmp_path, tiny="org/tiny")
    assert run_cli("apply", manifest).returncode == 0
    lock_file = lock_path(manifest)
    written = lock_of(manifest)
    lock_file.unlink()  # what the killed run would have left: every file, no lock
    gets = hub.server.file_gets()

    plan = run_cli("plan", manifest, "--detailed-exitcode")
    assert plan.returncode == 2 and "not in the lock" in plan.stdout, plan.stdout + plan.stderr
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    assert hub.server.file_gets() == gets, "the files were already here: nothing to download"
    assert lock_of(manifest)["models"]["tiny"]["files"] == written["models"]["tiny"]["files"]
    assert "no changes" in run_cli("apply", manifest).stdout
