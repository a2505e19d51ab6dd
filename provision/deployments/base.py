"""The protocol every deployment engine implements, and what it needs from the engine.

A backend gets typed manifest objects and a :class:`DeployContext`, never CLI state. It
observes (reads only), plans (pure), applies or removes (side effects), and gives the smoke
test a :class:`ChatClient`. Adding an engine is one module plus one line in ``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..manifest import Manifest, SmokeTestSettings
from ..plan import Action


@dataclass(frozen=True)
class DeployContext:
    """What a backend may know about the run: the manifest, the lock and this machine's state."""

    manifest: Manifest
    model_dirs: Mapping[str, Path]  # model name -> its folder (downloaded or placed)
    model_locks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # lock entries
    records: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # state per deployment
    on_status: Callable[[str, str], None] = lambda name, message: None  # progress lines


@dataclass(frozen=True)
class ChatEvent:
    """One item of a streamed answer, as the backend saw it.

    ``text`` is new content (may be empty on role/usage chunks); ``output_tokens`` is the
    server-reported count when known (usage chunk, Ollama's ``eval_count``).
    """

    text: str = ""
    finish_reason: str | None = None
    output_tokens: int | None = None


class ChatClient(Protocol):
    """Streams one chat. Raises provision errors (or the client's own) on failure."""

    def stream_chat(self, settings: SmokeTestSettings) -> Iterator[ChatEvent]: ...

    def count_tokens(self, text: str) -> int | None:
        """Tokens in ``text`` with the model's tokenizer, when available locally."""
        ...

    def close(self) -> None: ...


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

    def chat_client(self, name: str, spec: Any, ctx: DeployContext) -> ChatClient: ...
