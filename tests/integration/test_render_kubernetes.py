"""`render kubernetes` through the CLI, and its download step run for real in Docker.

No cluster here: the rendered init container (its command, environment and mounts, as the
kubelet would set them up: the ConfigMap projected as files, the claim as a folder, Secret
keys as variables) runs in a real Docker engine against the hub fakes on loopback
(``network_mode=host``). Its image is the one deviation: no registry is reachable, so
``python:3.12-slim`` is replaced by a local stand-in built from Debian bookworm
(tests/fakes/docker_env.py: build_python_image).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from provision.render.kubernetes import FETCH_IMAGE
from tests.apply_support import TINY_FILES
from tests.cli_runner import run_cli
from tests.fakes.docker_env import build_python_image, ensure_engine
from tests.fakes.hf_hub import FakeCDN, FakeHFHub
from tests.fakes.modelscope_hub import FakeModelScopeHub
from tests.manifest_files import lock_of, write_manifest

TOKEN = "hub-token-canary-3c9e1b7a"
API_KEY = "api-key-canary-77d2e0c4"
SETTINGS = {"hf": "huggingface", "ms": "modelscope"}


@dataclass
class Hub:
    server: FakeHFHub | FakeModelScopeHub
    scheme: str
    cdn: FakeCDN | None = None  # where the Hugging Face fake redirects LFS files

    def corrupt(self, path: str) -> None:
        """Make the hub (or, for an LFS file, its CDN) flip a byte of ``path``'s body."""
        if self.cdn is not None:
            self.cdn.faults.corrupt = {hashlib.sha256(TINY_FILES[path]).hexdigest()}
        else:
            self.server.faults.corrupt = {path}

    def manifest(self, tmp_path: Path) -> Path:
        return write_manifest(
            tmp_path,
            "version: 1\nsettings:\n  models_dir: models\n"
            f"  {SETTINGS[self.scheme]}: {{endpoint: '{self.server.url}', token: '${{HUB_TOKEN}}'}}\n"
            f"models:\n  tiny: {{source: '{self.scheme}://org/tiny'}}\n"
            "deployments:\n  chat: {engine: vllm, model: tiny, gpus: 1, api_key: '${API_KEY}'}\n"
            "  local: {engine: transformers, model: tiny}\n",
        )


@pytest.fixture(params=["hf", "ms"])
def hub(request: pytest.FixtureRequest) -> Iterator[Hub]:
    if request.param == "hf":
        hf, cdn = FakeHFHub(), FakeCDN()
        with hf, cdn:
            hf.add_repo("org/tiny", TINY_FILES, gated=True)
            hf.tokens.add(TOKEN)
            hf.redirect_to(cdn)
            yield Hub(hf, "hf", cdn)
    else:
        ms = FakeModelScopeHub()
        with ms:
            ms.add_repo("org/tiny", TINY_FILES, token=TOKEN)
            yield Hub(ms, "ms")


ENV = {"HUB_TOKEN": TOKEN, "API_KEY": API_KEY}


@pytest.fixture(scope="module")
def standin_image() -> str:
    return build_python_image()


def rendered(tmp_path: Path, hub: Hub) -> dict[str, dict[str, Any]]:
    """apply the model (the lock), render with the CLI, and the objects by ``kind/name``."""
    manifest = hub.manifest(tmp_path)
    applied = run_cli("apply", manifest, "--only", "tiny", env=ENV)
    assert applied.returncode == 0, applied.stderr
    out = tmp_path / "k8s"
    result = run_cli("render", "kubernetes", manifest, "-o", out, env=ENV)
    assert result.returncode == 0, result.stderr
    texts = {path.name: path.read_text() for path in sorted(out.iterdir())}
    for text in texts.values():
        assert TOKEN not in text and API_KEY not in text
    objects = [yaml.safe_load(text) for text in texts.values()]
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def run_step(
    image: str,
    pod: dict[str, Any],
    objects: dict[str, dict[str, Any]],
    claim_dir: Path,
    secrets: dict[str, dict[str, str]],
    work: Path,
) -> tuple[int, str]:
    """Run the pod's init container as the kubelet would: volumes, env from Secrets; (exit, logs)."""
    step = pod["initContainers"][0]
    assert step["image"] == FETCH_IMAGE
    binds: dict[str, dict[str, str]] = {}
    for volume in pod["volumes"]:
        mount = next((m for m in step["volumeMounts"] if m["name"] == volume["name"]), None)
        if mount is None:
            continue
        if "configMap" in volume:  # projected as one file per key
            folder = work / volume["name"]
            folder.mkdir(exist_ok=True)
            for key, value in objects[f"ConfigMap/{volume['configMap']['name']}"]["data"].items():
                (folder / key).write_text(value)
        else:
            assert objects[f"PersistentVolumeClaim/{volume['persistentVolumeClaim']['claimName']}"]
            folder = claim_dir
        binds[str(folder)] = {"bind": mount["mountPath"], "mode": "ro" if mount.get("readOnly") else "rw"}
    environment = {}
    for var in step.get("env", []):
        if "value" in var:
            environment[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        value = secrets.get(ref["name"], {}).get(ref["key"])
        assert value is not None or ref.get("optional"), f"missing Secret {ref['name']}"
        if value is not None:
            environment[var["name"]] = value
    client = ensure_engine()
    container = client.containers.run(
        image, entrypoint=step["command"], environment=environment, volumes=binds, network_mode="host", detach=True
    )
    try:
        code = container.wait(timeout=120)["StatusCode"]
        return code, container.logs().decode()
    finally:
        container.remove(force=True)


def test_render_exits_2_until_the_model_is_locked(tmp_path: Path, hub: Hub) -> None:
    result = run_cli("render", "kubernetes", hub.manifest(tmp_path), "--stdout", env=ENV)
    assert result.returncode == 2
    assert "not locked yet: tiny" in result.stderr
    assert "run `provision apply` or `provision plan --update` first" in result.stderr
    assert not hub.server.requests  # offline


def test_render_is_byte_identical_offline_and_schema_valid(tmp_path: Path, hub: Hub) -> None:
    rendered(tmp_path, hub)
    files = sorted(str(p) for p in (tmp_path / "k8s").iterdir())
    for version in ("1.30.0", kubernetes_validate.latest_version()):
        checked = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, *files],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.count("passed") == len(files) == 4  # claim, ConfigMap, Deployment, Service
    before = len(hub.server.requests)
    first = run_cli("render", "kubernetes", tmp_path / "m.yaml", "--stdout", env=ENV)
    second = run_cli("render", "kubernetes", tmp_path / "m.yaml", "--stdout", env=ENV)
    assert first.returncode == 0 and first.stdout == second.stdout
    assert len(hub.server.requests) == before
    assert "skipped deployment.local" in first.stderr
    assert 'kubectl create secret generic chat-api-key --from-literal=api-key="$VLLM_API_KEY"' in first.stderr
    assert TOKEN not in first.stdout + first.stderr and API_KEY not in first.stdout + first.stderr


