"""Hostile input on the ranged download path (provision/segmented.py, issue 16): a partial or its
``.ranges`` record that is not a file provision wrote (a link, a hard link, a FIFO), a partial
folder that leads out of the model folder, a valid record beside a partial longer than the file,
and a 206 whose ``Content-Range`` is not the range asked for. Nothing is read or written outside
the model folder, nothing hangs (a subprocess timeout catches that), and the file placed is the
file hashed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision import segments
from provision.download import PARTIAL_DIR, Downloader, _Transient, partial_path
from provision.files import RemoteFile
from provision.segments import Range
from tests.cli_runner import run_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.reliability._support import hf_settings, leftovers, models_manifest, payload
from tests.security._support import changed, tree

BIG = payload(2 * segments.MIN_RANGE, 21)  # the smallest file that goes the ranged way
SMALL = b'{"hidden_size": 64}'
FILES = {"config.json": SMALL, "model.safetensors": BIG}
HANG_LIMIT = 60  # seconds before a run counts as hung


@pytest.fixture
def hub() -> Iterator[FakeHFHub]:
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", FILES, lfs_threshold=1)  # every file listed with its sha256
        yield hub


def partial_of(model: Path, path: str) -> Path:
    """Where the downloader keeps ``path``'s partial download."""
    content = FILES[path]
    return partial_path(model, RemoteFile(path, len(content), sha256=hashlib.sha256(content).hexdigest()))


def apply(tmp_path: Path, hub: FakeHFHub) -> tuple[int, str]:
    manifest = models_manifest(
        tmp_path, hf_settings(hub.url), "  tiny: {source: hf://org/tiny, adopt: true}\n"
    )  # planted in: not made by provision
    result = run_cli("apply", manifest, timeout=HANG_LIMIT)
    return result.returncode, result.stdout + result.stderr


def planted(tmp_path: Path, case: str) -> tuple[Path, str]:
    """The model folder with ``case`` planted in it; and what the refusal must name."""
    model = tmp_path / "models" / "tiny"
    (model / PARTIAL_DIR).mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(SMALL[:5])  # a prefix of the small file: a resume would append to it
    if case == "fifo-record":  # opening it to read the record waited forever for a writer
        os.mkfifo(segments.record_path(partial_of(model, "model.safetensors")))
        return model, ".part.ranges"
    if case == "fifo-partial":  # the single stream's open for writing waited forever for a reader
        os.mkfifo(partial_of(model, "config.json"))
        return model, ".part"
    if case == "linked-partial":  # the single stream hashed the target and appended the rest to it
        partial_of(model, "config.json").symlink_to(outside / "victim")
        return model, ".part"
    if case == "hard-linked-partial":  # the same, into the file outside that shares its inode
        os.link(outside / "victim", partial_of(model, "config.json"))
        return model, ".part"
    if case == "linked-record":  # a valid record elsewhere was read, then every run failed on ELOOP
        part = outside / "big.part"
        part.write_bytes(BIG[: 1 << 20])
        record = segments.RangeRecord(part, len(BIG))
        record.save([Range(0, len(BIG), 1 << 20)])
        record.close()
        partial_of(model, "model.safetensors").write_bytes(BIG[: 1 << 20])
        segments.record_path(partial_of(model, "model.safetensors")).symlink_to(segments.record_path(part))
        return model, ".part.ranges"
    assert case == "linked-folder"  # partials were written under the link's target
    (model / PARTIAL_DIR).rmdir()
    (model / PARTIAL_DIR).symlink_to(outside)
    return model, str(PARTIAL_DIR)


@pytest.mark.parametrize(
    "case", ["fifo-record", "fifo-partial", "linked-partial", "hard-linked-partial", "linked-record", "linked-folder"]
)
def test_a_partial_that_provision_did_not_write_is_refused_and_nothing_outside_changes(
    case: str, hub: FakeHFHub, tmp_path: Path
) -> None:
    model, named = planted(tmp_path, case)
    before = tree(tmp_path / "outside")
    code, output = apply(tmp_path, hub)
    assert changed(before, tree(tmp_path / "outside")) == set()
    assert code == 1, output
    assert "Traceback" not in output and "internal error" not in output, output
    assert named in output and "hint:" in output and "remove" in output, output
    assert not (model / "model.safetensors").is_symlink() and not (model / "config.json").is_symlink()


def test_a_valid_record_beside_a_partial_longer_than_the_file_is_not_trusted(hub: FakeHFHub, tmp_path: Path) -> None:
    # Every range done, so nothing is fetched: the hash covered the file's size, and the partial
    # with its tail was placed, a file whose sha256 is not the one checked.
    model = tmp_path / "models" / "tiny"
    (model / PARTIAL_DIR).mkdir(parents=True)
    part = partial_of(model, "model.safetensors")
    part.write_bytes(BIG + b"tail appended by someone else")
    record = segments.RangeRecord(part, len(BIG))
    record.save([Range(0, len(BIG), len(BIG))])
    record.close()
    code, output = apply(tmp_path, hub)
    assert code == 0, output
    assert (model / "model.safetensors").read_bytes() == BIG
    assert leftovers(tmp_path / "models") == []


@pytest.mark.parametrize(
    ("said", "error"),
    [
        ("", "a 206 without a valid Content-Range (none)"),
        ("bytes 0-\x1b[2J/*", r"a 206 without a valid Content-Range ('bytes 0-\x1b[2J/*')"),
        ("bytes 1-{last}/{complete}", "server answered bytes 1-"),  # another start than asked
        (f"bytes {{first}}-{{last}}/{len(BIG) + 1}", f"the server says the file has {len(BIG) + 1} bytes"),
    ],
    ids=["no-header", "garbage", "another-start", "another-length"],
)
def test_a_206_that_is_not_the_range_asked_for_fails_the_file(
    said: str, error: str, hub: FakeHFHub, tmp_path: Path
) -> None:
    # Before, a 206 without a parsable Content-Range was taken as the range asked for.
    hub.faults.content_range = said
    code, output = apply(tmp_path, hub)
    assert code == 1, output
    assert error in output and "model.safetensors" in output and "hint:" in output, output
    assert "Traceback" not in output and "\x1b" not in output, output
    assert not (tmp_path / "models" / "tiny" / "model.safetensors").exists()


def test_a_206_longer_than_the_range_asked_for_is_refused(hub: FakeHFHub) -> None:
    # A split range asks for bytes up to its end; bytes past it belong to the next range.
    hub.faults.content_range = f"bytes 0-{len(BIG) - 1}/{len(BIG)}"
    url = f"{hub.url}/org/tiny/resolve/main/model.safetensors"
    file = RemoteFile("model.safetensors", len(BIG), sha256=hashlib.sha256(BIG).hexdigest(), url=url)
    downloader = Downloader()
    try:
        refused = pytest.raises(_Transient, match=f"answered bytes 0-{len(BIG) - 1}, asked 0-{segments.MIN_RANGE - 1}")
        with refused, downloader.get_body(file, 0, segments.MIN_RANGE, resource="tiny"):
            pass
    finally:
        downloader.close()
