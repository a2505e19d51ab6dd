"""Engine ``vllm``, the pure part: the container a deployment asks for, and what to do with the one there.

Nothing here talks to Docker or the network, so every decision is unit-tested without an engine;
:mod:`provision.deployments.vllm` observes, creates, starts and removes containers by these answers.

The container provision creates for deployment ``<name>`` of manifest ``<path>``::

    name     provision-<name>
    image    spec.image (pulled at apply time when missing; never built)
    command  --model /models/<model> --served-model-name <served> --host 0.0.0.0 --port 8000
             [--runner pooling, for task: embed] <args...>
             (appended to the image's entrypoint, `vllm serve` or the older api_server module)
    mounts   <models_dir>/<model> -> /models/<model>, read-only
    ports    <bind>:<port> -> 8000/tcp
    env      HF_HUB_OFFLINE=1, spec.env, VLLM_API_KEY (only with api_key)
    gpus     DeviceRequest(count=-1 | n | device_ids, capabilities=[["gpu"]]); none for 0
    ipc      host, else shm_size
    labels   io.provision.managed=true
             io.provision.manifest=<absolute manifest path>
             io.provision.deployment=<name>
             io.provision.spec=<JSON of the desired spec, no secret, no env value>
             io.provision.spec-hash=<sha256 of that JSON + a digest of the env values and the key>

Reconciling: a container with that name and these labels whose spec hash matches and which
runs is "no change"; a stopped one is started; another hash replaces it (the plan names the
changed fields from the spec label); a missing one is created. A container with that name
but without this manifest's labels is never touched: planning fails and says so.

The API key goes in the environment (``VLLM_API_KEY``, which vLLM reads as ``--api-key``'s
default), never on the command line: `ps` on the host and `docker inspect`'s Cmd/Args show
the command to anyone, while the environment is readable only through the Docker API (root
already) or the container's /proc. Labels carry at most a digest of a digest of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..credentials import secret_text
from ..errors import DeploymentError, PreflightError
from ..estimate import CPU_KV_ENV as CPU_KVCACHE_ENV  # one name for the variable, with the estimator
from ..gpus import asks_for_gpus
from ..manifest import VllmDeployment
from ..plan import Action, Change
from .base import DeployContext

ENGINE = "vllm"
CONTAINER_PORT = 8000
MOUNT_ROOT = "/models"
LABEL_MANAGED = "io.provision.managed"
LABEL_MANIFEST = "io.provision.manifest"
LABEL_DEPLOYMENT = "io.provision.deployment"
LABEL_SPEC = "io.provision.spec"
LABEL_SPEC_HASH = "io.provision.spec-hash"
# provision sets these itself; the same flag in `args` would silently override them.
RESERVED_ARGS = ("--model", "--served-model-name", "--host", "--port", "--api-key")
# vLLM on CPUs takes ~90% of RAM for its KV cache unless told a size (GiB); 4 GiB was
# vLLM's own default before it moved to the fraction. The manifest sets another with
# env: {VLLM_CPU_KVCACHE_SPACE: "8"} or vLLM's --kv-cache-memory-bytes in args.
DEFAULT_CPU_KVCACHE_GIB = 4


@dataclass(frozen=True)
class ContainerSpec:
    """What the container should be. ``public`` is safe to show and to store in a label."""

    name: str
    served: str  # the name /v1/models lists and chats use
    command: tuple[str, ...]
    model_dir: str
    public: Mapping[str, Any]
    environment: Mapping[str, str]  # includes VLLM_API_KEY: never logged or stored
    spec_hash: str

    @property
    def labels(self) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_MANIFEST: self.public["manifest"],
            LABEL_DEPLOYMENT: self.public["deployment"],
            LABEL_SPEC: json.dumps(self.public, sort_keys=True),
            LABEL_SPEC_HASH: self.spec_hash,
        }


@dataclass(frozen=True)
class ContainerView:
    """A container as one list call shows it."""

    id: str
    name: str
    status: str  # created | running | paused | restarting | removing | exited | dead
    labels: Mapping[str, str]
    host_ports: tuple[int, ...]


@dataclass(frozen=True)
class Preflight:
    """Facts that decide whether a container can be created or started on this engine."""

    image_present: bool
    pull_error: str | None  # why the missing image cannot be pulled; None: pullable or present
    runtimes: tuple[str, ...] | None  # the engine's runtimes; None when no GPU is requested
    port_error: str | None  # why bind:port cannot be taken; None: free or held by our container


@dataclass(frozen=True)
class Observed:
    container: ContainerView | None
    preflight: Preflight | None  # None: ours, running and unchanged, so nothing to check


def container_name(deployment: str) -> str:
    return f"provision-{deployment}"


def desired_spec(name: str, spec: VllmDeployment, ctx: DeployContext) -> ContainerSpec:
    """Pure: the container this deployment asks for, with the model revision from the lock."""
    served = spec.served_model_name or name
    command = server_args(name, spec)
    environment = {"HF_HUB_OFFLINE": "1", **cpu_kvcache_env(spec), **spec.env}
    key = secret_text(spec.api_key)  # a CR/LF from `$(cat keyfile)` would end the header
    if key is not None:
        environment["VLLM_API_KEY"] = key
    public = {
        "manifest": str(ctx.manifest.path.absolute()),
        "deployment": name,
        "image": spec.image,
        "model": spec.model,
        "served_model_name": served,
        "args": list(spec.args),
        "model_revision": (ctx.model_locks.get(spec.model) or {}).get("resolved"),
        "port": spec.port,
        "bind": spec.bind,
        "gpus": list(spec.gpus) if isinstance(spec.gpus, tuple) else spec.gpus,
        "ipc": "host" if spec.ipc_host else f"shm_size={spec.shm_size or 'default'}",
        "restart": spec.restart,
        "env": sorted(environment),  # names only: values may be tokens
    }
    # Values (and the key) enter the hash only as a digest of a digest, so a label reveals nothing.
    secret = _sha256(_sha256(json.dumps(sorted(environment.items()))))
    spec_hash = _sha256(json.dumps([public, command], sort_keys=True) + "\0" + secret)
    return ContainerSpec(
        container_name(name), served, tuple(command), str(ctx.model_dirs[spec.model]), public, environment, spec_hash
    )


def server_args(name: str, spec: VllmDeployment) -> list[str]:
    """The arguments after the image's entrypoint; `render kubernetes` uses the same ones."""
    _check_args(name, spec)
    # task: embed runs vLLM's pooling runner: `--runner pooling` (vLLM 0.32 CPU build, measured; older: --task embed).
    runner = ["--runner", "pooling"] if spec.task == "embed" else []
    return [
        "--model",
        f"{MOUNT_ROOT}/{spec.model}",
        "--served-model-name",
        spec.served_model_name or name,
        "--host",
        "0.0.0.0",
        "--port",
        str(CONTAINER_PORT),
        *runner,
        *spec.args,
    ]


