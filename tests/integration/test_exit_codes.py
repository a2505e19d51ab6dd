"""The exit-code table (provision/exitcodes.py) holds for every command, through the real CLI.

0 success, 1 a resource or a check failed, 2 bad input or usage. (130/143, interrupted, are
the signal handling's tests.)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from provision import exitcodes
from provision.cli import main
from tests.cli_runner import run_cli
from tests.fakes.vllm_server import FakeVLLM
from tests.manifest_files import write_manifest

BROKEN = Path(__file__).resolve().parents[1] / "manifests" / "broken" / "unknown-engine.yaml"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"PROVISION_STATE_DIR": str(tmp_path / "state")}


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """A small file:// model (applies offline), nothing applied yet."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text('{"hidden_size": 8}', encoding="utf-8")
    (tmp_path / "src" / "weights.bin").write_bytes(bytes(range(256)) * 8)
    return write_manifest(
        tmp_path, "version: 1\nsettings: {models_dir: models}\nmodels:\n  tiny: {source: file://src}\n"
    )


@pytest.fixture
def applied(manifest: Path, env: dict[str, str]) -> Path:
    result = run_cli("apply", manifest, env=env)
    assert result.returncode == exitcodes.OK, result.stderr
    return manifest


def _expect(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, f"exit {result.returncode}, expected {code}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", sorted(main.commands))
def test_an_unknown_option_is_usage_2(command: str, env: dict[str, str]) -> None:
    _expect(run_cli(command, "--no-such-option", env=env), exitcodes.USAGE)


@pytest.mark.parametrize(
    "command", ["validate", "plan", "apply", "status", "verify", "destroy", "check-hardware", "smoke-test"]
)
def test_an_invalid_manifest_is_2(command: str, env: dict[str, str]) -> None:
    _expect(run_cli(command, BROKEN, env=env), exitcodes.USAGE)


# -- init ----------------------------------------------------------------------------------


def test_init(tmp_path: Path, env: dict[str, str]) -> None:
    target = tmp_path / "new.yaml"
    _expect(run_cli("init", "-o", target, "hf://org/tiny", env=env), exitcodes.OK)
    before = target.read_bytes()
    refused = run_cli("init", "-o", target, "ollama://qwen3:0.6b", env=env)
    _expect(refused, exitcodes.USAGE)
    assert str(target) in refused.stderr and "already exists" in refused.stderr
    assert target.read_bytes() == before, "init must never overwrite"
    bad = run_cli("init", "-o", tmp_path / "other.yaml", "s3://bucket/model", env=env)
    _expect(bad, exitcodes.USAGE)
    assert "s3://bucket/model" in bad.stderr and not (tmp_path / "other.yaml").exists()


# -- validate, plan, apply -----------------------------------------------------------------


def test_validate(manifest: Path, env: dict[str, str]) -> None:
    _expect(run_cli("validate", manifest, env=env), exitcodes.OK)
    _expect(run_cli("validate", manifest.with_name("absent.yaml"), env=env), exitcodes.USAGE)


def test_plan(manifest: Path, env: dict[str, str]) -> None:
    _expect(run_cli("plan", manifest, env=env), exitcodes.OK)
    _expect(run_cli("plan", manifest, "--only", "nope", env=env), exitcodes.USAGE)
    contradiction = run_cli("plan", manifest, "--update", "--locked", env=env)
    _expect(contradiction, exitcodes.USAGE)
    assert "contradict" in contradiction.stderr
    (manifest.parent / "src" / "config.json").unlink()
    (manifest.parent / "src" / "weights.bin").unlink()
    (manifest.parent / "src").rmdir()
    _expect(run_cli("plan", manifest, env=env), exitcodes.FAILED)  # the model cannot be resolved


def test_apply(manifest: Path, env: dict[str, str]) -> None:
    _expect(run_cli("apply", manifest, "--update", "--locked", env=env), exitcodes.USAGE)
    assert not (manifest.parent / "models").exists(), "a usage error changes nothing"
    _expect(run_cli("apply", manifest, "--locked", env=env), exitcodes.FAILED)  # not in the lock: refused
    _expect(run_cli("apply", manifest, env=env), exitcodes.OK)
    missing = write_manifest(
        manifest.parent, "version: 1\nmodels:\n  gone: {source: file://nowhere}\n", name="missing.yaml"
    )
    _expect(run_cli("apply", missing, env=env), exitcodes.FAILED)


# -- status, verify, destroy ---------------------------------------------------------------


def test_status(applied: Path, env: dict[str, str], tmp_path: Path) -> None:
    _expect(run_cli("status", applied, env=env), exitcodes.OK)
    (tmp_path / "state" / "state.json").write_text("{not json", encoding="utf-8")
    _expect(run_cli("status", applied, env=env), exitcodes.FAILED)  # a damaged state file


def test_verify_with_nothing_locked_says_so_and_fails(manifest: Path, env: dict[str, str]) -> None:
    result = run_cli("verify", manifest, env=env)
    _expect(result, exitcodes.FAILED)
    assert "nothing is locked yet" in result.stderr and f"provision apply {manifest}" in result.stderr
    report = json.loads(run_cli("verify", manifest, "--json", env=env).stdout)
    assert report["ok"] is False and report["not_locked"] == ["tiny"]


def test_verify(applied: Path, env: dict[str, str]) -> None:
    ok = run_cli("verify", applied, env=env)
    _expect(ok, exitcodes.OK)
    assert "2 files match the lock" in ok.stdout
    (applied.parent / "models" / "tiny" / "weights.bin").write_bytes(b"\0" * 2048)
    _expect(run_cli("verify", applied, env=env), exitcodes.FAILED)


def test_destroy(applied: Path, env: dict[str, str]) -> None:
    refused = run_cli("destroy", applied, env=env, input="")  # stdin is a pipe: nobody to ask
    _expect(refused, exitcodes.USAGE)
    assert "--yes" in refused.stderr and (applied.parent / "models" / "tiny").is_dir()
    _expect(run_cli("destroy", applied, "--yes", env=env), exitcodes.OK)
    assert not (applied.parent / "models" / "tiny").exists()
    _expect(run_cli("destroy", applied, "--yes", "--only", "nope", env=env), exitcodes.OK)  # nothing recorded


# -- check-hardware, smoke-test --------------------------------------------------------------


def test_check_hardware(manifest: Path, env: dict[str, str]) -> None:
    _expect(run_cli("check-hardware", env=env), exitcodes.OK)
    needy = manifest.read_text(encoding="utf-8") + (
        "deployments:\n  chat: {engine: transformers, model: tiny, requires: {min_gpus: 64}}\n"
    )
    write_manifest(manifest.parent, needy)
    _expect(run_cli("check-hardware", manifest, env=env), exitcodes.FAILED)


def test_smoke_test(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with FakeVLLM(tmp_path, ["qwen3"]) as server:
        path = write_manifest(
            tmp_path,
            "version: 1\nmodels:\n  tiny: {source: file://absent}\ndeployments:\n"
            f"  api: {{engine: openai, base_url: '{server.base_url}', served_model: qwen3}}\n"
            "  local: {engine: transformers, model: tiny}\n"
            "smoke_test: {max_tokens: 8, timeout: 30}\n",
            name="s.yaml",
        )
        _expect(run_cli("smoke-test", path, "api", env=env), exitcodes.OK)
        _expect(run_cli("smoke-test", path, "local", env=env), exitcodes.FAILED)  # no model folder
        _expect(run_cli("smoke-test", path, "nope", env=env), exitcodes.USAGE)
