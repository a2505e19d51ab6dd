"""The protocols of model sources: :class:`FileSource` (hf://, ms://, file://: files placed in a
model folder) and :class:`ServerSource` (ollama://: a server holds the model).

A file source resolves a manifest entry to a :class:`~provision.files.Snapshot` (network, for
hubs) and places one file of it into a model folder, verified. The reconciler decides what to
fetch (pure planning in :mod:`provision.plan`); sources never see CLI state.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..files import RemoteFile, Snapshot
from ..manifest import ModelSpec

if TYPE_CHECKING:
    from ..plan import Action


class FileSource(Protocol):
    scheme: ClassVar[str]
    default_revision: ClassVar[str]

    def resolve(self, name: str, spec: ModelSpec) -> Snapshot:
        """Resolve the revision to an immutable one and list the files (after include/exclude)."""
        ...

    def file_url(self, spec: ModelSpec, resolved: str, path: str) -> str | None:
        """Where a locked file is fetched from, without asking the hub again."""
        ...

    def fetch(self, name: str, file: RemoteFile, model_dir: Path, *, on_progress: Callable[[int], None]) -> str:
        """Place ``file`` under ``model_dir`` atomically after verifying it; return its sha256."""
        ...

    def finalize(self, name: str, snapshot: Snapshot, model_dir: Path) -> None:
        """Write source-specific bookkeeping once every file is in place (may do nothing)."""
        ...

    def close(self) -> None: ...


Record = dict[str, Any]  # a lock entry or a state record, as JSON


class ServerSource(Protocol):
    """A model that is not a folder of files (``ollama://``): the server holds it.

    ``lock_entry`` is this model's entry in the lock file (or ``None``); ``apply`` returns
    ``(lock_entry, state_record)`` to store, neither holding secrets.
    """

    scheme: ClassVar[str]

    def observe(self, names: list[str]) -> object:
        """One read of the server for all models of this scheme (e.g. one ``/api/tags``)."""
        ...

    def plan(
        self, name: str, spec: ModelSpec, observed: object, lock_entry: Record | None, *, update: bool, locked: bool
    ) -> Action:
        """Pure decision; raises LockError when ``locked`` forbids the change."""
        ...

    def apply(
        self, action: Action, spec: ModelSpec, *, on_progress: Callable[[str, int, int], None]
    ) -> tuple[Record, Record]: ...

    def remove(self, name: str, record: Record) -> None: ...

    def close(self) -> None: ...
