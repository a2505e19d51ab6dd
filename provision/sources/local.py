"""``file://path``: a local folder or file, copied into ``models_dir``; never moved or modified.

Files are cloned (copy-on-write reflink, instant, on btrfs/XFS) where the filesystem can,
else copied while hashing. Hard links were rejected: an edit through either path would
change both, so the "copy" could silently corrupt the user's checkpoint.

The "revision" of a local source is a fingerprint of its files' paths, sizes and mtimes, so
a changed checkpoint is noticed without re-hashing it on every apply. Hashes are computed
once, while placing, and recorded in the lock for ``verify``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from ..errors import SourceError
from ..files import RemoteFile, Snapshot, select_files
from ..hashing import sha256_file
from ..manifest import Manifest, ModelSpec

_COPY_CHUNK = 256 << 10  # the downloader's write size; see CHUNK_SIZE in download.py for why


class LocalSource:
    scheme: ClassVar[str] = "file"
    default_revision: ClassVar[str] = "local"

    def __init__(self, manifest: Manifest) -> None:
        self._manifest = manifest

    def close(self) -> None:
        pass

    def _root(self, name: str, spec: ModelSpec) -> Path:
        root = self._manifest.local_source_path(spec)
        if not root.exists():
            raise SourceError(
                f"local source {root} does not exist",
                resource=name,
                hint="fix the path in `source: file://...` (relative paths start at the manifest's folder)",
            )
        if root == self._manifest.model_dir(name) or self._manifest.model_dir(name) in root.parents:
            raise SourceError(f"local source {root} is inside its own destination", resource=name)
        problem = containment_problem(self._manifest, spec)
        if problem:
            raise SourceError(problem, resource=name, hint="point `source:` at the model's own folder")
        return root

    def resolve(self, name: str, spec: ModelSpec) -> Snapshot:
        root = self._root(name, spec)
        if root.is_file():
            entries = [(root.name, root.stat())]
        else:
            entries = []
            for path in sorted(root.rglob("*")):
                if ".cache" in path.relative_to(root).parts:
                    continue
                self._check_link(name, spec, root, path)
                if path.is_file():
                    entries.append((path.relative_to(root).as_posix(), path.stat()))
        files = [RemoteFile(path=rel, size=st.st_size) for rel, st in entries]
        chosen = select_files(files, spec.include, spec.exclude)
        if not chosen:
            raise SourceError(f"{root} holds no file to place (after include/exclude)", resource=name)
        stats = dict(entries)
        fingerprint = hashlib.sha256(
            "\n".join(f"{f.path}\0{f.size}\0{stats[f.path].st_mtime_ns}" for f in chosen).encode()
        ).hexdigest()
        return Snapshot(spec.source, self.default_revision, f"local-{fingerprint[:40]}", tuple(chosen))

    @staticmethod
    def _check_link(name: str, spec: ModelSpec, root: Path, path: Path) -> None:
        """A link leading out of the source (to ``/etc/shadow``) is refused unless the model says
        ``follow_symlinks: true``: copying it would publish a file the user never pointed at."""
        if spec.follow_symlinks or not path.is_symlink():
            return
        real = os.path.realpath(path)
        if real != str(root) and not real.startswith(str(root) + os.sep):
            raise SourceError(
                f"{path} is a link leading out of the local source (to {real})",
                resource=name,
                hint="remove the link, or set `follow_symlinks: true` on the model to copy its target",
            )

    def file_url(self, spec: ModelSpec, resolved: str, path: str) -> None:
        return None

    def fetch(self, name: str, file: RemoteFile, model_dir: Path, *, on_progress: Callable[[int], None]) -> str:
        spec = self._manifest.models[name]
        root = self._root(name, spec)
        source = root if root.is_file() else root / file.path
        if not root.is_file():
            self._check_link(name, spec, root, source)
        target = model_dir / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.provision-tmp")
        temp.unlink(missing_ok=True)
        try:
            digest = sha256_file(temp) if _reflink(source, temp) else _copy_hashing(source, temp)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise SourceError(f"cannot place {file.path}: {exc.strerror or exc}", resource=name) from None
        if file.sha256 is not None and digest != file.sha256:
            temp.unlink(missing_ok=True)
            raise SourceError(
                f"{source} changed since the lock was written (sha256 differs)",
                resource=name,
                hint="run `provision apply --update` to lock the new content",
            )
        os.replace(temp, target)
        on_progress(file.size)
        return digest

    def finalize(self, name: str, snapshot: Snapshot, model_dir: Path) -> None:
        pass


def containment_problem(manifest: Manifest, spec: ModelSpec) -> str | None:
    """Why a ``file://`` source cannot be copied into ``models_dir``: a source folder that
    holds ``models_dir`` would copy its own copies deeper on every apply, never converging."""
    if spec.scheme != "file":
        return None
    root, models_dir = manifest.local_source_path(spec), manifest.models_dir
    if root == models_dir or root in models_dir.parents:
        return f"local source {root} contains models_dir {models_dir}: it would copy itself on every apply"
    return None


_FICLONE = 0x40049409  # linux/fs.h


def _reflink(source: Path, target: Path) -> bool:
    """Clone ``source`` into ``target`` sharing blocks copy-on-write; False where unsupported."""
    try:
        import fcntl
    except ImportError:  # not on Linux/Unix
        return False
    with source.open("rb") as src, target.open("wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS, errno.EPERM):
                return False
            raise
    shutil.copystat(source, target)
    return True


def _copy_hashing(source: Path, target: Path) -> str:
    digest = hashlib.sha256()
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(_COPY_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    shutil.copystat(source, target)
    return digest.hexdigest()