def cpu_kvcache_env(spec: VllmDeployment) -> dict[str, str]:
    """Pure: the KV cache size a ``gpus: 0`` deployment gets when the manifest sets none."""
    if (
        asks_for_gpus(spec.gpus)
        or CPU_KVCACHE_ENV in spec.env
        or any(arg.split("=", 1)[0].replace("_", "-") == "--kv-cache-memory-bytes" for arg in spec.args)
    ):
        return {}
    return {CPU_KVCACHE_ENV: str(DEFAULT_CPU_KVCACHE_GIB)}


def adoption(view: ContainerView | None, desired: ContainerSpec) -> str:
    """Pure: after a create that timed out or met "name already in use", what to do with the
    container of that name: "create" (none), "reuse" (ours, this spec, never started),
    "replace" (ours, another spec or state) or "foreign" (not ours: leave it alone)."""
    if view is None:
        return "create"
    if not is_ours(view, desired):
        return "foreign"
    if view.labels.get(LABEL_SPEC_HASH) == desired.spec_hash and view.status == "created":
        return "reuse"
    return "replace"


def _check_args(name: str, spec: VllmDeployment) -> None:
    for arg in spec.args:
        flag = arg.split("=", 1)[0].replace("_", "-")
        if flag in RESERVED_ARGS:
            hint = (
                "use `api_key: ${VLLM_API_KEY}`: a key on the command line is visible to everyone"
                if flag == "--api-key"
                else "provision sets it from the deployment's fields; remove it from args"
            )
            raise DeploymentError(f"args must not contain {flag}", hint=hint, resource=name)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def is_ours(view: ContainerView, desired: ContainerSpec) -> bool:
    labels = view.labels
    return (
        labels.get(LABEL_MANAGED) == "true"
        and labels.get(LABEL_MANIFEST) == desired.public["manifest"]
        and labels.get(LABEL_DEPLOYMENT) == desired.public["deployment"]
    )


def is_current(view: ContainerView, desired: ContainerSpec) -> bool:
    """Pure: ours, this spec and running, so there is nothing to check or do."""
    return is_ours(view, desired) and view.status == "running" and view.labels.get(LABEL_SPEC_HASH) == desired.spec_hash


