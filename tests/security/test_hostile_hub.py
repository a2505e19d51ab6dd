"""A hub that lies (issue 12, items 1, 4, 7, 8, 11, 18): one poisoned model fails alone, named
with the field and value; nothing lands outside ``models_dir/<name>``; the good model arrives."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import run_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.fakes.hostile_hub import HostileHFHub, HostileMSHub
from tests.manifest_files import lock_of
from tests.security._support import (
    BAD_FILES,
    GOOD_FILES,
    changed,
    exited_cleanly,
    invoke,
    outside,
    tree,
    two_model_manifest,
)

Entries = list[dict[str, Any]]


def _set(field: str, value: Any, path: str = "weights.bin") -> Callable[[Entries], Entries]:
    """An edit that sets ``field`` (dotted: ``lfs.oid``) of the entry listed at ``path``."""

    def edit(entries: Entries) -> Entries:
        for entry in entries:
            if entry.get("path", entry.get("Path")) == path:
                target = entry
                *parents, last = field.split(".")
                for key in parents:
                    target = target.setdefault(key, {})
                target[last] = value
        return entries

    return edit


def _add(entry: dict[str, Any]) -> Callable[[Entries], Entries]:
    return lambda entries: [*entries, entry]


@pytest.fixture
def hf_hub() -> Any:
    with HostileHFHub() as hub:
        hub.add_repo("evil/bad", BAD_FILES, lfs_threshold=1024)
        hub.add_repo("org/good", GOOD_FILES, lfs_threshold=1024)
        yield hub


@pytest.fixture
def ms_hub() -> Any:
    hub = HostileMSHub().start()
    hub.add_repo("evil/bad", BAD_FILES)
    hub.add_repo("org/good", GOOD_FILES)
    yield hub
    hub.stop()


def _apply(manifest: Path, *, end_to_end: bool) -> tuple[int, str]:
    """``provision apply``: a subprocess for a few cases, in-process (faster) for the rest."""
    if end_to_end:
        result = run_cli("apply", manifest)
        return result.returncode, result.stdout + result.stderr
    ran = invoke("apply", str(manifest))
    assert exited_cleanly(ran, 0, 1, 2), ran.exception
    return ran.exit_code, ran.output


END_TO_END = {"lfs-oid-traversal", "git-config", "sha256-traversal"}
TRAVERSAL = "../../../../tmp-evil/evil"
HF_CASES = {
    "lfs-oid-traversal": (_set("lfs.oid", TRAVERSAL), "lfs.oid"),
    "oid-traversal": (_set("oid", TRAVERSAL, "config.json"), "oid"),
    "git-config": (_add({"type": "file", "path": ".git/config", "size": 10, "oid": "a" * 40}), ".git"),
    "nested-git-hook": (
        _add({"type": "file", "path": "sub/.Git/hooks/post-checkout", "size": 1, "oid": "b" * 40}),
        ".git",
    ),
    "size-not-int": (_set("size", "abc"), "size"),
    "size-negative": (_set("size", -5), "size"),
    "nul-in-path": (_add({"type": "file", "path": "a\u0000b", "size": 1, "oid": "c" * 40}), "control"),
    "absolute-path": (_add({"type": "file", "path": "/etc/cron.d/x", "size": 1, "oid": "c" * 40}), "absolute"),
}


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_hf_poisoned_listing_fails_that_model_only(case: str, hf_hub: HostileHFHub, tmp_path: Path) -> None:
    edit, named = HF_CASES[case]
    hf_hub.listing_edits["evil/bad"] = edit
    manifest = two_model_manifest(tmp_path, hf_hub.url, "hf")
    before = tree(tmp_path)
    code, output = _apply(manifest, end_to_end=case in END_TO_END)
    assert code == 1, output
    assert "internal error" not in output and "Traceback" not in output
    assert "bad:" in output and "listing field" in output and named in output, output  # refused, not tried
    assert (tmp_path / "models/good/weights.bin").read_bytes() == GOOD_FILES["weights.bin"]
    touched = outside(changed(before, tree(tmp_path)), "models/good", "models/bad", "m.lock.json", "state", "home")
    assert touched == set()
    assert not (tmp_path / "models/bad").exists() or not list((tmp_path / "models/bad").rglob("config"))
    assert set(lock_of(manifest)["models"]) == {"good"}


MS_CASES = {
    "sha256-traversal": (_set("Sha256", TRAVERSAL), "Sha256"),
    "git-hook": (_add({"Type": "blob", "Path": ".git/hooks/pre-commit", "Size": 1, "Sha256": "d" * 64}), ".git"),
    "size-bool": (_set("Size", True), "Size"),
    "size-huge": (_set("Size", 1 << 62), "Size"),
}


@pytest.mark.parametrize("case", sorted(MS_CASES))
def test_ms_poisoned_listing_fails_that_model_only(case: str, ms_hub: HostileMSHub, tmp_path: Path) -> None:
    edit, named = MS_CASES[case]
    ms_hub.listing_edits["evil/bad"] = edit
    manifest = two_model_manifest(tmp_path, ms_hub.url, "ms")
    before = tree(tmp_path)
    code, output = _apply(manifest, end_to_end=case in END_TO_END)
    assert code == 1, output
    assert "internal error" not in output and "listing field" in output and named in output, output
    assert (tmp_path / "models/good/weights.bin").read_bytes() == GOOD_FILES["weights.bin"]
    touched = outside(changed(before, tree(tmp_path)), "models/good", "models/bad", "m.lock.json", "state", "home")
    assert touched == set()


def test_next_link_to_itself_is_a_loop_not_a_hang(hf_hub: HostileHFHub, tmp_path: Path) -> None:
    hf_hub.link = "self"
    result = run_cli("plan", two_model_manifest(tmp_path, hf_hub.url, "hf"), timeout=60)
    assert result.returncode == 1
    assert "a loop" in result.stdout + result.stderr, result.stdout
    assert hf_hub.count("GET", "/api/models/org/good/tree") <= 2  # never more than one repeat


def test_next_link_to_another_origin_gets_no_token(hf_hub: HostileHFHub, tmp_path: Path) -> None:
    with FakeHFHub() as other:
        other.add_repo("org/good", GOOD_FILES)
        other.add_repo("evil/bad", BAD_FILES)
        hf_hub.link, hf_hub.cross_origin = "cross", other.url
        manifest = two_model_manifest(tmp_path, hf_hub.url, "hf")
        result = run_cli("plan", manifest, env={"HF_TOKEN": "hf_canary_secret"})
        assert result.returncode == 0, result.stderr
        assert [r for r in other.requests if r.path.startswith("/api/")], "the next page was fetched there"
        assert all("authorization" not in r.headers for r in other.requests)
    assert any(r.headers.get("authorization") == "Bearer hf_canary_secret" for r in hf_hub.requests)


def test_tree_redirect_to_trailing_slash_is_followed(hf_hub: HostileHFHub, tmp_path: Path) -> None:
    hf_hub.slash_redirect = True
    manifest = two_model_manifest(tmp_path, hf_hub.url, "hf")
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stderr
    assert any(r.status == 307 for r in hf_hub.requests)
    assert (tmp_path / "models/bad/weights.bin").read_bytes() == BAD_FILES["weights.bin"]


def test_file_redirect_loop_is_final_not_retried(hf_hub: HostileHFHub, tmp_path: Path) -> None:
    hf_hub.file_loop = {"weights.bin"}
    manifest = two_model_manifest(tmp_path, hf_hub.url, "hf")
    result = run_cli("apply", manifest, "--only", "bad", "--json")
    assert result.returncode == 1
    outcome = json.loads(result.stdout)["outcomes"][0]
    assert "redirect loop" in outcome["error"] and "resumes" not in outcome["hint"], outcome
    loops = [r for r in hf_hub.requests if r.path.endswith("/weights.bin")]
    assert len(loops) == 1  # seen on the first answer: no retries, no 20 hops
