"""What every engine's client implements: a streamed chat, embeddings, a token count, close.

One module per engine (``openai``, ``vllm``, ``ollama``, ``transformers``) builds its
client from a deployment; the smoke test, ``provision chat`` and :func:`provision.connect`
all talk to a deployment through it, so each engine has one code path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from ..errors import DeploymentError, UsageError
from ..manifest import ChatMessage, SmokeOverrides, SmokeTestSettings

SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "repetition_penalty")
# What one answer of a server may make a client hold: its whole body (far above a long answer's
# stream or a large batch of vectors), and in a stream, one line (an SSE line, an NDJSON object).
MAX_ANSWER_BYTES = 256 << 20
MAX_LINE_BYTES = 16 << 20
_STREAM_TYPES = ("text/event-stream", "application/x-ndjson")
# Far above any model's context: a larger count is a lie, and would overflow the rates' floats.
MAX_TOKEN_COUNT = 10**9


@dataclass(frozen=True)
class ChatEvent:
    """One item of a streamed answer, as the engine saw it.

    ``text`` is new content (may be empty on role/usage chunks); ``output_tokens`` is the
    server-reported count when known (usage chunk, Ollama's ``eval_count``).
    """

    text: str = ""
    finish_reason: str | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class Embeddings:
    """One batch's vectors, in input order, and what the engine says besides: the input tokens it
    counted, the indexes of inputs it cut to ``max_length`` tokens, the model's own dimension."""

    vectors: list[list[float]]
    input_tokens: int | None = None
    truncated: tuple[int, ...] = ()
    max_length: int | None = None
    model_dimension: int | None = None


def token_count(value: object) -> int | None:
    """A server's token count when it is one (an integer in 0..MAX_TOKEN_COUNT), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_COUNT:
        return value
    return None


def checked_vectors(raw: object, count: int) -> list[list[float]] | str:
    """``raw`` as ``count`` lists of floats, or what is wrong with it (a server's answer, unchecked)."""
    if not isinstance(raw, list | tuple):
        return "the vectors are not a list"
    if len(raw) != count:
        return f"{len(raw)} vectors for {count} inputs"
    vectors: list[list[float]] = []
    for vector in raw:
        if not isinstance(vector, list | tuple) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in vector
        ):
            return "a vector that is not a list of numbers"
        vectors.append([float(x) for x in vector])
    return vectors


def bounded_answers(where: str) -> Callable[[Any], None]:
    """An ``httpx`` response hook (the ``ollama`` client's, or ``httpx2`` under ``openai``) that
    bounds the decoded body: a stream's line past MAX_LINE_BYTES, or a body past
    MAX_ANSWER_BYTES, is a DeploymentError raised while it is read, before it fills memory."""

    def hook(response: Any) -> None:
        read = response.iter_bytes  # read(), iter_lines() and the SSE decoder all go through it
        streamed = response.headers.get("content-type", "").split(";")[0].strip().lower() in _STREAM_TYPES

        def bounded(chunk_size: int | None = None) -> Iterator[bytes]:
            total = line = 0
            for data in read(chunk_size):
                total += len(data)
                newline = data.rfind(b"\n")
                line = line + len(data) if newline < 0 else len(data) - newline - 1
                if streamed and line > MAX_LINE_BYTES:
                    raise _too_large(where, f"a line over {MAX_LINE_BYTES >> 20} MiB")
                if total > MAX_ANSWER_BYTES:
                    raise _too_large(where, f"an answer over {MAX_ANSWER_BYTES >> 20} MiB")
                yield data

        response.iter_bytes = bounded

    return hook


def _too_large(where: str, what: str) -> DeploymentError:
    return DeploymentError(f"{where} sent {what}", hint="it is not answering as its engine does: see the server's log")


class EngineClient(Protocol):
    """Talks to one deployment. Raises provision errors on failure."""

    def warm(self) -> None:
        """Pay the client's first-use costs (a connection, lazy imports, parsers) before a timed
        request, so its TTFT is the request's own. Best effort: a failure shows in the request."""
        ...

    def stream_chat(self, settings: SmokeTestSettings) -> Iterator[ChatEvent]: ...

    def embed(self, texts: Sequence[str]) -> Embeddings: ...

    def count_tokens(self, text: str) -> int | None:
        """Tokens in ``text`` with the model's tokenizer, when available locally."""
        ...

    def close(self) -> None: ...


def check_sampling(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Sampling overrides validated by the model that validates a deployment's ``smoke_test:``.

    Returns the set values; raises UsageError (exit 2) naming the first bad field.
    """
    unknown = sorted(set(overrides) - set(SAMPLING_FIELDS))
    if unknown:
        raise UsageError(f"unknown sampling option {unknown[0]!r}", hint="options: " + ", ".join(SAMPLING_FIELDS))
    try:
        checked = SmokeOverrides.model_validate(dict(overrides))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise UsageError(
            f"invalid {field}: {first['msg']}, got {first.get('input')!r}",
            hint="the same limits as smoke_test settings (see README)",
        ) from None
    return {name: value for name, value in checked if value is not None}


def check_messages(messages: Sequence[Mapping[str, Any] | ChatMessage]) -> tuple[ChatMessage, ...]:
    """Messages as typed values: ``role`` system/user/assistant and a string ``content``."""
    if isinstance(messages, (str, bytes)) or not messages:
        raise UsageError(
            "messages must be a non-empty list of {role, content}", hint='e.g. [{"role": "user", "content": "hi"}]'
        )
    try:
        return tuple(m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in messages)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise UsageError(
            f"invalid message: {where}: {first['msg']}",
            hint="each message is {role: system|user|assistant, content: text}",
        ) from None


def request_settings(
    base: SmokeTestSettings, messages: Sequence[Mapping[str, Any] | ChatMessage], overrides: Mapping[str, Any]
) -> SmokeTestSettings:
    """``base`` (the manifest's smoke_test settings) with these messages and checked overrides."""
    return base.model_copy(update={"messages": check_messages(messages), **check_sampling(overrides)})
