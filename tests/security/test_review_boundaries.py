"""Hostile manifests and lock files found in the review of the typed boundaries."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from provision.errors import ManifestError
from provision.manifest_loader import parse_manifest
from tests.cli_runner import run_cli
from tests.manifest_files import lock_path, write_manifest

HF_MANIFEST = (
    "version: 1\nmodels:\n  qwen: {source: 'hf://org/qwen'}\n"
    "deployments:\n  chat: {engine: vllm, model: qwen, gpus: 1}\n"
)


def hf_lock(files: dict[str, Any]) -> dict[str, Any]:
    """A lock of HF_MANIFEST's model, as apply writes it, with ``files``."""
    spec = {"source": "hf://org/qwen", "revision": "main", "include": None, "exclude": None}
    return {"version": 1, "models": {"qwen": {"spec": spec, "resolved": "a" * 40, "files": files}}}


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        ('version: 1\nmodels:\n  "qwen\\n": {source: "ollama://qwen3"}\n', "models.qwen\n", 3),
        (
            (
                'version: 1\nmodels:\n  qwen: {source: "ollama://qwen3"}\n'
                'deployments:\n  "chat\\n": {engine: ollama, model: qwen}\n'
            ),
            "deployments.chat\n",
            5,
        ),
    ],
    ids=["model", "deployment"],
)
def test_a_name_ending_in_a_newline_is_not_a_safe_name(text: str, field: str, line: int) -> None:
    # Python's `$` matches before a final newline: "qwen\n" passed the name pattern and became a
    # folder, a container and a Kubernetes mount path with a newline in it.
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, file="m.yaml", env={})
    assert caught.value.field == field and caught.value.line == line
    assert "is not a safe name" in caught.value.message


def test_validate_refuses_a_name_ending_in_a_newline(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, 'version: 1\nmodels:\n  "qwen\\n": {source: "ollama://qwen3"}\n')
    result = run_cli("validate", manifest)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{manifest}:3" in result.stderr and "not a safe name" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("depth", [65, 500, 990])
def test_deep_nesting_is_refused_with_the_line_not_an_internal_error(tmp_path: Path, depth: int) -> None:
    # A few hundred levels passed the YAML loader, then the ${VAR} expansion recursed past
    # Python's limit: "internal error: RecursionError", exit 1.
    nested = "[" * depth + "1" + "]" * depth
    manifest = write_manifest(
        tmp_path,
        "version: 1\nmodels:\n  m: {source: 'ollama://qwen3'}\ndeployments:\n"
        f"  d:\n    engine: ollama\n    model: m\n    parameters:\n      x: {nested}\n",
    )
    result = run_cli("validate", manifest)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{manifest}:9" in result.stderr and "nested more than 64 levels" in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_nesting_within_the_limit_still_loads() -> None:
    nested = "[" * 60 + "1" + "]" * 60
    text = (
        "version: 1\nmodels:\n  m: {source: 'ollama://qwen3'}\ndeployments:\n"
        f"  d: {{engine: ollama, model: m, parameters: {{x: {nested}}}}}\n"
    )
    assert parse_manifest(text, file="m.yaml", env={}).deployments["d"].engine == "ollama"


@pytest.mark.parametrize("size", [2**50 + 1, 10**30, 10**400], ids=["1PiB+1", "1e30", "1e400"])
@pytest.mark.parametrize("command", [("status",), ("render", "kubernetes", "--stdout")], ids=["status", "render"])
def test_an_absurd_size_in_the_lock_is_exit_2_naming_the_field(
    tmp_path: Path, size: int, command: tuple[str, ...]
) -> None:
    # Sizes were bounded below only: 10**400 bytes made plan and render fail with
    # "internal error: OverflowError", and 10**30 rendered a PersistentVolumeClaim of 10**18 Gi.
    manifest = write_manifest(tmp_path, HF_MANIFEST)
    lock_path(manifest).write_text(json.dumps(hf_lock({"model.safetensors": {"size": size, "sha256": "b" * 64}})))
    spoiled = lock_path(manifest).read_bytes()
    result = run_cli(*command, manifest)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "m.lock.json" in result.stderr and "files.model.safetensors.size" in result.stderr, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert "PersistentVolumeClaim" not in result.stdout
    assert lock_path(manifest).read_bytes() == spoiled


DEEP_JSON = "[" * 100_000 + "]" * 100_000


def test_a_lock_nested_too_deep_is_exit_2_and_kept(tmp_path: Path) -> None:
    # json.loads raises RecursionError (not a ValueError) past its nesting limit: it escaped
    # as "internal error: RecursionError", exit 1, without naming the lock file.
    manifest = write_manifest(tmp_path, HF_MANIFEST)
    lock_path(manifest).write_text(DEEP_JSON)
    for command in (("status",), ("render", "kubernetes", "--stdout")):
        result = run_cli(*command, manifest)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"cannot read lock file {lock_path(manifest)}" in result.stderr
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert lock_path(manifest).read_text() == DEEP_JSON


