"""``provision render kubernetes``: the manifest and its lock as Kubernetes objects (pure).

Per ``vllm`` deployment ``D`` of a hub model ``M`` (``hf://``, ``ms://``)::

    PersistentVolumeClaim  model-M        the locked bytes plus headroom, ReadWriteOnce
    ConfigMap              model-M-files  fetch_files.py (stdlib only) + files.json from the lock
    Deployment             D              init container "fetch-model" (python:3.12-slim) fetches
                                          and verifies every locked file into the volume, then the
                                          vLLM container serves it, mounted read-only
    Service                D              ClusterIP, port = the deployment's port -> 8000

Per ``ollama`` deployment ``D`` of an ``ollama://`` model: PersistentVolumeClaim ``ollama-D``
and a Deployment whose init container pulls the model and checks the locked digest, then a
Service on 11434. ``transformers`` and ``openai`` deployments, ``file://`` models and models no
rendered deployment uses are listed as skipped.

Why an init container and not a Job: the server cannot start before the files are verified
(an init container must exit 0 first), every restart re-verifies what is on the volume, and
`kubectl apply -f DIR` needs no ordering; a Job's pod template is immutable, so a new lock
could not be applied over an old Job. Why python:3.12-slim: a Docker official image, on
every registry mirror and for amd64 and arm64, whose standard library does Range requests,
redirects and sha256 without installing anything; curl images lack a hashing tool that can
resume a digest.

Secrets are only referenced (``secretKeyRef`` / ``envFrom``): a value never enters an object.
Each object carries ``provision.io/spec-hash`` (sha256 of the object without it), and the
pod template the hash of ``files.json``, so a new lock rolls the pods and an unchanged one
changes nothing. The same input renders byte-identical output.

One module past 400 lines on purpose: a deployment's objects name one another (claim, ConfigMap,
Deployment, Service, their labels and hashes) and both engines' builders share the metadata,
claim and Service helpers; the fetch script (:mod:`.fetch_files`), the lock's view
(:mod:`.locked`) and the writing (:mod:`.output`) are already apart.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..deployments.vllm_spec import CONTAINER_PORT, MOUNT_ROOT, server_args
from ..errors import RenderError
from ..manifest import Manifest, ModelSpec, OllamaDeployment, VllmDeployment
from .locked import LockedFiles, LockedOllama, locked_model

FETCH_IMAGE = "python:3.12-slim"
OLLAMA_IMAGE = "ollama/ollama:0.17.6"
OLLAMA_PORT = 11434
OLLAMA_VOLUME = "20Gi"  # the lock pins a digest, not a size
STEP_MOUNT = "/etc/provision"
SPEC_HASH = "provision.io/spec-hash"
FILES_HASH = "provision.io/files-hash"
MANAGED = {"app.kubernetes.io/managed-by": "provision"}
GIB = 1 << 30
HEADROOM = 1.10  # filesystem overhead; plus one GiB below
SHM_DEFAULT = "2Gi"
PROBE_PERIOD = 10
STARTUP_FLOOR = 300  # seconds before any weights are read (CUDA init, compile, graphs)
STARTUP_PER_GIB = 20  # seconds per GiB of weights: ~50 MB/s from network storage
LABEL_MAX = 63
_LABEL_CHARS = re.compile(r"[^a-z0-9-]+")
_TOKEN_SECRETS = {
    "hf": ("provision-huggingface-token", "HF_TOKEN", "bearer"),
    "ms": ("provision-modelscope-token", "MODELSCOPE_API_TOKEN", "modelscope"),
}
STEP_SCRIPT = (Path(__file__).parent / "fetch_files.py").read_text(encoding="utf-8")


@dataclass(frozen=True)
class RenderOptions:
    namespace: str | None = None
    storage_class: str | None = None
    gpus_per_node: int | None = None


@dataclass(frozen=True)
class KubeObject:
    kind: str
    name: str
    body: Mapping[str, Any]

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.kind.lower()}.yaml"


@dataclass(frozen=True)
class SecretRef:
    """A Secret the objects read and the user must create; ``keys`` map key -> suggested variable."""

    name: str
    keys: tuple[tuple[str, str], ...]
    purpose: str
    required: bool

    def command(self, namespace: str | None) -> str:
        ns = f" -n {namespace}" if namespace else ""
        literals = " ".join(f'--from-literal={key}="${var}"' for key, var in self.keys)
        return f"kubectl{ns} create secret generic {self.name} {literals}"


@dataclass(frozen=True)
class Rendered:
    objects: tuple[KubeObject, ...]
    secrets: tuple[SecretRef, ...]
    skipped: tuple[tuple[str, str], ...]  # (address, why)


_RFC1123_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_RFC1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


def check_options(options: RenderOptions) -> RenderOptions:
    if options.namespace is not None and not _RFC1123_LABEL.fullmatch(options.namespace):
        raise RenderError(
            f"--namespace {options.namespace!r} is not a valid namespace name",
            hint="lower-case letters, digits and '-', at most 63 characters",
        )
    if options.storage_class is not None and not _RFC1123_SUBDOMAIN.fullmatch(options.storage_class):
        raise RenderError(
            f"--storage-class {options.storage_class!r} is not a valid StorageClass name",
            hint="lower-case letters, digits, '-' and '.'; see `kubectl get storageclass`",
        )
    return options


def dns_label(name: str) -> str:
    """A valid DNS-1035 label (Service names need one): lower-case letters, digits and '-',
    starting with a letter, at most 63; a longer name keeps its start and gains a hash."""
    clean = re.sub("-{2,}", "-", _LABEL_CHARS.sub("-", name.lower())).strip("-")
    if not clean or not clean[0].isalpha():
        clean = f"p-{clean}".rstrip("-")
    if len(clean) <= LABEL_MAX:
        return clean
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{clean[: LABEL_MAX - 11].rstrip('-')}-{digest}"


def spec_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def volume_size(total_bytes: int) -> str:
    """The claim for ``total_bytes`` of files: 10% and one GiB of headroom, whole GiB."""
    return f"{math.ceil((total_bytes * HEADROOM + GIB) / GIB)}Gi"


def startup_budget(total_bytes: int, floor: float) -> int:
    """Seconds vLLM may take to answer /health: scaled to the weights, at least ``floor``."""
    return math.ceil(max(floor, STARTUP_FLOOR + STARTUP_PER_GIB * total_bytes / GIB))


def shm_quantity(docker_size: str | None) -> str:
    """Docker's ``shm_size`` (``16g``, ``512m``, bytes) as a Kubernetes quantity."""
    if docker_size is None:
        return SHM_DEFAULT
    match = re.fullmatch(r"(\d+)\s*([bkmg]?)b?", docker_size.strip().lower())
    if match is None:
        raise RenderError(f"shm_size {docker_size!r} is not a size such as 16g or 512m")
    number, unit = match.groups()
    return number + {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi"}[unit]


def gpu_count(name: str, spec: VllmDeployment, gpus_per_node: int | None) -> int:
    if spec.gpus == "all":
        if gpus_per_node is None:
            raise RenderError(
                "gpus: all has no meaning in a cluster",
                resource=name,
                hint="pass --gpus-per-node N, or set `gpus: N` in the manifest",
            )
        return gpus_per_node
    if isinstance(spec.gpus, tuple):
        raise RenderError(
            f"gpus: {list(spec.gpus)} names devices of one machine",
            resource=name,
            hint="a pod asks for a number of GPUs: set `gpus: N`",
        )
    return spec.gpus


def _meta(name: str, component: str, options: RenderOptions) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if options.namespace:
        meta["namespace"] = options.namespace
    meta["labels"] = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component, **MANAGED}
    return meta