def _changed_fields(view: ContainerView, desired: ContainerSpec) -> str:
    """Why the hashes differ, from the spec label: 'image "a" -> "b", args' or the hidden part."""
    try:
        old = json.loads(view.labels.get(LABEL_SPEC, "{}"))
    except ValueError:
        old = {}
    changes = []
    for key, new in desired.public.items():
        if old.get(key) == new:
            continue
        shown = f"{key} {json.dumps(old.get(key))} -> {json.dumps(new)}"
        changes.append(shown if len(shown) <= 120 else key)
    # Equal visible fields but another hash: an env value, the key, or provision's command layout.
    return ", ".join(changes) if changes else "environment values, api_key or the command"


def url_host(bind: str) -> str:
    """Where this machine reaches a port published on ``bind``."""
    if bind in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind == "::":
        return "[::1]"
    return f"[{bind}]" if ":" in bind else bind


def container_record(desired: ContainerSpec, container_id: str) -> dict[str, Any]:
    """Pure: what state keeps of the container, enough to find and describe it later."""
    public = desired.public
    return {
        "engine": ENGINE,
        "container_id": container_id,
        "container": desired.name,
        "image": public["image"],
        "port": public["port"],
        "bind": public["bind"],
        "served_model_name": desired.served,
        "spec_hash": desired.spec_hash,
    }


def container_view(summary: Mapping[str, Any]) -> ContainerView:
    """Pure: one entry of the engine's container list, as provision reads it."""
    return ContainerView(
        id=summary["Id"],
        name=(summary.get("Names") or ["/"])[0].lstrip("/"),
        status=summary.get("State", ""),
        labels=summary.get("Labels") or {},
        host_ports=tuple(p["PublicPort"] for p in summary.get("Ports") or [] if p.get("PublicPort")),
    )


def plan(name: str, spec: VllmDeployment, observed: Observed, ctx: DeployContext) -> Action:
    """Pure: the action that takes the observed container to the desired one, or why it cannot."""
    desired = desired_spec(name, spec, ctx)
    view = observed.container
    if view is not None and not is_ours(view, desired):
        owner = view.labels.get(LABEL_MANIFEST)
        whose = f"belongs to manifest {owner}" if owner else "was not created by provision"
        raise DeploymentError(
            f"container {desired.name} already exists and {whose}; provision leaves it alone",
            hint=f"remove it (`docker rm -f {desired.name}`) or rename this deployment",
            resource=name,
        )
    details = {"container": desired.name, "container_id": view.id if view else None, "spec_hash": desired.spec_hash}
    if view is None:
        change, reason = Change.CREATE, f"no container {desired.name}"
    elif view.labels.get(LABEL_SPEC_HASH) != desired.spec_hash:
        change, reason = Change.REPLACE, f"spec changed: {_changed_fields(view, desired)}"
    elif view.status == "dead":
        change, reason = Change.REPLACE, "the container is dead"
    elif view.status != "running":
        change, reason = Change.UPDATE, f"start the {view.status} container"
    else:
        return Action(
            "deployment",
            name,
            Change.NOOP,
            f"{desired.name} running",
            details={**details, "record": container_record(desired, view.id)},
        )
    if observed.preflight is not None:
        _check_preflight(name, spec, observed.preflight)
    return Action("deployment", name, change, reason, details=details)


def _check_preflight(name: str, spec: VllmDeployment, facts: Preflight) -> None:
    if facts.runtimes is not None and "nvidia" not in facts.runtimes:
        raise PreflightError(
            f"gpus: {spec.gpus} requested, but the Docker engine has no NVIDIA runtime "
            f"(runtimes: {', '.join(facts.runtimes) or 'none'})",
            hint="install nvidia-container-toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker` "
            "and restart Docker; or set `gpus: 0` to start without GPUs",
            resource=name,
        )
    if not facts.image_present and facts.pull_error is not None:
        raise PreflightError(
            f"image {spec.image} is not on this machine and cannot be pulled: {facts.pull_error}",
            hint="check the image name and tag, `docker login` for a private registry, or `docker load` it",
            resource=name,
        )
    if facts.port_error is not None:
        raise PreflightError(
            f"port {spec.bind}:{spec.port} cannot be used: {facts.port_error}",
            hint=f"free it (`ss -ltnp 'sport = :{spec.port}'` shows who holds it) or set `port:` to another",
            resource=name,
        )
