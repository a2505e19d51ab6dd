"""Small value types shared by sources, the downloader, the lock and the planner."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    """A file of a model snapshot as a hub lists it.

    ``sha256`` is known for LFS/Xet files (and every ModelScope file); small git files on the
    Hugging Face hub only have ``git_sha1``; the downloader then computes the sha256.
    """

    path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None
    url: str | None = None  # where to GET it; None for local files


@dataclass(frozen=True)
class Snapshot:
    """A resolved model: the immutable revision (a commit) and its files."""

    source: str
    revision: str  # what the manifest asked for (branch, tag, commit)
    resolved: str  # the commit (hub) or a content fingerprint (local)
    files: tuple[RemoteFile, ...]


def is_full_commit(revision: str) -> bool:
    """A 40-hex commit id: immutable, so a lock pinning one never needs re-resolving."""
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def select_files(
    files: list[RemoteFile],
    include: tuple[str, ...] | None,
    exclude: tuple[str, ...] | None,
) -> list[RemoteFile]:
    """Apply ``include`` / ``exclude`` globs (fnmatch, as huggingface_hub's allow/ignore patterns)."""

    def matches(path: str, patterns: tuple[str, ...]) -> bool:
        # A pattern ending in "/" means the whole folder, as in huggingface_hub.
        return any(fnmatch.fnmatch(path, p + "*" if p.endswith("/") else p) for p in patterns)

    chosen = [f for f in files if include is None or matches(f.path, include)]
    return [f for f in chosen if exclude is None or not matches(f.path, exclude)]


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``1 file``, ``2 files`` (``many`` for irregular plurals)."""
    return f"{n} {noun if n == 1 else many or noun + 's'}"


_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB': the one size format (binary units, as download tools print them)."""
    if not math.isfinite(n):  # nothing to scale
        return f"{n} B"
    sign, n = ("-" if n < 0 else ""), abs(n)
    unit = _BINARY_UNITS[0]
    for unit in _BINARY_UNITS:
        if n < 1024 or unit == _BINARY_UNITS[-1]:
            break
        n /= 1024
    if unit == "B":
        return f"{sign}{n:.0f} B"
    return f"{sign}{n:.1f} {unit}" if n < 1024 else f"{sign}{n:.3g} {unit}"  # past YiB: 1.2e+04 YiB
