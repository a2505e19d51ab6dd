"""Pure decisions of the vllm engine: KV cache default on CPUs, adopting a container after a
slow create, the log excerpt of a failed start, and reading a FastAPI 404."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision.deployments.base import DeployContext
from provision.deployments.container_logs import failure_excerpt
from provision.deployments.vllm_spec import (
    DEFAULT_CPU_KVCACHE_GIB,
    LABEL_SPEC_HASH,
    ContainerView,
    adoption,
    desired_spec,
)
from provision.estimate import CPU_KV_ENV as CPU_KVCACHE_ENV
from provision.manifest_loader import parse_manifest


def _manifest(tmp_path: Path, extra: str = "", gpus: str = "0"):  # type: ignore[no-untyped-def]
    text = (
        "version: 1\nmodels:\n  m: {source: 'file:///x'}\ndeployments:\n  d:\n    engine: vllm\n    model: m\n"
        f"    image: provision/vllm-cpu:0.32.0\n    gpus: {gpus}\n{extra}"
    )
    manifest = parse_manifest(text, file=str(tmp_path / "m.yaml"))
    manifest._path = tmp_path / "m.yaml"
    return manifest


def _desired(tmp_path: Path, extra: str = "", gpus: str = "0"):  # type: ignore[no-untyped-def]
    manifest = _manifest(tmp_path, extra, gpus)
    ctx = DeployContext(manifest=manifest, model_dirs={"m": tmp_path / "models" / "m"})
    return desired_spec("d", manifest.deployments["d"], ctx)


# -- defect 4: vLLM on CPUs takes ~90% of RAM for KV cache unless told -----------------------
def test_a_cpu_deployment_gets_the_default_kv_cache_space(tmp_path: Path) -> None:
    assert _desired(tmp_path).environment[CPU_KVCACHE_ENV] == str(DEFAULT_CPU_KVCACHE_GIB)


def test_the_manifest_kv_cache_space_wins(tmp_path: Path) -> None:
    desired = _desired(tmp_path, "    env: {VLLM_CPU_KVCACHE_SPACE: '1'}\n")
    assert desired.environment[CPU_KVCACHE_ENV] == "1"


@pytest.mark.parametrize(
    "extra, gpus",
    [
        ("    args: ['--kv-cache-memory-bytes', '2G']\n", "0"),
        ("    args: ['--kv_cache_memory_bytes=2G']\n", "0"),
        ("", "all"),
    ],
)
def test_no_default_with_vllms_own_setting_or_on_gpus(tmp_path: Path, extra: str, gpus: str) -> None:
    assert CPU_KVCACHE_ENV not in _desired(tmp_path, extra, gpus).environment


# -- defect 1: adopting what a timed-out create left --------------------------------------------
def _view(desired, status: str, **labels: str) -> ContainerView:  # type: ignore[no-untyped-def]
    return ContainerView("id1", desired.name, status, {**desired.labels, **labels}, ())


def test_adoption_reuses_our_never_started_container_of_the_same_spec(tmp_path: Path) -> None:
    desired = _desired(tmp_path)
    assert adoption(_view(desired, "created"), desired) == "reuse"


def test_adoption_replaces_ours_of_another_spec_or_state(tmp_path: Path) -> None:
    desired = _desired(tmp_path)
    assert adoption(_view(desired, "created", **{LABEL_SPEC_HASH: "other"}), desired) == "replace"
    assert adoption(_view(desired, "exited"), desired) == "replace"


def test_adoption_never_touches_a_foreign_container_and_creates_when_none(tmp_path: Path) -> None:
    desired = _desired(tmp_path)
    assert adoption(ContainerView("id2", desired.name, "created", {}, ()), desired) == "foreign"
    assert adoption(None, desired) == "create"


# -- defect 3: the root cause, not the last 20 lines ----------------------------------------------
# The shape of vLLM 0.32's log when the engine core fails (worker lines carry a prefix).
ENGINE_FAILURE = "\n".join(
    [
        "INFO 12-01 21:00:00 [api_server.py:1] vLLM API server version 0.32.0",
        *[f"INFO 12-01 21:00:01 [config.py:{i}] setting {i}" for i in range(30)],
        "(EngineCore_DP0 pid=80) ERROR 12-01 21:00:05 [core.py:700] EngineCore failed to start.",
        "(EngineCore_DP0 pid=80) ERROR 12-01 21:00:05 [core.py:700] Traceback (most recent call last):",
        *[
            f'(EngineCore_DP0 pid=80) ERROR 12-01 21:00:05 [core.py:700]   File "/x/f{i}.py", line {i}, in g'
            for i in range(25)
        ],
        (
            "(EngineCore_DP0 pid=80) ERROR 12-01 21:00:05 [core.py:700] ValueError: No available memory for the cache "
            "blocks. Try increasing `VLLM_CPU_KVCACHE_SPACE`."
        ),
        *[f"(APIServer pid=1) frame {i}" for i in range(30)],
        (
            "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above. "
            "Failed core proc(s): {}"
        ),
    ]
)


def test_the_excerpt_shows_the_first_error_and_the_exception_that_ends_its_traceback() -> None:
    shown = failure_excerpt(ENGINE_FAILURE)
    text = "\n".join(shown)
    assert "EngineCore failed to start." in text
    assert "ValueError: No available memory for the cache blocks" in text  # the root cause
    assert shown[-1].endswith("Failed core proc(s): {}")  # and how it ended
    assert "... (" in text and len(shown) < 30  # cut, not the whole log
    # The last 20 lines, shown before, held neither the first error nor the root cause.
    tail = ENGINE_FAILURE.splitlines()[-20:]
    assert not any("ValueError" in line or "failed to start" in line for line in tail)


def test_the_excerpt_of_an_argparse_error_names_the_argument() -> None:
    usage = [f"usage: vllm serve [model_tag] [--option{i} X]" for i in range(40)]
    log = "\n".join([*usage, "vllm serve: error: unrecognized arguments: --no-such-flag"])
    assert "vllm serve: error: unrecognized arguments: --no-such-flag" in failure_excerpt(log)


def test_without_a_recognisable_error_the_excerpt_is_the_tail() -> None:
    log = "\n".join(f"line {i}" for i in range(50))
    assert failure_excerpt(log) == [f"line {i}" for i in range(30, 50)]
