"""``ollama://name:tag``: models an Ollama server holds, pulled through the official client.

Protocol served (Ollama's HTTP API, see docs/protocols.md, "Ollama"):

- observe: one ``GET /api/tags`` for every ``ollama://`` model of the manifest; each entry
  gives the model's name (``name:tag``, ``latest`` added) and its manifest ``digest``.
- apply: ``POST /api/pull`` streams ``pulling <12 hex>`` lines with ``digest``, ``total`` and
  ``completed`` per layer (reported as progress), then ``success``. An error after the
  first line arrives as a last ``{"error": ...}`` line (``ResponseError``, status -1); a cut
  connection as ``httpx.RemoteProtocolError``. The server keeps partial layers, so a pull
  is retried a few times and each retry resumes. A second ``/api/tags`` gives the digest.
- remove: ``DELETE /api/delete``, only for models recorded as ``created`` by provision.

What is kept::

    lock   {"spec": {"source": "ollama://qwen3:0.6b"}, "digest": <manifest sha256>}
    state  {"source", "host", "model", "digest", "created": true | false}

``created: false`` marks a model that was on the server before provision saw it (adopted
into the lock): ``destroy`` leaves it alone. Ollama pulls tags, never digests, so a server
whose digest differs from the lock cannot be put back: plain ``apply`` reports the drift and
changes nothing, ``--update`` re-pulls and re-locks, ``--locked`` refuses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import (
    DownloadError,
    EngineUnavailableError,
    LockError,
    ProvisionError,
    SourceError,
)
from ..hardware import resolve_ollama_host
from ..manifest import Manifest, ModelSpec
from ..manifest_checks import OLLAMA_DEFAULT_HOST, OLLAMA_DEFAULT_NAMESPACE, OLLAMA_NAME_RULES, split_ollama_name
from ..plan import Action, Change, Resolve
from ..retry import RetryPolicy
from ..state import State
from .base import Record

if TYPE_CHECKING:
    import ollama

SERVE_HINT = "start it with `ollama serve`, or set settings.ollama.host / $OLLAMA_HOST"
PULL_RETRY = RetryPolicy(attempts=3)  # a cut pull resumes where it stopped: waits 0.5 s, then 1 s


def canonical_name(raw: str, *, resource: str | None = None) -> str:
    """Ollama's display form of ``raw`` (``qwen3`` → ``qwen3:latest``); SourceError if invalid."""
    parts = split_ollama_name(raw)
    if parts is None:
        raise SourceError(
            f"{raw!r} is not a valid Ollama model name",
            resource=resource,
            hint=f"write ollama://{OLLAMA_NAME_RULES}, e.g. ollama://qwen3:0.6b",
        )
    host, namespace, model, tag = parts
    if host != OLLAMA_DEFAULT_HOST:
        return f"{host}/{namespace}/{model}:{tag}"
    if namespace != OLLAMA_DEFAULT_NAMESPACE:
        return f"{namespace}/{model}:{tag}"
    return f"{model}:{tag}"


def ollama_host(manifest: Manifest) -> str:
    """settings.ollama.host, else $OLLAMA_HOST (``host:port`` accepted), else 127.0.0.1:11434."""
    return resolve_ollama_host(manifest.settings.ollama.host)


def ollama_client(host: str) -> ollama.Client:
    import httpx
    import ollama

    # Pull lines come every few seconds at worst; a minute of silence is a stalled server.
    return ollama.Client(host=host, timeout=httpx.Timeout(60.0, connect=5.0))


def unreachable(host: str, exc: BaseException) -> EngineUnavailableError:
    return EngineUnavailableError(f"cannot connect to Ollama at {host} ({type(exc).__name__})", hint=SERVE_HINT)


def list_digests(client: ollama.Client, host: str) -> dict[str, str]:
    """One ``/api/tags``: canonical name (case-folded, as Ollama compares) -> manifest digest."""
    import httpx
    import ollama

    try:
        models = client.list().models
    except (ConnectionError, httpx.TransportError) as exc:
        raise unreachable(host, exc) from None
    except ollama.ResponseError as exc:
        raise EngineUnavailableError(
            f"Ollama at {host} answered HTTP {exc.status_code}: {exc.error}", hint=SERVE_HINT
        ) from None
    return {_key(m.model or ""): m.digest or "" for m in models}


