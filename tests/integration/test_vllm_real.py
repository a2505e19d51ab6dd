"""`engine: vllm` against the real vLLM: provision/vllm-cpu:0.32.0 (scripts/build-vllm-cpu-image.sh)
serving the demo model converted to safetensors, on this machine's CPUs.

One server is started for the module (about 45 s and 4.6 GiB; minutes on a busy machine) and
shared by the tests in file order; the last ones replace it and destroy it. Each test says
which part of the issue it proves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.cli_runner import run_cli
from tests.fakes._server import free_port
from tests.manifest_files import write_manifest
from tests.real_vllm import IMAGE, SERVER_ARGS, SERVER_ENV, client_checks, converted_smollm2, ensure_image, request
from tests.typed import instance, json_object, known

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

# Each step may take minutes on a busy machine (a vfs copy of the 2.6 GB image per container).
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.real_vllm, pytest.mark.timeout(1800)]

KEY = "real_vllm_canary_KEY_51d0"
DEP = f"real-{os.getpid()}"
CNAME = f"provision-{DEP}"
START = 900  # startup_timeout: generous, the machine may be busy


def write(manifest: Path, model: Path, port: int, *, args: list[str] = SERVER_ARGS, name: str = DEP) -> None:
    env = ", ".join(f"{k}: '{v}'" for k, v in SERVER_ENV.items())
    write_manifest(
        manifest.parent,
        "version: 1\n"
        "settings: {models_dir: models}\n"
        "models:\n"
        f"  smollm2: {{source: 'file://{model}'}}\n"
        "deployments:\n"
        f"  {name}:\n"
        "    engine: vllm\n"
        "    model: smollm2\n"
        f"    image: {IMAGE}\n"
        f"    port: {port}\n"
        "    gpus: 0\n"
        f"    startup_timeout: {START}\n"
        "    api_key: '${VLLM_API_KEY}'\n"
        f"    env: {{{env}}}\n"
        f"    args: {json.dumps(args)}\n"
        "    expect: '(?i)paris'\n"
        "smoke_test:\n"
        "  messages:\n"
        "    - {role: system, content: You are a helpful assistant. Answer briefly.}\n"
        "    - {role: user, content: 'What is the capital of France?'}\n"
        "  max_tokens: 32\n"
        "  temperature: 0\n"
        "  timeout: 300\n",
        name=manifest.name,
    )


@pytest.fixture(scope="module")
def docker_client() -> DockerClient:
    import docker

    from tests.fakes.docker_env import ensure_engine

    ensure_engine()
    ensure_image()
    return docker.from_env(timeout=900)  # removing a container of this image under vfs takes minutes


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, docker_client: DockerClient) -> Iterator[tuple[Path, int]]:
    """(manifest, port) of the applied deployment; every container it labelled is removed after."""
    folder = tmp_path_factory.mktemp("real-vllm")
    manifest, port = folder / "m.yaml", free_port()
    write(manifest, converted_smollm2(), port)
    result = run_cli("apply", manifest, env={"VLLM_API_KEY": KEY}, timeout=START + 300)
    assert result.returncode == 0, result.stdout + result.stderr
    yield manifest, port
    for container in docker_client.containers.list(all=True, filters={"label": f"io.provision.manifest={manifest}"}):
        container.remove(force=True)


def container_named(client: DockerClient, name: str) -> Container | None:
    found = client.containers.list(all=True, filters={"name": f"^/{name}$"})
    return found[0] if found else None


def smoke(manifest: Path, key: str) -> dict[str, Any]:
    result = run_cli("smoke-test", manifest, "--json", env={"VLLM_API_KEY": key}, timeout=400)
    [row] = json_object(result.stdout)["results"]
    return instance(row, dict)


def test_apply_then_smoke_test_names_paris(served: tuple[Path, int]) -> None:
    manifest, _ = served
    row = smoke(manifest, KEY)
    assert row["passed"], row
    assert "paris" in row["text"].lower()
    assert row["finish_reason"] == "stop" and row["token_source"] == "server"
    assert row["tpot"] is not None and row["ttft"] is not None


def test_reapply_is_a_noop(served: tuple[Path, int], docker_client: DockerClient) -> None:
    manifest, _ = served
    before = known(container_named(docker_client, CNAME)).id
    again = run_cli("apply", manifest, env={"VLLM_API_KEY": KEY}, timeout=300)
    assert again.returncode == 0 and "no changes" in again.stdout, again.stdout + again.stderr
    assert known(container_named(docker_client, CNAME)).id == before


def test_api_key_gives_401_without_it_and_passes_with_it(served: tuple[Path, int]) -> None:
    manifest, port = served
    base = f"http://127.0.0.1:{port}"
    assert request(base, "GET", "/v1/models").status == 401
    assert request(base, "GET", "/v1/models", key=KEY).status == 200
    wrong = smoke(manifest, "not-the-key")
    assert not wrong["passed"] and "401" in wrong["reason"]


def test_the_openai_engine_against_the_same_server(served: tuple[Path, int], tmp_path: Path) -> None:
    _, port = served
    hosted = write_manifest(
        tmp_path,
        "version: 1\n"
        "deployments:\n"
        "  remote:\n"
        "    engine: openai\n"
        f"    base_url: http://127.0.0.1:{port}/v1\n"
        f"    served_model: {DEP}\n"
        "    api_key: '${VLLM_API_KEY}'\n"
        "    expect: '(?i)paris'\n"
        "smoke_test:\n"
        "  messages: [{role: user, content: 'What is the capital of France?'}]\n"
        "  max_tokens: 32\n  temperature: 0\n  timeout: 300\n",
        name="hosted.yaml",
    )
    row = smoke(hosted, KEY)
    assert row["passed"], row


def test_the_real_server_passes_the_client_checks(served: tuple[Path, int]) -> None:
    # The same checks run against the stand-in in test_fake_vllm.py.
    _, port = served
    assert client_checks(f"http://127.0.0.1:{port}", DEP, KEY) == []


def test_a_bad_argument_reports_vllms_reason_and_destroy_removes_it(
    served: tuple[Path, int], docker_client: DockerClient, tmp_path: Path
) -> None:
    manifest = tmp_path / "bad.yaml"
    name = f"bad-{os.getpid()}"
    write(manifest, converted_smollm2(), free_port(), args=[*SERVER_ARGS, "--no-such-flag"], name=name)
    try:
        result = run_cli("apply", manifest, env={"VLLM_API_KEY": KEY}, timeout=START + 300)
        assert result.returncode == 1
        assert "vLLM exited with code" in result.stderr
        assert "unrecognized arguments: --no-such-flag" in result.stderr, result.stderr
        assert known(container_named(docker_client, f"provision-{name}")).status == "exited"
        # Destroy by label: the failed apply recorded nothing in state.
        gone = run_cli("destroy", "--yes", manifest, timeout=900)  # removing under vfs takes minutes
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert container_named(docker_client, f"provision-{name}") is None
    finally:
        for container in docker_client.containers.list(all=True, filters={"name": f"^/provision-{name}$"}):
            container.remove(force=True)


def test_an_args_change_replaces_then_destroy_removes(served: tuple[Path, int], docker_client: DockerClient) -> None:
    manifest, port = served
    before = known(container_named(docker_client, CNAME)).id
    write(manifest, converted_smollm2(), port, args=["--max-model-len", "1024", "--enforce-eager"])
    plan = run_cli("plan", manifest, env={"VLLM_API_KEY": KEY})
    assert "replace" in plan.stdout and "args" in plan.stdout, plan.stdout
    replaced = run_cli("apply", manifest, env={"VLLM_API_KEY": KEY}, timeout=START + 300)
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    container = known(container_named(docker_client, CNAME))
    assert container.id != before and container.status == "running"
    models = request(f"http://127.0.0.1:{port}", "GET", "/v1/models", key=KEY).body
    assert models["data"][0]["max_model_len"] == 1024

    env = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}  # destroy needs no key
    gone = run_cli("destroy", "--yes", manifest, env=env, timeout=900)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert container_named(docker_client, CNAME) is None