def _object(api: str, kind: str, meta: dict[str, Any], **fields: Any) -> KubeObject:
    body = {"apiVersion": api, "kind": kind, "metadata": meta, **fields}
    meta["annotations"] = {SPEC_HASH: spec_hash(body)}
    return KubeObject(kind, meta["name"], body)


def _claim(name: str, size: str, component: str, options: RenderOptions) -> KubeObject:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if options.storage_class:
        spec["storageClassName"] = options.storage_class
    return _object("v1", "PersistentVolumeClaim", _meta(name, component, options), spec=spec)


def files_plan(model: str, spec: ModelSpec, locked: LockedFiles, file_url: Callable[[str], str]) -> str:
    """``files.json`` for the download step: exactly the locked files at the locked revision."""
    files = [{"path": f.path, "size": f.size, "sha256": f.sha256, "url": file_url(f.path)} for f in locked.files]
    auth = _TOKEN_SECRETS[spec.scheme][2]
    return json.dumps({"target": f"{MOUNT_ROOT}/{model}", "auth": auth, "files": files}, indent=1) + "\n"


def fetch_container(model: str, scheme: str) -> dict[str, Any]:
    """The init container that fills the model volume; run as is by the Docker test."""
    secret = _TOKEN_SECRETS[scheme][0]
    return {
        "name": "fetch-model",
        "image": FETCH_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", f"{STEP_MOUNT}/fetch_files.py", f"{STEP_MOUNT}/files.json"],
        "env": [
            {
                "name": "PROVISION_HUB_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": "token", "optional": True}},
            }
        ],
        "volumeMounts": [
            {"name": "model", "mountPath": f"{MOUNT_ROOT}/{model}"},
            {"name": "fetch", "mountPath": STEP_MOUNT, "readOnly": True},
        ],
    }


