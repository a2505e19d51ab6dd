"""Canary secrets never leak: HF_TOKEN (a gated repo), MODELSCOPE_API_TOKEN (a private repo), and
``api_key: ${VAR}`` of an ``openai`` deployment (against the vLLM fake) and of a ``vllm``
container (real Docker, the stand-in image). Every command runs with and without ``--json``;
the canaries must not appear in stdout, stderr, the state, the lock, container labels, or the
container's ``docker inspect`` Config (Cmd, Entrypoint, Labels) and Args."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_runner import run_cli
from tests.fakes._server import free_port
from tests.fakes.hf_hub import FakeHFHub
from tests.fakes.modelscope_hub import FakeModelScopeHub
from tests.fakes.vllm_server import FakeVLLM
from tests.manifest_files import lock_path, write_manifest
from tests.reliability._support import payload, secrets_in

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CANARIES = {
    "HF_TOKEN": "hf_CANARY_rel_4b1d9e",
    "MODELSCOPE_API_TOKEN": "ms_CANARY_rel_8c2f0a",
    "DEEPSEEK_API_KEY": "sk-CANARY-rel-openai-51e7",
    "VLLM_API_KEY": "vllm-CANARY-rel-93ad",
}
DEP = f"sec-{os.getpid()}"
COMMANDS = [("validate",), ("plan",), ("apply",), ("status",), ("verify",), ("smoke-test",), ("destroy", "--yes")]


@pytest.fixture()
def docker_client():  # type: ignore[no-untyped-def]
    from tests.fakes.docker_env import build_vllm_image, ensure_engine

    client = ensure_engine()  # no engine is a failure here, never a skip
    build_vllm_image(client=client)
    return client


@pytest.fixture()
def servers(tmp_path: Path) -> Iterator[tuple[FakeHFHub, FakeModelScopeHub, FakeVLLM]]:
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "config.json").write_text("{}")
    with (
        FakeHFHub() as hf,
        FakeModelScopeHub() as ms,
        FakeVLLM(tmp_path / "served", ["deepseek-chat"], api_key=CANARIES["DEEPSEEK_API_KEY"]) as api,
    ):
        hf.add_repo("org/gated", {"config.json": b"{}", "w.bin": payload(100_000, 41)}, gated=True)
        hf.tokens = {CANARIES["HF_TOKEN"]}
        ms.add_repo(
            "org/private", {"config.json": b"{}", "w.bin": payload(100_000, 42)}, token=CANARIES["MODELSCOPE_API_TOKEN"]
        )
        yield hf, ms, api


def write(tmp_path: Path, hf: FakeHFHub, ms: FakeModelScopeHub, api: FakeVLLM) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    return write_manifest(
        tmp_path,
        "version: 1\n"
        "settings:\n"
        "  models_dir: models\n"
        f"  huggingface: {{endpoint: '{hf.url}', token: '${{HF_TOKEN}}'}}\n"
        f"  modelscope: {{endpoint: '{ms.url}', token: '${{MODELSCOPE_API_TOKEN}}'}}\n"
        "models:\n"
        "  gated: {source: hf://org/gated}\n"
        "  private: {source: ms://org/private}\n"
        "  tiny: {source: 'file://src'}\n"
        "deployments:\n"
        f"  api: {{engine: openai, base_url: '{api.url}/v1', served_model: deepseek-chat,"
        " api_key: '${DEEPSEEK_API_KEY}'}\n"
        f"  {DEP}:\n"
        "    engine: vllm\n    model: tiny\n    image: provision-test/vllm-fake:1\n"
        f"    port: {free_port()}\n    gpus: 0\n    startup_timeout: 60\n"
        "    api_key: '${VLLM_API_KEY}'\n    args: [--max-model-len, '512']\n"
        "smoke_test: {max_tokens: 8, timeout: 30}\n",
    )


def test_canaries_never_leak(tmp_path: Path, servers, docker_client) -> None:  # type: ignore[no-untyped-def]
    hf, ms, api = servers
    manifest = write(tmp_path, hf, ms, api)
    label = f"io.provision.manifest={manifest}"
    seen: list[str] = []
    inspected: list[str] = []
    try:
        for as_json in ((), ("--json",)):
            for command in COMMANDS:
                result = run_cli(*command, manifest, *as_json, env=CANARIES, timeout=180)
                seen.append(f"$ {' '.join(command + as_json)} -> {result.returncode}\n{result.stdout}{result.stderr}")
                if command[0] in ("apply", "smoke-test", "verify", "validate", "destroy"):
                    assert result.returncode == 0, seen[-1]
                if command[0] == "smoke-test":
                    # while the container runs: its labels and inspect output
                    for container in docker_client.containers.list(all=True, filters={"label": label}):
                        config = container.attrs["Config"]
                        inspected.append(
                            json.dumps(
                                {
                                    "Cmd": config.get("Cmd"),
                                    "Entrypoint": config.get("Entrypoint"),
                                    "Labels": config.get("Labels"),
                                    "Args": container.attrs["Args"],
                                    "Name": container.attrs["Name"],
                                }
                            )
                        )
    finally:
        for container in docker_client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)
    assert len(inspected) == 2, "the vllm container was not running at smoke-test time"
    assert api.requests, "the openai deployment was never called: the canary proves nothing"
    assert any(r.headers.get("authorization") == f"Bearer {CANARIES['HF_TOKEN']}" for r in hf.requests)
    text = "\n".join(seen + inspected)
    leaks = [(name, "output or inspect") for name, value in CANARIES.items() if value in text]
    files = [lock_path(manifest), *(tmp_path / "state").rglob("*")]
    files += [p for p in (tmp_path / "models").rglob("*") if ".cache" in p.parts]  # bookkeeping we write
    leaks += secrets_in(files, list(CANARIES.values()))
    assert leaks == [], leaks
