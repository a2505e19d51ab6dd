"""Engine ``ollama``: serve a model on an Ollama server (chat and embeddings: :mod:`provision.client.ollama`).

:class:`OllamaBackend` (the deployment) serves an ``ollama://`` model as pulled, or creates
one from a ``file://`` GGUF (``/api/blobs`` then ``/api/create``); see its docstring.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..errors import DeploymentError
from ..hashing import sha256_file
from ..manifest import Manifest, OllamaDeployment
from ..plan import Action, Change
from ..sources.ollama import (
    canonical_name,
    delete_model,
    list_digests,
    ollama_client,
    ollama_host,
    unreachable,
)
from .base import DeployContext

GGUF_MAGIC = b"GGUF"
CREATED_NAMESPACE = "provision"  # models created from GGUF files: provision/<deployment>:latest


@dataclass(frozen=True)
class Served:
    """What one observe found for a deployment: the Ollama model it serves, and its GGUF source."""

    host: str
    model: str  # the Ollama name, e.g. "qwen3:0.6b" or "provision/chat:latest"
    digest: str | None  # on the server now; None when missing
    gguf: str | None = None  # a file:// model: the GGUF's path inside the model folder
    resolved: str | None = None  # ...and the local source's fingerprint


def served_model(name: str, spec: OllamaDeployment, manifest: Manifest) -> str:
    """The Ollama name a deployment chats with: its ollama:// model, or the one created for it."""
    model = manifest.models[spec.model]
    if model.scheme == "file":
        return f"{CREATED_NAMESPACE}/{name}:latest"
    return canonical_name(model.location, resource=name)


class OllamaBackend:
    """``engine: ollama``: serve an ``ollama://`` model as pulled, or create one from a GGUF file.

    Protocol served for a ``file://`` GGUF model (after the engine placed the file):
    ``HEAD /api/blobs/sha256:<hex>`` (200: the server has it; 404: upload with
    ``POST /api/blobs/...``, 400 on a digest mismatch), then ``POST /api/create`` with
    ``files: {"<name>.gguf": digest}`` and the deployment's template, system and parameters.
    The created model is ``provision/<deployment>:latest``, recorded as ``created`` so
    ``destroy`` deletes it, and only it; an ``ollama://`` model belongs to the model step.
    """

    engine: ClassVar[str] = "ollama"

    def observe(self, name: str, spec: OllamaDeployment, ctx: DeployContext) -> Served:
        host = ollama_host(ctx.manifest)
        model = served_model(name, spec, ctx.manifest)
        gguf = resolved = None
        if ctx.manifest.models[spec.model].scheme == "file":
            gguf, resolved = _gguf_source(name, spec.model, ctx.manifest)
        with ollama_client(host) as client:
            digest = list_digests(client, host).get(model.casefold())
        return Served(host, model, digest, gguf, resolved)

    def plan(self, name: str, spec: OllamaDeployment, observed: Served, ctx: DeployContext) -> Action:
        where = f"served by Ollama at {observed.host} as {observed.model}"
        details: dict[str, Any] = {"host": observed.host, "model": observed.model}
        if observed.gguf is None:
            if observed.digest is None:
                return Action("deployment", name, Change.CREATE, f"{where} once it is pulled", details=details)
            return Action("deployment", name, Change.NOOP, where, details=details)
        details |= {"gguf": observed.gguf, "resolved": observed.resolved, "settings": _settings_digest(spec)}
        if observed.digest is None:
            return Action(
                "deployment",
                name,
                Change.CREATE,
                f"create {observed.model} from {Path(observed.gguf).name}",
                details=details,
            )
        record = ctx.records.get(name) or {}
        if not record.get("created") or record.get("model") != observed.model:
            raise DeploymentError(
                f"Ollama at {observed.host} already has a model {observed.model} that provision did not create",
                resource=name,
                hint=f"remove it (`ollama rm {observed.model}`) or rename the deployment",
            )
        if observed.digest != record.get("digest"):
            reason = f"{observed.model} changed on the server: create it again"
        elif observed.resolved != record.get("resolved"):
            reason = "the GGUF file changed: create the model again"
        elif details["settings"] != record.get("settings"):
            reason = "template, system or parameters changed: create the model again"
        else:
            return Action("deployment", name, Change.NOOP, where, details=details)
        return Action("deployment", name, Change.UPDATE, reason, details=details)

    def apply(self, action: Action, spec: OllamaDeployment, ctx: DeployContext) -> dict[str, Any]:
        host, model = action.details["host"], action.details["model"]
        record = {"engine": self.engine, "host": host, "model": model}
        if "gguf" not in action.details:
            if action.change is not Change.NOOP:  # the model step pulled it: make sure
                with ollama_client(host) as client:
                    if model.casefold() not in list_digests(client, host):
                        raise DeploymentError(
                            f"{model} is not on the Ollama server at {host}",
                            resource=action.name,
                            hint="run `provision apply` again, or `ollama pull` it",
                        )
            return {**record, "created": False}  # the model step owns an ollama:// model
        if action.change is Change.NOOP:
            return dict(ctx.records[action.name])
        path = ctx.model_dirs[spec.model] / action.details["gguf"]
        _check_magic(action.name, path)
        with ollama_client(host) as client:
            placed = (ctx.model_locks.get(spec.model) or {}).get("files", {}).get(action.details["gguf"], {})
            blob = _upload_blob(action.name, client, host, path, placed.get("sha256"))
            _create(action.name, client, host, model, spec, {_gguf_name(path): blob}, ctx)
            digest = list_digests(client, host).get(model.casefold())
        if digest is None:
            raise DeploymentError(
                f"Ollama at {host} reported success but does not list {model}",
                resource=action.name,
                hint="see the Ollama server's log",
            )
        return {
            **record,
            "created": True,
            "digest": digest,
            "blob": blob,
            "resolved": action.details["resolved"],
            "settings": action.details["settings"],
        }

    def remove(self, name: str, record: Mapping[str, Any], ctx: DeployContext) -> None:
        if not (record.get("created") and record.get("model")):
            return  # an ollama:// model: the model step decides
        host = record.get("host") or ollama_host(ctx.manifest)
        with ollama_client(host) as client:
            delete_model(client, host, record["model"], resource=name)


