"""Engine ``ollama``: chat with a model on an Ollama server.

Protocol served (``POST {host}/api/chat`` with ``stream: true``, through the real ``ollama``
client): NDJSON lines ``{"message": {"role": "assistant", "content": "..."}, "done": false}``;
the last has ``done: true``, ``done_reason`` (``stop``/``length``) and ``eval_count`` (the
output tokens). An error before the first line comes with its HTTP status
(``ResponseError``, e.g. 404 "model not found"); after it, as a last ``{"error": ...}`` line
(``ResponseError`` with status -1). Sampling settings map to Ollama's option names:
``max_tokens`` → ``num_predict``, ``repetition_penalty`` → ``repeat_penalty``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import DeploymentError, EngineUnavailableError
from ..manifest import SmokeTestSettings
from .base import ChatEvent

_SERVE_HINT = "start it with `ollama serve`, or set settings.ollama.host / $OLLAMA_HOST"


def chat_options(settings: SmokeTestSettings) -> dict[str, Any]:
    """Ollama's ``options`` for these settings (unset values are left to the model's defaults)."""
    options: dict[str, Any] = {"num_predict": settings.max_tokens, "temperature": settings.temperature}
    for ours, theirs in (("top_p", "top_p"), ("top_k", "top_k"), ("repetition_penalty", "repeat_penalty")):
        value = getattr(settings, ours)
        if value is not None:
            options[theirs] = value
    return options


class OllamaChat:
    """Streams a chat from an Ollama server with the real ``ollama`` client."""

    def __init__(self, host: str, model: str, timeout: float) -> None:
        import ollama

        self.host = host
        self.model = model
        self._client = ollama.Client(host=host, timeout=timeout)

    def stream_chat(self, settings: SmokeTestSettings) -> Iterator[ChatEvent]:
        import httpx
        import ollama

        messages = [m.model_dump() for m in settings.messages]
        try:
            for part in self._client.chat(self.model, messages=messages, stream=True, options=chat_options(settings)):
                text = (part.message.content or "") if part.message is not None else ""
                if part.done:
                    yield ChatEvent(text=text, finish_reason=part.done_reason or "stop", output_tokens=part.eval_count)
                elif text:
                    yield ChatEvent(text=text)
        except ollama.ResponseError as exc:
            raise self._response_error(exc) from exc
        # The streaming path lets httpx's errors through; the one-shot path maps a
        # refused connection to ConnectionError. Catch both.
        except (httpx.ConnectError, ConnectionError) as exc:
            raise EngineUnavailableError(f"cannot connect to Ollama at {self.host}", hint=_SERVE_HINT) from exc
        except httpx.TimeoutException as exc:
            raise DeploymentError(
                f"Ollama at {self.host} did not answer in time",
                hint="raise smoke_test.timeout; a first load can be slow",
            ) from exc
        except httpx.HTTPError as exc:
            raise DeploymentError(f"Ollama at {self.host}: {type(exc).__name__}: {exc}", hint=_SERVE_HINT) from exc

    def count_tokens(self, text: str) -> int | None:
        return None  # the final line's eval_count counts

    def close(self) -> None:
        self._client.close()

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
