"""Lock and state files are untrusted (issue 12, items 2 and 5): a wrong type or unsafe path is
exit 2 naming the file, entry and field, and nothing outside a model's folder is read, hashed or
deleted because a file said so. ``apply`` repairs what ``verify`` flags."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provision import exitcodes
from tests.cli_runner import run_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.manifest_files import lock_of, lock_path, write_manifest
from tests.security._support import GOOD_FILES, exited_cleanly, invoke, json_of, tree

FILES = {**GOOD_FILES, "extra.txt": b"extra"}


@pytest.fixture
def hub() -> Any:
    with FakeHFHub() as hub:
        hub.add_repo("org/good", FILES, lfs_threshold=1024)
        yield hub


def _manifest(tmp_path: Path, hub: FakeHFHub, extra: str = "") -> Path:
    return write_manifest(
        tmp_path,
        f"version: 1\nsettings:\n  models_dir: models\n  huggingface: {{endpoint: '{hub.url}'}}\n"
        f"models:\n  good: {{source: 'hf://org/good'{extra}}}\n",
    )


def _applied(tmp_path: Path, hub: FakeHFHub) -> Path:
    manifest = _manifest(tmp_path, hub)
    result = invoke("apply", str(manifest), "--json")
    assert result.exit_code == 0, result.output
    return manifest


def test_lock_path_outside_the_folder_is_exit_2_and_never_hashed_or_deleted(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = _applied(tmp_path, hub)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    lock_file = lock_path(manifest)
    lock = json.loads(lock_file.read_text())
    lock["models"]["good"]["files"]["../../victim.txt"] = {"size": 8, "sha256": "0" * 64}
    lock_file.write_text(json.dumps(lock))
    for command in (("verify",), ("apply",)):  # end to end
        result = run_cli(*command, manifest)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "m.lock.json" in result.stderr and "'good'" in result.stderr and "files" in result.stderr
        assert "unsafe path" in result.stderr and "Traceback" not in result.stderr
    for name, *extra in (("plan",), ("status",), ("destroy", "--yes")):
        ran = invoke(name, str(manifest), *extra)
        assert ran.exit_code == 2 and exited_cleanly(ran, 2) and "unsafe path" in ran.output, (name, ran.output)
    # the old exploit: an exclude change made apply delete the locked path
    manifest.write_text(manifest.read_text().replace("'hf://org/good'", "'hf://org/good', exclude: ['extra*']"))
    assert run_cli("apply", manifest).returncode == 2
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", "12"),
        ("size", -1),
        ("size", True),
        ("sha256", "../../x"),
        ("sha256", "A" * 63),
        ("git_sha1", 5),
    ],
)
def test_lock_wrong_type_is_exit_2_naming_the_field(tmp_path: Path, hub: FakeHFHub, field: str, value: Any) -> None:
    manifest = _applied(tmp_path, hub)
    lock_file = lock_path(manifest)
    lock = json.loads(lock_file.read_text())
    lock["models"]["good"]["files"]["config.json"][field] = value
    lock_file.write_text(json.dumps(lock))
    result = invoke("verify", str(manifest))
    assert result.exit_code == 2 and exited_cleanly(result, 2)
    assert f"files.config.json.{field}" in result.output and "'good'" in result.output, result.output


SPOILED: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    # a wrong type, as a bad merge or a hand edit leaves it: (spoil the entry, the message's field)
    "files-a-string": (
        lambda entry: entry.update(files="config.json"),
        "field files: Input should be a valid dictionary",
    ),
    "size-a-string": (
        lambda entry: entry["files"]["config.json"].update(size="12"),
        "field files.config.json.size: Input should be a valid integer",
    ),
}


@pytest.mark.parametrize("command", ["apply", "status", "verify"])
@pytest.mark.parametrize("spoil", sorted(SPOILED))
def test_a_spoiled_lock_is_exit_2_naming_the_lock_file(
    tmp_path: Path, hub: FakeHFHub, command: str, spoil: str
) -> None:
    manifest = _applied(tmp_path, hub)
    lock = lock_of(manifest)
    change, message = SPOILED[spoil]
    change(lock["models"]["good"])
    lock_path(manifest).write_text(json.dumps(lock))
    spoiled = lock_path(manifest).read_bytes()
    gets = hub.file_gets()
    result = run_cli(command, manifest)
    assert result.returncode == exitcodes.USAGE, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"error: {lock_path(manifest)}: entry 'good', {message}",
        "  hint: restore the lock file from version control, or delete it and run `provision apply --update`",
    ]
    assert lock_path(manifest).read_bytes() == spoiled, "a lock that cannot be read is never rewritten"
    assert hub.file_gets() == gets


def test_lock_resolved_cannot_steer_urls(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = _applied(tmp_path, hub)
    lock_file = lock_path(manifest)
    lock = json.loads(lock_file.read_text())
    lock["models"]["good"]["resolved"] = "../../../evil"
    lock_file.write_text(json.dumps(lock))
    result = invoke("apply", str(manifest))
    assert result.exit_code == 2 and "resolved" in result.output


def test_state_path_outside_models_dir_is_never_deleted(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = _applied(tmp_path, hub)
    elsewhere = tmp_path / "elsewhere" / "good"
    elsewhere.mkdir(parents=True)
    (elsewhere / "config.json").write_bytes(b"mine")
    state_file = tmp_path / "state" / "state.json"
    state = json.loads(state_file.read_text())
    state["manifests"][str(manifest)]["models"]["good"]["path"] = str(elsewhere)
    state_file.write_text(json.dumps(state))
    result = invoke("destroy", str(manifest), "--yes", "--json")
    assert exited_cleanly(result, 0, 1)
    assert (elsewhere / "config.json").read_bytes() == b"mine"  # no marker there: not provision's


@pytest.mark.parametrize("tamper", ["files-type", "unsafe-file", "name", "source"])
def test_state_wrong_type_is_exit_2_naming_the_field(tmp_path: Path, hub: FakeHFHub, tamper: str) -> None:
    manifest = _applied(tmp_path, hub)
    state_file = tmp_path / "state" / "state.json"
    state = json.loads(state_file.read_text())
    models = state["manifests"][str(manifest)]["models"]
    if tamper == "files-type":
        models["good"]["files"] = ["config.json"]
    elif tamper == "unsafe-file":
        models["good"]["files"]["../../etc/passwd"] = [1, 2, 3]
    elif tamper == "name":
        models["../../x"] = models["good"]
    else:
        models["good"]["source"] = 7
    state_file.write_text(json.dumps(state))
    result = run_cli("apply", manifest)
    assert result.returncode == 2, result.stderr
    assert "state.json" in result.stderr and "field" in result.stderr and "Traceback" not in result.stderr


def test_apply_repairs_what_verify_flags(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = _applied(tmp_path, hub)
    weights = tmp_path / "models/good/weights.bin"
    weights.write_bytes(b"X" * len(FILES["weights.bin"]))  # same size, other bytes
    assert invoke("verify", str(manifest)).exit_code == 1
    result = invoke("apply", str(manifest), "--json")
    assert result.exit_code == 0
    assert json_of(result)["outcomes"][0]["change"] == "update"
    assert weights.read_bytes() == FILES["weights.bin"]
    assert invoke("verify", str(manifest)).exit_code == 0


def test_noop_apply_trusts_an_unchanged_stat_and_apply_verify_hashes_everything(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = _applied(tmp_path, hub)
    weights = tmp_path / "models/good/weights.bin"
    st = weights.stat()
    with weights.open("r+b") as f:  # in place: same inode and size; then the mtime put back
        f.write(b"Y")
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    result = invoke("apply", str(manifest), "--json")  # stat only: not noticed, by design
    assert result.exit_code == 0 and json_of(result)["outcomes"][0]["change"] == "no change"
    result = invoke("apply", str(manifest), "--verify", "--json")
    assert result.exit_code == 0 and json_of(result)["outcomes"][0]["change"] == "update"
    assert weights.read_bytes() == FILES["weights.bin"]


def test_files_present_before_the_first_apply_are_hashed_before_recorded(tmp_path: Path, hub: FakeHFHub) -> None:
    model_dir = tmp_path / "models/good"
    model_dir.mkdir(parents=True)
    (model_dir / "weights.bin").write_bytes(b"Z" * len(FILES["weights.bin"]))  # right size, wrong bytes
    (model_dir / "config.json").write_bytes(FILES["config.json"])  # right bytes: kept, not fetched
    manifest = _manifest(tmp_path, hub, ", adopt: true")
    gets_before = hub.file_gets()
    result = invoke("apply", str(manifest), "--json")
    assert result.exit_code == 0, result.output
    assert (model_dir / "weights.bin").read_bytes() == FILES["weights.bin"]
    assert hub.file_gets() - gets_before == 2  # weights.bin and extra.txt; config.json was proven by hash
    assert invoke("verify", str(manifest)).exit_code == 0
    assert lock_of(manifest)["models"]["good"]["files"]["weights.bin"]["sha256"] != ""


def test_verify_never_hashes_through_a_link_out_of_the_folder(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = _applied(tmp_path, hub)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(FILES["weights.bin"])
    weights = tmp_path / "models/good/weights.bin"
    weights.unlink()
    weights.symlink_to(secret)
    before = tree(tmp_path)["secret.bin"]
    result = invoke("apply", str(manifest), "--json")
    assert result.exit_code == 0 and json_of(result)["outcomes"][0]["change"] == "update"
    assert not weights.is_symlink() and weights.read_bytes() == FILES["weights.bin"]
    assert tree(tmp_path)["secret.bin"] == before


def test_verify_flags_a_link_out_of_the_folder_even_to_the_right_bytes(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = _applied(tmp_path, hub)
    copy = tmp_path / "elsewhere.json"
    copy.write_bytes(FILES["config.json"])  # hashing through the link would call it fine
    placed = tmp_path / "models/good/config.json"
    placed.unlink()
    placed.symlink_to(copy)
    result = run_cli("verify", manifest, "--json")
    assert result.returncode == 1
    assert {"model": "good", "path": "config.json", "problem": "corrupt"} in json.loads(result.stdout)["problems"]


def test_a_state_record_of_an_unmarked_folder_never_gets_it_deleted(tmp_path: Path, hub: FakeHFHub) -> None:
    # The state alone once proved a folder provision's when it recorded the folder's exact path:
    # a hand-edited record of a user's folder (named as the model, no marker) made destroy
    # delete the files the record listed, then the folder.
    manifest = _applied(tmp_path, hub)
    shutil.rmtree(tmp_path / "models" / "good")  # the manifest's own folder is gone: the record's is the one
    victim = tmp_path / "victim" / "good"
    victim.mkdir(parents=True)
    (victim / "main.py").write_bytes(b"mine")
    state_file = tmp_path / "state" / "state.json"
    state = json.loads(state_file.read_text())
    record = state["manifests"][str(manifest)]["models"]["good"]
    record["path"] = str(victim)
    record["files"] = {"main.py": [4, 1, 1]}
    state_file.write_text(json.dumps(state))
    result = invoke("destroy", str(manifest), "--yes", "--json")
    assert exited_cleanly(result, 0, 1)
    assert (victim / "main.py").read_bytes() == b"mine"
