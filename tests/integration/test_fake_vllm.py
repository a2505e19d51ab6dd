"""The fake vLLM server against the real openai client, in-process and inside a real container."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.fakes.vllm_server import FakeVLLM, main, parse_args

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a helpful assistant"},
    {"role": "user", "content": "the moon rises over the sea"},
]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    return folder


@pytest.fixture
def fake(model_dir: Path) -> Iterator[FakeVLLM]:
    server = FakeVLLM(model_dir, ["tiny"])
    with server:
        yield server


def client(server: FakeVLLM, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0, timeout=10)


def test_stream_with_usage_has_role_content_finish_and_usage_chunks(fake: FakeVLLM) -> None:
    stream = client(fake).chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "the moon rises over the sea"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    # 6 words and the end-of-sequence token, which vLLM counts
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (11, 7)


def test_max_tokens_cuts_the_stream_with_finish_reason_length(fake: FakeVLLM) -> None:
    stream = client(fake).chat.completions.create(model="tiny", messages=MESSAGES, stream=True, max_tokens=2)
    chunks = list(stream)

    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "the moon"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)  # no include_usage, no usage chunk


def test_non_stream_reply(fake: FakeVLLM) -> None:
    reply = client(fake).chat.completions.create(model="tiny", messages=MESSAGES, max_completion_tokens=3)

    assert reply.choices[0].message.content == "the moon rises"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_max_tokens_beyond_the_context_is_a_bad_request(fake: FakeVLLM) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(fake).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=600)

    assert "max_tokens=600 cannot be greater than max_model_len=512" in caught.value.message


def test_models_lists_served_names_with_root_and_max_len(fake: FakeVLLM, model_dir: Path) -> None:
    models = client(fake).models.list().data

    assert [m.id for m in models] == ["tiny"]
    assert models[0].owned_by == "vllm"
    assert models[0].model_extra == {"root": str(model_dir), "parent": None, "max_model_len": 512, "permission": []}


def test_wrong_api_key_raises_authentication_error_and_health_stays_open(model_dir: Path) -> None:
    server = FakeVLLM(model_dir, ["tiny"], api_key="s3cret")
    with server:
        with pytest.raises(openai.AuthenticationError):
            client(server, api_key="wrong").models.list()
        assert [m.id for m in client(server, api_key="s3cret").models.list().data] == ["tiny"]
        with urllib.request.urlopen(f"{server.url}/health") as response:
            assert response.status == 200


def test_unknown_model_raises_not_found(fake: FakeVLLM) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(fake).chat.completions.create(model="nope", messages=MESSAGES)

    assert caught.value.body == {
        "message": "The model `nope` does not exist. Valid aliases: tiny.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }


def test_extra_sampling_fields_are_recorded(fake: FakeVLLM) -> None:
    client(fake).chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        temperature=0.7,
        top_p=0.8,
        extra_body={"top_k": 10, "repetition_penalty": 1.2},
    )

    sent = fake.chat_requests[-1]
    assert (sent["top_k"], sent["repetition_penalty"], sent["temperature"]) == (10, 1.2, 0.7)


def test_mid_stream_error_raises_api_error_after_the_first_chunks(model_dir: Path) -> None:
    received: list[str] = []
    server = FakeVLLM(model_dir, ["tiny"], fail_after=2)
    with server:
        stream = client(server).chat.completions.create(model="tiny", messages=MESSAGES, stream=True)
        # The openai client turns a `data: {"error": ...}` event into a plain APIError
        # (no status code: the HTTP status was 200).
        with pytest.raises(openai.APIError) as caught:
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")  # noqa: PERF401 - keeps what came before the error

    assert type(caught.value) is openai.APIError
    assert caught.value.message == "Engine loop has died"
    assert caught.value.body == {
        "message": "Engine loop has died",
        "type": "InternalServerError",
        "param": None,
        "code": 500,
    }
    assert "".join(received) == "the moon"


def test_cli_rejects_unknown_arguments_like_vllm(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_args(["--model", "/m", "--no-such-flag"])

    assert caught.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_cli_reads_vllm_spellings() -> None:
    args = parse_args(
        [
            "/models/a",
            "--served_model_name",
            "a",
            "b",
            "--max-model-len=4K",
            "-tp",
            "2",
            "--no-trust-remote-code",
            "--dtype",
            "float16",
        ]
    )

    assert (args.model, args.served_model_name, args.max_model_len) == ("/models/a", ["a", "b"], 4096)
    assert (args.tensor_parallel_size, args.trust_remote_code, args.dtype) == (2, False, "float16")


def test_cli_exits_1_without_config_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", str(tmp_path)]) == 1
    assert f"Invalid repository ID or local directory specified: '{tmp_path}'" in capsys.readouterr().err


def test_cli_crash_switch_exits_1(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_VLLM_CRASH", "1")

    assert main(["--model", str(model_dir)]) == 1
    assert "CUDA out of memory" in capsys.readouterr().err


@pytest.mark.docker
def test_container_serves_a_streamed_chat(tmp_path: Path, model_dir: Path) -> None:
    from tests.fakes.docker_env import build_vllm_image, ensure_engine

    docker_client = ensure_engine()
    image = build_vllm_image(client=docker_client)
    container = docker_client.containers.run(  # type: ignore[call-overload]  # (address, None) picks a free host port; the stubs want an int
        image,
        ["--model", "/models/tiny", "--served-model-name", "tiny", "--max-model-len", "1024"],
        detach=True,
        ports={"8000/tcp": ("127.0.0.1", None)},
        volumes={str(model_dir): {"bind": "/models/tiny", "mode": "ro"}},
        environment={"FAKE_VLLM_STARTUP_DELAY": "2"},
    )
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]
        api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=5)
        deadline = time.monotonic() + 60
        while True:
            try:
                models = api.models.list().data
                break
            except openai.APIConnectionError:  # refused or reset while the "model loads"
                assert time.monotonic() < deadline, container.logs().decode()
                time.sleep(0.2)
        assert models[0].model_extra is not None and models[0].model_extra["max_model_len"] == 1024
        stream = api.chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "the moon rises over the sea"
        assert chunks[-1].usage is not None
    finally:
        container.remove(force=True)


def test_the_stand_in_passes_the_client_checks(model_dir: Path) -> None:
    # The same checks run against the real vLLM in test_vllm_real.py.
    from tests.real_vllm import client_checks

    with FakeVLLM(model_dir, ["tiny"], api_key="k") as server:
        assert client_checks(server.url, "tiny", "k") == []


def test_a_pooling_server_asked_to_chat_is_explained(model_dir: Path) -> None:
    from provision.client.openai import OpenAIClient
    from provision.manifest import SmokeTestSettings
    from provision.smoke import run_one

    with FakeVLLM(model_dir, ["embed"], embedding_dimension=32) as server:
        result = run_one("e", OpenAIClient(server.base_url, "embed", None, timeout=10), SmokeTestSettings(timeout=10))
    assert not result.passed
    assert result.reason is not None and "pooling model" in result.reason and "not served" not in result.reason
