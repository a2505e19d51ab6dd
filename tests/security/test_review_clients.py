"""A hostile model server: what it streams, answers and says in errors is checked before use.

Each engine's real client (``openai``, ``ollama``) runs against its fake, switched to send raw
bytes (``raw_stream`` / ``raw_answer``, ``faults.raw_chat`` / ``faults.raw_answer``): a bad
answer is a one-line ``DeploymentError`` (a failed smoke result), never another exception.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from provision.client import base
from provision.client.ollama import OllamaClient
from provision.client.openai import OpenAIClient
from provision.errors import DeploymentError
from provision.manifest import ChatMessage, SmokeTestSettings
from provision.smoke import SmokeJob, run_job, run_one
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.vllm_server import FakeVLLM

SETTINGS = SmokeTestSettings(messages=(ChatMessage(role="user", content="one two three"),), max_tokens=8, timeout=10)


def sse(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


def chunk(content: str = "hi", finish: str | None = None) -> str:
    finish_reason = "null" if finish is None else f'"{finish}"'
    return f'{{"choices": [{{"index": 0, "delta": {{"content": "{content}"}}, "finish_reason": {finish_reason}}}]}}'


@pytest.fixture()
def vllm(tmp_path: Path) -> Iterator[FakeVLLM]:
    (tmp_path / "config.json").write_text("{}")
    with FakeVLLM(tmp_path, ["m"]) as server:
        yield server


# -- the OpenAI-compatible chat stream -------------------------------------------------------

MALFORMED_SSE = {
    "not-json": [sse("{not json")],
    "not-utf8": [b"data: \xff\xfe\n\n"],
    "a-list": [sse("[1, 2]")],
    "a-string": [sse('"hi"')],
    "choices-null": [sse('{"choices": null}')],
    "choices-of-strings": [sse('{"choices": ["abc"]}')],
    "delta-a-string": [sse('{"choices": [{"index": 0, "delta": "x", "finish_reason": null}]}')],
    "content-a-number": [sse('{"choices": [{"index": 0, "delta": {"content": 5}, "finish_reason": null}]}')],
    "content-an-object": [sse('{"choices": [{"index": 0, "delta": {"content": {"a": 1}}, "finish_reason": null}]}')],
    "finish-a-number": [sse('{"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": 7}]}')],
    "usage-negative": [sse(chunk(finish="stop")), sse('{"choices": [], "usage": {"completion_tokens": -5}}')],
    "usage-a-string": [sse(chunk(finish="stop")), sse('{"choices": [], "usage": {"completion_tokens": "many"}}')],
    "usage-huge": [
        sse(chunk()),
        sse(chunk(finish="stop")),
        sse('{"choices": [], "usage": {"completion_tokens": 1' + "0" * 400 + "}}"),
    ],
}


@pytest.mark.parametrize("case", sorted(MALFORMED_SSE))
def test_a_malformed_sse_event_is_a_deployment_error_and_a_failed_smoke_test(vllm: FakeVLLM, case: str) -> None:
    vllm.raw_stream = MALFORMED_SSE[case]
    client = OpenAIClient(vllm.base_url, "m", None, timeout=10)
    with pytest.raises(DeploymentError, match="malformed chat stream"):
        list(client.stream_chat(SETTINGS))
    result = run_one("api", client, SETTINGS)  # never raises for what a server sent
    assert not result.passed and result.reason is not None and "malformed chat stream" in result.reason
    assert "\n" not in result.reason


def test_a_wellformed_raw_stream_still_passes(vllm: FakeVLLM) -> None:
    vllm.raw_stream = [
        sse(chunk("one ")),
        sse(chunk("two", "stop")),
        sse('{"choices": [], "usage": {"completion_tokens": 3}}'),
        sse("[DONE]"),
    ]
    result = run_one("api", OpenAIClient(vllm.base_url, "m", None, timeout=10), SETTINGS)
    assert result.passed, result.reason
    assert (result.text, result.output_tokens, result.token_source) == ("one two", 3, "server")


# -- Ollama's NDJSON chat stream -------------------------------------------------------------


@pytest.fixture()
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        server.preinstall("m:latest")
        yield server


def ndjson(line: str) -> bytes:
    return (line + "\n").encode()


OLLAMA_LINE = '{"model": "m", "message": {"role": "assistant", "content": "hi"}, "done": false}'
OLLAMA_LAST = '{"model": "m", "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop"'
MALFORMED_NDJSON = {
    "not-json": [ndjson("{not json")],
    "a-list": [ndjson("[1, 2]")],
    "a-string": [ndjson('"hi"')],
    "message-a-string": [ndjson('{"message": "x", "done": false}')],
    "content-a-number": [ndjson('{"message": {"role": "assistant", "content": 5}, "done": false}')],
    "eval-count-negative": [ndjson(OLLAMA_LINE), ndjson(OLLAMA_LAST + ', "eval_count": -3}')],
    "eval-count-huge": [
        ndjson(OLLAMA_LINE),
        ndjson(OLLAMA_LINE),
        ndjson(OLLAMA_LAST + ', "eval_count": 1' + "0" * 400 + "}"),
    ],
    "done-reason-a-number": [
        ndjson(OLLAMA_LINE),
        ndjson(OLLAMA_LAST[: -len(', "done_reason": "stop"')] + ', "done_reason": 5}'),
    ],
}


@pytest.mark.parametrize("case", sorted(MALFORMED_NDJSON))
def test_a_malformed_ollama_line_is_a_deployment_error_and_a_failed_smoke_test(ollama: FakeOllama, case: str) -> None:
    ollama.faults.raw_chat = MALFORMED_NDJSON[case]
    client = OllamaClient(ollama.url, "m:latest", timeout=10)
    with pytest.raises(DeploymentError, match="malformed answer"):
        list(client.stream_chat(SETTINGS))
    result = run_one("local", client, SETTINGS)  # never raises for what a server sent
    assert not result.passed and result.reason is not None and "malformed answer" in result.reason, result.reason


def test_a_wellformed_raw_ollama_stream_still_passes(ollama: FakeOllama) -> None:
    ollama.faults.raw_chat = [ndjson(OLLAMA_LINE), ndjson(OLLAMA_LAST + ', "eval_count": 2}')]
    result = run_one("local", OllamaClient(ollama.url, "m:latest", timeout=10), SETTINGS)
    assert result.passed, result.reason
    assert (result.text, result.output_tokens, result.finish_reason) == ("hi", 2, "stop")


# -- embeddings ------------------------------------------------------------------------------

EMBED_JOB_SETTINGS = SmokeTestSettings(timeout=10)  # the default probes: 6 inputs


def openai_embeddings(vectors: list[Any], indexes: list[Any] | None = None) -> bytes:
    data = [
        {"index": i if indexes is None else indexes[i], "object": "embedding", "embedding": v}
        for i, v in enumerate(vectors)
    ]
    return json.dumps({"object": "list", "data": data, "usage": {"prompt_tokens": 3}}).encode()


MALFORMED_EMBEDDINGS = {
    "strings": openai_embeddings([["a", "b"]] * 6),
    "nested-lists": openai_embeddings([[[1.0], [0.0]]] * 6),
    "null-vectors": openai_embeddings([None] * 6),
    "null-indexes": openai_embeddings([[1.0, 0.0]] * 6, [None] * 6),
    "repeated-indexes": openai_embeddings([[1.0, 0.0], [0.0, 1.0]] * 3, [0, 0, 0, 3, 3, 3]),
    "data-null": b'{"object": "list", "data": null}',
    "not-json": b"{not json",
}


@pytest.mark.parametrize("case", sorted(MALFORMED_EMBEDDINGS))
def test_malformed_openai_embeddings_are_a_failed_smoke_test(tmp_path: Path, case: str) -> None:
    (tmp_path / "config.json").write_text("{}")
    with FakeVLLM(tmp_path, ["m"], embedding_dimension=4) as server:
        server.raw_answer = (200, MALFORMED_EMBEDDINGS[case])
        client = OpenAIClient(server.base_url, "m", None, timeout=10)
        with pytest.raises(DeploymentError, match="malformed embeddings"):
            client.embed(["a", "b", "c", "d", "e", "f"])
        job = SmokeJob("e", "vllm", lambda: OpenAIClient(server.base_url, "m", None, timeout=10), EMBED_JOB_SETTINGS)
        result = run_job(replace(job, task="embed"))  # never raises for what a server sent
    assert not result.passed and result.reason is not None and "malformed embeddings" in result.reason, result.reason


# -- memory: a line without end, a body without end ---------------------------------------


def endless_line(start: bytes, megabytes: int = 64) -> Iterator[bytes]:
    """``start``, then ``megabytes`` MiB with no newline (a test's bound: the client must stop first)."""
    yield start
    for _ in range(megabytes):
        yield b"x" * (1 << 20)


def test_an_sse_line_without_end_is_refused_before_it_fills_memory(vllm: FakeVLLM) -> None:
    vllm.raw_stream = endless_line(b'data: {"choices": [{"index": 0, "delta": {"content": "')
    client = OpenAIClient(vllm.base_url, "m", None, timeout=10)
    with pytest.raises(DeploymentError, match="sent a line over 16 MiB"):
        list(client.stream_chat(SETTINGS))


def test_an_ndjson_line_without_end_is_refused_before_it_fills_memory(ollama: FakeOllama) -> None:
    ollama.faults.raw_chat = endless_line(b'{"message": {"role": "assistant", "content": "')
    result = run_one("local", OllamaClient(ollama.url, "m:latest", timeout=10), SETTINGS)
    assert not result.passed and result.reason is not None and "sent a line over 16 MiB" in result.reason


def test_an_answer_over_the_cap_is_refused(vllm: FakeVLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        base, "MAX_ANSWER_BYTES", 1 << 20, raising=False
    )  # the real cap (256 MiB) works the same, slower
    vllm.raw_answer = (200, openai_embeddings([[0.5] * 100_000] * 6))  # ~3.6 MB of JSON
    client = OpenAIClient(vllm.base_url, "m", None, timeout=10)
    with pytest.raises(DeploymentError, match="sent an answer over 1 MiB"):
        client.embed(["a", "b", "c", "d", "e", "f"])
    vllm.raw_answer = None
    vllm.raw_stream = [sse(chunk("word ")) for _ in range(20_000)]  # ~1.5 MB of small, valid events
    with pytest.raises(DeploymentError, match="sent an answer over 1 MiB"):
        list(client.stream_chat(SETTINGS))


# -- what is printed or written ------------------------------------------------------------


def test_control_characters_in_a_finish_reason_keep_the_junit_file_well_formed(vllm: FakeVLLM) -> None:
    import io
    import xml.etree.ElementTree as ET

    from provision.report.smoke import junit_xml

    vllm.raw_stream = [sse(chunk("hi", "stop\\u0001\\u001b[2J"))]
    result = run_one("api", OpenAIClient(vllm.base_url, "m", None, timeout=10), SETTINGS)
    assert result.passed and result.finish_reason == "stop\x01\x1b[2J"
    written = io.BytesIO()
    junit_xml([result]).write(written, encoding="utf-8", xml_declaration=True)
    root = ET.fromstring(written.getvalue())  # a CI system's parser must read it
    shown = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert shown["finish_reason"] == "stop[2J"


CANARY = "sk-CANARY-review-7f3e"
ECHOED = json.dumps({"error": {"message": f"bad request; headers: Authorization: Bearer {CANARY}", "code": 400}})


@pytest.mark.parametrize("where", ["status", "mid-stream", "embeddings"])
def test_a_server_error_that_echoes_the_api_key_never_shows_it(tmp_path: Path, where: str) -> None:
    (tmp_path / "config.json").write_text("{}")
    embed = 4 if where == "embeddings" else None
    with FakeVLLM(tmp_path, ["m"], api_key=CANARY, embedding_dimension=embed) as server:
        if where == "mid-stream":
            server.raw_stream = [sse(chunk("hi")), sse(ECHOED)]
        else:
            server.raw_answer = (400, ECHOED.encode())
        client = OpenAIClient(server.base_url, "m", CANARY, timeout=10)
        with pytest.raises(DeploymentError) as caught:
            if embed:
                client.embed(["a"])
            else:
                list(client.stream_chat(SETTINGS))
        result = run_one("api", client, SETTINGS) if not embed else None
    shown = f"{caught.value} {caught.value.hint} {result.reason if result else ''}"
    assert CANARY not in shown and "Bearer ***" in shown, shown


def test_provision_chat_escapes_bidirectional_overrides_in_answers_and_errors() -> None:
    import io

    from provision.report.chat import ChatPrinter

    out, err = io.StringIO(), io.StringIO()
    printer = ChatPrinter(terminal=False, out=out, err=err)
    printer.piece("answer", "safe \u202etxt.exe\u2066 \u2028 line\n")
    printer.error(DeploymentError("the server said \u202ereversed"))
    for text in (out.getvalue(), err.getvalue()):
        assert not any(c in text for c in "\u202e\u2066\u2028"), ascii(text)
    assert out.getvalue() == "safe \\u202etxt.exe\\u2066 \\u2028 line\n"
    assert "\\u202ereversed" in err.getvalue()


def test_an_api_key_ending_in_crlf_is_cleaned_not_shown(tmp_path: Path) -> None:
    # `api_key: ${KEY}` with KEY=$(cat keyfile) from a CRLF file: the HTTP library refused the
    # header and provision printed its message, key included ("Illegal header value b'Bearer sk-...").
    from tests.cli_runner import run_cli
    from tests.manifest_files import write_manifest

    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "config.json").write_text("{}")
    with FakeVLLM(tmp_path / "served", ["m"], api_key=CANARY) as server:
        manifest = write_manifest(
            tmp_path,
            "version: 1\ndeployments:\n"
            f"  hosted: {{engine: openai, base_url: '{server.base_url}', served_model: m,"
            " api_key: '${REVIEW_KEY}'}\n",
        )
        result = run_cli("smoke-test", manifest, env={"REVIEW_KEY": CANARY + "\r\n"})
        assert server.chat_requests, "no chat reached the server"
    shown = result.stdout + result.stderr
    assert result.returncode == 0, shown
    assert CANARY not in shown
