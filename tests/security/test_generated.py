"""Generated hostile input (issue 12): listings from a lying hub, tampered lock and state files.

For every case: exit 0, 1 or 2 (never a traceback or an "internal error"), nothing created,
changed or deleted outside ``models_dir/<name>`` (a snapshot of the whole temporary tree, with
victim files beside and above the models), and the good model in the same manifest unaffected.
The CLI runs in-process (click's runner): a subprocess per example would take minutes.
Traversals climb at most 8 levels, and each case lives 8 levels deep, so every escape would
land inside the snapshot.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.fakes.hostile_hub import HostileHFHub, HostileMSHub
from tests.manifest_files import lock_path
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

EXAMPLES = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DEPTH = "/".join("d" * 8)
ALLOWED = ("models/good", "models/bad", "m.lock.json", "state")

# -- strategies ------------------------------------------------------------------------------

traversal = st.builds(
    lambda n, tail: "../" * n + tail, st.integers(1, 8), st.sampled_from(["evil", "x/evil", "victim"])
)
git_path = st.builds(
    lambda pre, git, post: f"{pre}{git}/{post}",
    st.sampled_from(["", "sub/", "a/b/"]),
    st.sampled_from([".git", ".GIT", ".Git", ".git.", ".git "]),
    st.sampled_from(["config", "hooks/post-checkout", "info/attributes"]),
)
control = st.builds(
    lambda a, c, b: f"{a}{c}{b}",
    st.text("abc", min_size=1, max_size=3),
    st.sampled_from(["\x00", "\n", "\r", "\x1b[31m", "\u202e", "\x7f", "\u2028"]),
    st.text("xyz", min_size=1, max_size=3),
)
odd_path = st.one_of(
    traversal,
    git_path,
    control,
    st.sampled_from(
        [
            "/etc/cron.d/evil",
            "C:/evil",
            "a//b",
            "a/./b",
            "a/",
            ".",
            "",
            ".cache/provision/x",
            ".provision.json",
            "a\\..\\..\\evil",
            "[bold]x[/]",
            "模型/权重.bin",
            "ok.bin",
        ]
    ),
    st.text(min_size=1, max_size=12),
)
odd_size = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 3000, -1]),
    st.text(max_size=4),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
)
hex40 = st.text("0123456789abcdef", min_size=40, max_size=40)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
odd_digest = st.one_of(
    hex40,
    hex64,
    traversal,
    st.text(max_size=70),
    st.integers(),
    st.none(),
    st.text("0123456789ABCDEF", min_size=64, max_size=64),
)


@st.composite
def hf_entry(draw: st.DrawFn) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "path": draw(odd_path), "size": draw(odd_size), "oid": draw(odd_digest)}
    if draw(st.booleans()):
        entry["lfs"] = draw(
            st.one_of(st.fixed_dictionaries({"oid": odd_digest, "size": odd_size}), st.none(), st.text(max_size=3))
        )
    return entry


@st.composite
def ms_entry(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "Type": draw(st.sampled_from(["blob", "tree", None])),
        "Path": draw(odd_path),
        "Size": draw(odd_size),
        "Sha256": draw(odd_digest),
    }


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def hf_hub() -> Iterator[HostileHFHub]:
    with HostileHFHub() as hub:
        hub.add_repo("evil/bad", BAD_FILES, lfs_threshold=1024)
        hub.add_repo("org/good", GOOD_FILES, lfs_threshold=1024)
        yield hub


@pytest.fixture
def ms_hub() -> Iterator[HostileMSHub]:
    hub = HostileMSHub().start()
    hub.add_repo("evil/bad", BAD_FILES)
    hub.add_repo("org/good", GOOD_FILES)
    yield hub
    hub.stop()


def _case_dir(tmp_path: Path) -> Path:
    top = Path(tempfile.mkdtemp(dir=tmp_path))
    root = top / DEPTH
    root.mkdir(parents=True)
    (top / "victim").write_bytes(b"above")
    (root / "victim").write_bytes(b"beside")
    (root / "models").mkdir()
    (root / "models" / "victim").write_bytes(b"in models_dir")
    return root


def _check(top: Path, root: Path, before: dict[str, str], result: Any, *codes: int) -> None:
    event(f"exit {result.exit_code}")
    assert exited_cleanly(result, *codes), (result.exit_code, result.output, result.exception)
    assert "internal error" not in result.output and "Traceback" not in result.output, result.output
    prefix = root.relative_to(top).as_posix()
    touched = outside(changed(before, tree(top)), *(f"{prefix}/{a}" for a in ALLOWED))
    assert touched == set(), touched


def _apply(root: Path, manifest: Path, *args: str) -> Any:
    return invoke("apply", str(manifest), "--json", *args, env={"PROVISION_STATE_DIR": str(root / "state")})


def _good_placed_unless_the_disk_refused(root: Path, result: Any) -> None:
    """The honest model is placed, unless a listed size beyond this disk's free space stopped the
    whole apply before any download (the disk check is for the plan, by design): then nothing is."""
    good = root / "models/good/weights.bin"
    if "not enough disk" in result.output:
        assert result.exit_code == 1 and not good.exists(), result.output
    else:
        assert good.read_bytes() == GOOD_FILES["weights.bin"], result.output


# -- listings --------------------------------------------------------------------------------


@EXAMPLES
@given(entries=st.lists(hf_entry(), min_size=1, max_size=3), link=st.sampled_from([None, None, "self"]))
def test_generated_hf_listings(
    hf_hub: HostileHFHub, tmp_path: Path, entries: list[dict[str, Any]], link: str | None
) -> None:
    hf_hub.listing_edits["evil/bad"] = lambda honest: honest + entries
    hf_hub.link = link
    root = _case_dir(tmp_path)
    manifest = two_model_manifest(root, hf_hub.url, "hf")
    before = tree(tmp_path)
    result = _apply(root, manifest)
    _check(tmp_path, root, before, result, 0, 1)
    if link is None:
        _good_placed_unless_the_disk_refused(root, result)


@EXAMPLES
@given(entries=st.lists(ms_entry(), min_size=1, max_size=3))
def test_generated_ms_listings(ms_hub: HostileMSHub, tmp_path: Path, entries: list[dict[str, Any]]) -> None:
    ms_hub.listing_edits["evil/bad"] = lambda honest: honest + entries
    root = _case_dir(tmp_path)
    manifest = two_model_manifest(root, ms_hub.url, "ms")
    before = tree(tmp_path)
    result = _apply(root, manifest)
    _check(tmp_path, root, before, result, 0, 1)
    _good_placed_unless_the_disk_refused(root, result)


# -- tampered lock and state -----------------------------------------------------------------

odd_value = st.one_of(
    odd_size,
    odd_digest,
    odd_path,
    st.lists(st.integers(), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def lock_tamper(draw: st.DrawFn) -> tuple[str, tuple[str, ...], Any]:
    """(model, where, value): a field of an entry replaced, or a file entry added under an odd path."""
    model = draw(st.sampled_from(["bad", "good"]))
    where = draw(
        st.sampled_from(
            [
                ("resolved",),
                ("spec", "source"),
                ("spec",),
                ("files",),
                ("files", "weights.bin", "size"),
                ("files", "weights.bin", "sha256"),
                ("files", "config.json", "git_sha1"),
                ("files", "*new*"),
                ("digest",),
            ]
        )
    )
    value = draw(
        st.fixed_dictionaries({"size": odd_size, "sha256": odd_digest}) if where == ("files", "*new*") else odd_value
    )
    return model, where, value


def _tamper(document: dict[str, Any], entry: dict[str, Any], where: tuple[str, ...], value: Any, new_key: str) -> None:
    target = entry
    for key in where[:-1]:
        target = target.setdefault(key, {}) if isinstance(target, dict) else target
    target[new_key if where[-1] == "*new*" else where[-1]] = value


COMMANDS = [
    ("verify",),
    ("plan",),
    ("status",),
    ("apply",),
    ("apply", "--verify"),
    ("apply", "--yes"),
    ("destroy", "--yes"),
]


@EXAMPLES
@given(tamper=lock_tamper(), new_key=st.one_of(traversal, git_path, odd_path), command=st.sampled_from(COMMANDS))
def test_generated_lock_tampering(
    hf_hub: HostileHFHub,
    tmp_path: Path,
    tamper: tuple[str, tuple[str, ...], Any],
    new_key: str,
    command: tuple[str, ...],
) -> None:
    hf_hub.listing_edits.clear()
    hf_hub.link = None
    root = _case_dir(tmp_path)
    manifest = two_model_manifest(root, hf_hub.url, "hf")
    assert _apply(root, manifest).exit_code == 0
    lock_file = lock_path(manifest)
    lock = json.loads(lock_file.read_text())
    model, where, value = tamper
    _tamper(lock, lock["models"][model], where, value, new_key)
    lock_file.write_text(json.dumps(lock))
    before = tree(tmp_path)
    result = invoke(command[0], str(manifest), *command[1:], env={"PROVISION_STATE_DIR": str(root / "state")})
    _check(tmp_path, root, before, result, 0, 1, 2)


@EXAMPLES
@given(
    model=st.sampled_from(["bad", "good", "../../victim", "victim"]),
    field=st.sampled_from(["path", "files", "source", "resolved", "*file*"]),
    value=st.one_of(odd_value, st.just("{root}/victim"), st.just("{root}/models/victim"), st.just("/")),
    new_key=st.one_of(traversal, git_path, st.just("victim")),
    command=st.sampled_from(COMMANDS),
)
def test_generated_state_tampering(
    hf_hub: HostileHFHub, tmp_path: Path, model: str, field: str, value: Any, new_key: str, command: tuple[str, ...]
) -> None:
    hf_hub.listing_edits.clear()
    hf_hub.link = None
    root = _case_dir(tmp_path)
    manifest = two_model_manifest(root, hf_hub.url, "hf")
    assert _apply(root, manifest).exit_code == 0
    state_file = root / "state" / "state.json"
    state = json.loads(state_file.read_text())
    models = state["manifests"][str(manifest)]["models"]
    record = models.setdefault(model, dict(models["good"]))
    if isinstance(value, str):
        value = value.replace("{root}", str(root))
    if field == "*file*":
        record.setdefault("files", {})[new_key] = value
    else:
        record[field] = value
    state_file.write_text(json.dumps(state))
    before = tree(tmp_path)
    result = invoke(command[0], str(manifest), *command[1:], env={"PROVISION_STATE_DIR": str(root / "state")})
    _check(tmp_path, root, before, result, 0, 1, 2)