def test_a_state_nested_too_deep_is_a_state_error_and_kept(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, HF_MANIFEST)
    state_file = tmp_path / "state" / "state.json"  # PROVISION_STATE_DIR, set by conftest
    state_file.parent.mkdir()
    state_file.write_text(DEEP_JSON)
    result = run_cli("status", manifest)
    assert result.returncode != 0, result.stdout + result.stderr
    assert f"cannot read state file {state_file}" in result.stderr and "move it aside" in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert state_file.read_text() == DEEP_JSON


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "oversized"])
def test_a_lock_that_is_not_a_small_regular_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    # A repository can commit m.lock.json as a link to /dev/zero: the lock was read whole, so
    # `provision status` filled memory; a FIFO in its place hung every command.
    manifest = write_manifest(tmp_path, HF_MANIFEST)
    lock = lock_path(manifest)
    if kind == "fifo":
        os.mkfifo(lock)
    elif kind == "dev-zero":
        lock.symlink_to("/dev/zero")
    else:
        lock.write_text(json.dumps({"version": 1, "models": {}, "pad": "x" * (64 << 20)}))
    result = run_cli("status", manifest, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    why = "larger than 64 MiB" if kind == "oversized" else "not a regular file"
    assert f"cannot read lock file {lock}: {why}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_state_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, HF_MANIFEST)
    state_file = tmp_path / "state" / "state.json"
    state_file.parent.mkdir()
    os.mkfifo(state_file)
    result = run_cli("status", manifest, timeout=60)
    assert f"cannot read state file {state_file}: not a regular file" in result.stderr, result.stderr
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert state_file.is_fifo()


@pytest.mark.parametrize("name", ['X" $(touch pwned) "', "A=B", "1ST", "", "A B", "A\nB"])
def test_an_env_name_that_is_not_a_variable_name_is_refused(tmp_path: Path, name: str) -> None:
    # env names went unchecked into the Secret `render kubernetes` asks for, printed as
    # `kubectl create secret ... --from-literal=NAME="$NAME"`: a quote in the name ran what
    # follows in the shell of whoever pastes it; "A=B" set A in Docker.
    manifest = write_manifest(tmp_path, HF_MANIFEST.replace("gpus: 1}", f"gpus: 1, env: {{{json.dumps(name)}: v}}}}"))
    lock_path(manifest).write_text(json.dumps(hf_lock({"model.safetensors": {"size": 10, "sha256": "b" * 64}})))
    result = run_cli("render", "kubernetes", "--stdout", manifest)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{manifest}:5: deployments.chat.env:" in result.stderr
    assert "not an environment variable name" in result.stderr
    assert "kubectl" not in result.stdout + result.stderr and not (tmp_path / "pwned").exists()


def test_env_variable_names_still_render_as_secret_keys(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, HF_MANIFEST.replace("gpus: 1}", "gpus: 1, env: {HF_HUB_CACHE_x2: v}}"))
    lock_path(manifest).write_text(json.dumps(hf_lock({"model.safetensors": {"size": 10, "sha256": "b" * 64}})))
    result = run_cli("render", "kubernetes", "--stdout", manifest)
    assert result.returncode == 0, result.stderr
    assert '--from-literal=HF_HUB_CACHE_x2="$HF_HUB_CACHE_x2"' in result.stderr


def test_an_infinite_startup_timeout_is_refused_before_render(tmp_path: Path) -> None:
    # `.inf` is a YAML float and passed `gt=0`: render's probe budget, math.ceil(inf), gave
    # "internal error: OverflowError".
    manifest = write_manifest(tmp_path, HF_MANIFEST.replace("gpus: 1}", "gpus: 1, startup_timeout: .inf}"))
    lock_path(manifest).write_text(json.dumps(hf_lock({"model.safetensors": {"size": 10, "sha256": "b" * 64}})))
    result = run_cli("render", "kubernetes", "--stdout", manifest)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{manifest}:5: deployments.chat.startup_timeout: Input should be a finite number" in result.stderr
    assert "internal error" not in result.stderr


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("smoke_test: {timeout: .inf}\n", "smoke_test.timeout"),
        ("smoke_test: {temperature: .inf}\n", "smoke_test.temperature"),
        ("deployments:\n  d: {engine: ollama, model: m, max_ttft: .inf}\n", "deployments.d.max_ttft"),
        ("deployments:\n  d: {engine: ollama, model: m, requires: {min_vram_gb: .inf}}\n", "deployments.d.requires"),
    ],
    ids=["timeout", "temperature", "max_ttft", "min_vram_gb"],
)
def test_infinity_is_no_timeout_rate_or_limit(extra: str, field: str) -> None:
    text = "version: 1\nmodels:\n  m: {source: 'ollama://qwen3'}\n" + extra
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, file="m.yaml", env={})
    assert caught.value.field is not None and caught.value.field.startswith(field)
    assert "finite" in caught.value.message
