"""Which model folders are provision's, and removing only what provision placed in them.

Every folder provision creates gets a marker, ``<model>/.provision.json``, naming the manifest
and the model. ``apply`` refuses a non-empty folder without one (unless the model says
``adopt: true``) and a folder whose marker names another manifest or model; ``destroy`` and
orphan removal delete only the files provision placed (the lock's and the state's paths),
its bookkeeping and the marker, then the folders left empty: other files survive and are
reported. Only the marker proves a folder provision's: the state file is untrusted input, and a
path recorded there proves nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import OwnershipError
from .state import read_json_text

MARKER = ".provision.json"
MAX_MARKER_BYTES = 64 << 10  # provision writes about 100 bytes
BOOKKEEPING = (".cache/provision", ".cache/huggingface")  # provision's and huggingface_hub's local_dir files


@dataclass(frozen=True)
class Owner:
    manifest: str
    model: str


def read_owner(model_dir: Path) -> Owner | None:
    """The marker's owner; ``None`` when there is no marker or it is not one provision wrote."""
    try:
        data = json.loads(read_json_text(model_dir / MARKER, limit=MAX_MARKER_BYTES))
    except (OSError, ValueError, RecursionError):  # a FIFO, a device or a huge file is no marker either
        return None
    if not (isinstance(data, dict) and isinstance(data.get("manifest"), str) and isinstance(data.get("model"), str)):
        return None
    return Owner(data["manifest"], data["model"])


def is_ours(model_dir: Path, manifest: Path, name: str) -> bool:
    """A folder (not a link) whose marker names this manifest and model."""
    if model_dir.is_symlink() or not model_dir.is_dir():
        return False
    return read_owner(model_dir) == Owner(str(manifest), name)


def check_usable(model_dir: Path, manifest: Path, name: str, *, adopt: bool) -> None:
    """Raise :class:`OwnershipError` unless ``apply`` may place files in ``model_dir``."""
    if model_dir.is_symlink() or (model_dir.exists() and not model_dir.is_dir()):
        raise OwnershipError(f"{model_dir} is not a folder provision created (a file or a link)", resource=name)
    if not model_dir.exists() or is_ours(model_dir, manifest, name):
        return
    owner = read_owner(model_dir)
    if owner is not None:
        raise OwnershipError(
            f"{model_dir} belongs to model {owner.model!r} of manifest {owner.manifest}",
            resource=name,
            hint="two manifests (or models) may not share a folder: give this one another models_dir or name",
        )
    if adopt:
        return
    if any(model_dir.iterdir()):
        raise OwnershipError(
            f"{model_dir} already exists, is not empty, and provision did not create it", resource=name
        )


def mark(model_dir: Path, manifest: Path, name: str) -> None:
    """Create ``model_dir`` if needed and write its marker (before any file is placed)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    if read_owner(model_dir) == Owner(str(manifest), name):
        return
    temp = model_dir / f".{MARKER}.tmp"
    temp.write_text(json.dumps({"manifest": str(manifest), "model": name}) + "\n", encoding="utf-8")
    os.replace(temp, model_dir / MARKER)


def inside(model_dir: Path, relative: str) -> Path | None:
    """``model_dir/relative`` if it resolves inside ``model_dir`` (no link leads out), else ``None``."""
    target = model_dir / relative
    root = os.path.realpath(model_dir)
    if not _within(root, os.path.realpath(target.parent)):
        return None
    if target.is_symlink() and not os.path.realpath(target).startswith(root + os.sep):
        return None
    return target


def _within(root: str, real: str) -> bool:
    """Whether resolved path ``real`` is the resolved folder ``root`` or under it."""
    return real == root or real.startswith(root + os.sep)


def placeable(model_dir: Path, relative: str, *, resource: str) -> Path:
    """Where ``relative`` is placed in ``model_dir``; refused when a link among its folders leads out
    (in a folder adopted, or edited since): the file and the folders on its way would be written
    outside. A link at the path itself is fine: placing replaces the link, never follows it."""
    target = model_dir / relative
    if not _within(os.path.realpath(model_dir), os.path.realpath(target.parent)):
        raise OwnershipError(
            f"{relative}: a link in {model_dir} leads this path out of the model folder",
            hint="remove the link (provision writes only inside the model folder), then run the command again",
            resource=resource,
        )
    return target


def remove_placed(model_dir: Path, placed: Iterable[str]) -> list[str]:
    """Delete ``placed`` files, the bookkeeping and the marker, then empty folders; return what
    survives (relative paths of files provision did not place), sorted."""
    for relative in placed:
        target = inside(model_dir, relative)
        if target is not None and (target.is_file() or target.is_symlink()):
            target.unlink()
    for folder in BOOKKEEPING:
        target = inside(model_dir, folder)
        if target is not None and target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
    for empty in sorted(
        (p for p in model_dir.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: len(p.parts), reverse=True
    ):
        if not any(empty.iterdir()):
            empty.rmdir()
    survivors = sorted(
        p.relative_to(model_dir).as_posix()
        for p in model_dir.rglob("*")
        if p.name != MARKER and (p.is_symlink() or not p.is_dir())
    )
    if not survivors:
        (model_dir / MARKER).unlink(missing_ok=True)
        model_dir.rmdir()
    return survivors
