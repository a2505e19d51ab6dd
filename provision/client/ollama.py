"""Client of ``engine: ollama``, through the real ``ollama`` client.

Chat (``POST {host}/api/chat`` with ``stream: true``): NDJSON lines ``{"message": {"role":
"assistant", "content": "..."}, "done": false}``; the last has ``done: true``,
``done_reason`` (``stop``/``length``) and ``eval_count`` (the output tokens). An error
before the first line comes with its HTTP status (``ResponseError``, e.g. 404 "model not
found"); after it, as a last ``{"error": ...}`` line (``ResponseError`` with status -1).
Sampling settings map to Ollama's option names: ``max_tokens`` → ``num_predict``,
``repetition_penalty`` → ``repeat_penalty``.

Embeddings (``POST {host}/api/embed`` with ``{"model", "input": [texts], "truncate":
false}``): ``{"embeddings": [[...], ...], "prompt_eval_count": n}``. ``truncate: false``
makes an input over the model's context an error (400 "input exceeds maximum context
length") instead of silently cut; a model that cannot embed answers an error saying so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..deployments.ollama import served_model
from ..errors import DeploymentError, EngineUnavailableError
from ..manifest import OllamaDeployment, SmokeTestSettings
from ..sources.ollama import ollama_host
from .base import ChatEvent, Embeddings, bounded_answers, token_count

if TYPE_CHECKING:
    from ..deployments.base import DeployContext

_SERVE_HINT = "start it with `ollama serve`, or set settings.ollama.host / $OLLAMA_HOST"


def chat_options(settings: SmokeTestSettings) -> dict[str, Any]:
    """Ollama's ``options`` for these settings (unset values are left to the model's defaults)."""
    options: dict[str, Any] = {"num_predict": settings.max_tokens, "temperature": settings.temperature}
    for ours, theirs in (("top_p", "top_p"), ("top_k", "top_k"), ("repetition_penalty", "repeat_penalty")):
        value = getattr(settings, ours)
        if value is not None:
            options[theirs] = value
    return options


class OllamaClient:
    """Chats and embeds with a model on an Ollama server."""

    def __init__(self, host: str, model: str, timeout: float) -> None:
        import ollama

        self.host = host
        self.model = model
        hooks = {"response": [bounded_answers(f"Ollama at {host}")]}
        self._client = ollama.Client(host=host, timeout=timeout, event_hooks=hooks)

    def stream_chat(self, settings: SmokeTestSettings) -> Iterator[ChatEvent]:
        messages = [m.model_dump() for m in settings.messages]
        with self._errors():
            for part in self._client.chat(self.model, messages=messages, stream=True, options=chat_options(settings)):
                text = (part.message.content or "") if part.message is not None else ""
                if part.done:
                    count = part.eval_count
                    if count is not None and token_count(count) is None:
                        raise DeploymentError(
                            f"Ollama at {self.host} sent a malformed answer: an eval_count that is not a token count",
                            hint="see the Ollama server's log",
                        )
                    yield ChatEvent(text=text, finish_reason=part.done_reason or "stop", output_tokens=count)
                elif text:
                    yield ChatEvent(text=text)

    def embed(self, texts: Sequence[str]) -> Embeddings:
        with self._errors():
            answer = self._client.embed(self.model, input=list(texts), truncate=False)
        vectors = [list(vector) for vector in answer.embeddings]
        if len(vectors) != len(texts):
            raise DeploymentError(
                f"Ollama returned {len(vectors)} vectors for {len(texts)} inputs", hint="see the Ollama server's log"
            )
        return Embeddings(vectors, input_tokens=answer.prompt_eval_count)

    def warm(self) -> None:
        # GET /api/ps opens the keep-alive connection the chat then reuses; an error here
        # (no server) is the chat's to report, with its own message.
        with contextlib.suppress(Exception):
            self._client.ps()

    def count_tokens(self, text: str) -> int | None:
        return None  # the final line's eval_count counts

    def close(self) -> None:
        self._client.close()

    def _errors(self) -> _OllamaErrors:
        return _OllamaErrors(self.host, self.model)


class _OllamaErrors:
    """Turns the ``ollama`` client's and httpx's exceptions into provision errors."""

    def __init__(self, host: str, model: str) -> None:
        self.host, self.model = host, model

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        import httpx
        import ollama

        if exc is None:
            return
        if isinstance(exc, ollama.ResponseError):
            raise self._response_error(exc) from exc
        # The streaming path lets httpx's errors through; the one-shot path maps a
        # refused connection to ConnectionError. Catch both.
        if isinstance(exc, (httpx.ConnectError, ConnectionError)):
            raise EngineUnavailableError(f"cannot connect to Ollama at {self.host}", hint=_SERVE_HINT) from exc
        if isinstance(exc, httpx.TimeoutException):
            raise DeploymentError(
                f"Ollama at {self.host} did not answer in time",
                hint="raise smoke_test.timeout; a first load can be slow",
            ) from exc
        if isinstance(exc, httpx.HTTPError):
            raise DeploymentError(f"Ollama at {self.host}: {type(exc).__name__}: {exc}", hint=_SERVE_HINT) from exc
        # The client parses each line with json.loads, calls .get on it and builds a pydantic
        # model: a line that is not JSON, not an object or of the wrong shape raises these.
        if isinstance(exc, (ValueError, AttributeError)):
            raise DeploymentError(
                f"Ollama at {self.host} sent a malformed answer ({type(exc).__name__})",
                hint="is the host an Ollama server? see its log",
            ) from None

    def _response_error(self, exc: Any) -> DeploymentError:
        status = exc.status_code
        if status == 404:
            return DeploymentError(
                f"model {self.model!r} is not on the Ollama server at {self.host}: {exc.error}",
                hint="run `provision apply` to pull it (or `ollama pull`)",
            )
        if status == -1:
            return DeploymentError(f"Ollama failed mid-stream: {exc.error}", hint="see the Ollama server's log")
        return DeploymentError(f"Ollama answered HTTP {status}: {exc.error}", hint="see the Ollama server's log")


def open_client(name: str, spec: OllamaDeployment, ctx: DeployContext) -> OllamaClient:
    return OllamaClient(
        ollama_host(ctx.manifest), served_model(name, spec, ctx.manifest), ctx.manifest.smoke_settings(name).timeout
    )