def _models_probe(served: str) -> list[str]:
    """Exit 0 only when /v1/models lists ``served`` (with the API key when one is set)."""
    code = (
        "import json,os,sys,urllib.request as u;"
        f"r=u.Request('http://127.0.0.1:{CONTAINER_PORT}/v1/models');"
        "k=os.environ.get('VLLM_API_KEY');"
        "k and r.add_header('Authorization','Bearer '+k);"
        "ids=[m.get('id') for m in json.load(u.urlopen(r,timeout=5)).get('data',[])];"
        "sys.exit(0 if sys.argv[1] in ids else 1)"
    )
    return ["python3", "-c", code, served]


def vllm_objects(
    name: str, spec: VllmDeployment, model_spec: ModelSpec, locked: LockedFiles, plan: str, options: RenderOptions
) -> tuple[list[KubeObject], list[SecretRef]]:
    """The Deployment and Service of one vLLM deployment (the model's claim and ConfigMap apart)."""
    obj_name = dns_label(name)
    gpus = gpu_count(name, spec, options.gpus_per_node)
    served = spec.served_model_name or name
    total = sum(f.size for f in locked.files)
    env: list[dict[str, Any]] = [{"name": "HF_HUB_OFFLINE", "value": "1"}]
    secrets: list[SecretRef] = []
    container: dict[str, Any] = {"name": "vllm", "image": spec.image, "args": server_args(name, spec)}
    if spec.api_key is not None:
        key_secret = dns_label(f"{name}-api-key")
        env.append({"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": key_secret, "key": "api-key"}}})
        secrets.append(SecretRef(key_secret, (("api-key", "VLLM_API_KEY"),), f"API key of {name}", True))
    container["env"] = env
    if spec.env:  # values may be tokens: they travel in a Secret, never in the rendered file
        env_secret = dns_label(f"{name}-env")
        container["envFrom"] = [{"secretRef": {"name": env_secret}}]
        secrets.append(SecretRef(env_secret, tuple((k, k) for k in sorted(spec.env)), f"environment of {name}", True))
    container["ports"] = [{"name": "http", "containerPort": CONTAINER_PORT}]
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    container["volumeMounts"] = [
        {"name": "model", "mountPath": f"{MOUNT_ROOT}/{spec.model}", "readOnly": True},
        {"name": "shm", "mountPath": "/dev/shm"},
    ]
    http_get = {"path": "/health", "port": "http"}
    budget = startup_budget(total, spec.startup_timeout)
    container["startupProbe"] = {
        "httpGet": http_get,
        "periodSeconds": PROBE_PERIOD,
        "timeoutSeconds": 5,
        "failureThreshold": math.ceil(budget / PROBE_PERIOD),
    }
    container["readinessProbe"] = {
        "exec": {"command": _models_probe(served)},
        "periodSeconds": PROBE_PERIOD,
        "timeoutSeconds": 8,
        "failureThreshold": 3,
    }
    container["livenessProbe"] = {
        "httpGet": http_get,
        "periodSeconds": PROBE_PERIOD,
        "timeoutSeconds": 5,
        "failureThreshold": 6,
    }
    model_claim, files_map = dns_label(f"model-{spec.model}"), dns_label(f"model-{spec.model}-files")
    volumes = [
        {"name": "model", "persistentVolumeClaim": {"claimName": model_claim}},
        {"name": "fetch", "configMap": {"name": files_map}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_quantity(spec.shm_size)}},
    ]
    selector = {"app.kubernetes.io/name": obj_name, **MANAGED}
    pod = {
        "metadata": {
            "labels": {**selector, "app.kubernetes.io/component": "server"},
            "annotations": {
                FILES_HASH: hashlib.sha256(plan.encode()).hexdigest(),
                "provision.io/model-revision": locked.resolved,
            },
        },
        "spec": {
            "initContainers": [fetch_container(spec.model, model_spec.scheme)],
            "containers": [container],
            "volumes": volumes,
        },
    }
    # Recreate: a rolling update would need a second set of GPUs and the ReadWriteOnce volume twice.
    deployment = _object(
        "apps/v1",
        "Deployment",
        _meta(obj_name, "server", options),
        spec={"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": selector}, "template": pod},
    )
    service = _service(obj_name, spec.port, options)
    return [deployment, service], secrets


