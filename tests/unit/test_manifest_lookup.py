"""Which manifest a command means when none is given (provision/manifest_loader.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.errors import ProvisionError
from provision.manifest_loader import MANIFEST_ENV, default_manifest_path, load_manifest, manifest_or_last_applied
from provision.state import State


@pytest.fixture
def empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv(MANIFEST_ENV, raising=False)
    return folder


def test_the_default_is_the_variable_else_provision_yaml(empty_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_manifest_path() == Path("provision.yaml")
    monkeypatch.setenv(MANIFEST_ENV, "")
    assert default_manifest_path() == Path("provision.yaml")  # empty: as if unset
    monkeypatch.setenv(MANIFEST_ENV, "/srv/models.yaml")
    assert default_manifest_path() == Path("/srv/models.yaml")


def test_load_manifest_without_a_path_reads_the_default(empty_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (empty_folder / "other.yaml").write_text("version: 1\n")
    monkeypatch.setenv(MANIFEST_ENV, "other.yaml")
    assert load_manifest().path == empty_folder / "other.yaml"


def test_with_nothing_here_the_last_applied_manifest_is_meant(empty_folder: Path) -> None:
    with pytest.raises(ProvisionError, match="no manifest given and nothing applied on this machine yet") as caught:
        manifest_or_last_applied()
    assert caught.value.hint == "run `provision apply MANIFEST` first, or pass the manifest"
    applied = empty_folder.parent / "elsewhere" / "provision.yaml"
    State().update(applied, "models", "m", {"source": "ollama://qwen3:0.6b"})
    assert manifest_or_last_applied() == applied


def test_a_manifest_here_or_named_wins_over_the_last_applied(
    empty_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    State().update(empty_folder.parent / "elsewhere.yaml", "models", "m", {"source": "ollama://qwen3:0.6b"})
    (empty_folder / "provision.yaml").write_text("version: 1\n")
    assert manifest_or_last_applied() == Path("provision.yaml")
    monkeypatch.setenv(MANIFEST_ENV, "missing.yaml")  # named: used even before it exists (the error says so)
    assert manifest_or_last_applied() == Path("missing.yaml")
