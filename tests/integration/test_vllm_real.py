"""`engine: vllm` against the real vLLM: provision/vllm-cpu:0.32.0 (scripts/build-vllm-cpu-image.sh)
serving real models on this machine's CPUs.

Three containers for the whole module, because each start costs a model load on 2 cores and,
under the vfs storage driver, a copy of the multi-GB image (and minutes to remove it): the chat
server (the demo model converted to safetensors, with an API key), shared by the tests in file
order; its replacement by an args change that vLLM refuses (a fast failure: vLLM exits at
argument parsing), then destroyed; and the embedding server (all-MiniLM-L6-v2 on the pooling
runner). Each test says which part of issue 14 or 15 it proves.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import provision
from tests.cli_runner import run_cli
from tests.embed_models import minilm_dir  # noqa: F401 - fixture
from tests.fakes._server import free_port
from tests.real_vllm import IMAGE, SERVER_ARGS, SERVER_ENV, client_checks, converted_smollm2, ensure_image, request

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

# Each step may take minutes on a busy machine (a vfs copy of the image per container).
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.real_vllm, pytest.mark.timeout(1800)]

KEY = "real_vllm_canary_KEY_51d0"
DEP = f"real-{os.getpid()}"
CNAME = f"provision-{DEP}"
START = 900  # startup_timeout: generous, the machine may be busy
BAD_FLAG = "--no-such-flag"
EMBED = f"embed-{os.getpid()}"
WITH_KEY = {"VLLM_API_KEY": KEY}


@dataclass(frozen=True)
class Served:
    manifest: Path
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def write(manifest: Path, port: int, *, args: list[str] = SERVER_ARGS) -> None:
    env = ", ".join(f"{k}: '{v}'" for k, v in SERVER_ENV.items())
    manifest.write_text(
        "version: 1\n"
        "settings: {models_dir: models}\n"
        "models:\n"
        f"  smollm2: {{source: 'file://{converted_smollm2()}'}}\n"
        "deployments:\n"
        f"  {DEP}:\n"
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
        "  timeout: 300\n"
    )


@pytest.fixture(scope="module")
def docker_client() -> DockerClient:
    import docker

    from tests.fakes.docker_env import ensure_engine

    ensure_engine()
    ensure_image()
    return docker.from_env(timeout=900)  # removing a container of this image under vfs takes minutes


def remove_labelled(client: DockerClient, manifest: Path) -> None:
    for container in client.containers.list(all=True, filters={"label": f"io.provision.manifest={manifest}"}):
        container.remove(force=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, docker_client: DockerClient) -> Iterator[Served]:
    """The applied chat deployment; every container it labelled is removed after."""
    folder = tmp_path_factory.mktemp("real-vllm")
    server = Served(folder / "m.yaml", free_port())
    write(server.manifest, server.port)
    try:
        result = run_cli("apply", server.manifest, env=WITH_KEY, timeout=START + 300)
        assert result.returncode == 0, result.stdout + result.stderr
        yield server
    finally:
        remove_labelled(docker_client, server.manifest)


def container_named(client: DockerClient, name: str) -> Container:
    [found] = client.containers.list(all=True, filters={"name": f"^/{name}$"})
    return found


def smoke(manifest: Path, key: str = KEY) -> dict[str, Any]:
    result = run_cli("smoke-test", manifest, "--json", env={"VLLM_API_KEY": key}, timeout=400)
    rows: list[dict[str, Any]] = json.loads(result.stdout)["results"]
    [row] = rows
    return row


# -- one chat server for the tests below, in file order -----------------------------------------


def test_apply_then_smoke_test_names_paris(served: Served) -> None:
    row = smoke(served.manifest)
    assert row["passed"], row
    assert "paris" in row["text"].lower()
    assert row["finish_reason"] == "stop" and row["token_source"] == "server"
    assert row["tpot"] is not None and row["ttft"] is not None


def test_reapply_is_a_noop(served: Served, docker_client: DockerClient) -> None:
    before = container_named(docker_client, CNAME).id
    again = run_cli("apply", served.manifest, env=WITH_KEY, timeout=300)
    assert again.returncode == 0 and "no changes" in again.stdout, again.stdout + again.stderr
    assert container_named(docker_client, CNAME).id == before


def test_api_key_gives_401_without_it_and_passes_with_it(served: Served) -> None:
    assert request(served.base, "GET", "/v1/models").status == 401
    assert request(served.base, "GET", "/v1/models", key=KEY).status == 200
    wrong = smoke(served.manifest, "not-the-key")
    assert not wrong["passed"] and "401" in wrong["reason"]
    assert smoke(served.manifest)["passed"]


def test_the_openai_engine_against_the_same_server(served: Served, tmp_path: Path) -> None:
    hosted = tmp_path / "hosted.yaml"
    hosted.write_text(
        "version: 1\n"
        "deployments:\n"
        "  remote:\n"
        "    engine: openai\n"
        f"    base_url: {served.base}/v1\n"
        f"    served_model: {DEP}\n"
        "    api_key: '${VLLM_API_KEY}'\n"
        "    expect: '(?i)paris'\n"
        "smoke_test:\n"
        "  messages: [{role: user, content: 'What is the capital of France?'}]\n"
        "  max_tokens: 32\n  temperature: 0\n  timeout: 300\n"
    )
    row = smoke(hosted)
    assert row["passed"], row
    assert "paris" in row["text"].lower()


def test_the_real_server_passes_the_client_checks(served: Served) -> None:
    # The same checks run against the stand-in in test_fake_vllm.py.
    assert client_checks(served.base, DEP, KEY) == []


def test_an_args_change_replaces_the_container_and_a_bad_argument_reports_vllms_reason(
    served: Served,
    docker_client: DockerClient,
) -> None:
    before = container_named(docker_client, CNAME).id
    write(served.manifest, served.port, args=[*SERVER_ARGS, BAD_FLAG])
    plan = run_cli("plan", served.manifest, env=WITH_KEY)
    assert "replace" in plan.stdout and "args" in plan.stdout, plan.stdout
    result = run_cli("apply", served.manifest, env=WITH_KEY, timeout=START + 300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "vLLM exited with code" in result.stderr
    assert f"unrecognized arguments: {BAD_FLAG}" in result.stderr, result.stderr
    [container] = docker_client.containers.list(
        all=True, filters={"label": f"io.provision.manifest={served.manifest}"}
    )  # the old one is gone: replaced, not added beside it
    assert container.name == CNAME and container.id != before and container.status == "exited"
    assert container.attrs["Config"]["Cmd"][-1] == BAD_FLAG


def test_destroy_removes_it_after_the_failed_start(served: Served, docker_client: DockerClient) -> None:
    # The failed apply recorded nothing in state: destroy finds the container by its labels, and needs no key.
    env = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}
    gone = run_cli("destroy", "--yes", served.manifest, env=env, timeout=900)  # removing under vfs takes minutes
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert docker_client.containers.list(all=True, filters={"label": f"io.provision.manifest={served.manifest}"}) == []


# -- the embedding server (issue 15) --------------------------------------------------------------

TEXTS = [
    "How do I reset my password?",
    "What are the steps to change a forgotten password?",
    "The recipe calls for two cups of flour.",
    "今天北京的天气怎么样？",
]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_the_pooling_runner_serves_minilm_within_cosine_099_of_transformers(
    tmp_path: Path,
    minilm_dir: Path,  # noqa: F811
    docker_client: DockerClient,
) -> None:
    manifest = tmp_path / "embed.yaml"
    env = ", ".join(f"{k}: '{v}'" for k, v in SERVER_ENV.items())
    manifest.write_text(
        "version: 1\nsettings: {models_dir: models}\n"
        f"models: {{minilm: {{source: 'file://{minilm_dir}'}}}}\n"
        "deployments:\n"
        "  local: {engine: transformers, model: minilm, task: embed, device: cpu}\n"
        f"  {EMBED}: {{engine: vllm, model: minilm, task: embed, image: {IMAGE}, port: {free_port()}, gpus: 0,"
        f" startup_timeout: {START}, env: {{{env}}}}}\n"
    )
    try:
        applied = run_cli("apply", manifest, timeout=START + 300)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        result = run_cli("smoke-test", manifest, EMBED, "--json", timeout=400)
        assert result.returncode == 0, result.stdout + result.stderr
        [row] = json.loads(result.stdout)["results"]
        assert (row["task"], row["passed"], row["dimension"]) == ("embed", True, 384), row
        assert row["cos_positive"] > row["cos_negative"]

        with provision.connect(manifest, EMBED) as remote, provision.connect(manifest, "local") as local:
            theirs, ours = remote.embed(TEXTS), local.embed(TEXTS)
        assert [len(v) for v in theirs] == [384] * len(TEXTS)
        cosines = [cosine(a, b) for a, b in zip(theirs, ours, strict=True)]
        assert min(cosines) >= 0.99, cosines

        gone = run_cli("destroy", "--yes", manifest, timeout=900)  # a running container this time
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert docker_client.containers.list(all=True, filters={"label": f"io.provision.manifest={manifest}"}) == []
    finally:
        remove_labelled(docker_client, manifest)
