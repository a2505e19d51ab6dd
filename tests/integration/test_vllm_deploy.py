"""`engine: vllm` through the real CLI on a real Docker engine, with the stand-in vLLM image.

Each test gets its own manifest (so its own labels), a free port, and a finalizer that
removes every container carrying that manifest's label and every foreign container it made.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.cli_runner import run_cli
from tests.fakes._server import free_port
from tests.manifest_files import write_manifest
from tests.typed import instance, known

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

pytestmark = pytest.mark.docker

KEY = "vllm_canary_KEY_7c3e91"  # a canary: must never appear in labels, command, output or state
# Container names are global to the engine: a per-process name keeps parallel runs apart.
DEP = f"chat-{os.getpid()}"
CNAME = f"provision-{DEP}"


@pytest.fixture(scope="module")
def docker_client() -> DockerClient:
    from docker.errors import DockerException

    from tests.fakes.docker_env import build_vllm_image, ensure_engine

    try:
        client = ensure_engine()
        build_vllm_image(client=client)
    except (DockerException, OSError) as exc:
        pytest.fail(f"no Docker engine (scripts/start-docker.sh starts one): {exc}")
    return client


@pytest.fixture()
def manifest(tmp_path: Path, docker_client: DockerClient) -> Iterator[Path]:
    """The manifest's path; every container labelled with it is removed afterwards."""
    path = tmp_path / "m.yaml"
    source = tmp_path / "src"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    yield path
    for container in docker_client.containers.list(all=True, filters={"label": f"io.provision.manifest={path}"}):
        container.remove(force=True)


@pytest.fixture()
def foreign(docker_client: DockerClient) -> Iterator[Callable[[str], Container]]:
    """Make containers provision did not create; removed afterwards."""
    from tests.fakes.docker_env import foreign_container

    made: list[Container] = []

    def make(name: str) -> Container:
        container = foreign_container(docker_client, name=name)
        made.append(container)
        return container

    yield make
    for container in made:
        container.remove(force=True)


def write(manifest: Path, port: int, *, name: str = DEP, extra: str = "") -> Path:
    write_manifest(
        manifest.parent,
        "version: 1\n"
        "settings: {models_dir: models}\n"
        "models:\n"
        "  tiny: {source: 'file://src'}\n"
        "deployments:\n"
        f"  {name}:\n"
        "    engine: vllm\n"
        "    model: tiny\n"
        "    image: provision-test/vllm-fake:1\n"
        f"    port: {port}\n"
        "    gpus: 0\n"
        "    startup_timeout: 60\n"
        f"{extra}",
        name=manifest.name,
    )
    return manifest


def container_named(client: DockerClient, name: str) -> Container | None:
    found = client.containers.list(all=True, filters={"name": "^/" + name.replace(".", "\\.") + "$"})
    return next((c for c in found if c.name == name), None)  # the filter is a regex: check the name itself


