"""The protocol every deployment engine implements, and what it needs from the engine.

A backend gets typed manifest objects and a :class:`DeployContext`, never CLI state. It
observes (reads only), plans (pure), applies or removes (side effects). Talking to what it
deployed is :mod:`provision.client`'s job (one module per engine there too). Adding an engine
is one module here, one there, and a line in each package's ``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..manifest import Manifest
from ..plan import Action


@dataclass(frozen=True)
class DeployContext:
    """What a backend may know about the run: the manifest, the lock and this machine's state."""

    manifest: Manifest
    model_dirs: Mapping[str, Path]  # model name -> its folder (downloaded or placed)
    model_locks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # lock entries
    records: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # state per deployment
    on_status: Callable[[str, str], None] = lambda name, message: None  # progress lines


class DeploymentBackend(Protocol):
    engine: ClassVar[str]

    def observe(self, name: str, spec: Any, ctx: DeployContext) -> Any:
        """Read what exists now (container, model on a server). No side effects."""
        ...

    def plan(self, name: str, spec: Any, observed: Any, ctx: DeployContext) -> Action:
        """Pure: decide create / replace / update / no change, with the reason."""
        ...

    def apply(self, action: Action, spec: Any, ctx: DeployContext) -> dict[str, Any]:
        """Carry out the action; return the record to keep in state (JSON-able, no secrets)."""
        ...

    def remove(self, name: str, record: Mapping[str, Any], ctx: DeployContext) -> None:
        """Delete what this backend created for ``name`` (only that)."""
        ...
