"""Client of ``engine: openai`` (a hosted OpenAI-compatible API) and of vLLM's server.

Protocol (``POST {base_url}/chat/completions`` with ``stream: true``): SSE events
``data: {chunk}``; a role chunk first, content chunks, a chunk with ``finish_reason``, with
``stream_options.include_usage`` a last chunk with ``choices: []`` and ``usage``, then
``data: [DONE]`` (optional: a stream that just ends is fine). ``top_k`` and
``repetition_penalty`` are not OpenAI fields; vLLM and most compatible servers take them
in the body, so they go through ``extra_body`` only when set.

Embeddings: ``POST {base_url}/embeddings`` with ``{"model", "input": [texts],
"encoding_format": "float"}``; the answer is ``{"data": [{"index", "embedding"}], "usage":
{"prompt_tokens"}}``, put back in input order by ``index``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..credentials import secret_text
from ..errors import DeploymentError, EngineUnavailableError
from ..manifest import OpenAIDeployment, SmokeTestSettings
from .base import ChatEvent, Embeddings, bounded_answers, checked_vectors, token_count

if TYPE_CHECKING:
    import openai

    from ..deployments.base import DeployContext

# Sent when the manifest has no key: the client refuses None, and falling back to
# $OPENAI_API_KEY would hand OpenAI's key to whatever base_url says.
NO_KEY = "EMPTY"
# The first chunk of every stream (vLLM's role chunk), parsed once by ``warm``.
_ROLE_CHUNK = {
    "id": "warm",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "warm",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
}


class OpenAIClient:
    """Chats and embeds through an OpenAI-compatible server with the real ``openai`` client."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None,
        timeout: float,
        *,
        key_hint: str = "check the deployment's api_key (and the ${VAR} it references)",
    ) -> None:
        import openai

        self.base_url = base_url
        self.model = model
        self._key_hint = key_hint
        self._has_key = api_key is not None
        self._key = api_key  # only to blank it out of what the server says back
        # No retries: a smoke test reports what it sees, at once.
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or NO_KEY,
            timeout=timeout,
            max_retries=0,
            http_client=openai.DefaultHttpxClient(event_hooks={"response": [bounded_answers(base_url)]}),
        )

    def warm(self) -> None:
        """What the SDK does on its first chat, done before the timed one (measured on the real
        vLLM: 25-55 ms before the request was written, and the first chunk's parse, cold).

        GET /models opens the keep-alive connection; ``chat.completions`` imports the SDK's
        chat resources; validating a role chunk builds pydantic's deferred chunk schema.
        Errors are left to the chat, which reports them with its own message.
        """
        import openai
        from openai.types.chat import ChatCompletionChunk

        with contextlib.suppress(openai.OpenAIError):
            self._client.models.list()
        _ = self._client.chat.completions
        ChatCompletionChunk.model_validate(_ROLE_CHUNK)

    def stream_chat(self, settings: SmokeTestSettings) -> Iterator[ChatEvent]:
        import openai

        try:
            stream = self._client.chat.completions.create(**self.request(settings))
            with stream:
                for chunk in stream:
                    yield from self._chunk_events(chunk)
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        except ValueError as exc:  # the SDK's parse of an event: not UTF-8, not JSON
            raise self._malformed(f"an event that is not JSON ({exc})") from None

    def _chunk_events(self, chunk: Any) -> Iterator[ChatEvent]:
        """The events of one chunk, checked: the SDK builds chunks without validating them."""
        from openai.types.chat import ChatCompletionChunk
        from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta
        from openai.types.completion_usage import CompletionUsage

        choices = getattr(chunk, "choices", None) if isinstance(chunk, ChatCompletionChunk) else None
        if not isinstance(choices, list):
            raise self._malformed("a chunk that is not an object with a list of choices")
        for choice in choices:
            delta = getattr(choice, "delta", None) if isinstance(choice, Choice) else None
            text = getattr(delta, "content", None) if isinstance(delta, ChoiceDelta) else None
            finish = getattr(choice, "finish_reason", None)
            if not isinstance(choice, Choice) or not isinstance(delta, ChoiceDelta | None):
                raise self._malformed("a choice that is not an object with a delta object")
            if not isinstance(text, str | None) or not isinstance(finish, str | None):
                raise self._malformed("a content or finish_reason that is not text")
            if text or finish:
                yield ChatEvent(text=text or "", finish_reason=finish)
        usage = getattr(chunk, "usage", None)
        if usage is None:
            return
        tokens = getattr(usage, "completion_tokens", None) if isinstance(usage, CompletionUsage) else usage
        if tokens is not None:
            if token_count(tokens) is None:
                raise self._malformed(f"a usage.completion_tokens that is not a token count: {tokens!r}"[:200])
            yield ChatEvent(output_tokens=tokens)

    def _malformed(self, what: str) -> DeploymentError:
        return DeploymentError(
            f"{self.base_url} sent a malformed chat stream: {what}",
            hint="the server does not speak OpenAI's streamed chat completions: check base_url, see the server's log",
        )

    def request(self, settings: SmokeTestSettings) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for these settings."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.model_dump() for m in settings.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
        }
        if settings.top_p is not None:
            body["top_p"] = settings.top_p
        extra = {
            key: value
            for key, value in (("top_k", settings.top_k), ("repetition_penalty", settings.repetition_penalty))
            if value is not None
        }
        if extra:
            body["extra_body"] = extra
        return body

    def embed(self, texts: Sequence[str]) -> Embeddings:
        import openai

        try:
            answer = self._client.embeddings.create(model=self.model, input=list(texts), encoding_format="float")
        except openai.NotFoundError as exc:
            raise DeploymentError(
                f"404 from {self.base_url}/embeddings: {self._said(exc)}",
                hint="the server has no embeddings endpoint for this model: is it an embedding model (task: embed)?",
            ) from exc
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        except ValueError as exc:  # a body that is not JSON
            raise self._bad_embeddings(f"a body that is not JSON ({type(exc).__name__})") from None
        # The SDK builds the answer without validating it: check every field used.
        data = getattr(answer, "data", None)
        items = data if isinstance(data, list) else []
        indexes = [getattr(item, "index", None) for item in items]
        if not isinstance(data, list) or sorted(i for i in indexes if isinstance(i, int)) != list(range(len(items))):
            raise self._bad_embeddings("data is not a list of items indexed 0 to n-1")
        ordered = sorted(items, key=lambda item: item.index)
        vectors = checked_vectors([getattr(item, "embedding", None) for item in ordered], len(texts))
        if isinstance(vectors, str):
            raise self._bad_embeddings(vectors)
        usage = getattr(getattr(answer, "usage", None), "prompt_tokens", None)
        return Embeddings(vectors, input_tokens=token_count(usage))

    def _bad_embeddings(self, what: str) -> DeploymentError:
        return DeploymentError(
            f"{self.base_url} returned malformed embeddings: {what}",
            hint="the server does not speak OpenAI's embeddings API: check base_url, see the server's log",
        )

    def count_tokens(self, text: str) -> int | None:
        return None  # the server's usage chunk counts; no tokenizer here

    def close(self) -> None:
        self._client.close()

    def _translate(self, exc: openai.OpenAIError) -> DeploymentError:
        """One provision error per failure a user can act on."""
        import openai

        where = self.base_url
        if isinstance(exc, openai.APITimeoutError):
            return DeploymentError(
                f"no answer from {where} in time", hint="raise smoke_test.timeout, or check the server's load"
            )
        if isinstance(exc, openai.APIConnectionError):
            return EngineUnavailableError(
                f"cannot connect to {where}: {self._blanked(_cause(exc))}",
                hint="check base_url / port and that the server is running (`provision status`)",
            )
        if isinstance(exc, openai.AuthenticationError):
            told = "the API key was rejected" if self._has_key else "the server wants an API key and none is set"
            return DeploymentError(f"401 Unauthorized: {told}", hint=self._key_hint)
        if isinstance(exc, openai.PermissionDeniedError):
            return DeploymentError(f"403 Forbidden: {self._said(exc)}", hint=self._key_hint)
        if isinstance(exc, openai.NotFoundError) and getattr(exc, "body", None) == {"detail": "Not Found"}:
            # FastAPI's answer for a path with no route: vLLM adds the chat route only for
            # generative models, so a pooling (embedding, reward, classify) model says this.
            return DeploymentError(
                f'404 {where} has no chat completions endpoint (the server answered {{"detail":"Not Found"}}, '
                "the web framework's reply for an unknown path): it serves a pooling model "
                "(embedding, classification, reward), which cannot chat, or base_url misses its /v1 path",
                hint="deploy a generative (chat) model, or fix base_url; GET /v1/models shows what is served",
            )
        if isinstance(exc, openai.NotFoundError):
            return DeploymentError(
                f"404 model {self.model!r} is not served at {where}: {self._said(exc)}",
                hint="check served_model (GET /v1/models lists what the server serves)",
            )
        if isinstance(exc, openai.RateLimitError):
            return DeploymentError(
                f"429 rate limited: {self._said(exc)}", hint="retry later or check the account's quota"
            )
        if isinstance(exc, openai.APIStatusError):
            return DeploymentError(f"HTTP {exc.status_code}: {self._said(exc)}", hint="see the server's log")
        if isinstance(exc, openai.APIError):  # an error event in the middle of the stream
            return DeploymentError(f"the server failed mid-stream: {self._said(exc)}", hint="see the server's log")
        return DeploymentError(f"{type(exc).__name__}: {self._said(exc)}")

    def _said(self, exc: Any) -> str:
        """The server's message with the API key blanked out: an error body may echo the request."""
        return self._blanked(_message(exc))

    def _blanked(self, text: str) -> str:
        """``text`` without the API key (a server, or the HTTP library's own error, may repeat it)."""
        return text.replace(self._key, "***") if self._key else text


def _message(exc: Any) -> str:
    """The server's own message: ``{"error": {"message": ...}}``, ``{"error": "..."}`` or text."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            inner = inner.get("message", inner)
        if isinstance(inner, str):
            return inner
    return str(getattr(exc, "message", exc))


def _cause(exc: BaseException) -> str:
    """The innermost reason (e.g. "Connection refused") rather than the client's generic text."""
    inner: BaseException = exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    text = str(inner) or type(inner).__name__
    return text if inner is not exc else "connection error"


def open_client(name: str, spec: OpenAIDeployment, ctx: DeployContext) -> OpenAIClient:
    key = secret_text(spec.api_key)  # a CR/LF from `$(cat keyfile)` would end the header
    return OpenAIClient(
        spec.base_url,
        spec.served_model,
        key,
        ctx.manifest.smoke_settings(name).timeout,
        key_hint=f"check deployments.{name}.api_key (and the ${{VAR}} it references)",
    )
