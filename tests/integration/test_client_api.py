"""``provision.connect`` and ``Client`` per engine: streamed pieces, a whole string, embed's
refusal on a chat deployment, closing, and the README's example run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import provision
from provision.errors import DeploymentError, UsageError
from tests.cli_runner import REPO_ROOT, run_cli
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.vllm_server import FakeVLLM
from tests.manifest_files import write_manifest
from tests.tiny_model import tiny_model_dir  # noqa: F401 - a fixture

QUESTION = [{"role": "user", "content": "one two three"}]


def served_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "served"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_hosted_api_streams_pieces_and_returns_a_whole_string(tmp_path: Path) -> None:
    with FakeVLLM(served_folder(tmp_path), ["served-chat"]) as server:
        manifest = write_manifest(
            tmp_path,
            f"version: 1\ndeployments:\n  api: {{engine: openai, base_url: '{server.base_url}', "
            "served_model: served-chat}\nsmoke_test: {max_tokens: 16, top_k: 4}\n",
        )
        with provision.connect(manifest, "api") as client:
            assert list(client.chat(QUESTION)) == ["one", " two", " three"]
            assert client.chat(QUESTION, stream=False, temperature=0.2) == "one two three"
            with pytest.raises(DeploymentError, match="api is a chat deployment \\(task: chat\\); it cannot embed"):
                client.embed(["a text"])
            with pytest.raises(UsageError, match="invalid top_p"):
                client.chat(QUESTION, top_p=2)
            with pytest.raises(UsageError, match="unknown sampling option 'seed'"):
                client.chat(QUESTION, seed=1)
            engine_client = client._engine._client  # type: ignore[attr-defined]
            assert not engine_client.is_closed()
        assert engine_client.is_closed()
        bodies = server.chat_requests
        assert (bodies[0]["max_tokens"], bodies[0]["top_k"], bodies[0]["temperature"]) == (16, 4, 0.7)
        assert bodies[1]["temperature"] == 0.2  # an override, for that call only


def test_ollama_streams_pieces_and_returns_a_whole_string(tmp_path: Path) -> None:
    with FakeOllama() as ollama:
        ollama.registry_add("qwen3:0.6b")
        manifest = write_manifest(
            tmp_path,
            f"version: 1\nsettings: {{ollama: {{host: '{ollama.url}'}}}}\n"
            "models: {qwen: {source: 'ollama://qwen3:0.6b'}}\n"
            "deployments: {pulled: {engine: ollama, model: qwen}}\n",
        )
        assert run_cli("apply", manifest).returncode == 0
        client = provision.connect(manifest)  # the only deployment
        with client:
            assert list(client.chat(QUESTION, max_tokens=2)) == ["one", " two"]
            assert client.chat(QUESTION, stream=False) == "one two three"
            assert ollama.last_chat_options == {"num_predict": 64, "temperature": 0.7}
        assert client._engine._client._client.is_closed  # type: ignore[attr-defined]  # the httpx client


def test_transformers_streams_the_same_text_it_returns_whole(tmp_path: Path, tiny_model_dir: Path) -> None:  # noqa: F811
    manifest = write_manifest(
        tmp_path,
        f"version: 1\nsettings: {{models_dir: models}}\nmodels: {{tiny: {{source: 'file://{tiny_model_dir}'}}}}\n"
        "deployments: {local: {engine: transformers, model: tiny, device: cpu}}\n",
    )
    assert run_cli("apply", manifest).returncode == 0
    with provision.connect(manifest, "local") as client:
        pieces = list(client.chat(QUESTION, temperature=0, max_tokens=8))
        whole = client.chat(QUESTION, stream=False, temperature=0, max_tokens=8)
        assert pieces and all(isinstance(p, str) and p for p in pieces)
        assert "".join(pieces) == whole  # greedy: the same answer, streamed or not
        unfinished = client.chat(QUESTION, max_tokens=4000)
        next(unfinished)  # generate runs on in its thread
        assert any(t.name == "transformers-generate" for t in threading.enumerate())
    # Closing stopped the generate still running, and waited for it.
    assert not any(t.name == "transformers-generate" for t in threading.enumerate())


def test_connect_errors_are_provisions(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path,
        "version: 1\nmodels: {qwen: {source: 'ollama://qwen3:0.6b'}}\n"
        "deployments:\n  a: {engine: ollama, model: qwen}\n  b: {engine: ollama, model: qwen}\n",
    )
    with pytest.raises(UsageError, match="has 2 deployments: say which") as caught:
        provision.connect(manifest)
    assert caught.value.hint == "deployments: a, b" and caught.value.exit_code == 2
    with pytest.raises(UsageError, match="no deployment 'c'"):
        provision.connect(manifest, "c")
    with pytest.raises(DeploymentError, match="deployment a is not applied on this machine") as not_applied:
        provision.connect(manifest, "a")
    assert not_applied.value.hint == f"run `provision apply {manifest} --only a`"


def readme_example() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Chat and the Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "README's Chat and the Python API section has no python example"
    return match.group(1)


def test_the_readme_example_runs(tmp_path: Path, tiny_model_dir: Path) -> None:  # noqa: F811
    """The example as written, with its manifest path pointed at one whose deployments have
    the same names: the hosted API is the vLLM stand-in, the local model the tiny one."""
    example = readme_example()
    with FakeVLLM(served_folder(tmp_path), ["deepseek-chat"], api_key="sk-readme") as server:
        manifest = write_manifest(
            tmp_path,
            f"version: 1\nsettings: {{models_dir: models}}\nmodels: {{tiny: {{source: 'file://{tiny_model_dir}'}}}}\n"
            "deployments:\n"
            f"  deepseek-api: {{engine: openai, base_url: '{server.base_url}', served_model: deepseek-chat,"
            " api_key: '${DEEPSEEK_API_KEY}'}\n"
            "  deepseek-local: {engine: transformers, model: tiny, device: cpu}\n",
            name="dev.yaml",
        )
        env = {"DEEPSEEK_API_KEY": "sk-readme"}
        assert run_cli("apply", manifest, env=env).returncode == 0
        script = example.replace('"manifests/dev.yaml"', repr(str(manifest)))
        assert script != example, "the example no longer names manifests/dev.yaml"
        result = subprocess.run(
            [sys.executable, "-c", script],
            check=False,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)},
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert "明月几时有" in result.stdout  # the stand-in echoes the question, character by character
        assert len(server.chat_requests) >= 1