def _key(listed: str) -> str:
    try:
        return canonical_name(listed).casefold()
    except SourceError:  # a name this server accepted under rules we do not know: keep it as is
        return listed.casefold()


@dataclass(frozen=True)
class Observed:
    """What one observe found: the server's models, or why it could not be asked."""

    digests: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # this manifest's state
    error: ProvisionError | None = None


class OllamaServerSource:
    """The :class:`~provision.sources.base.ServerSource` for ``ollama://`` models."""

    scheme: ClassVar[str] = "ollama"

    def __init__(self, manifest: Manifest, state: State) -> None:
        self._manifest = manifest
        self._state = state  # the reconciler's: which models provision pulled here
        self.host = ollama_host(manifest)
        self._client: ollama.Client | None = None

    @property
    def client(self) -> ollama.Client:
        if self._client is None:
            self._client = ollama_client(self.host)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- observe + plan (pure) ----------------------------------------------------------------
    def observe(self, names: list[str]) -> Observed:
        # Which models provision pulled here decides what destroy may delete later.
        records = self._state.records(self._manifest.path)["models"]
        try:
            return Observed(list_digests(self.client, self.host), records)
        except ProvisionError as exc:  # reported per model, after each name is validated
            return Observed(records=records, error=exc)

    def plan(
        self, name: str, spec: ModelSpec, observed: object, lock_entry: Record | None, *, update: bool, locked: bool
    ) -> Action:
        assert isinstance(observed, Observed)
        model = canonical_name(spec.location, resource=name)
        if observed.error is not None:
            raise observed.error
        present = observed.digests.get(model.casefold())
        previous = observed.records.get(name) or {}
        ours = bool(previous.get("created")) and previous.get("model") == model
        details: dict[str, Any] = {"model": model, "created": ours}
        if previous.get("created") and previous.get("model") not in (None, model):
            details["replaces"] = previous["model"]  # the source changed: drop the old pull
        wanted = {"source": f"ollama://{model}"}
        if lock_entry is None or lock_entry.get("spec") != wanted:
            if locked:
                why = Resolve.NOT_LOCKED if lock_entry is None else Resolve.SPEC_CHANGED
                raise LockError(f"model {name} {why.value} ({self._manifest.lock_path.name})", resource=name)
            if present is None:
                return Action(
                    "model",
                    name,
                    Change.CREATE,
                    f"pull {model} into Ollama at {self.host}",
                    details={**details, "created": True},
                )
            return Action(
                "model",
                name,
                Change.UPDATE,
                f"{model} is already on the server: lock {present[:12]}",
                details={**details, "digest": present},
            )
        pinned = lock_entry["digest"]
        if present is None:
            return Action(
                "model",
                name,
                Change.CREATE,
                f"{model} is not on the server: pull it",
                details={**details, "created": True, "expect": pinned if locked else None},
            )
        if present == pinned:
            if update:
                return Action("model", name, Change.UPDATE, f"re-pull {model} in case its tag moved", details=details)
            return Action("model", name, Change.NOOP, f"present in Ollama ({pinned[:12]})")
        drift = f"the server has {model} at {present[:12]}, the lock pins {pinned[:12]}"
        if locked:
            raise LockError(
                f"model {name}: {drift}",
                resource=name,
                hint="Ollama pulls tags, not digests: run `provision apply --update` to re-pull "
                "and lock what the tag holds now, and commit the lock",
            )
        if update:
            return Action("model", name, Change.UPDATE, f"{drift}: re-pull and lock", details=details)
        return Action(
            "model",
            name,
            Change.NOOP,
            f"drift: {drift} (`apply --update` re-pulls and re-locks)",
            details={"drift": True},
        )

    # -- apply + remove -----------------------------------------------------------------------
    def apply(
        self, action: Action, spec: ModelSpec, *, on_progress: Callable[[str, int, int], None]
    ) -> tuple[Record, Record]:
        model: str = action.details["model"]
        digest = action.details.get("digest")
        if digest is None:
            if action.details.get("created"):
                self._claim(action.name, spec, model)
            self._pull(action.name, model, on_progress)
            digest = list_digests(self.client, self.host).get(model.casefold())
            if digest is None:
                raise SourceError(
                    f"Ollama at {self.host} reported success but does not list {model}",
                    resource=action.name,
                    hint="see the Ollama server's log",
                )
            expected = action.details.get("expect")
            if expected and digest != expected:
                raise LockError(
                    f"pulled {model} at {digest[:12]} but the lock pins {expected[:12]}",
                    resource=action.name,
                    hint="the tag moved upstream: run `provision apply --update` and commit the lock",
                )
        replaced = action.details.get("replaces")
        if replaced:
            delete_model(self.client, self.host, replaced, resource=action.name)
        lock_entry = {"spec": {"source": f"ollama://{model}"}, "digest": digest}
        record = {
            "source": spec.source,
            "host": self.host,
            "model": model,
            "digest": digest,
            "created": bool(action.details.get("created")),
        }
        return lock_entry, record

    def _claim(self, name: str, spec: ModelSpec, model: str) -> None:
        """Record the pull as ours before it starts: a kill after the pull but before the reconciler
        writes the state would otherwise make the next apply adopt it, and destroy leave it."""
        self._state.update(
            self._manifest.path,
            "models",
            name,
            {"source": spec.source, "host": self.host, "model": model, "digest": None, "created": True},
        )

    def _pull(self, name: str, model: str, on_progress: Callable[[str, int, int], None]) -> None:
        import httpx
        import ollama

        last = ""
        for attempt in range(1, PULL_RETRY.attempts + 1):
            try:
                for part in self.client.pull(model, stream=True):
                    if part.digest and part.total:
                        on_progress(part.status or part.digest[7:19], part.completed or 0, part.total)
                return
            except ollama.ResponseError as exc:
                if "file does not exist" in exc.error or exc.status_code == 404:
                    raise SourceError(
                        f"the registry has no model {model}: {exc.error}",
                        resource=name,
                        hint="check the name and tag at https://ollama.com/library",
                    ) from None
                if exc.status_code != -1:  # an answer before the stream started: not transient
                    raise SourceError(
                        f"Ollama at {self.host} refused to pull {model}: HTTP {exc.status_code} {exc.error}",
                        resource=name,
                        hint="see the Ollama server's log",
                    ) from None
                last = exc.error
            except (ConnectionError, httpx.ConnectError) as exc:
                raise unreachable(self.host, exc) from None
            except httpx.TransportError as exc:  # cut or stalled mid-stream: the next pull resumes
                last = f"{type(exc).__name__}: {exc}"
            if attempt < PULL_RETRY.attempts:
                time.sleep(PULL_RETRY.delay(attempt))
        raise DownloadError(
            f"pulling {model} failed {PULL_RETRY.attempts} times; last error: {last}",
            resource=name,
            hint="run `provision apply` again: Ollama keeps the layers it has and resumes",
        )

    def remove(self, name: str, record: Record) -> None:
        if not (record.get("created") and record.get("model")):
            return  # the user's model, adopted into the lock: never deleted
        host = record.get("host") or self.host
        if host == self.host:
            delete_model(self.client, host, record["model"], resource=name)
        else:  # settings.ollama.host changed since: delete where it was pulled
            with ollama_client(host) as client:
                delete_model(client, host, record["model"], resource=name)


def delete_model(client: ollama.Client, host: str, model: str, *, resource: str) -> None:
    """``DELETE /api/delete``; a model already gone is fine."""
    import httpx
    import ollama

    try:
        client.delete(model)
    except ollama.ResponseError as exc:
        if exc.status_code != 404:
            raise SourceError(
                f"Ollama at {host} could not delete {model}: {exc.error}",
                resource=resource,
                hint="see the Ollama server's log",
            ) from None
    except (ConnectionError, httpx.TransportError) as exc:
        raise unreachable(host, exc) from None
