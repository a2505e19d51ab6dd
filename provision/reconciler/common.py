"""What the reconciler's parts share: their inputs, a run's options and results, one step's outcome.

Apart from the facade (:mod:`provision.reconciler`) because the parts build these too, and the
facade imports the parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import ProvisionError
from ..files import Snapshot
from ..lock import LockFile
from ..manifest import Manifest
from ..plan import Action, Change, Kind, Plan
from ..progress import Progress
from ..state import State


class Part:
    """What each part of the reconciler works on: one manifest, its lock (shared, so that a
    model's new entry is what its deployment sees), this machine's state, the progress sink."""

    def __init__(self, manifest: Manifest, state: State, lock: LockFile, progress: Progress) -> None:
        self.manifest = manifest
        self.state = state
        self.lock = lock
        self.progress = progress


@dataclass(frozen=True)
class RunOptions:
    only: tuple[str, ...] = ()  # model or deployment names; empty = everything
    update: bool = False  # re-resolve branches and tags, rewrite the lock
    locked: bool = False  # refuse any change to the lock
    force: bool = False  # skip the fit checks (not the disk check)
    verify: bool = False  # re-hash every placed file (else only those whose stat changed)
    yes: bool = False  # remove models no longer in the manifest (else they are kept and reported)


@dataclass
class Outcome:
    action: Action
    ok: bool
    error: ProvisionError | None = None
    seconds: float = 0.0


@dataclass
class PlanResult:
    plan: Plan
    failures: list[Outcome] = field(default_factory=list)  # resources that could not be planned
    snapshots: dict[str, Snapshot] = field(default_factory=dict)

    def orphan_models(self) -> list[str]:
        """Models this manifest created here but no longer declares: removed only with --yes."""
        return [a.name for a in self.plan.actions if a.kind == "model" and a.change is Change.DELETE]


@dataclass
class ApplyResult:
    outcomes: list[Outcome]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def not_planned(kind: Kind, name: str, error: ProvisionError) -> Outcome:
    """The failure of a resource that could not even be planned."""
    return Outcome(Action(kind, name, Change.UPDATE, "could not be planned"), False, error)


def run_step(action: Action, work: Callable[[], str | None]) -> Outcome:
    """Run ``work``; a note it returns (e.g. files kept) is added to the action's reason."""
    started = time.monotonic()
    try:
        note = work()
    except ProvisionError as exc:
        return Outcome(action, False, exc, time.monotonic() - started)
    if note:
        action = replace(action, reason=f"{action.reason}; {note}")
    return Outcome(action, True, None, time.monotonic() - started)


def size_of(path: Path) -> int | None:
    """A file's size, None if it is not there."""
    try:
        return path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return None
