"""What the renderer needs from the lock, validated: the lock is input like any other.

``lock_entries`` is the one place that reads the lock file; the rest takes its entries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import LockError
from ..listing import MalformedListingError, checked_path
from ..manifest import Manifest, ModelSpec

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class LockedFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class LockedFiles:
    resolved: str  # the commit (hf) or content fingerprint (ms) the lock pins
    files: tuple[LockedFile, ...]

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class LockedOllama:
    model: str  # Ollama's canonical name, e.g. qwen3:0.6b
    digest: str


def lock_entries(manifest: Manifest) -> Mapping[str, Mapping[str, Any]]:
    """The lock's entries by model name, validated as every command validates them."""
    from ..lock import LockFile

    return LockFile.load(manifest.lock_path).models


def _expected_spec(spec: ModelSpec) -> dict[str, Any]:
    if spec.scheme == "ollama":
        from ..sources.ollama import canonical_name

        return {"source": f"ollama://{canonical_name(spec.location)}"}
    from ..plan import lock_spec
    from ..sources.huggingface import HuggingFaceSource
    from ..sources.modelscope import ModelScopeSource

    default = (HuggingFaceSource if spec.scheme == "hf" else ModelScopeSource).default_revision
    return lock_spec(spec, default)


def locked_model(name: str, spec: ModelSpec, entry: Mapping[str, Any] | None) -> LockedFiles | LockedOllama | str:
    """The locked model, or why it is not locked (missing, or the manifest entry changed since)."""
    if entry is None:
        return "not in the lock"
    if not isinstance(entry, Mapping) or entry.get("spec") != _expected_spec(spec):
        return "its manifest entry changed since the lock was written"
    bad = LockError(
        f"the lock entry of {name} is malformed",
        resource=name,
        hint="restore the lock from version control, or run `provision apply --update`",
    )
    if spec.scheme == "ollama":
        digest = entry.get("digest")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest.removeprefix("sha256:")):
            raise bad
        return LockedOllama(entry["spec"]["source"].removeprefix("ollama://"), digest)
    resolved, files = entry.get("resolved"), entry.get("files")
    if not isinstance(resolved, str) or not re.fullmatch(r"[\w.-]{1,100}", resolved) or not isinstance(files, dict):
        raise bad
    locked = []
    for path, meta in sorted(files.items()):
        size, sha256 = (meta.get("size"), meta.get("sha256")) if isinstance(meta, dict) else (None, None)
        if not isinstance(size, int) or size < 0 or not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise bad
        try:
            locked.append(LockedFile(checked_path(path, resource=name), size, sha256))
        except MalformedListingError:
            raise bad from None
    if not locked:
        raise bad
    return LockedFiles(resolved, tuple(locked))
