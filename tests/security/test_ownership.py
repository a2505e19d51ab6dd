"""Folders provision did not create (issue 12, items 3, 12, 13): refused unless ``adopt: true``;
``destroy`` and orphan removal delete only what provision placed; a folder another manifest owns
is refused; a ``file://`` source that holds ``models_dir`` or links out of itself is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import run_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.manifest_files import write_manifest
from tests.security._support import GOOD_FILES, exited_cleanly, invoke, json_of, tree


@pytest.fixture
def hub() -> Any:
    with FakeHFHub() as hub:
        hub.add_repo("org/good", GOOD_FILES, lfs_threshold=1024)
        hub.add_repo("org/other", {"a.bin": b"a" * 2000}, lfs_threshold=1024)
        yield hub


def _manifest(path: Path, hub: FakeHFHub, models: str, models_dir: str = "models") -> Path:
    return write_manifest(
        path.parent,
        f"version: 1\nsettings:\n  models_dir: {models_dir}\n  huggingface: {{endpoint: '{hub.url}'}}\n"
        f"models:\n{models}",
        name=path.name,
    )


GOOD = "  good: {source: 'hf://org/good'}\n"


def test_a_folder_provision_did_not_create_is_refused_then_adopted(tmp_path: Path, hub: FakeHFHub) -> None:
    user_dir = tmp_path / "models/good"
    user_dir.mkdir(parents=True)
    (user_dir / "notes.txt").write_bytes(b"mine")
    manifest = _manifest(tmp_path / "m.yaml", hub, GOOD)
    result = run_cli("apply", manifest)
    assert result.returncode == 1
    assert str(user_dir) in result.stderr and "did not create" in result.stderr and "adopt" in result.stderr
    assert sorted(p.name for p in user_dir.iterdir()) == ["notes.txt"]

    _manifest(manifest, hub, "  good: {source: 'hf://org/good', adopt: true}\n")
    assert run_cli("apply", manifest).returncode == 0
    assert json.loads((user_dir / ".provision.json").read_text()) == {"manifest": str(manifest), "model": "good"}
    verified = run_cli("verify", manifest, "--json")
    assert json.loads(verified.stdout)["problems"] == [{"model": "good", "path": "notes.txt", "problem": "extra"}]

    result = run_cli("destroy", manifest, "--yes")
    assert result.returncode == 0 and "notes.txt" in result.stdout  # reported as kept
    assert sorted(p.name for p in user_dir.iterdir()) == [".provision.json", "notes.txt"]
    assert (user_dir / "notes.txt").read_bytes() == b"mine"


def test_destroy_removes_a_marked_folder_whole(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = _manifest(tmp_path / "m.yaml", hub, GOOD)
    assert invoke("apply", str(manifest)).exit_code == 0
    assert (tmp_path / "models/good/.provision.json").is_file()
    assert invoke("destroy", str(manifest), "--yes").exit_code == 0
    assert not (tmp_path / "models/good").exists()


def test_a_second_manifest_may_not_take_another_manifests_folder(tmp_path: Path, hub: FakeHFHub) -> None:
    first = _manifest(tmp_path / "a.yaml", hub, GOOD)
    second = _manifest(tmp_path / "b.yaml", hub, "  good: {source: 'hf://org/other', adopt: true}\n")
    assert invoke("apply", str(first)).exit_code == 0
    before = tree(tmp_path / "models")
    result = run_cli("apply", second)
    assert result.returncode == 1 and str(first) in result.stderr, result.stderr
    assert tree(tmp_path / "models") == before
    assert invoke("destroy", str(second), "--yes").exit_code == 0  # b recorded nothing: nothing removed
    assert tree(tmp_path / "models") == before


def test_an_orphan_model_is_kept_without_yes_and_only_placed_files_go_with_it(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = _manifest(tmp_path / "m.yaml", hub, GOOD + "  other: {source: 'hf://org/other'}\n")
    assert invoke("apply", str(manifest)).exit_code == 0
    (tmp_path / "models/other/my-results.csv").write_bytes(b"1,2")
    _manifest(manifest, hub, GOOD)

    plan = run_cli("plan", manifest, "--json")
    assert [(a["name"], a["change"]) for a in json.loads(plan.stdout)["actions"]] == [
        ("good", "no change"),
        ("other", "delete"),
    ]
    result = run_cli("apply", manifest)  # no terminal, no --yes: kept, and said so
    assert result.returncode == 1 and "--yes" in result.stderr
    assert (tmp_path / "models/other/a.bin").exists()

    invoked = invoke("apply", str(manifest), "--yes", "--json")
    assert exited_cleanly(invoked, 0), invoked.output
    outcome = next(o for o in json_of(invoked)["outcomes"] if o["name"] == "other")
    assert "my-results.csv" in outcome["reason"]
    assert sorted(p.name for p in (tmp_path / "models/other").iterdir()) == [".provision.json", "my-results.csv"]


def test_local_source_holding_models_dir_is_refused_by_validate(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"w")
    manifest = write_manifest(
        tmp_path, "version: 1\nsettings: {models_dir: models}\nmodels:\n  me: {source: 'file://.'}\n"
    )
    for command in ("validate", "plan", "apply"):
        result = run_cli(command, manifest)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "models.me.source" in result.stderr and "contains models_dir" in result.stderr
    assert not (tmp_path / "models").exists()


def test_local_links_out_of_the_source_are_refused_unless_followed(tmp_path: Path) -> None:
    source = tmp_path / "ckpt"
    source.mkdir()
    (source / "w.bin").write_bytes(b"w")
    secret = tmp_path / "secret"
    secret.write_bytes(b"shadow")
    (source / "leak").symlink_to(secret)
    manifest = write_manifest(
        tmp_path, "version: 1\nsettings: {models_dir: models}\nmodels:\n  m: {source: 'file://ckpt'}\n"
    )
    result = run_cli("apply", manifest)
    assert result.returncode == 1 and "leak" in result.stderr and "follow_symlinks" in result.stderr
    assert not (tmp_path / "models/m/leak").exists()
    manifest.write_text(manifest.read_text().replace("'file://ckpt'}", "'file://ckpt', follow_symlinks: true}"))
    assert run_cli("apply", manifest).returncode == 0
    assert (tmp_path / "models/m/leak").read_bytes() == b"shadow"


@pytest.mark.parametrize("scheme", ["hf", "file"])
@pytest.mark.parametrize("link", ["sub", "sub/deep"])
def test_a_link_in_an_adopted_folder_that_leads_out_is_refused_and_nothing_outside_changes(
    scheme: str, link: str, tmp_path: Path, hub: FakeHFHub
) -> None:
    # Before, a repo file sub/deep/weights.bin went through the folder's link (``sub`` or
    # ``sub/deep``, to a folder outside) into that folder, with the folders on its way.
    files = {"config.json": b"{}", "sub/deep/weights.bin": b"w" * 3000}
    hub.add_repo("org/sub", files, lfs_threshold=1024)
    local = tmp_path / "ckpt"
    for path, content in files.items():
        (local / path).parent.mkdir(parents=True, exist_ok=True)
        (local / path).write_bytes(content)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "deep").mkdir(parents=True)
    (elsewhere / "deep" / "weights.bin").write_bytes(b"theirs")
    model = tmp_path / "models" / "m"
    (model / link).parent.mkdir(parents=True)
    (model / link).symlink_to(elsewhere if link == "sub" else elsewhere / "deep")
    source = "hf://org/sub" if scheme == "hf" else "file://ckpt"
    manifest = _manifest(tmp_path / "m.yaml", hub, f"  m: {{source: '{source}', adopt: true}}\n")
    before = tree(elsewhere)
    result = run_cli("apply", manifest)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "sub/deep/weights.bin" in result.stderr and "leads this path out" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert tree(elsewhere) == before


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_marker_that_is_not_a_small_file_is_no_marker_and_nothing_hangs(
    kind: str, tmp_path: Path, hub: FakeHFHub
) -> None:
    # Reading the marker waited forever on a FIFO for a writer, and read /dev/zero until memory ran out.
    model = tmp_path / "models" / "good"
    model.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(model / ".provision.json")
    else:
        (model / ".provision.json").symlink_to("/dev/zero")
    manifest = _manifest(tmp_path / "m.yaml", hub, GOOD)
    result = run_cli("apply", manifest, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "did not create" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in model.iterdir()) == [".provision.json"]  # nothing placed
