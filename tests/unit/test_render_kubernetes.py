"""`render kubernetes`, pure part: every mapping from manifest + lock to objects."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from provision.deployments.base import DeployContext
from provision.deployments.vllm_spec import desired_spec
from provision.errors import LockError, RenderError
from provision.manifest_loader import load_manifest, parse_manifest
from provision.render.kubernetes import (
    FETCH_IMAGE,
    SPEC_HASH,
    KubeObject,
    Rendered,
    RenderOptions,
    check_options,
    dns_label,
    render,
    startup_budget,
    volume_size,
)
from provision.render.output import stream, to_yaml
from tests.manifest_files import write_manifest
from tests.typed import instance

CANARY = "canary-5f0c1d2e-never-rendered"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
GIB = 1 << 30
SHA = "a" * 64


def manifest_text(deployments: str, models: str = "  m: {source: hf://org/model}\n", settings: str = "") -> str:
    return f"version: 1\nsettings:\n  models_dir: models\n{settings}models:\n{models}deployments:\n{deployments}"


def hf_lock(size: int = 1000, revision: str = "main", files: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "spec": {"source": "hf://org/model", "revision": revision, "include": None, "exclude": None},
        "resolved": COMMIT,
        "files": files
        if files is not None
        else {"config.json": {"size": 10, "sha256": SHA}, "model.safetensors": {"size": size, "sha256": "b" * 64}},
    }


def url(scheme: str, spec: Any, resolved: str, path: str) -> str:
    return f"https://hub.example/{spec.location}/resolve/{resolved}/{path}"


def do_render(
    deployments: str, lock: dict[str, Any] | None = None, options: RenderOptions | None = None, **kwargs: str
) -> Rendered:
    manifest = parse_manifest(manifest_text(deployments, **kwargs), env={"SECRET": CANARY})
    return render(manifest, {"m": hf_lock()} if lock is None else lock, options or RenderOptions(), url)


def find(rendered: Rendered, kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [o.body for o in rendered.objects if o.kind == kind and (name is None or o.name == name)]
    assert len(matches) == 1, [(o.kind, o.name) for o in rendered.objects]
    return dict(matches[0])


def vllm_container(rendered: Rendered) -> dict[str, Any]:
    return instance(find(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0], dict)


VLLM = "  chat: {engine: vllm, model: m, gpus: 2, port: 8001}\n"


# -- names ---------------------------------------------------------------------------------
@given(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,120}\Z"))
def test_every_name_becomes_a_valid_dns_label(name: str) -> None:
    label = dns_label(name)
    assert DNS_1035.match(label) and len(label) <= 63, label


def test_a_valid_short_name_is_kept_and_a_long_one_is_truncated_with_a_hash() -> None:
    assert dns_label("chat-1") == "chat-1"
    assert dns_label("Qwen3_0.6B") == "qwen3-0-6b"
    long_a, long_b = "x" * 70 + "a", "x" * 70 + "b"
    assert len(dns_label(long_a)) == 63 and dns_label(long_a).startswith("x" * 40)
    assert dns_label(long_a) != dns_label(long_b)


def test_names_that_collide_once_lower_cased_are_an_error() -> None:
    with pytest.raises(RenderError, match="two resources render to"):
        do_render("  a.b: {engine: vllm, model: m, gpus: 1}\n  a_b: {engine: vllm, model: m, gpus: 1, port: 8001}\n")


def test_bad_namespace_and_storage_class_are_refused() -> None:
    with pytest.raises(RenderError, match="namespace"):
        check_options(RenderOptions(namespace="Bad_NS"))
    with pytest.raises(RenderError, match="storage-class"):
        check_options(RenderOptions(storage_class="UPPER"))
    with pytest.raises(RenderError, match="namespace"):  # `$` alone matched before a final newline
        check_options(RenderOptions(namespace="llm\n"))


# -- GPUs ----------------------------------------------------------------------------------
def test_gpus_n_sets_the_nvidia_limit_and_zero_sets_none() -> None:
    assert vllm_container(do_render(VLLM))["resources"] == {"limits": {"nvidia.com/gpu": 2}}
    assert "resources" not in vllm_container(do_render("  chat: {engine: vllm, model: m, gpus: 0}\n"))


def test_gpus_all_needs_gpus_per_node() -> None:
    with pytest.raises(RenderError, match="gpus: all") as caught:
        do_render("  chat: {engine: vllm, model: m}\n")
    assert "--gpus-per-node" in (caught.value.hint or "") and caught.value.exit_code == 2
    rendered = do_render("  chat: {engine: vllm, model: m}\n", options=RenderOptions(gpus_per_node=8))
    assert vllm_container(rendered)["resources"]["limits"]["nvidia.com/gpu"] == 8


def test_device_ids_are_refused() -> None:
    with pytest.raises(RenderError, match="names devices"):
        do_render("  chat: {engine: vllm, model: m, gpus: [0, 1]}\n")


# -- the vLLM container --------------------------------------------------------------------
def test_image_and_args_are_the_local_containers(tmp_path: Path) -> None:
    text = manifest_text(
        "  chat: {engine: vllm, model: m, gpus: 1, image: 'vllm/vllm-openai:v0.11.0', "
        "served_model_name: qwen, args: [--max-model-len, '4096']}\n"
    )
    manifest = load_manifest(write_manifest(tmp_path, text))
    local = desired_spec(
        "chat",
        manifest.deployments["chat"],  # type: ignore[arg-type]
        DeployContext(manifest, {"m": tmp_path / "models" / "m"}),
    )
    container = vllm_container(render(manifest, {"m": hf_lock()}, RenderOptions(), url))
    assert container["image"] == "vllm/vllm-openai:v0.11.0"
    assert container["args"] == list(local.command)
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]


def test_probes_health_models_listing_and_a_startup_budget_scaled_to_size() -> None:
    small = vllm_container(do_render(VLLM, {"m": hf_lock(size=GIB)}))
    big = vllm_container(do_render(VLLM, {"m": hf_lock(size=140 * GIB)}))
    assert small["startupProbe"]["httpGet"]["path"] == "/health"
    assert small["livenessProbe"]["httpGet"]["path"] == "/health"
    steps = small["startupProbe"]["periodSeconds"]
    assert small["startupProbe"]["failureThreshold"] * steps >= 900  # at least the local startup_timeout
    assert big["startupProbe"]["failureThreshold"] * steps >= 300 + 20 * 140
    assert big["startupProbe"]["failureThreshold"] > small["startupProbe"]["failureThreshold"]
    probe = small["readinessProbe"]["exec"]["command"]
    assert probe[-1] == "chat" and "/v1/models" in probe[2]
    assert startup_budget(0, 60) == 300 and startup_budget(100 * GIB, 60) == 2300


def test_volumes_model_read_only_shm_in_memory_and_the_step_writes() -> None:
    rendered = do_render("  chat: {engine: vllm, model: m, gpus: 2, shm_size: 16g}\n")
    pod = find(rendered, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["model"] == {"name": "model", "mountPath": "/models/m", "readOnly": True}
    assert mounts["shm"]["mountPath"] == "/dev/shm"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert volumes["model"]["persistentVolumeClaim"]["claimName"] == "model-m"
    step = pod["initContainers"][0]
    assert step["image"] == FETCH_IMAGE
    assert {"name": "model", "mountPath": "/models/m"} in step["volumeMounts"]  # read-write
    assert find(rendered, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_the_claim_is_sized_from_the_lock_plus_headroom() -> None:
    claim = find(do_render(VLLM, {"m": hf_lock(size=10 * GIB)}), "PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "13Gi"  # 10 GiB * 1.1 + 1 GiB, rounded up
    assert volume_size(0) == "1Gi"
    assert "storageClassName" not in claim["spec"]
    rendered = do_render(VLLM, options=RenderOptions(storage_class="fast-ssd", namespace="llm"))
    assert find(rendered, "PersistentVolumeClaim")["spec"]["storageClassName"] == "fast-ssd"
    assert {o.body["metadata"]["namespace"] for o in rendered.objects} == {"llm"}


def test_the_files_plan_is_exactly_the_locked_files_at_the_locked_commit() -> None:
    data = find(do_render(VLLM), "ConfigMap")["data"]
    plan = json.loads(data["files.json"])
    assert plan["target"] == "/models/m"
    assert plan["files"] == [
        {
            "path": "config.json",
            "size": 10,
            "sha256": SHA,
            "url": f"https://hub.example/org/model/resolve/{COMMIT}/config.json",
        },
        {
            "path": "model.safetensors",
            "size": 1000,
            "sha256": "b" * 64,
            "url": f"https://hub.example/org/model/resolve/{COMMIT}/model.safetensors",
        },
    ]
    assert data["fetch_files.py"] == (Path(__file__).parents[2] / "provision/render/fetch_files.py").read_text()


def test_the_service_is_cluster_ip_on_the_deployments_port() -> None:
    service = find(do_render(VLLM), "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8001, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == find(do_render(VLLM), "Deployment")["spec"]["selector"]["matchLabels"]


# -- secrets -------------------------------------------------------------------------------
def test_secrets_are_references_and_the_create_commands_name_no_value() -> None:
    rendered = do_render(
        "  chat: {engine: vllm, model: m, gpus: 1, api_key: '${SECRET}', env: {TOK: '${SECRET}'}}\n",
        settings="  huggingface: {token: '${SECRET}'}\n",
    )
    container = vllm_container(rendered)
    key = next(e for e in container["env"] if e["name"] == "VLLM_API_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": "chat-api-key", "key": "api-key"}
    assert container["envFrom"] == [{"secretRef": {"name": "chat-env"}}]
    step_env = find(rendered, "Deployment")["spec"]["template"]["spec"]["initContainers"][0]["env"]
    assert step_env[0]["valueFrom"]["secretKeyRef"]["name"] == "provision-huggingface-token"
    commands = {s.name: s.command("llm") for s in rendered.secrets}
    assert commands["chat-api-key"] == (
        'kubectl -n llm create secret generic chat-api-key --from-literal=api-key="$VLLM_API_KEY"'
    )
    assert commands["chat-env"].endswith('--from-literal=TOK="$TOK"')
    everything = stream(rendered.objects) + json.dumps(commands)
    assert CANARY not in everything


# -- what is rendered, what is skipped, what is refused ------------------------------------
def test_unlocked_or_changed_models_exit_2_with_the_hint() -> None:
    with pytest.raises(RenderError, match="not locked yet: m") as caught:
        do_render(VLLM, lock={})
    assert caught.value.exit_code == 2
    assert caught.value.hint == "run `provision apply` or `provision plan --update` first"
    with pytest.raises(RenderError, match="changed since the lock"):
        do_render(VLLM, lock={"m": hf_lock(revision="v2")})


@pytest.mark.parametrize(
    ("files", "error"),
    [
        ({"x": {"size": 1, "sha256": "nothex"}}, LockError),
        ({"x": {"size": -1, "sha256": SHA}}, LockError),
        ({"../escape": {"size": 1, "sha256": SHA}}, LockError),
        ({}, LockError),
    ],
)
def test_a_malformed_lock_is_refused(files: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        do_render(VLLM, lock={"m": hf_lock(files=files)})


def test_engines_without_cluster_objects_and_local_models_are_skipped() -> None:
    rendered = do_render(
        "  local: {engine: transformers, model: m}\n"
        "  api: {engine: openai, base_url: 'https://api.example', served_model: x}\n"
        "  disk: {engine: vllm, model: f, gpus: 1}\n",
        models="  m: {source: hf://org/model}\n  f: {source: 'file:///data/ft'}\n",
    )
    assert rendered.objects == ()
    skipped = dict(rendered.skipped)
    assert set(skipped) == {"deployment.local", "deployment.api", "deployment.disk", "model.m", "model.f"}
    assert "nothing to run in a cluster" in skipped["deployment.api"]


def test_ollama_gets_its_own_volume_and_a_pull_step_that_checks_the_digest() -> None:
    digest = "7df6b6e09427" + "c" * 52
    rendered = do_render(
        "  chat: {engine: ollama, model: q}\n",
        models="  q: {source: 'ollama://qwen3:0.6b'}\n",
        lock={"q": {"spec": {"source": "ollama://qwen3:0.6b"}, "digest": digest}},
    )
    pod = find(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "ollama", "persistentVolumeClaim": {"claimName": "ollama-chat"}}]
    script = pod["initContainers"][0]["command"][2]
    assert 'ollama pull "qwen3:0.6b"' in script and '"7df6b6e09427"' in script
    assert pod["containers"][0]["readinessProbe"]["exec"]["command"] == ["ollama", "show", "qwen3:0.6b"]
    assert find(rendered, "Service")["spec"]["ports"][0]["port"] == 11434
    assert find(rendered, "PersistentVolumeClaim", "ollama-chat")


# -- labels, hashes, determinism -----------------------------------------------------------
def test_labels_and_a_spec_hash_that_moves_only_with_the_spec() -> None:
    first, again = do_render(VLLM), do_render(VLLM)
    for obj in first.objects:
        labels = obj.body["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "provision"
        assert labels["app.kubernetes.io/name"] == obj.name
    assert stream(first.objects) == stream(again.objects)  # byte-identical
    moved = do_render(VLLM, {"m": hf_lock(size=5 * GIB)})

    def hashes(r: Rendered) -> dict[str, str]:
        return {f"{o.kind}/{o.name}": o.body["metadata"]["annotations"][SPEC_HASH] for o in r.objects}

    changed = {k for k in hashes(first) if hashes(first)[k] != hashes(moved)[k]}
    # The new lock changes the file list (ConfigMap), the claim and the pods (files-hash); not the Service.
    assert changed == {"ConfigMap/model-m-files", "PersistentVolumeClaim/model-m", "Deployment/chat"}


# -- schema --------------------------------------------------------------------------------
EVERYTHING = (
    "  chat: {engine: vllm, model: m, gpus: 2, api_key: '${SECRET}', env: {A: b}, shm_size: 8g}\n"
    "  tiny: {engine: vllm, model: m, gpus: 0, port: 9000}\n"
    "  olla: {engine: ollama, model: q}\n"
)


@pytest.mark.parametrize("version", ["1.30.0", kubernetes_validate.latest_version()])
def test_every_object_passes_strict_schema_validation(version: str) -> None:
    rendered = do_render(
        EVERYTHING,
        options=RenderOptions(namespace="llm", storage_class="ssd"),
        models="  m: {source: hf://org/model}\n  q: {source: 'ollama://qwen3:0.6b'}\n",
        lock={"m": hf_lock(), "q": {"spec": {"source": "ollama://qwen3:0.6b"}, "digest": "d" * 64}},
    )
    assert {o.kind for o in rendered.objects} == {"Deployment", "Service", "PersistentVolumeClaim", "ConfigMap"}
    for obj in rendered.objects:
        parsed = yaml.safe_load(to_yaml(obj))
        assert parsed == obj.body
        kubernetes_validate.validate(parsed, version, strict=True)


def test_strict_validation_can_fail() -> None:
    bad = KubeObject(
        "Service",
        "x",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "x"},
            "spec": {"ports": [{"port": 1}], "bogus": True},
        },
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(yaml.safe_load(to_yaml(bad)), "1.30.0", strict=True)


def test_writing_a_folder_replaces_our_files_and_leaves_others(tmp_path: Path) -> None:
    from provision.render.output import HEADER, write_dir

    out = tmp_path / "k8s"
    out.mkdir()
    (out / "gone.deployment.yaml").write_text(HEADER + "kind: Deployment\n")  # rendered before, no longer
    (out / "mine.yaml").write_text("kind: ConfigMap\n")  # the user's
    rendered = do_render(VLLM)
    written, removed = write_dir(out, rendered.objects)
    assert removed == [out / "gone.deployment.yaml"]
    assert (out / "mine.yaml").read_text() == "kind: ConfigMap\n"
    assert sorted(p.name for p in written) == sorted(o.filename for o in rendered.objects)
    assert (out / "chat.deployment.yaml").read_text() == HEADER + to_yaml(find_obj(rendered, "Deployment"))


def find_obj(rendered: Rendered, kind: str) -> KubeObject:
    return next(o for o in rendered.objects if o.kind == kind)