def test_the_download_step_fetches_resumes_and_verifies_the_locked_files(
    tmp_path: Path, hub: Hub, standin_image: str
) -> None:
    objects = rendered(tmp_path, hub)
    pod = objects["Deployment/chat"]["spec"]["template"]["spec"]
    locked = lock_of(tmp_path / "m.yaml")["models"]["tiny"]["files"]
    claim = tmp_path / "claim"
    # Half of the big file already there, as a killed earlier run leaves it; and a stale file.
    big = "model.safetensors"
    where = hashlib.sha256(big.encode()).hexdigest()[:16]
    partial = claim / ".cache/provision/partial" / f"{locked[big]['sha256']}-{where}.part"
    partial.parent.mkdir(parents=True)
    half = len(TINY_FILES[big]) // 2
    partial.write_bytes(TINY_FILES[big][:half])
    (claim / "stale.bin").write_bytes(b"an older revision's shard")
    secrets = {f"provision-{SETTINGS[hub.scheme]}-token": {"token": TOKEN}}
    hub.server.requests.clear()

    code, logs = run_step(standin_image, pod, objects, claim, secrets, tmp_path)
    assert code == 0, logs
    for path in locked:
        assert (claim / path).read_bytes() == TINY_FILES[path]
    assert not (claim / "stale.bin").exists() and "removed unlisted stale.bin" in logs
    assert not list(claim.rglob("*.part"))
    ranges = [r.headers.get("range") for r in hub.server.requests if big in r.path]
    assert ranges == [f"bytes={half}-"]  # resumed, not restarted
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.server.requests)
    if hub.cdn is not None:  # the LFS bodies came from the CDN, without the token
        assert any(locked[big]["sha256"] in r.path for r in hub.cdn.requests)
        assert hub.cdn.authorizations() == []

    code, logs = run_step(standin_image, pod, objects, claim, secrets, tmp_path)
    assert code == 0 and "fetched 0" in logs, logs  # every start re-verifies, fetches nothing

    damaged = bytearray(TINY_FILES[big])
    damaged[10] ^= 0xFF
    (claim / big).write_bytes(bytes(damaged))
    code, logs = run_step(standin_image, pod, objects, claim, secrets, tmp_path)
    assert code == 0 and "do not match the lock" in logs, logs
    assert (claim / big).read_bytes() == TINY_FILES[big]


def test_the_download_step_fails_loudly_when_the_hub_serves_other_bytes(
    tmp_path: Path, hub: Hub, standin_image: str
) -> None:
    objects = rendered(tmp_path, hub)
    pod = objects["Deployment/chat"]["spec"]["template"]["spec"]
    hub.corrupt("model.safetensors")
    claim = tmp_path / "claim"
    claim.mkdir()
    secrets = {f"provision-{SETTINGS[hub.scheme]}-token": {"token": TOKEN}}
    code, logs = run_step(standin_image, pod, objects, claim, secrets, tmp_path)
    assert code == 1, logs
    assert "model.safetensors: sha256 mismatch" in logs
    assert not (claim / "model.safetensors").exists()
    assert not list(claim.rglob("*.part"))


def test_the_download_step_without_the_token_secret_fails_on_a_private_model(
    tmp_path: Path, hub: Hub, standin_image: str
) -> None:
    objects = rendered(tmp_path, hub)
    pod = objects["Deployment/chat"]["spec"]["template"]["spec"]
    claim = tmp_path / "claim"
    claim.mkdir()
    code, logs = run_step(standin_image, pod, objects, claim, {}, tmp_path)  # the optional Secret is absent
    assert code == 1 and "needs the token Secret" in logs, logs


@pytest.mark.parametrize(
    "args", [(), ("-o", "out", "--stdout"), ("--stdout", "--json"), ("--stdout", "--namespace", "A")]
)
def test_render_refuses_bad_command_lines_with_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    manifest = write_manifest(tmp_path, "version: 1\n")
    result = run_cli("render", "kubernetes", manifest, *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
