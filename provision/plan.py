"""Pure planning: desired (manifest + lock) and observed (disk, servers) -> a frozen Plan.

Nothing here touches the network or the disk. Each backend observes, then calls a
function from this module (or its own pure ``plan``) to decide; only ``apply`` acts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .files import RemoteFile, plural


class Change(str, Enum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"  # delete then create (e.g. a container whose spec changed)
    NOOP = "no change"
    DELETE = "delete"


@dataclass(frozen=True)
class Action:
    """One resource's decision. ``kind`` is ``model`` or ``deployment``."""

    kind: str
    name: str
    change: Change
    reason: str
    download_bytes: int = 0
    files: tuple[RemoteFile, ...] = ()  # what to fetch, for file-based models
    details: Mapping[str, Any] = field(default_factory=dict)  # backend-specific, JSON-able

    @property
    def address(self) -> str:
        return f"{self.kind}.{self.name}"

    @property
    def changes(self) -> bool:
        return self.change is not Change.NOOP


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]

    @property
    def has_changes(self) -> bool:
        return any(a.changes for a in self.actions)

    @property
    def download_bytes(self) -> int:
        return sum(a.download_bytes for a in self.actions)

    def counts(self) -> dict[str, int]:
        out = {c.value: 0 for c in Change}
        for action in self.actions:
            out[action.change.value] += 1
        return out


@dataclass(frozen=True)
class LocalFile:
    """What is on disk at a model's file path (``None`` size: missing)."""

    path: str
    size: int | None


def plan_files(
    name: str,
    *,
    wanted: tuple[RemoteFile, ...],
    local: Mapping[str, LocalFile],
    first_time: bool,
    reason_if_changed: str,
    stale: frozenset[str] | set[str] = frozenset(),
    in_lock: bool = True,
) -> Action:
    """Decide a file-based model: fetch what is missing or the wrong size.

    ``wanted`` are the files at the locked (or freshly resolved) revision; ``local`` what a
    cheap stat found; ``stale`` the paths whose content changed upstream (fetched even when
    the size matches); ``in_lock`` whether the lock has an entry for the model. Content is not
    re-hashed here: that is ``verify``'s job.
    """
    missing = tuple(
        f for f in wanted if f.path in stale or (local.get(f.path) or LocalFile(f.path, None)).size != f.size
    )
    download = sum(f.size for f in missing)
    if first_time:
        return Action(
            "model", name, Change.CREATE, f"not downloaded yet: {plural(len(missing), 'file')}", download, missing
        )
    if missing:
        why = reason_if_changed or f"{len(missing)} of {plural(len(wanted), 'file')} missing or incomplete"
        return Action("model", name, Change.UPDATE, why, download, missing)
    if reason_if_changed:
        # The revision moved but every file is already here (e.g. only metadata changed).
        return Action("model", name, Change.UPDATE, reason_if_changed, 0, ())
    if not in_lock:
        # An apply killed after placing the last file, before writing the lock: record them now,
        # or the lock would never pin this model and `verify` would have nothing to check.
        return Action("model", name, Change.UPDATE, "every file here but not in the lock yet", 0, ())
    return Action("model", name, Change.NOOP, f"{plural(len(wanted), 'file')} present")


def plan_orphans(kind: str, recorded: Mapping[str, Any], desired: set[str]) -> tuple[Action, ...]:
    """Resources this manifest created earlier but no longer declares are deleted."""
    return tuple(
        Action(kind, name, Change.DELETE, "no longer in the manifest") for name in sorted(set(recorded) - desired)
    )
