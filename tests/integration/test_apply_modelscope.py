"""`provision apply` of ``ms://`` models against a loopback ModelScope hub, through the real CLI.

What every hub shares (no-op, kill -9 and resume, corruption, verify, unreachable endpoint)
is in test_apply_hubs.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apply_support import BIG, OTHER_FILES, TINY_FILES, assert_tiny_placed, payload
from tests.cli_runner import run_cli
from tests.fakes.modelscope_hub import ESCAPE_BODY, FakeModelScopeHub
from tests.manifest_files import lock_of, lock_path, write_manifest

TOKEN = "ms_canary_TOKEN_7c2e91"  # a canary: must never appear in output, state, lock or at the CDN


TINY = "  tiny: {source: ms://org/tiny, include: ['*.json', '*.safetensors', 'sub/*']}\n"


@pytest.fixture()
def hub() -> Iterator[FakeModelScopeHub]:
    with FakeModelScopeHub() as server:
        server.add_repo("org/tiny", TINY_FILES)
        server.add_repo("org/other", OTHER_FILES)
        yield server


def ms_manifest(tmp_path: Path, hub: FakeModelScopeHub, models: str) -> Path:
    """``tmp_path/m.yaml``: ``models`` from ``hub``, placed under ``models/``, the token from $MODELSCOPE_API_TOKEN."""
    return write_manifest(
        tmp_path,
        "version: 1\n"
        "settings:\n"
        "  models_dir: models\n"
        f"  modelscope: {{endpoint: '{hub.url}', token: '${{MODELSCOPE_API_TOKEN:-}}'}}\n"
        f"models:\n{models}",
    )


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_first_apply_downloads_verifies_and_locks(tmp_path: Path, hub: FakeModelScopeHub) -> None:
    manifest = ms_manifest(tmp_path, hub, TINY)
    plan = run_cli("plan", manifest)
    assert plan.returncode == 0, plan.stderr
    assert "3.2 MiB" in plan.stdout  # bytes to download
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stderr
    model_dir = tmp_path / "models" / "tiny"
    assert_tiny_placed(model_dir)
    entry = lock_of(manifest)["models"]["tiny"]
    assert entry["spec"]["revision"] == "master"
    assert entry["resolved"].startswith("ms-") and len(entry["resolved"]) == 67
    assert entry["files"]["model.safetensors"] == {"size": len(BIG), "sha256": hashlib.sha256(BIG).hexdigest()}
    assert not (tmp_path / "home" / ".cache" / "modelscope").exists()  # no SDK lock files
    assert run_cli("verify", manifest).returncode == 0
    status = run_cli("status", manifest, "--json")
    assert status.returncode == 0 and "present" in status.stdout


def test_path_escape_in_listing_is_refused_and_nothing_written(tmp_path: Path, hub: FakeModelScopeHub) -> None:
    hub.faults.escape_path = True
    manifest = ms_manifest(tmp_path, hub, "  tiny: {source: ms://org/tiny}\n")
    before = files_under(tmp_path)
    result = run_cli("apply", manifest)
    assert result.returncode == 1
    assert "tiny" in result.stderr and "../evil.txt" in result.stderr and "outside" in result.stderr
    assert "Traceback" not in result.stderr
    assert hub.file_gets() == 0
    assert not (tmp_path / "models").exists()
    assert all(ESCAPE_BODY not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    written = {p for p in files_under(tmp_path) - before if not p.startswith("state/")}
    assert written <= {"m.lock.json"}


def test_moved_revision_ignored_until_update_and_locked_refuses(tmp_path: Path, hub: FakeModelScopeHub) -> None:
    manifest = ms_manifest(tmp_path, hub, TINY)
    assert run_cli("apply", manifest).returncode == 0
    old = lock_of(manifest)["models"]["tiny"]["resolved"]
    new_weights = payload(len(BIG), 77)  # same size, other content: must still be fetched
    hub.add_revision("org/tiny", "master", {**TINY_FILES, "model.safetensors": new_weights})

    assert run_cli("apply", manifest).returncode == 0  # no --update: the lock holds
    assert lock_of(manifest)["models"]["tiny"]["resolved"] == old

    # Bytes are fetched by branch name: a --locked run on a fresh machine gets the moved
    # content, which cannot match the lock, and must refuse to place it.
    shutil.rmtree(tmp_path / "models" / "tiny")
    locked = run_cli("apply", manifest, "--locked")
    assert locked.returncode == 1
    assert "model.safetensors" in locked.stderr and "sha256" in locked.stderr and "--update" in locked.stderr
    assert not (tmp_path / "models" / "tiny" / "model.safetensors").exists()
    assert lock_of(manifest)["models"]["tiny"]["resolved"] == old

    result = run_cli("apply", manifest, "--update")
    assert result.returncode == 0, result.stderr
    assert "master moved" in result.stdout + result.stderr
    new = lock_of(manifest)["models"]["tiny"]["resolved"]
    assert new != old
    assert (tmp_path / "models" / "tiny" / "model.safetensors").read_bytes() == new_weights
    assert run_cli("verify", manifest).returncode == 0


def test_change_outside_include_is_not_a_move(tmp_path: Path, hub: FakeModelScopeHub) -> None:
    manifest = ms_manifest(tmp_path, hub, TINY)
    assert run_cli("apply", manifest).returncode == 0
    old = lock_of(manifest)["models"]["tiny"]["resolved"]
    hub.add_revision("org/tiny", "master", {**TINY_FILES, "README.md": b"# edited"})
    result = run_cli("apply", manifest, "--update")
    assert result.returncode == 0 and "no changes" in result.stdout
    assert lock_of(manifest)["models"]["tiny"]["resolved"] == old


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("ms://org/missing", "repository org/missing not found"),
        ("ms://org/tiny\n    revision: nope", "revision 'nope' not found"),
        ("ms://org/tiny\n    include: ['*.gguf']", "nothing would be downloaded"),
    ],
)
def test_hub_errors_are_one_line_with_a_hint(tmp_path: Path, hub: FakeModelScopeHub, source: str, message: str) -> None:
    manifest = ms_manifest(tmp_path, hub, f"  bad:\n    source: {source}\n  other: {{source: ms://org/other}}\n")
    result = run_cli("apply", manifest)
    assert result.returncode == 1
    assert message in result.stderr and "hint:" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "models" / "bad").exists()
    assert (tmp_path / "models" / "other" / "weights.bin").exists()


def test_transient_errors_are_retried(tmp_path: Path, hub: FakeModelScopeHub) -> None:
    hub.faults.status_5xx = 2
    hub.faults.drop_after_bytes = 1 << 20
    manifest = ms_manifest(tmp_path, hub, TINY)
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "models" / "tiny" / "model.safetensors").read_bytes() == BIG


def test_private_repo_token_reaches_the_hub_only(tmp_path: Path) -> None:
    with FakeModelScopeHub(redirect=True) as hub:
        hub.add_repo("org/private", TINY_FILES, token=TOKEN)
        manifest = ms_manifest(tmp_path, hub, "  private: {source: ms://org/private}\n")
        denied = run_cli("apply", manifest)
        assert denied.returncode == 1 and "MODELSCOPE_API_TOKEN" in denied.stderr
        result = run_cli("apply", manifest, "--json", env={"MODELSCOPE_API_TOKEN": TOKEN})
        assert result.returncode == 0, result.stderr
        assert hub.cdn is not None and hub.cdn.count("GET") >= len(TINY_FILES)
        leaked = [r.headers for r in hub.cdn.requests if TOKEN in json.dumps(r.headers)]
        assert leaked == [], "the token must not follow a redirect to the CDN (header or cookie)"
    everything = result.stdout + result.stderr + denied.stdout + denied.stderr
    for path in [
        lock_path(manifest),
        *(tmp_path / "state").rglob("*"),
        *(tmp_path / "models").rglob("*"),
    ]:
        if path.is_file():
            everything += path.read_text(errors="replace")
    assert TOKEN not in everything


def test_modelscope_sdk_accepts_a_provision_made_folder(tmp_path: Path, hub: FakeModelScopeHub) -> None:
    """The SDK's own snapshot_download into our folder lists once, re-hashes and keeps every file."""
    manifest = ms_manifest(tmp_path, hub, TINY)
    assert run_cli("apply", manifest).returncode == 0
    from modelscope import snapshot_download

    model_dir = tmp_path / "models" / "tiny"
    before, seen = files_under(model_dir), len(hub.requests)
    snapshot_download(
        "org/tiny", local_dir=str(model_dir), endpoint=hub.url, allow_patterns=["*.json", "*.safetensors", "sub/*"]
    )
    # One listing, no region probe (an endpoint is given), no file body, nothing added.
    assert [r.path.split("?")[0] for r in hub.requests[seen:]] == ["/api/v1/models/org/tiny/repo/files"]
    assert files_under(model_dir) == before
    assert_tiny_placed(model_dir)
    assert run_cli("verify", manifest).returncode == 0


def test_files_with_identical_content_download_side_by_side(tmp_path: Path, hub: FakeModelScopeHub) -> None:
    """Same-content files (duplicate shards, several empty files) must not share a partial file."""
    same = payload(2 << 20, 5)
    hub.add_repo(
        "org/dupes",
        {
            "a/weights.bin": same,
            "b/weights.bin": same,
            "a/__init__.py": b"",
            "b/__init__.py": b"",
            "c/__init__.py": b"",
        },
    )
    manifest = ms_manifest(tmp_path, hub, "  dupes: {source: ms://org/dupes}\n")
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stderr
    model_dir = tmp_path / "models" / "dupes"
    assert (model_dir / "a" / "weights.bin").read_bytes() == same == (model_dir / "b" / "weights.bin").read_bytes()
    assert all((model_dir / d / "__init__.py").read_bytes() == b"" for d in "abc")