def _service(name: str, port: int, options: RenderOptions) -> KubeObject:
    return _object(
        "v1",
        "Service",
        _meta(name, "server", options),
        spec={
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": name, **MANAGED},
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    )


def _ollama_pull_script(model: str, digest: str) -> str:
    # `ollama list` shows the first 12 hex of the manifest digest as ID; Ollama pulls tags,
    # so a tag that moved since the lock is caught here, before the server answers anyone.
    short = digest.removeprefix("sha256:")[:12]
    return (
        f"ollama serve >/tmp/serve.log 2>&1 & pid=$!\n"
        f"until ollama list >/dev/null 2>&1; do sleep 1; done\n"
        f'ollama pull "{model}" || {{ kill $pid; exit 1; }}\n'
        f"id=$(ollama list | awk -v m=\"{model}\" '$1 == m {{print $2}}')\n"
        f"kill $pid; wait $pid\n"
        f'[ "$id" = "{short}" ] || {{ echo "error: {model} is $id, the lock pins {short}: the tag moved; '
        f'run provision apply --update and render again" >&2; exit 1; }}\n'
    )


def ollama_objects(
    name: str, spec: OllamaDeployment, model: str, locked: LockedOllama, options: RenderOptions
) -> list[KubeObject]:
    obj_name = dns_label(name)
    claim = dns_label(f"ollama-{name}")
    mount = [{"name": "ollama", "mountPath": "/root/.ollama"}]
    selector = {"app.kubernetes.io/name": obj_name, **MANAGED}
    check = {"exec": {"command": ["ollama", "show", model]}, "periodSeconds": PROBE_PERIOD, "timeoutSeconds": 8}
    server = {
        "name": "ollama",
        "image": OLLAMA_IMAGE,
        "env": [{"name": "OLLAMA_HOST", "value": "0.0.0.0:11434"}],
        "ports": [{"name": "http", "containerPort": OLLAMA_PORT}],
        "volumeMounts": mount,
        "startupProbe": {
            "httpGet": {"path": "/api/version", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "readinessProbe": {**check, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": {"path": "/api/version", "port": "http"},
            "periodSeconds": PROBE_PERIOD,
            "failureThreshold": 6,
        },
    }
    pull = {
        "name": "pull-model",
        "image": OLLAMA_IMAGE,
        "command": ["/bin/sh", "-c", _ollama_pull_script(model, locked.digest)],
        "volumeMounts": mount,
    }
    pod = {
        "metadata": {
            "labels": {**selector, "app.kubernetes.io/component": "server"},
            "annotations": {"provision.io/model-digest": locked.digest},
        },
        "spec": {
            "initContainers": [pull],
            "containers": [server],
            "volumes": [{"name": "ollama", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }
    deployment = _object(
        "apps/v1",
        "Deployment",
        _meta(obj_name, "server", options),
        spec={"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": selector}, "template": pod},
    )
    return [_claim(claim, OLLAMA_VOLUME, "model-store", options), deployment, _service(obj_name, OLLAMA_PORT, options)]


def render(
    manifest: Manifest,
    lock: Mapping[str, Mapping[str, Any]],
    options: RenderOptions,
    file_url: Callable[[str, ModelSpec, str, str], str],
) -> Rendered:
    """Everything the manifest asks for that can run in a cluster; pure.

    ``lock`` is the lock's entries by model name; ``file_url(scheme, spec, resolved, path)``
    the URL a source fetches a locked file from.
    """
    objects: dict[tuple[str, str], KubeObject] = {}
    secrets: dict[str, SecretRef] = {}
    skipped: list[tuple[str, str]] = []
    unlocked: dict[str, str] = {}
    used: set[str] = set()
    for name, dep in sorted(manifest.deployments.items()):
        address = f"deployment.{name}"
        if isinstance(dep, (VllmDeployment, OllamaDeployment)):
            model_spec = manifest.models[dep.model]
            if model_spec.scheme == "file":
                why = f"its model {dep.model} is a local file:// source; copy it into a volume and serve it yourself"
                skipped.append((address, why))
                continue
            used.add(dep.model)
            found = locked_model(dep.model, model_spec, lock.get(dep.model))
            if isinstance(found, str):
                unlocked[dep.model] = found
                continue
            if isinstance(dep, VllmDeployment) and isinstance(found, LockedFiles):
                plan = files_plan(
                    dep.model,
                    model_spec,
                    found,
                    functools.partial(file_url, model_spec.scheme, model_spec, found.resolved),
                )
                model_objects = [
                    _claim(dns_label(f"model-{dep.model}"), volume_size(found.total), "model-store", options),
                    _object(
                        "v1",
                        "ConfigMap",
                        _meta(dns_label(f"model-{dep.model}-files"), "model-files", options),
                        data={"fetch_files.py": STEP_SCRIPT, "files.json": plan},
                    ),
                ]
                made, needed = vllm_objects(name, dep, model_spec, found, plan, options)
                token, variable, _ = _TOKEN_SECRETS[model_spec.scheme]
                needed.append(
                    SecretRef(token, (("token", variable),), f"hub token for {model_spec.scheme}:// models", False)
                )
            elif isinstance(dep, OllamaDeployment) and isinstance(found, LockedOllama):
                model_objects, needed = [], []
                made = ollama_objects(name, dep, found.model, found, options)
            else:  # the manifest's validation pairs engines and sources; a lock of another kind
                raise RenderError(
                    f"the lock entry of {dep.model} does not fit engine {dep.engine}",
                    resource=name,
                    hint="run `provision apply --update` to rewrite the lock",
                )
            for obj in [*model_objects, *made]:
                key = (obj.kind, obj.name)
                if key in objects and objects[key].body != obj.body:
                    raise RenderError(
                        f"two resources render to {obj.kind} {obj.name}",
                        resource=name,
                        hint="rename one: names are lower-cased and '.'/'_' become '-'",
                    )
                objects[key] = obj
            secrets.update({s.name: s for s in needed})
        else:
            skipped.append((address, f"engine {dep.engine} has nothing to run in a cluster"))
    if unlocked:
        listing = "; ".join(f"{model} ({why})" for model, why in sorted(unlocked.items()))
        raise RenderError(f"not locked yet: {listing}", hint="run `provision apply` or `provision plan --update` first")
    skipped += [(f"model.{m}", "no rendered deployment uses it") for m in sorted(set(manifest.models) - used)]
    ordered = sorted(objects.values(), key=lambda o: (o.name, o.kind))
    return Rendered(tuple(ordered), tuple(secrets[k] for k in sorted(secrets)), tuple(skipped))
