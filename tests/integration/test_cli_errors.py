"""The real CLI on bad input: one line with file:line and a hint, exit 2, no traceback.

Also the happy edges every user meets first: ``--version``, ``validate`` and
``plan --detailed-exitcode`` around an ``apply`` of a small ``file://`` model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provision import exitcodes
from tests.cli_runner import run_cli
from tests.manifest_files import write_manifest

DETAILED_CHANGES = 2  # plan --detailed-exitcode: changes pending (Terraform's convention)
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


def _expected_error(path: Path) -> tuple[str, str]:
    """``(where, message)`` from the file's ``# expect: LINE FIELD MESSAGE`` header: the error
    line starts ``error: PATH:LINE: FIELD: `` (no field: ``-``) and contains MESSAGE."""
    _, _, line, field, message = path.read_text(encoding="utf-8").split("\n", 1)[0].split(" ", 4)
    return f"error: {path}:{line}: " + ("" if field == "-" else f"{field}: "), message


@pytest.fixture
def state_env(tmp_path: Path) -> dict[str, str]:
    return {"PROVISION_STATE_DIR": str(tmp_path / "state")}


@pytest.mark.parametrize("command", ["validate", "plan", "apply"])
@pytest.mark.parametrize("case", CASES)
def test_broken_manifest_is_one_line_and_a_hint(case: str, command: str, state_env: dict[str, str]) -> None:
    path = BROKEN / f"{case}.yaml"
    result = run_cli(command, path, env=state_env)
    assert result.returncode == exitcodes.USAGE, result.stderr
    where, message = _expected_error(path)
    first, hint = result.stderr.splitlines()
    assert first.startswith(where) and message in first, result.stderr
    assert hint.startswith("  hint: ") and len(hint) > len("  hint: ")
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


def test_missing_manifest_is_exit_2(tmp_path: Path, state_env: dict[str, str]) -> None:
    result = run_cli("validate", tmp_path / "absent.yaml", env=state_env)
    assert result.returncode == exitcodes.USAGE
    assert result.stderr.splitlines() == [
        f"error: no such manifest: {tmp_path / 'absent.yaml'}",
        "  hint: pass the manifest's path, e.g. `provision apply manifests/demo.yaml`",
    ]


def test_debug_variable_shows_the_traceback(state_env: dict[str, str]) -> None:
    path = BROKEN / "unknown-engine.yaml"
    result = run_cli("validate", path, env={**state_env, "PROVISION_DEBUG": "1"})
    assert result.returncode == exitcodes.USAGE  # the traceback is extra; the exit code stays
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert f"provision.errors.ManifestError: {path}:7: deployments.d.engine: unknown engine 'tgi'" in result.stderr
    assert f"error: {path}:7: deployments.d.engine: unknown engine 'tgi'" in result.stderr


def test_version(state_env: dict[str, str]) -> None:
    from provision import __version__

    result = run_cli("--version", env=state_env)
    assert result.returncode == exitcodes.OK
    assert result.stdout == f"provision, version {__version__}\n"


@pytest.fixture
def local_model(tmp_path: Path) -> Path:
    """A manifest beside a small local checkpoint, served as ``file://src``."""
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text('{"hidden_size": 8}', encoding="utf-8")
    (source / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 40)
    return write_manifest(tmp_path, "version: 1\nmodels:\n  tiny:\n    source: file://src\n", name="local.yaml")


def test_validate_good_manifest(local_model: Path, state_env: dict[str, str]) -> None:
    result = run_cli("validate", local_model, env=state_env)
    assert result.returncode == exitcodes.OK, result.stderr
    assert result.stdout == f"{local_model}: valid (1 model, 0 deployments)\n"
    assert result.stderr == ""


def test_plan_detailed_exitcode_before_and_after_apply(local_model: Path, state_env: dict[str, str]) -> None:
    before = run_cli("plan", "--detailed-exitcode", local_model, env=state_env)
    assert before.returncode == DETAILED_CHANGES, before.stderr
    assert "model.tiny  create  not downloaded yet: 2 files" in before.stdout
    assert "Plan: 1 to create;" in before.stdout
    assert not (local_model.parent / "models").exists(), "plan must not change anything"

    applied = run_cli("apply", local_model, env=state_env)
    assert applied.returncode == exitcodes.OK, applied.stderr
    placed = local_model.parent / "models" / "tiny"
    assert (placed / "sub" / "weights.bin").read_bytes() == bytes(range(256)) * 40
    assert (local_model.parent / "src" / "config.json").exists(), "a local source is copied, never moved"

    after = run_cli("plan", "--detailed-exitcode", local_model, env=state_env)
    assert after.returncode == exitcodes.OK, after.stdout + after.stderr
    assert "model.tiny  no change  2 files present" in after.stdout and "Plan: 1 unchanged." in after.stdout


def test_plan_detailed_exitcode_on_a_bad_manifest_is_1(state_env: dict[str, str]) -> None:
    # Terraform's convention: 2 means "changes", so every error is 1 with --detailed-exitcode.
    path = BROKEN / "unknown-engine.yaml"
    result = run_cli("plan", "--detailed-exitcode", path, env=state_env)
    assert result.returncode == exitcodes.FAILED
    assert result.stderr.splitlines() == [
        (
            f"error: {path}:7: deployments.d.engine: unknown engine 'tgi': "
            "expected one of vllm, transformers, ollama, openai"
        ),
        "  hint: see the manifest reference in README.md",
    ]
