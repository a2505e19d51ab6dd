"""`provision apply` against the fake Ollama running in a real Docker container, as many users
run Ollama: a published 127.0.0.1 port, reached through ``OLLAMA_HOST=host:port``."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import ollama
import pytest

from tests.cli_runner import run_cli
from tests.manifest_files import lock_of, write_manifest


def wait_for(url: str, container: object, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{url}/api/version", timeout=1).status_code == 200:
                return
        except httpx.TransportError:  # refused or reset while the server starts
            pass
        assert time.monotonic() < deadline, container.logs().decode()  # type: ignore[attr-defined]
        time.sleep(0.2)


@pytest.mark.docker
def test_apply_pulls_through_ollama_in_a_container(tmp_path: Path) -> None:
    from tests.fakes.docker_env import FAKES, build_vllm_image, ensure_engine

    docker_client = ensure_engine()
    image = build_vllm_image(client=docker_client)  # Debian + python3; the fake is mounted in
    container = docker_client.containers.run(  # type: ignore[call-overload]  # (address, None) picks a free host port; the stubs want an int
        image,
        ["--host", "0.0.0.0", "--port", "11434", "--registry", "qwen3:0.6b", "--preinstall", "llama3:8b"],
        entrypoint=["python3", "/opt/fakes/ollama_server.py"],
        detach=True,
        ports={"11434/tcp": ("127.0.0.1", None)},
        volumes={str(FAKES): {"bind": "/opt/fakes", "mode": "ro"}},
    )
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["11434/tcp"][0]["HostPort"]
        url = f"http://127.0.0.1:{port}"
        wait_for(url, container)
        manifest = write_manifest(
            tmp_path,
            "version: 1\nmodels:\n  qwen: {source: 'ollama://qwen3:0.6b'}\n"
            "  mine: {source: 'ollama://llama3:8b'}\n"
            "deployments:\n  chat: {engine: ollama, model: qwen}\n",
        )
        env = {"OLLAMA_HOST": f"127.0.0.1:{port}"}

        result = run_cli("apply", manifest, env=env)
        assert result.returncode == 0, result.stderr
        listed = {m.model: m.digest for m in ollama.Client(host=url).list().models}
        lock = lock_of(manifest)["models"]
        assert lock["qwen"]["digest"] == listed["qwen3:0.6b"]
        assert lock["mine"]["digest"] == listed["llama3:8b"]

        again = run_cli("apply", manifest, env=env)
        assert again.returncode == 0 and "no changes" in again.stdout, again.stdout + again.stderr

        assert run_cli("destroy", manifest, "--yes", env=env).returncode == 0
        assert [m.model for m in ollama.Client(host=url).list().models] == ["llama3:8b"]
    finally:
        container.remove(force=True)
