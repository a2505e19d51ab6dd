"""``<manifest>.lock.json``: resolved revisions and digests, one entry per model. Commit it.

The lock is read as untrusted input (anyone who can push to the repo writes it): it is
parsed into the typed models below before use, and a wrong type, an unsafe path or a
malformed digest is :class:`~provision.errors.InvalidLockError` (exit 2) naming the file,
the entry and the field. A locked path is one :func:`provision.listing.checked_path` accepts,
so nothing outside a model's folder is ever hashed, fetched to or deleted because of it.

Entries stay plain dicts after validation (the shape the sources and deployments read)::

    {"version": 1, "models": {
        "<name>": {"spec": {"source", "revision", "include", "exclude"},     hf://, ms://, file://
                   "resolved": "<commit> | ms-<sha256> | local-<40 hex>",
                   "files": {"<path>": {"size", "sha256", "git_sha1"?}}},
        "<name>": {"spec": {"source"}, "digest": "<64 hex>"}}}                   ollama://
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
)

from .errors import InvalidLockError
from .listing import MAX_FILE_SIZE, check_record_paths
from .state import read_json_text, write_json_atomic

LOCK_VERSION = 1
_Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
_Sha1 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LockedFile(_Strict):
    size: int = Field(ge=0, le=MAX_FILE_SIZE)  # as a listing's: a larger size is a lie, and overflows float maths
    sha256: _Sha256 | None = None
    git_sha1: _Sha1 | None = None


class LockedSpec(_Strict):
    source: str
    revision: str | None = None
    include: list[str] | None = None
    exclude: list[str] | None = None


class FileModelEntry(_Strict):
    spec: LockedSpec
    resolved: Annotated[str, StringConstraints(pattern=r"^(?:[0-9a-f]{40}|ms-[0-9a-f]{64}|local-[0-9a-f]{40})$")]
    files: dict[str, LockedFile]

    @field_validator("files")
    @classmethod
    def _safe_paths(cls, files: dict[str, LockedFile]) -> dict[str, LockedFile]:
        check_record_paths(files)
        return files


class ServerModelEntry(_Strict):
    spec: LockedSpec
    digest: Annotated[str, StringConstraints(pattern=r"^(?:sha256:)?[0-9a-f]{64}$")]  # as /api/tags shows it


def _entry_kind(value: Any) -> str:
    return "server" if isinstance(value, dict) and "digest" in value else "files"


LockEntry = Annotated[
    Annotated[FileModelEntry, Tag("files")] | Annotated[ServerModelEntry, Tag("server")],
    Discriminator(_entry_kind),
]


class LockDocument(_Strict):
    version: int
    models: dict[str, LockEntry] = {}


class LockFile:
    """The lock of one manifest; ``models`` holds each entry as a validated dict."""

    def __init__(self, path: Path, models: dict[str, dict[str, Any]] | None = None) -> None:
        self.path = path
        self.models: dict[str, dict[str, Any]] = models or {}

    @classmethod
    def load(cls, path: Path) -> LockFile:
        try:
            data = json.loads(read_json_text(path))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
            raise InvalidLockError(f"cannot read lock file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidLockError(f"{path}: not a lock file (expected a JSON object)")
        if data.get("version") != LOCK_VERSION:
            raise InvalidLockError(f"{path}: unsupported lock file version {data.get('version')!r}")
        try:
            LockDocument.model_validate(data)
        except ValidationError as exc:
            raise InvalidLockError(f"{path}: {_first_problem(exc)}") from None
        return cls(path, dict(data.get("models", {})))

    def save(self) -> None:
        write_json_atomic(self.path, {"version": LOCK_VERSION, "models": self.models})


def _first_problem(exc: ValidationError) -> str:
    """``entry NAME, field files.x.size: <why>`` from pydantic's first error."""
    error = exc.errors()[0]
    # pydantic puts the union member's class name into the location; it is not a field
    loc = [str(p) for i, p in enumerate(error["loc"]) if p not in ("files", "server") or i != 2]
    if len(loc) >= 2 and loc[0] == "models":
        where = f"entry {loc[1]!a}" + (f", field {'.'.join(loc[2:])}" if loc[2:] else "")
    else:
        where = f"field {'.'.join(loc)}"
    more = len(exc.errors()) - 1
    return f"{where}: {error['msg'].removeprefix('Value error, ')}" + (f" (and {more} more)" if more else "")
