"""`provision apply` against a loopback Hugging Face hub, through the real CLI and client.

What every hub shares (no-op, kill -9 and resume, corruption, verify, unreachable endpoint)
is in test_apply_hubs.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision import exitcodes
from tests.apply_support import BIG, OTHER_FILES, TINY_FILES, assert_tiny_placed, payload
from tests.cli_runner import run_cli
from tests.fakes.hf_hub import FakeCDN, FakeHFHub
from tests.manifest_files import lock_of, lock_path, write_manifest

TOKEN = "hf_canary_TOKEN_5a1f0c"  # a canary: must never appear in output, state or lock


@pytest.fixture()
def hub() -> Iterator[FakeHFHub]:
    with FakeHFHub() as server:
        server.add_repo("org/tiny", TINY_FILES)
        server.add_repo("org/other", OTHER_FILES)
        yield server


def hf_manifest(tmp_path: Path, hub: FakeHFHub, models: str) -> Path:
    """``tmp_path/m.yaml``: ``models`` from ``hub``, placed under ``models/``, the token from $HF_TOKEN."""
    return write_manifest(
        tmp_path,
        "version: 1\n"
        "settings:\n"
        "  models_dir: models\n"
        f"  huggingface: {{endpoint: '{hub.url}', token: '${{HF_TOKEN:-}}'}}\n"
        f"models:\n{models}",
    )


TINY = "  tiny: {source: hf://org/tiny, include: ['*.json', '*.safetensors', 'sub/*']}\n"


def test_first_apply_downloads_verifies_and_locks(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = hf_manifest(tmp_path, hub, TINY)
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stderr
    model_dir = tmp_path / "models" / "tiny"
    assert_tiny_placed(model_dir)
    entry = lock_of(manifest)["models"]["tiny"]
    assert entry["resolved"] == hub.repos["org/tiny"].branches["main"]
    assert entry["files"]["model.safetensors"]["sha256"] == hashlib.sha256(BIG).hexdigest()
    # small (non-LFS) files get their sha256 computed too
    assert entry["files"]["config.json"]["sha256"] == hashlib.sha256(TINY_FILES["config.json"]).hexdigest()
    assert run_cli("verify", manifest).returncode == 0


def test_hf_download_sees_the_folder_as_up_to_date(tmp_path: Path, hub: FakeHFHub) -> None:
    """The huggingface_hub bookkeeping we write lets `hf download --local-dir` skip every file."""
    manifest = hf_manifest(tmp_path, hub, TINY)
    assert run_cli("apply", manifest).returncode == 0
    from huggingface_hub import snapshot_download

    gets = hub.file_gets()
    snapshot_download(
        "org/tiny",
        local_dir=tmp_path / "models" / "tiny",
        endpoint=hub.url,
        allow_patterns=["*.json", "*.safetensors", "sub/*"],
        token=False,
    )
    assert hub.file_gets() == gets


def test_moved_branch_ignored_until_update(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = hf_manifest(tmp_path, hub, TINY)
    assert run_cli("apply", manifest).returncode == 0
    pinned = lock_path(manifest).read_bytes()
    old = lock_of(manifest)["models"]["tiny"]["resolved"]
    new_weights = payload(len(BIG), 77)  # same size, other content: must still be fetched
    new = hub.add_commit("org/tiny", {"model.safetensors": new_weights})

    assert run_cli("apply", manifest).returncode == 0
    assert lock_path(manifest).read_bytes() == pinned

    contradiction = run_cli("apply", manifest, "--update", "--locked")
    assert contradiction.returncode == exitcodes.USAGE  # refused before the lock is read
    assert "--update and --locked contradict each other" in contradiction.stderr
    assert "hint: use one of them" in contradiction.stderr

    # --locked alone on a fresh folder: the lock pins the old commit, which the hub still
    # serves, so the moved branch changes nothing and nothing is refused.
    shutil.rmtree(tmp_path / "models" / "tiny")
    locked = run_cli("apply", manifest, "--locked")
    assert locked.returncode == exitcodes.OK, locked.stderr
    assert (tmp_path / "models" / "tiny" / "model.safetensors").read_bytes() == BIG
    assert lock_path(manifest).read_bytes() == pinned

    # Following the branch in the manifest (its new commit as the revision) would change the
    # lock: --locked refuses, fetches nothing and leaves the lock as it was.
    gets = hub.file_gets()
    hf_manifest(tmp_path, hub, TINY.replace("hf://org/tiny,", f"hf://org/tiny, revision: {new},"))
    refused = run_cli("apply", manifest, "--locked")
    assert refused.returncode == exitcodes.FAILED, refused.stderr
    assert "error: tiny: model tiny changed since the lock was written (m.lock.json)" in refused.stderr
    assert "hint: run `provision apply --update` without --locked" in refused.stderr
    assert lock_path(manifest).read_bytes() == pinned
    assert hub.file_gets() == gets
    assert (tmp_path / "models" / "tiny" / "model.safetensors").read_bytes() == BIG

    hf_manifest(tmp_path, hub, TINY)
    result = run_cli("apply", manifest, "--update")
    assert result.returncode == 0, result.stderr
    assert f"main moved {old[:10]} -> {new[:10]}" in result.stdout + result.stderr
    assert lock_of(manifest)["models"]["tiny"]["resolved"] == new
    assert (tmp_path / "models" / "tiny" / "model.safetensors").read_bytes() == new_weights
    assert run_cli("verify", manifest).returncode == 0


def test_locked_refuses_a_manifest_change_the_lock_lacks(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = hf_manifest(tmp_path, hub, TINY)
    assert run_cli("apply", manifest).returncode == 0
    assert run_cli("apply", manifest, "--locked").returncode == 0
    pinned = lock_path(manifest).read_bytes()
    hf_manifest(tmp_path, hub, TINY + "  other: {source: hf://org/other}\n")
    result = run_cli("apply", manifest, "--locked")
    assert result.returncode == exitcodes.FAILED
    assert "error: other: model other is not in the lock (m.lock.json)" in result.stderr
    assert "hint: run `provision apply --update` without --locked" in result.stderr
    assert lock_path(manifest).read_bytes() == pinned
    assert not (tmp_path / "models" / "other").exists()


def test_destroy_removes_only_provision_folders(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = hf_manifest(tmp_path, hub, TINY)
    foreign = tmp_path / "models" / "mine"
    foreign.mkdir(parents=True)
    (foreign / "keep.bin").write_text("user data")
    assert run_cli("apply", manifest).returncode == 0
    refused = run_cli("destroy", manifest)  # no TTY, no --yes: refuse, remove nothing
    assert refused.returncode == 2 and (tmp_path / "models" / "tiny").exists()  # usage: cannot ask
    result = run_cli("destroy", manifest, "--yes")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "models" / "tiny").exists()
    assert (foreign / "keep.bin").read_text() == "user data"
    assert run_cli("destroy", manifest, "--yes").returncode == 0  # idempotent


def test_redirect_to_cdn_does_not_leak_token_and_nothing_secret_is_stored(tmp_path: Path) -> None:
    with FakeHFHub() as hub, FakeCDN() as cdn:
        hub.add_repo("org/gated", TINY_FILES, gated=True)
        hub.tokens = {TOKEN}
        hub.redirect_to(cdn)
        manifest = hf_manifest(tmp_path, hub, "  gated: {source: hf://org/gated}\n")
        denied = run_cli("apply", manifest)
        assert denied.returncode == 1 and "gated" in denied.stderr.lower()
        result = run_cli("apply", manifest, "--json", env={"HF_TOKEN": TOKEN})
        assert result.returncode == 0, result.stderr
        assert cdn.file_gets() >= 1
        assert cdn.authorizations() == []
    everything = result.stdout + result.stderr + denied.stdout + denied.stderr
    for path in [lock_path(manifest), *(tmp_path / "state").rglob("*.json")]:
        everything += path.read_text()
    assert TOKEN not in everything


def test_gated_repo_opens_with_the_token_hf_auth_login_saved(tmp_path: Path, hub: FakeHFHub) -> None:
    hub.add_repo("org/gated", TINY_FILES, gated=True)
    hub.tokens = {TOKEN}
    token_file = Path(os.environ["HF_HOME"]) / "token"  # where `hf auth login` writes it
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(TOKEN)
    manifest = write_manifest(  # no token in the manifest, none in the environment
        tmp_path,
        f"version: 1\nsettings: {{models_dir: models, huggingface: {{endpoint: '{hub.url}'}}}}\n"
        "models:\n  gated: {source: hf://org/gated}\n",
    )
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "models" / "gated" / "model.safetensors").read_bytes() == BIG
    stored = [lock_path(manifest), *(tmp_path / "state").rglob("*.json")]
    assert TOKEN not in result.stdout + result.stderr + "".join(p.read_text() for p in stored)


def test_transient_errors_are_retried(tmp_path: Path, hub: FakeHFHub) -> None:
    hub.faults.status_5xx = {"count": 2, "status": 503}
    hub.faults.retry_after = {"count": 1, "seconds": 1}
    hub.faults.drop_after_bytes = 1 << 20
    hub.faults.drop_times = 1
    manifest = hf_manifest(tmp_path, hub, TINY)
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "models" / "tiny" / "model.safetensors").read_bytes() == BIG


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("hf://org/missing", "not found"),
        ("hf://org/tiny\n    revision: nope", "revision 'nope' not found"),
        ("hf://org/tiny\n    include: ['*.gguf']", "matches include/exclude"),
    ],
)
def test_hub_errors_are_one_line_with_a_hint(tmp_path: Path, hub: FakeHFHub, source: str, message: str) -> None:
    manifest = hf_manifest(tmp_path, hub, f"  bad:\n    source: {source}\n  other: {{source: hf://org/other}}\n")
    result = run_cli("apply", manifest)
    assert result.returncode == 1
    assert message in result.stderr and "hint:" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "models" / "other" / "weights.bin").exists()


def test_a_paginated_tree_is_read_to_the_end(tmp_path: Path) -> None:
    with FakeHFHub(page_size=2) as hub:
        hub.add_repo("org/tiny", TINY_FILES)
        manifest = hf_manifest(tmp_path, hub, "  tiny: {source: hf://org/tiny}\n")
        result = run_cli("apply", manifest)
        assert result.returncode == 0, result.stderr
        assert hub.count("GET", "/api/models/org/tiny/tree/") >= 3  # several pages were fetched
    assert set(lock_of(manifest)["models"]["tiny"]["files"]) == set(TINY_FILES)
