"""``provision init`` writes a starter manifest that ``validate`` and ``plan`` take as is."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.apply_support import TINY_FILES
from tests.cli_runner import run_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.fakes.ollama_server import FakeOllama


def test_init_then_validate_and_plan(tmp_path: Path) -> None:
    with FakeHFHub() as hub, FakeOllama() as ollama:
        hub.add_repo("Qwen/Qwen3-0.6B", TINY_FILES)
        ollama.registry_add("qwen3:0.6b")
        env = {"PROVISION_STATE_DIR": str(tmp_path / "state"), "HF_ENDPOINT": hub.url, "OLLAMA_HOST": ollama.url}
        written = run_cli("init", "hf://Qwen/Qwen3-0.6B", "ollama://qwen3:0.6b", env=env, cwd=tmp_path)
        assert written.returncode == 0, written.stderr
        assert "wrote provision.yaml: 2 models, 2 deployments" in written.stdout
        manifest = tmp_path / "provision.yaml"
        text = manifest.read_text(encoding="utf-8")
        assert text.startswith("# ") and "# engine: vllm" in text  # commented, alternatives shown

        data = yaml.safe_load(text)
        assert data["models"] == {
            "qwen3-0.6b": {"source": "hf://Qwen/Qwen3-0.6B"},
            "qwen3-0.6b-ollama": {"source": "ollama://qwen3:0.6b"},
        }
        assert {name: (d["engine"], d["model"]) for name, d in data["deployments"].items()} == {
            "qwen3-0.6b-chat": ("transformers", "qwen3-0.6b"),
            "qwen3-0.6b-ollama-chat": ("ollama", "qwen3-0.6b-ollama"),
        }
        assert data["smoke_test"]["messages"]

        valid = run_cli("validate", env=env, cwd=tmp_path)  # ./provision.yaml, the default
        assert valid.returncode == 0, valid.stderr
        assert "valid (2 models, 2 deployments)" in valid.stdout

        plan = run_cli("plan", "--json", env=env, cwd=tmp_path)
        assert plan.returncode == 0, plan.stderr
        changes = {a["address"]: a["change"] for a in json.loads(plan.stdout)["actions"]}
        assert changes["model.qwen3-0.6b"] == "create"
        assert changes["model.qwen3-0.6b-ollama"] == "create"
        assert set(changes) >= {"deployment.qwen3-0.6b-chat", "deployment.qwen3-0.6b-ollama-chat"}
        assert not (tmp_path / "models").exists(), "plan changes nothing"


def test_init_names_are_safe_and_distinct_and_dollars_stay_literal(tmp_path: Path) -> None:
    env = {"PROVISION_STATE_DIR": str(tmp_path / "state"), "FOO": "expanded"}
    refs = [
        "hf://org/Model.Name",
        "ms://other/model.name",
        "ollama://library/model.name:latest",
        "file://weights/${FOO}.gguf",
    ]
    result = run_cli("init", "-o", tmp_path / "m.yaml", "--json", *refs, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["models"] == ["model.name", "model.name-ms", "model.name-ollama", "foo-.gguf"]
    assert len(set(report["deployments"])) == 4
    data = yaml.safe_load((tmp_path / "m.yaml").read_text(encoding="utf-8"))
    assert data["models"]["foo-.gguf"]["source"] == "file://weights/$${FOO}.gguf"
    valid = run_cli("validate", tmp_path / "m.yaml", "--json", env=env)
    assert valid.returncode == 0, valid.stderr
