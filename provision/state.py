"""What provision applied on this machine (state), and what a manifest resolved to (the lock).

Layout::

    <manifest folder>/
      dev.yaml
      dev.lock.json            the lock (provision.lock): commit this. No secrets.
    $PROVISION_STATE_DIR       (else $XDG_STATE_HOME/provision, else ~/.local/state/provision)
      state.json               per manifest (by absolute path): the models and deployments
                               provision created here, and which manifest was applied last
      state.json.lock          guards concurrent writers of state.json
      runs/<hash>.lock         held during apply/destroy of one manifest

Both files are written atomically (temporary file + ``os.replace``) so a kill never leaves
half a file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from .errors import ConcurrencyError, InvalidStateError, StateError
from .sources import FILE_SCHEMES, SOURCE_SCHEMES

STATE_VERSION = 1
MAX_JSON_BYTES = 64 << 20  # the lock or the state: about 150 bytes per file of a model
_Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=200)]


def state_dir() -> Path:
    explicit = os.environ.get("PROVISION_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "provision"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write via a temporary sibling and ``os.replace``. Callers hold the file's lock, so a
    leftover temporary (from a writer killed mid-write) is nobody's: remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json_text(path: Path, *, limit: int = MAX_JSON_BYTES) -> str:
    """The text of a lock, state or marker file, bounded: FileNotFoundError when there is none,
    ValueError for a FIFO or a device (reading would hang, or fill memory from /dev/zero) or a
    file over ``limit`` bytes. Opened non-blocking, so a FIFO swapped in after the check cannot hang."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # follows links, as reading does
        raise ValueError("not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit >> 20} MiB" if limit >= 1 << 20 else f"larger than {limit} bytes")
    return data.decode("utf-8")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FileModelRecord(_Strict):
    """A folder of files provision placed; ``files`` is each placed file's
    ``[size, mtime_ns, inode]`` when it was verified, so an unchanged stat needs no re-hash."""

    source: str
    path: str
    resolved: str
    files: dict[str, Annotated[list[int], Field(min_length=3, max_length=3)]] = {}

    @field_validator("files")
    @classmethod
    def _safe_paths(cls, files: dict[str, list[int]]) -> dict[str, list[int]]:
        from .listing import check_record_paths

        check_record_paths(files)
        return files


class ManifestRecords(_Strict):
    models: dict[_Name, dict[str, Any]] = {}
    deployments: dict[_Name, dict[str, Any]] = {}

    @field_validator("models")
    @classmethod
    def _typed_models(cls, models: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, record in models.items():
            source = record.get("source")
            if not isinstance(source, str):
                # pydantic reports a ValueError as a validation error; a TypeError would escape it.
                raise ValueError(f"model {name!a}: a record needs a string `source`")
            scheme = source.partition("://")[0]
            if scheme not in SOURCE_SCHEMES:  # no source provision knows could have written it
                raise ValueError(f"model {name!a}: unknown source {source!a}")
            if scheme in FILE_SCHEMES:
                try:
                    FileModelRecord.model_validate(record)
                except ValidationError as exc:
                    error = exc.errors()[0]
                    field = ".".join(str(p) for p in error["loc"])
                    raise ValueError(f"model {name!a}, field {field!a}: {error['msg']}") from None
        return models


class StateDocument(_Strict):
    version: int
    manifests: dict[str, ManifestRecords] = {}
    last_applied: str | None = None


class State:
    """Records of what provision created, keyed by manifest path. Never holds secrets.

    Read as untrusted input: a wrong type or an unsafe path is :class:`InvalidStateError`
    (exit 2) naming the file, entry and field; the reconciler still never deletes or hashes a
    path because a record said so (it derives paths from the manifest).
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or state_dir()
        self.path = self.directory / "state.json"

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(read_json_text(self.path))
        except FileNotFoundError:
            return {"version": STATE_VERSION, "manifests": {}, "last_applied": None}
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
            raise StateError(f"cannot read state file {self.path}: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise StateError(f"{self.path}: unsupported state version")
        try:
            StateDocument.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            loc = ".".join(str(p) for p in error["loc"])
            raise InvalidStateError(
                f"{self.path}: field {loc!a}: {error['msg'].removeprefix('Value error, ')}",
            ) from None
        return data

    def records(self, manifest_path: Path) -> dict[str, dict[str, Any]]:
        """``{"models": {name: record}, "deployments": {name: record}}`` for one manifest."""
        entry = self._read()["manifests"].get(str(manifest_path), {})
        return {"models": dict(entry.get("models", {})), "deployments": dict(entry.get("deployments", {}))}

    def manifests(self) -> list[str]:
        return sorted(self._read()["manifests"])

    @property
    def last_applied(self) -> str | None:
        return self._read().get("last_applied")

    def update(self, manifest_path: Path, kind: str, name: str, record: dict[str, Any] | None) -> None:
        """Set (or, with ``None``, forget) one resource's record."""
        from filelock import FileLock

        self.directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            data = self._read()
            entry = data["manifests"].setdefault(str(manifest_path), {"models": {}, "deployments": {}})
            if record is None:
                entry[kind].pop(name, None)
            else:
                entry[kind][name] = record
            if not entry["models"] and not entry["deployments"]:
                data["manifests"].pop(str(manifest_path))
                if data.get("last_applied") == str(manifest_path):
                    data["last_applied"] = None
            else:
                data["last_applied"] = str(manifest_path)
            write_json_atomic(self.path, data)

    @contextmanager
    def run_lock(self, manifest_path: Path) -> Iterator[None]:
        """Held while one apply/destroy runs on a manifest: a second one fails fast, naming the first."""
        from filelock import FileLock, Timeout

        digest = hashlib.sha1(str(manifest_path).encode()).hexdigest()[:16]
        runs = self.directory / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(runs / f"{digest}.lock"))
        holder = runs / f"{digest}.pid"
        try:
            lock.acquire(timeout=0)
        except Timeout:
            who = holder.read_text().strip() if holder.exists() else "unknown"
            raise ConcurrencyError(
                f"another provision run holds {manifest_path} (pid {who})",
            ) from None
        try:
            holder.write_text(str(os.getpid()))
            yield
        finally:
            holder.unlink(missing_ok=True)
            lock.release()
