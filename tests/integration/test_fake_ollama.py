"""The fake Ollama server against the real, unpatched ``ollama`` client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from tests.fakes.ollama_server import FakeOllama
from tests.typed import known

WEIGHTS = b"GGUF" + bytes(range(256)) * 16  # 4100 bytes


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture
def client(fake: FakeOllama) -> ollama.Client:
    return ollama.Client(host=fake.url)


# -- pull ----------------------------------------------------------------------
def test_pull_streams_progress_per_layer_then_lists_the_model(fake: FakeOllama, client: ollama.Client) -> None:
    digest = fake.registry_add("qwen3:0.6b", layers=[WEIGHTS, b"license text"])

    parts = list(client.pull("qwen3:0.6b", stream=True))

    statuses = [p.status for p in parts]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers = fake.registry["qwen3:0.6b"].layers
    assert len(layers) == 3  # two layers and the config blob
    for layer in layers:
        lines = [p for p in parts if p.digest == layer]
        assert len(lines) > 1
        assert {p.status for p in lines} == {f"pulling {layer[7:19]}"}
        assert {p.total for p in lines} == {len(fake.blobs[layer])}
        completed = [known(p.completed) for p in lines]
        assert completed == sorted(completed) and completed[0] == 0 and completed[-1] == lines[0].total
    [listed] = client.list().models
    assert (listed.model, listed.digest, known(listed.details).format) == ("qwen3:0.6b", digest, "gguf")
    assert fake.count("POST", "/api/pull") == 1


def test_pull_without_stream_returns_the_last_status(fake: FakeOllama, client: ollama.Client) -> None:
    fake.registry_add("qwen3:0.6b", layers=[WEIGHTS])
    assert client.pull("qwen3:0.6b").status == "success"


def test_bare_name_is_name_latest_and_a_second_pull_finds_every_layer(fake: FakeOllama, client: ollama.Client) -> None:
    fake.registry_add("tinyllama")
    client.pull("tinyllama")
    assert [m.model for m in client.list().models] == ["tinyllama:latest"]

    again = [p for p in client.pull("tinyllama:latest", stream=True) if p.digest]
    assert again and all(p.completed == p.total for p in again)


def test_pull_unknown_model_fails_after_the_manifest_line(fake: FakeOllama, client: ollama.Client) -> None:
    seen = []
    with pytest.raises(ollama.ResponseError) as err:
        for part in client.pull("nope:1b", stream=True):
            seen.append(part.status)  # noqa: PERF401 - a loop keeps what came before the error
    assert seen == ["pulling manifest"]
    assert (err.value.error, err.value.status_code) == ("pull model manifest: file does not exist", -1)

    with pytest.raises(ollama.ResponseError) as err:
        client.pull("nope:1b")
    assert err.value.status_code == 500


def test_pull_invalid_name_is_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        list(client.pull("bad name!", stream=True))
    assert (err.value.error, err.value.status_code) == ("invalid model name", 400)


def test_dropped_pull_resumes_from_the_partial_layer(fake: FakeOllama, client: ollama.Client) -> None:
    fake.registry_add("qwen3:0.6b", layers=[WEIGHTS])
    weights = fake.registry["qwen3:0.6b"].layers[0]
    fake.faults.drop_pull_after_lines = 3  # manifest line, layer start, one step

    seen = []
    with pytest.raises(httpx.RemoteProtocolError):
        for part in client.pull("qwen3:0.6b", stream=True):
            seen.append(part)  # noqa: PERF402 -- keep what arrived before the stream breaks
    assert 0 < known(seen[-1].completed) < len(WEIGHTS)
    assert fake.partial[weights] == seen[-1].completed and not client.list().models

    resumed = list(client.pull("qwen3:0.6b", stream=True))
    assert next(p.completed for p in resumed if p.digest == weights) == seen[-1].completed
    assert resumed[-1].status == "success" and fake.blobs[weights] == WEIGHTS


def test_registry_move_changes_the_digest_a_pull_installs(fake: FakeOllama, client: ollama.Client) -> None:
    first = fake.registry_add("qwen3:0.6b", layers=[WEIGHTS])
    client.pull("qwen3:0.6b")
    moved = fake.registry_move("qwen3:0.6b", layers=[WEIGHTS + b"v2"])
    assert moved != first
    client.pull("qwen3:0.6b")
    assert [m.digest for m in client.list().models] == [moved]


# -- show, delete, ps, version -----------------------------------------------------
def test_show_and_delete_a_preinstalled_model(fake: FakeOllama, client: ollama.Client) -> None:
    fake.preinstall("llama3:8b")
    shown = client.show("llama3:8b")
    details = known(shown.details)
    assert (details.family, details.parameter_size) == ("llama3", "8B")

    assert client.delete("llama3:8b").status == "success"
    assert client.list().models == [] and fake.blobs == {}
    for call in (client.show, client.delete):
        with pytest.raises(ollama.ResponseError) as err:
            call("llama3:8b")
        assert (err.value.error, err.value.status_code) == ("model 'llama3:8b' not found", 404)


def test_ps_lists_a_model_after_chat_and_version_answers(fake: FakeOllama, client: ollama.Client) -> None:
    fake.preinstall("qwen3:0.6b")
    assert client.ps().models == []
    client.chat("qwen3:0.6b", messages=[{"role": "user", "content": "hi"}])
    assert [m.model for m in client.ps().models] == ["qwen3:0.6b"]
    assert httpx.get(f"{fake.url}/api/version").json() == {"version": fake.version}


# -- blobs and create -------------------------------------------------------------
def test_create_from_an_uploaded_gguf_blob(fake: FakeOllama, client: ollama.Client, tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(WEIGHTS)
    digest = client.create_blob(path)
    assert httpx.head(f"{fake.url}/api/blobs/{digest}").status_code == 200
    assert fake.requests[0].status == 201

    statuses = [
        p.status
        for p in client.create(
            model="mine",
            files={"model.gguf": digest},
            system="Be brief.",
            parameters={"temperature": 0.2, "stop": ["<|im_end|>"]},
            stream=True,
        )
    ]
    assert statuses[0] == "parsing GGUF" and statuses[-1] == "success"
    assert f"using existing layer {digest}" in statuses
    assert [m.model for m in client.list().models] == ["mine:latest"]
    shown = client.show("mine")
    assert shown.parameters == 'temperature 0.2\nstop "<|im_end|>"'
    assert 'SYSTEM """Be brief."""' in known(shown.modelfile)


def test_create_with_a_missing_blob_is_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="mine", files={"model.gguf": "sha256:" + "0" * 64})
    assert err.value.status_code == 400


def test_blob_upload_checks_the_digest(fake: FakeOllama) -> None:
    digest = "sha256:" + "0" * 64
    assert httpx.head(f"{fake.url}/api/blobs/{digest}").status_code == 404
    answer = httpx.post(f"{fake.url}/api/blobs/{digest}", content=WEIGHTS)
    assert answer.status_code == 400 and "digest mismatch" in answer.json()["error"]
    assert fake.blobs == {}


def test_blob_upload_streamed_in_chunks_is_accepted(fake: FakeOllama, tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(WEIGHTS)
    digest = asyncio.run(ollama.AsyncClient(host=fake.url).create_blob(path))  # sends a chunked body
    assert fake.blobs[digest] == WEIGHTS
    assert ollama.Client(host=fake.url).create_blob(path) == digest
    assert [r.status for r in fake.requests] == [201, 200]


# -- chat ------------------------------------------------------------------------
def test_chat_streams_words_then_metrics_and_records_options(fake: FakeOllama, client: ollama.Client) -> None:
    fake.preinstall("qwen3:0.6b")
    options = {"temperature": 0.2, "top_k": 5, "top_p": 0.9, "repeat_penalty": 1.1, "num_predict": 2}

    chunks = list(
        client.chat("qwen3:0.6b", messages=[{"role": "user", "content": "one two three"}], stream=True, options=options)
    )

    assert [c.message.content for c in chunks] == ["one", " two", ""]
    assert [c.done for c in chunks] == [False, False, True]
    last = chunks[-1]
    assert (last.done_reason, last.eval_count, last.prompt_eval_count) == ("length", 2, 3)
    assert known(last.total_duration) >= known(last.eval_duration) > 0 and known(last.load_duration) > 0
    assert known(last.prompt_eval_duration) > 0
    assert fake.last_chat_options == options


def test_chat_without_stream_answers_whole(fake: FakeOllama, client: ollama.Client) -> None:
    fake.preinstall("qwen3")
    answer = client.chat("qwen3:latest", messages=[{"role": "user", "content": "one two three"}])
    assert fake.count("POST", "/api/chat") == 1
    assert (answer.message.content, answer.done_reason) == ("one two three", "stop")


def test_chat_delays_slow_the_stream_down(fake: FakeOllama, client: ollama.Client) -> None:
    fake.preinstall("qwen3:0.6b")
    fake.faults.first_token_delay, fake.faults.token_delay = 0.2, 0.1
    started = time.monotonic()
    chunks = list(client.chat("qwen3:0.6b", messages=[{"role": "user", "content": "a b c"}], stream=True))
    assert time.monotonic() - started >= 0.4  # lower bounds only: 0.2 + 2 × 0.1
    assert known(chunks[-1].prompt_eval_duration) >= 0.2e9 and known(chunks[-1].eval_duration) >= 0.2e9


def test_chat_with_a_missing_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        list(client.chat("qwen3:0.6b", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert err.value.status_code == 404
    assert err.value.error == 'model "qwen3:0.6b" not found, try pulling it first'


def test_chat_error_mid_stream_raises_after_the_first_words(fake: FakeOllama, client: ollama.Client) -> None:
    fake.preinstall("qwen3:0.6b")
    fake.faults.error_mid_stream_after = 1
    seen = []
    with pytest.raises(ollama.ResponseError) as err:
        for chunk in client.chat("qwen3:0.6b", messages=[{"role": "user", "content": "a b c"}], stream=True):
            seen.append(chunk.message.content)  # noqa: PERF401 - a loop keeps what came before the error
    assert seen == ["a"] and err.value.status_code == -1


# -- standalone ------------------------------------------------------------------
def test_runs_standalone_with_the_standard_library_only(tmp_path: Path) -> None:
    script = Path(__file__).parents[1] / "fakes" / "ollama_server.py"
    # -I -S: no site-packages, no project on sys.path, so a third-party import would fail.
    command = [sys.executable, "-I", "-S", str(script), "--port", "0", "--registry", "tiny:1b"]
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            url = known(proc.stdout).readline().strip()
            assert url.startswith("http://127.0.0.1:"), known(proc.stderr).read()
            client = ollama.Client(host=url)
            assert client.pull("tiny:1b").status == "success"
            assert [m.model for m in client.list().models] == ["tiny:1b"]
        finally:
            proc.terminate()
        assert proc.wait(timeout=10) == 0
