"""``provision check-hardware`` on this GPU-less machine: estimates always, ``--gpu``/``--vram`` verdicts,
exit codes, unknown names and ``--list-gpus``, through the real CLI.

The model is Llama-3.1-8B's real ``config.json`` behind a ``file://`` source (no weights: sizes come
from the config). Docker is pointed at a socket that does not exist, so a plan without a target
meets an unreachable engine, and a target run shows that it never asks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from provision.gpus import GPUS
from tests.cli_runner import run_cli
from tests.manifest_files import write_manifest

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "configs"
GIB = 2**30


def llama_manifest(folder: Path, deployments: str) -> Path:
    """``folder/provision.yaml``: a local Llama-3.1-8B config as ``llama`` and these ``deployments``."""
    (folder / "src").mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIGS / "Llama-3.1-8B.json", folder / "src" / "config.json")
    return write_manifest(
        folder,
        "version: 1\nsettings:\n  models_dir: models\nmodels:\n  llama:\n    source: file://./src\n"
        "deployments:\n" + deployments,
        name="provision.yaml",
    )


ONE = "  llama:\n    engine: vllm\n    model: llama\n"  # bf16 at the model's own 131072 tokens
TWO = (
    "  llama-tp2:\n    engine: vllm\n    model: llama\n    gpus: 2\n    port: 8001\n"
    '    args: [--tensor-parallel-size, "2", --max-model-len, "65536"]\n'
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}


def check(*args: Any, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    result = run_cli("check-hardware", *args, "--json", env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def deployment(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in document["deployments"] if d["name"] == name)


def test_estimates_are_present_without_a_gpu_or_docker(tmp_path: Path, env: dict[str, str]) -> None:
    code, document = check(llama_manifest(tmp_path, ONE + TWO), env=env)
    assert document["target"] is None
    gpu_less = not document["machine"]["gpus"]  # CI's machines; on a GPU machine the GPUs judge it
    assert code == 1 or not gpu_less
    for name in ("llama", "llama-tp2"):
        fit = deployment(document, name)
        est = fit["estimate"]
        assert est["weights"] > 14 * GIB and est["kv_cache"] > 0 and est["overhead"] > 0
        assert est["needed"] == est["weights"] + est["kv_cache"] + est["overhead"]
        assert fit["smallest_gpu"]
        if gpu_less:
            assert fit["level"] == "FAIL" and "none was found" in fit["findings"][0]["message"]
            assert est["available"] is None
    assert deployment(document, "llama")["estimate"]["kv_cache"] == 16 * GIB  # 131072 tokens x 128 KiB
    # this machine's blocker (Docker unreachable) is reported beside the estimates
    assert any("not checked" in f["message"] and "llama" in f["subject"] for f in document["findings"])


def test_gpu_verdicts_and_exit_codes(tmp_path: Path, env: dict[str, str]) -> None:
    one = llama_manifest(tmp_path / "one", ONE)
    code, h100 = check(one, "--gpu", "H100", env=env)
    assert code == 0 and deployment(h100, "llama")["level"] == "OK"
    assert h100["target"]["gpu"] == "H100" and h100["target"]["count"] == 1
    assert h100["machine"]["docker"] is None  # with a target, this machine's Docker is never asked
    assert [g["memory_total"] for g in h100["machine"]["gpus"]] == [81559 * 2**20]

    code, l4 = check(one, "--gpu", "l4", env=env)
    fit = deployment(l4, "llama")
    assert code == 1 and fit["level"] == "FAIL"
    assert 0 < fit["estimate"]["max_context_len"] < 131_072
    assert f"--max-model-len {fit['estimate']['max_context_len']}" in fit["findings"][0]["remedy"]
    assert fit["smallest_gpu"] not in (None, "L4")

    two = llama_manifest(tmp_path / "two", TWO)
    assert check(two, "--gpu", "L4x2", env=env)[0] == 0
    code, single = check(two, "--gpu", "L4", env=env)
    assert code == 1 and "asks for 2 GPUs" in deployment(single, "llama-tp2")["findings"][0]["message"]
    assert check(one, "--vram", "80GiB", env=env)[0] == 0
    assert check(one, "--vram", "16GiB", env=env)[0] == 1


def test_human_output_names_the_verdict(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_cli("check-hardware", llama_manifest(tmp_path, ONE), "--gpu", "L4", env=env)
    assert result.returncode == 1
    assert "target 1 x NVIDIA L4" in result.stdout and "does not fit" in result.stdout
    assert "--max-model-len" in result.stdout and "smallest" in result.stdout


@pytest.mark.parametrize(
    "args", [("--gpu", "Z9000"), ("--gpu", "L4x0"), ("--vram", "lots"), ("--gpu", "L4", "--vram", "24GiB")]
)
def test_bad_targets_are_exit_2_with_a_hint(tmp_path: Path, env: dict[str, str], args: tuple[str, ...]) -> None:
    result = run_cli("check-hardware", llama_manifest(tmp_path, ONE), *args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr and result.stdout == ""
    if args == ("--gpu", "Z9000"):
        assert "Z9000" in result.stderr and all(gpu.name in result.stderr for gpu in GPUS)


def test_list_gpus(env: dict[str, str]) -> None:
    result = run_cli("check-hardware", "--list-gpus", env=env)
    assert result.returncode == 0
    assert all(gpu.name in result.stdout for gpu in GPUS)
    code, document = check("--list-gpus", env=env)
    assert code == 0 and [g["name"] for g in document["gpus"]] == [g.name for g in GPUS]
    l4 = next(g for g in document["gpus"] if g["name"] == "L4")
    assert (l4["memory"], l4["compute_capability"], l4["bf16"], l4["fp8"]) == (23034 * 2**20, "8.9", True, True)
