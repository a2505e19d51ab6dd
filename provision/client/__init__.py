"""Talk to what you deployed: :func:`connect` gives a :class:`Client` for one deployment.

```python
import provision
with provision.connect("manifests/dev.yaml", "deepseek-local") as llm:
    for piece in llm.chat([{"role": "user", "content": "明月几时有"}], temperature=0.7):
        print(piece, end="")
```

Every engine has one client module here (``openai``, ``vllm``, ``ollama``,
``transformers``); the smoke test, ``provision chat`` and this API use the same one. Sampling
comes from the manifest's ``smoke_test`` settings (with the deployment's overrides) and can be
overridden per call, checked as ``smoke_test:`` values are. Errors are provision's
(:mod:`provision.errors`): ``UsageError`` for a bad argument, ``DeploymentError`` for a
deployment that is not applied, unreachable or failing.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Self, overload

from ..errors import DeploymentError, UsageError
from ..manifest import ChatMessage
from .base import ChatEvent, Embeddings, EngineClient, check_sampling, request_settings

if TYPE_CHECKING:
    from ..deployments.base import DeployContext
    from ..manifest import Manifest, SmokeTestSettings

__all__ = ["ChatEvent", "Client", "Embeddings", "check_sampling", "connect", "open_engine"]

# engine name -> the module whose open_client(name, spec, ctx) makes its client; imported on use.
CLIENTS = {
    "vllm": "provision.client.vllm",
    "transformers": "provision.client.transformers",
    "ollama": "provision.client.ollama",
    "openai": "provision.client.openai",
}
Message = Mapping[str, Any] | ChatMessage


def open_engine(name: str, spec: Any, ctx: DeployContext) -> EngineClient:
    """The engine's client for one deployment (loads the model for ``transformers``)."""
    module = importlib.import_module(CLIENTS[spec.engine])
    client: EngineClient = module.open_client(name, spec, ctx)
    return client


class Client:
    """One deployment: ``chat`` (streamed or whole), ``embed``; close it, or use ``with``."""

    def __init__(self, name: str, engine: str, task: str, settings: SmokeTestSettings, engine_client: EngineClient):
        self.name = name
        self.engine = engine
        self.task = task
        self.settings = settings  # the manifest's smoke_test settings for this deployment
        self._engine = engine_client

    @overload
    def chat(self, messages: Sequence[Message], *, stream: Literal[True] = True, **sampling: Any) -> Iterator[str]: ...

    @overload
    def chat(self, messages: Sequence[Message], *, stream: Literal[False], **sampling: Any) -> str: ...

    def chat(self, messages: Sequence[Message], *, stream: bool = True, **sampling: Any) -> Iterator[str] | str:
        """The answer to ``messages``: an iterator of text pieces, or with ``stream=False`` the whole text.

        ``sampling``: ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``repetition_penalty``.
        """
        pieces = (event.text for event in self.events(messages, **sampling) if event.text)
        return pieces if stream else "".join(pieces)

    def events(self, messages: Sequence[Message], **sampling: Any) -> Iterator[ChatEvent]:
        """The engine's stream as it comes: text, the finish reason, the server's token count."""
        self._require("chat")
        settings = request_settings(self.settings, messages, sampling)  # checked now, not at first next()
        return self._engine.stream_chat(settings)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
        return self.embeddings(texts).vectors

    def embeddings(self, texts: Sequence[str]) -> Embeddings:
        """``embed`` with what the engine says besides: input tokens, inputs that were cut."""
        self._require("embed")
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise UsageError("embed takes a non-empty list of strings", hint='e.g. client.embed(["a text"])')
        return self._engine.embed(list(texts))

    def count_tokens(self, text: str) -> int | None:
        return self._engine.count_tokens(text)

    def close(self) -> None:
        self._engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require(self, task: str) -> None:
        if self.task != task:
            raise DeploymentError(
                f"{self.name} is {'an embedding' if self.task == 'embed' else 'a chat'} deployment "
                f"(task: {self.task}); it cannot {task}",
                hint=f"use a deployment with task: {task}",
            )


def connect(manifest: str | os.PathLike[str] | Manifest | None = None, deployment: str | None = None) -> Client:
    """A client for ``deployment`` of ``manifest`` (a path or a loaded Manifest; None: as the CLI).

    With one deployment in the manifest, ``deployment`` may be left out. Raises UsageError for
    an unknown deployment, DeploymentError for one not applied on this machine.
    """
    from ..manifest import Manifest
    from ..manifest_loader import load_manifest, manifest_or_last_applied
    from ..reconciler import Reconciler

    if isinstance(manifest, Manifest):
        loaded = manifest
    else:
        loaded = load_manifest(manifest if manifest is not None else manifest_or_last_applied())
    name = _choose(loaded, deployment)
    spec = loaded.deployments[name]
    with Reconciler(loaded) as reconciler:
        ctx = reconciler.deploy_context()
    if spec.engine != "openai" and name not in ctx.records:  # a hosted API has nothing to apply
        raise DeploymentError(
            f"deployment {name} is not applied on this machine",
            hint=f"run `provision apply {loaded.path} --only {name}`",
        )
    settings = loaded.smoke_settings(name)
    return Client(name, spec.engine, spec.task, settings, open_engine(name, spec, ctx))


def _choose(manifest: Manifest, deployment: str | None) -> str:
    choices = ", ".join(sorted(manifest.deployments)) or "none"
    if deployment is None:
        if len(manifest.deployments) == 1:
            return next(iter(manifest.deployments))
        raise UsageError(
            f"{manifest.path} has {len(manifest.deployments)} deployments: say which", hint=f"deployments: {choices}"
        )
    if deployment not in manifest.deployments:
        raise UsageError(f"no deployment {deployment!r} in {manifest.path}", hint=f"deployments: {choices}")
    return deployment
