"""What provision did not create survives every command, destroy included: a foreign Docker
container, a foreign Ollama model and a foreign folder in ``models_dir``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli_runner import run_cli
from tests.fakes._server import free_port
from tests.fakes.ollama_server import FakeOllama
from tests.manifest_files import write_manifest

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DEP = f"own-{os.getpid()}"
COMMANDS = [
    ("validate",),
    ("plan",),
    ("apply",),
    ("status",),
    ("verify",),
    ("smoke-test",),
    ("apply",),
    ("destroy", "--yes"),
    ("destroy", "--yes"),
]


def test_foreign_things_survive_every_command(tmp_path: Path) -> None:
    from tests.fakes.docker_env import (
        build_vllm_image,
        ensure_engine,
        foreign_container,
    )

    client = ensure_engine()  # no engine is a failure here, never a skip
    build_vllm_image(client=client)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text('{"max_position_embeddings": 512}')
    foreign_dir = tmp_path / "models" / "users-own"
    foreign_dir.mkdir(parents=True)
    (foreign_dir / "weights.bin").write_bytes(b"user data")
    # a foreign container, even one that looks like provision's by name
    stranger = foreign_container(client, name=f"provision-{DEP}-x")
    manifest = tmp_path / "m.yaml"
    try:
        with FakeOllama() as ollama:
            ollama.registry_add("qwen3:0.6b")
            mine = ollama.preinstall("llama3:8b")
            write_manifest(
                tmp_path,
                "version: 1\n"
                f"settings: {{models_dir: models, ollama: {{host: '{ollama.url}'}}}}\n"
                "models:\n  tiny: {source: 'file://src'}\n  qwen: {source: 'ollama://qwen3:0.6b'}\n"
                "deployments:\n"
                f"  {DEP}: {{engine: vllm, model: tiny, image: provision-test/vllm-fake:1, port: {free_port()},"
                " gpus: 0, startup_timeout: 60}\n"
                "  chat: {engine: ollama, model: qwen}\n"
                "smoke_test: {max_tokens: 4, timeout: 30}\n",
            )
            for command in COMMANDS:
                result = run_cli(*command, manifest, timeout=180)
                assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
                stranger.reload()
                assert stranger.status == "running", f"{command} touched the foreign container"
                assert ollama.local.get("llama3:8b") and ollama.local["llama3:8b"].manifest.digest == mine, command
                assert (foreign_dir / "weights.bin").read_bytes() == b"user data", command
            # destroy did remove what provision made
            assert "qwen3:0.6b" not in ollama.local
            assert not (tmp_path / "models" / "tiny").exists()
            assert not client.containers.list(all=True, filters={"label": f"io.provision.manifest={manifest}"})
    finally:
        stranger.remove(force=True)
        for container in client.containers.list(all=True, filters={"label": f"io.provision.manifest={manifest}"}):
            container.remove(force=True)
