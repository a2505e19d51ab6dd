"""The protocol every deployment backend implements, and what it may know of the run.

A deployment backend deploys one serving engine (``engine:`` in the manifest: vllm, ollama,
transformers, openai); "backend" means only this in provision. It gets its engine's typed
manifest class and a :class:`DeployContext`, never CLI state. It observes (reads only), plans
(pure), applies or removes (side effects). Talking to what it deployed is
:mod:`provision.client`'s job (one module per engine there too). Adding an engine is one
module here, one there, and a line in each package's ``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeAlias, TypeVar

from ..manifest import Manifest
from ..plan import Action

JSON: TypeAlias = "str | int | float | bool | list[JSON] | dict[str, JSON] | None"
# What a backend keeps in state for one deployment: JSON, no secrets, and ``engine`` naming the
# backend that removes it. The rest is the backend's own (a container id, a served digest).
DeploymentRecord: TypeAlias = Mapping[str, JSON]

SpecT_contra = TypeVar("SpecT_contra", contravariant=True)  # the engine's manifest class, e.g. VllmDeployment
ObservedT = TypeVar("ObservedT")  # what ``observe`` read, handed back to ``plan``: the backend's own


@dataclass(frozen=True)
class DeployContext:
    """What a backend may know about the run: the manifest, the lock and this machine's state."""

    manifest: Manifest
    model_dirs: Mapping[str, Path]  # model name -> its folder (downloaded or placed)
    model_locks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # lock entries
    records: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # state per deployment
    on_status: Callable[[str, str], None] = lambda name, message: None  # progress lines


class DeploymentBackend(Protocol[SpecT_contra, ObservedT]):
    engine: ClassVar[str]

    def observe(self, name: str, spec: SpecT_contra, ctx: DeployContext) -> ObservedT:
        """Read what exists now (container, model on a server). No side effects."""
        ...

    def plan(self, name: str, spec: SpecT_contra, observed: ObservedT, ctx: DeployContext) -> Action:
        """Pure: decide create / replace / update / no change, with the reason."""
        ...

    def apply(self, action: Action, spec: SpecT_contra, ctx: DeployContext) -> DeploymentRecord:
        """Carry out the action; return the record to keep in state."""
        ...

    def remove(self, name: str, record: DeploymentRecord, ctx: DeployContext) -> None:
        """Delete what this backend created for ``name`` (only that)."""
        ...
