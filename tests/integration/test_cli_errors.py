"""The real CLI on bad input: one line with file:line and a hint, exit 2, no traceback.

Also the happy edges every user meets first: ``--version``, ``validate`` and
``plan --detailed-exitcode`` around an ``apply`` of a small ``file://`` model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_runner import run_cli

BROKEN = Path(__file__).resolve().parents[1] / "manifests" / "broken"
CASES = [
    "yaml-unclosed-quote",
    "duplicate-model",
    "unknown-engine",
    "deployment-missing-model",
    "unset-variable",
    "model-name-dotdot",
    "empty",
]


def _expected_line(path: Path) -> int:
    return int(path.read_text(encoding="utf-8").split()[2])  # "# expect: LINE ..."


@pytest.fixture
def state_env(tmp_path: Path) -> dict[str, str]:
    return {"PROVISION_STATE_DIR": str(tmp_path / "state")}


@pytest.mark.parametrize("command", ["validate", "plan", "apply"])
@pytest.mark.parametrize("case", CASES)
def test_broken_manifest_is_one_line_and_a_hint(case: str, command: str, state_env: dict[str, str]) -> None:
    path = BROKEN / f"{case}.yaml"
    result = run_cli(command, path, env=state_env)
    assert result.returncode == 2, result.stderr
    assert f"{path}:{_expected_line(path)}:" in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


def test_missing_manifest_is_exit_2(tmp_path: Path, state_env: dict[str, str]) -> None:
    result = run_cli("validate", tmp_path / "absent.yaml", env=state_env)
    assert result.returncode == 2
    assert "no such manifest" in result.stderr and "hint:" in result.stderr


def test_debug_variable_shows_the_traceback(state_env: dict[str, str]) -> None:
    result = run_cli("validate", BROKEN / "unknown-engine.yaml", env={**state_env, "PROVISION_DEBUG": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "ManifestError" in result.stderr


def test_version(state_env: dict[str, str]) -> None:
    from provision import __version__

    result = run_cli("--version", env=state_env)
    assert result.returncode == 0
    assert __version__ in result.stdout


@pytest.fixture
def local_model(tmp_path: Path) -> Path:
    """A manifest beside a small local checkpoint, served as ``file://src``."""
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text('{"hidden_size": 8}', encoding="utf-8")
    (source / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 40)
    manifest = tmp_path / "local.yaml"
    manifest.write_text("version: 1\nmodels:\n  tiny:\n    source: file://src\n", encoding="utf-8")
    return manifest


def test_validate_good_manifest(local_model: Path, state_env: dict[str, str]) -> None:
    result = run_cli("validate", local_model, env=state_env)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert result.stderr == ""


def test_plan_detailed_exitcode_before_and_after_apply(local_model: Path, state_env: dict[str, str]) -> None:
    before = run_cli("plan", "--detailed-exitcode", local_model, env=state_env)
    assert before.returncode == 2, before.stderr
    assert "create" in before.stdout
    assert not (local_model.parent / "models").exists(), "plan must not change anything"

    applied = run_cli("apply", local_model, env=state_env)
    assert applied.returncode == 0, applied.stderr
    placed = local_model.parent / "models" / "tiny"
    assert (placed / "sub" / "weights.bin").read_bytes() == bytes(range(256)) * 40
    assert (local_model.parent / "src" / "config.json").exists(), "a local source is copied, never moved"

    after = run_cli("plan", "--detailed-exitcode", local_model, env=state_env)
    assert after.returncode == 0, after.stdout + after.stderr


def test_plan_detailed_exitcode_on_a_bad_manifest_is_1(state_env: dict[str, str]) -> None:
    # Terraform's convention: 2 means "changes", so every error is 1 with --detailed-exitcode.
    result = run_cli("plan", "--detailed-exitcode", BROKEN / "unknown-engine.yaml", env=state_env)
    assert result.returncode == 1
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