def _gguf_source(name: str, model: str, manifest: Manifest) -> tuple[str, str]:
    """The GGUF's path inside the model folder and the source's fingerprint; checked before any copy."""
    from ..sources.local import LocalSource

    spec = manifest.models[model]
    root = manifest.local_source_path(spec)
    if not root.exists():
        raise DeploymentError(
            f"GGUF file {root} does not exist",
            resource=name,
            hint=f"fix `source:` of model {model} (relative paths start at the manifest's folder)",
        )
    snapshot = LocalSource(manifest).resolve(model, spec)
    candidates = [f.path for f in snapshot.files if root.is_file() or f.path.lower().endswith(".gguf")]
    if len(candidates) != 1:
        raise DeploymentError(
            f"{root} holds {len(candidates)} .gguf files; engine ollama needs exactly one",
            resource=name,
            hint="point `source: file://...` at the .gguf file itself",
        )
    _check_magic(name, root if root.is_file() else root / candidates[0])
    return candidates[0], snapshot.resolved


def _check_magic(name: str, path: Path) -> None:
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise DeploymentError(f"cannot read {path}: {exc.strerror or exc}", resource=name) from None
    if magic != GGUF_MAGIC:
        raise DeploymentError(
            f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})",
            resource=name,
            hint="engine ollama takes a .gguf file (llama.cpp's convert_hf_to_gguf.py makes one); "
            "serve a safetensors folder with engine vllm or transformers",
        )


def _settings_digest(spec: OllamaDeployment) -> str:
    """What of the deployment goes into the created model, as one short digest."""
    settings = {"template": spec.template, "system": spec.system, "parameters": spec.parameters}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _gguf_name(path: Path) -> str:
    # Ollama tells GGUF from safetensors by the file name's suffix.
    return path.name if path.name.lower().endswith(".gguf") else f"{path.name}.gguf"


def _upload_blob(name: str, client: Any, host: str, path: Path, sha256: str | None) -> str:
    """The blob's digest, uploading the file only when the server lacks it.

    ``sha256`` is what the engine computed while placing the file (from the lock), if known.
    """
    import httpx
    import ollama

    blob = "sha256:" + (sha256 or sha256_file(path))
    try:
        if httpx.head(f"{host}/api/blobs/{blob}", timeout=10).status_code == 200:
            return blob
        uploaded = client.create_blob(path)
    except ollama.ResponseError as exc:  # 400 when the bytes that arrived do not match the digest
        raise DeploymentError(
            f"Ollama at {host} rejected the upload of {path.name}: {exc.error}",
            resource=name,
            hint="run `provision verify`, then `provision apply` again",
        ) from None
    except (ConnectionError, httpx.TransportError) as exc:
        raise unreachable(host, exc) from None
    if uploaded != blob:
        raise DeploymentError(
            f"{path} changed since it was placed (sha256 {uploaded[7:19]}, lock {blob[7:19]})",
            resource=name,
            hint="run `provision verify`, then `provision apply` again",
        )
    return blob


def _create(
    name: str, client: Any, host: str, model: str, spec: OllamaDeployment, files: dict[str, str], ctx: DeployContext
) -> None:
    import httpx
    import ollama

    try:
        for part in client.create(
            model=model,
            files=files,
            template=spec.template,
            system=spec.system,
            parameters=spec.parameters,
            stream=True,
        ):
            if part.status:
                ctx.on_status(name, part.status)
    except ollama.ResponseError as exc:
        raise DeploymentError(
            f"Ollama at {host} could not create {model}: {exc.error}", resource=name, hint="see the Ollama server's log"
        ) from None
    except (ConnectionError, httpx.TransportError) as exc:
        raise unreachable(host, exc) from None