def apply(manifest: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("apply", manifest, env=env, timeout=180)


def test_apply_creates_a_ready_container_that_streams_a_chat(
    manifest: Path, docker_client: DockerClient, tmp_path: Path
) -> None:
    port = free_port()
    write(manifest, port, extra="    api_key: '${VLLM_API_KEY}'\n    args: [--max-model-len, '512']\n")
    result = apply(manifest, VLLM_API_KEY=KEY)
    assert result.returncode == 0, result.stderr
    assert f"deployment.{DEP}: create" in result.stdout

    container = known(container_named(docker_client, CNAME))
    attrs = container.attrs
    assert container.status == "running"
    assert attrs["Config"]["Cmd"] == [
        "--model",
        "/models/tiny",
        "--served-model-name",
        DEP,
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--max-model-len",
        "512",
    ]
    labels = attrs["Config"]["Labels"]
    assert labels["io.provision.managed"] == "true"
    assert labels["io.provision.manifest"] == str(manifest)
    assert labels["io.provision.deployment"] == DEP
    assert len(labels["io.provision.spec-hash"]) == 64
    assert "HF_HUB_OFFLINE=1" in attrs["Config"]["Env"]
    [mount] = attrs["Mounts"]
    assert (mount["Source"], mount["Destination"], mount["RW"]) == (
        str(tmp_path / "models" / "tiny"),
        "/models/tiny",
        False,
    )
    assert attrs["HostConfig"]["PortBindings"]["8000/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"  # set once ready
    assert attrs["HostConfig"]["IpcMode"] == "host"
    assert not attrs["HostConfig"]["DeviceRequests"]

    # The key reaches vLLM through its environment only.
    shown = json.dumps([attrs["Args"], attrs["Path"], attrs["Config"]["Cmd"], labels])
    state = (tmp_path / "state" / "state.json").read_text()
    for text in (shown, result.stdout, result.stderr, state):
        assert KEY not in text
    record = json.loads(state)
    assert KEY not in json.dumps(record)
    assert f"VLLM_API_KEY={KEY}" in attrs["Config"]["Env"]

    from provision.client import open_engine
    from provision.client.openai import OpenAIClient
    from provision.deployments.base import DeployContext
    from provision.manifest_loader import load_manifest

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_API_KEY", KEY)  # secrets resolve on use: set while the client is made
        loaded = load_manifest(manifest)
        chat = open_engine(DEP, loaded.deployments[DEP], DeployContext(loaded, {}))
    try:
        events = list(chat.stream_chat(loaded.smoke_settings(DEP)))
    finally:
        chat.close()
    assert instance(chat, OpenAIClient).base_url == f"http://127.0.0.1:{port}/v1"
    assert "".join(e.text for e in events)
    assert any(e.output_tokens for e in events)


def test_reapply_noop_then_kill_restarts_then_args_change_replaces(manifest: Path, docker_client: DockerClient) -> None:
    port = free_port()
    write(manifest, port)
    assert apply(manifest).returncode == 0
    first = known(container_named(docker_client, CNAME)).id

    again = apply(manifest)
    assert again.returncode == 0 and "no changes" in again.stdout
    assert known(container_named(docker_client, CNAME)).id == first

    docker_client.containers.get(known(first)).kill()
    plan = run_cli("plan", manifest)
    assert "start the exited container" in plan.stdout
    restarted = apply(manifest)
    assert restarted.returncode == 0, restarted.stderr
    container = known(container_named(docker_client, CNAME))
    assert (container.id, container.status) == (first, "running")

    write(manifest, port, extra="    args: [--max-model-len, '256']\n")
    plan = run_cli("plan", manifest)
    assert "replace" in plan.stdout and "args" in plan.stdout
    replaced = apply(manifest)
    assert replaced.returncode == 0, replaced.stderr
    container = known(container_named(docker_client, CNAME))
    assert container.id != first and container.status == "running"
    assert container.attrs["Config"]["Cmd"][-2:] == ["--max-model-len", "256"]
    assert len(docker_client.containers.list(all=True, filters={"label": f"io.provision.manifest={manifest}"})) == 1


def test_destroy_removes_ours_and_leaves_a_similar_name_alone(
    manifest: Path, docker_client: DockerClient, foreign: Callable[[str], Container]
) -> None:
    write(manifest, free_port())
    assert apply(manifest).returncode == 0
    other = foreign(f"{CNAME}-x")

    result = run_cli("destroy", "--yes", manifest)
    assert result.returncode == 0, result.stderr
    assert container_named(docker_client, CNAME) is None
    other.reload()
    assert other.status == "running"


def test_a_foreign_container_with_our_name_makes_apply_refuse(
    manifest: Path, docker_client: DockerClient, foreign: Callable[[str], Container]
) -> None:
    other = foreign(CNAME)
    write(manifest, free_port())
    result = apply(manifest)
    assert result.returncode == 1
    assert f"container {CNAME} already exists and was not created by provision" in result.stderr
    other.reload()
    assert other.status == "running" and other.id == known(container_named(docker_client, CNAME)).id


def test_a_dot_in_the_name_matches_itself_not_any_character(
    manifest: Path, docker_client: DockerClient, foreign: Callable[[str], Container]
) -> None:
    # Docker's name filter is a regex: "provision-chat.N" also matched a foreign "provision-chatXN",
    # and apply refused as if that container had our name.
    dotted = DEP.replace("-", ".")
    other = foreign(f"provision-{DEP.replace('-', 'X')}")
    write(manifest, free_port(), name=dotted)
    result = apply(manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    assert container_named(docker_client, f"provision-{dotted}") is not None
    other.reload()
    assert other.status == "running"


def test_gpus_without_nvidia_runtime_fails_in_preflight_and_leaves_nothing(
    manifest: Path, docker_client: DockerClient
) -> None:
    # The premise: the engine the test setup starts (scripts/start-docker.sh) has no GPU runtime.
    assert "nvidia" not in docker_client.info().get("Runtimes", {}), "needs an engine without the NVIDIA runtime"
    write(manifest, free_port(), extra="    gpus: all\n")
    manifest.write_text(manifest.read_text().replace("    gpus: 0\n", ""))
    result = apply(manifest)
    assert result.returncode == 1
    assert "no NVIDIA runtime" in result.stderr
    assert "nvidia-container-toolkit" in result.stderr and "gpus: 0" in result.stderr
    assert container_named(docker_client, CNAME) is None


def test_a_crash_while_loading_reports_exit_code_and_log(manifest: Path, docker_client: DockerClient) -> None:
    write(manifest, free_port(), extra="    env: {FAKE_VLLM_CRASH: '1'}\n")
    result = apply(manifest)
    assert result.returncode == 1
    assert "vLLM exited with code 1" in result.stderr
    assert "CUDA out of memory" in result.stderr
    # Stopped, not crash-looping: the restart policy is only set once vLLM is ready.
    assert known(container_named(docker_client, CNAME)).status == "exited"


def test_a_busy_port_is_reported_before_creating(manifest: Path, docker_client: DockerClient) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        write(manifest, port)
        result = apply(manifest)
    assert result.returncode == 1
    assert f"port 127.0.0.1:{port} cannot be used: Address already in use" in result.stderr
    assert container_named(docker_client, CNAME) is None


def test_startup_timeout_is_respected_and_shows_the_log(manifest: Path, docker_client: DockerClient) -> None:
    write(manifest, free_port(), extra="    env: {FAKE_VLLM_STARTUP_DELAY: '60'}\n")
    manifest.write_text(manifest.read_text().replace("startup_timeout: 60", "startup_timeout: 3"))
    started = time.monotonic()
    result = apply(manifest)
    assert result.returncode == 1
    assert "not ready after 3 s (startup_timeout)" in result.stderr
    assert "non-default args" in result.stderr  # the stand-in's first log lines
    assert time.monotonic() - started < 40  # generous: not the 60 s delay
    plan = run_cli("plan", manifest)
    assert "start the exited container" in plan.stdout  # killed, so the next apply tries again


def test_a_missing_image_that_cannot_be_pulled_fails_in_preflight(manifest: Path, docker_client: DockerClient) -> None:
    write(manifest, free_port())
    manifest.write_text(manifest.read_text().replace("vllm-fake:1", "does-not-exist:1"))
    result = apply(manifest)
    assert result.returncode == 1
    assert "image provision-test/does-not-exist:1 is not on this machine and cannot be pulled" in result.stderr
    assert container_named(docker_client, CNAME) is None


def test_api_key_in_args_is_refused(manifest: Path, docker_client: DockerClient) -> None:
    write(manifest, free_port(), extra=f"    args: [--api-key, {KEY}]\n")
    result = apply(manifest)
    assert result.returncode == 1
    assert "args must not contain --api-key" in result.stderr
    assert container_named(docker_client, CNAME) is None


def test_an_unreachable_engine_names_docker_host_and_how_to_start_it(manifest: Path) -> None:
    write(manifest, free_port())
    result = apply(manifest, DOCKER_HOST=f"unix://{manifest.parent}/no-docker.sock")
    assert result.returncode == 1
    assert f"no Docker engine answers at unix://{manifest.parent}/no-docker.sock (DOCKER_HOST)" in result.stderr
    assert "sudo systemctl start docker" in result.stderr


def test_smoke_test_streams_through_the_container_with_the_key(manifest: Path, docker_client: DockerClient) -> None:
    write(manifest, free_port(), extra="    api_key: '${VLLM_API_KEY}'\n    expect: 'moon'\n")
    manifest.write_text(
        manifest.read_text() + "smoke_test:\n  messages: [{role: user, content: moon over water}]\n"
        "  max_tokens: 8\n  temperature: 0\n"
    )
    assert apply(manifest, VLLM_API_KEY=KEY).returncode == 0
    result = run_cli("smoke-test", manifest, "--json", env={"VLLM_API_KEY": KEY})
    assert result.returncode == 0, result.stdout + result.stderr
    [row] = json.loads(result.stdout)["results"]
    assert row["passed"] and row["output_tokens"] > 0 and row["token_source"] == "server"
    assert row["ttft"] is not None and KEY not in result.stdout + result.stderr

    wrong = run_cli("smoke-test", manifest, "--json", env={"VLLM_API_KEY": "not-the-key"})
    assert wrong.returncode == 1
    [row] = json.loads(wrong.stdout)["results"]
    assert not row["passed"] and "401" in row["reason"]


def test_a_new_model_revision_replaces_the_container_in_the_same_apply(
    manifest: Path, docker_client: DockerClient
) -> None:
    write(manifest, free_port())
    assert apply(manifest).returncode == 0
    first = known(container_named(docker_client, CNAME)).id
    (manifest.parent / "src" / "config.json").write_text(json.dumps({"max_position_embeddings": 1024}))
    result = apply(manifest)
    assert result.returncode == 0, result.stderr
    assert "model.tiny: update" in result.stdout and f"deployment.{DEP}: replace" in result.stdout
    assert known(container_named(docker_client, CNAME)).id != first
    again = apply(manifest)
    assert again.returncode == 0 and "no changes" in again.stdout


def test_destroy_removes_the_container_of_a_failed_apply(manifest: Path, docker_client: DockerClient) -> None:
    # A failed start records nothing in state; the container still carries provision's labels.
    write(manifest, free_port(), extra="    env: {FAKE_VLLM_CRASH: '1'}\n")
    assert apply(manifest).returncode == 1
    assert known(container_named(docker_client, CNAME)).status == "exited"
    result = run_cli("destroy", "--yes", manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing recorded" not in result.stdout
    assert container_named(docker_client, CNAME) is None


def test_destroy_needs_no_secret(manifest: Path, docker_client: DockerClient) -> None:
    write(manifest, free_port(), extra="    api_key: '${VLLM_API_KEY}'\n")
    assert apply(manifest, VLLM_API_KEY=KEY).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}
    result = run_cli("destroy", "--yes", manifest, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert container_named(docker_client, CNAME) is None
    # What needs the key (planning the container, whose spec includes it) still names it.
    planned = run_cli("plan", manifest, env=env)
    assert "environment variable VLLM_API_KEY is not set" in planned.stdout + planned.stderr


def test_create_adopts_the_container_a_timed_out_create_left(manifest: Path, docker_client: DockerClient) -> None:
    # docker-py gives up on a create after its timeout while the engine finishes it; the next
    # create then meets "name already in use" (409). provision must find it by name and use it.
    from docker.types import Mount

    from provision.deployments.vllm_spec import CONTAINER_PORT, MOUNT_ROOT, desired_spec
    from provision.manifest import VllmDeployment
    from provision.manifest_loader import load_manifest
    from provision.reconciler import Reconciler

    port = free_port()
    write(manifest, port)
    assert apply(manifest).returncode == 0  # the model is placed and locked
    docker_client.containers.get(CNAME).remove(force=True)
    loaded = load_manifest(manifest)
    with Reconciler(loaded) as reconciler:
        planned = reconciler.plan()
        assert [a.change.value for a in planned.plan.actions if a.kind == "deployment"] == ["create"]
        desired = desired_spec(DEP, instance(loaded.deployments[DEP], VllmDeployment), reconciler.deploy_context())
        left = docker_client.containers.create(
            "provision-test/vllm-fake:1",
            command=list(desired.command),
            name=CNAME,
            labels=desired.labels,
            environment=dict(desired.environment),
            ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", port)},
            mounts=[Mount(f"{MOUNT_ROOT}/tiny", desired.model_dir, type="bind", read_only=True)],
        )
        result = reconciler.apply(planned=planned)
    assert result.ok, [str(o.error) for o in result.outcomes if not o.ok]
    container = known(container_named(docker_client, CNAME))
    assert (container.id, container.status) == (left.id, "running")
