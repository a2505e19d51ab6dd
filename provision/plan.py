"""Pure planning: desired (manifest + lock) and observed (disk, servers) -> a frozen Plan.

Nothing here touches the network or the disk. Each backend observes, then calls a
function from this module (or its own pure ``plan``) to decide; only ``apply`` acts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from .files import RemoteFile, is_full_commit, plural

if TYPE_CHECKING:
    from .manifest import ModelSpec

Kind = Literal["model", "deployment"]


class Change(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"  # delete then create (e.g. a container whose spec changed)
    NOOP = "no change"
    DELETE = "delete"


@dataclass(frozen=True)
class Action:
    """One resource's decision: ``change`` is what it does, ``is_noop`` whether it does nothing."""

    kind: Kind
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
    def is_noop(self) -> bool:
        return self.change is Change.NOOP


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]

    @property
    def has_changes(self) -> bool:
        return any(not a.is_noop for a in self.actions)

    @property
    def download_bytes(self) -> int:
        return sum(a.download_bytes for a in self.actions)

    @property
    def disk_bytes(self) -> int:
        """What the plan writes into ``models_dir``: the files it fetches (hf://, ms://, and
        file://, which is copied there). A server's models (ollama://) land on the server's disk."""
        return sum(a.download_bytes for a in self.actions if a.kind == "model" and a.files)

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


def plan_orphans(kind: Kind, recorded: Mapping[str, Any], desired: set[str]) -> tuple[Action, ...]:
    """Resources this manifest created earlier but no longer declares are deleted."""
    return tuple(
        Action(kind, name, Change.DELETE, "no longer in the manifest") for name in sorted(set(recorded) - desired)
    )


def lock_spec(spec: ModelSpec, default_revision: str) -> dict[str, Any]:
    """The part of a manifest entry the lock pins; a change to it needs a new resolution."""
    return {
        "source": spec.source,
        "revision": spec.revision or default_revision,
        "include": list(spec.include) if spec.include is not None else None,
        "exclude": list(spec.exclude) if spec.exclude is not None else None,
    }


class Resolve(StrEnum):
    """Why a file model's source is asked again instead of using the snapshot the lock pins."""

    NOT_LOCKED = "is not in the lock"
    SPEC_CHANGED = "changed since the lock was written"
    LOCAL = "a local source is fingerprinted on every run"
    UPDATE = "--update re-resolves a branch or tag"

    @property
    def lock_must_change(self) -> bool:
        """The lock cannot stay as it is (``--locked`` refuses before asking the source)."""
        return self in (Resolve.NOT_LOCKED, Resolve.SPEC_CHANGED)


def resolve_reason(
    locked_spec: Mapping[str, Any] | None, wanted_spec: Mapping[str, Any], *, scheme: str, update: bool
) -> Resolve | None:
    """Why ``source.resolve`` must run for a file model (None: the lock's snapshot is used as is).

    ``locked_spec`` is the lock entry's ``spec`` (None: no entry), ``wanted_spec`` the
    manifest's (:func:`lock_spec`). A full commit is immutable: ``--update`` leaves it be.
    """
    if locked_spec is None:
        return Resolve.NOT_LOCKED
    if locked_spec != wanted_spec:
        return Resolve.SPEC_CHANGED
    if scheme == "file":
        return Resolve.LOCAL
    if update and not is_full_commit(wanted_spec["revision"]):
        return Resolve.UPDATE
    return None


def refetch_reason(why: Resolve, *, scheme: str, revision: str, locked: str | None, resolved: str) -> str:
    """After a new resolution: why the model's files are planned again against it ("" when the
    lock's snapshot still stands, or when there is no lock entry to differ from).

    ``locked`` is the lock entry's ``resolved`` (None: no entry), ``resolved`` the new one.
    """
    if locked is None:
        return ""
    if why is Resolve.SPEC_CHANGED:
        return "manifest entry changed"
    if resolved == locked:
        return ""
    if scheme == "file":
        return "local source changed"
    return f"{revision} moved {locked[:10]} -> {resolved[:10]}"


def content_changed(locked: Mapping[str, Any] | None, file: RemoteFile) -> bool:
    """Whether ``file`` may differ from the locked file of its path, size aside: compared by
    sha256 when the hub gives one, else by git sha1; a file with neither is never trusted."""
    if locked is None:
        return True
    if file.sha256:
        return bool(locked.get("sha256") != file.sha256)
    if file.git_sha1:
        return bool(locked.get("git_sha1") != file.git_sha1)
    return True


def stale_paths(locked_files: Mapping[str, Mapping[str, Any]] | None, files: Iterable[RemoteFile]) -> set[str]:
    """Files whose content differs between the locked and a new snapshot (same size or not);
    ``locked_files`` None: nothing is locked, so every file is."""
    return {f.path for f in files if content_changed(None if locked_files is None else locked_files.get(f.path), f)}
