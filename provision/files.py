"""Small value types shared by sources, the downloader, the lock and the planner."""

from __future__ import annotations

import fnmatch
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


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units, as download tools print them)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
