"""Which placed files must be fetched again: a no-op apply by stat only, hashing only what changed.

Each file provision placed (or verified) is recorded in the state with its
``[size, mtime_ns, inode]``. On the next apply a file whose stat still matches is trusted
without reading it; any other file of the right size is hashed against the lock (or the
listing) and fetched again on a mismatch. So ``apply`` repairs what ``verify`` flags, files
present before the first apply are hashed before they are recorded, and ``apply --verify``
hashes everything.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .files import RemoteFile
from .hashing import sha256_file
from .ownership import inside

_BLOCK = 4 << 20


def file_stat(path: Path) -> list[int] | None:
    """``[size, mtime_ns, inode]`` of ``path`` itself (a link is not followed)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def placed_stats(model_dir: Path, files: Iterable[RemoteFile]) -> dict[str, list[int]]:
    """What the state records for a model whose files were all just verified."""
    out = {}
    for file in files:
        stat = file_stat(model_dir / file.path)
        if stat is not None:
            out[file.path] = stat
    return out


def _git_sha1(path: Path, size: int) -> str:
    digest = hashlib.sha1(b"blob %d\0" % size)
    with path.open("rb", buffering=0) as handle:
        while chunk := handle.read(_BLOCK):
            digest.update(chunk)
    return digest.hexdigest()


def content_matches(path: Path, file: RemoteFile) -> bool:
    """Whether ``path`` holds ``file``'s bytes, by its sha256, else its git blob sha1; a file
    with neither digest cannot be proven and does not match."""
    try:
        if file.sha256 is not None:
            return sha256_file(path) == file.sha256
        if file.git_sha1 is not None:
            return _git_sha1(path, file.size) == file.git_sha1
    except OSError:
        return False
    return False


def to_refetch(
    model_dir: Path,
    files: Iterable[RemoteFile],
    sizes: Mapping[str, int | None],
    recorded: Mapping[str, list[int]],
    *,
    rehash_all: bool,
    workers: int = 4,
) -> set[str]:
    """Paths of ``files`` that have the right size but cannot be trusted: not recorded with
    this stat (or ``rehash_all``), and their bytes do not match; a link leading out of the
    folder never matches."""
    suspects: list[tuple[RemoteFile, Path]] = []
    refetch = set()
    for file in files:
        if sizes.get(file.path) != file.size:
            continue  # missing or the wrong size: planned for fetching already
        target = inside(model_dir, file.path)
        if target is None or target.is_symlink():
            refetch.add(file.path)
        elif rehash_all or recorded.get(file.path) != file_stat(target):
            suspects.append((file, target))
    if suspects:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for (file, _), ok in zip(suspects, pool.map(lambda s: content_matches(s[1], s[0]), suspects), strict=True):
                if not ok:
                    refetch.add(file.path)
    return refetch
