"""Inspection, read-only: ``status`` (what is applied, and what is there now), the servers a
manifest uses, and ``verify`` (every locked file re-hashed, offline)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..deployments import decide
from ..errors import ProvisionError
from ..files import plural
from ..hashing import sha256_file
from ..ownership import MARKER, inside
from ..plan import Action, Change
from ..sources import FILE_SCHEMES
from .common import size_of
from .deployments import DeploymentReconciler
from .models import ModelReconciler

Problem = Literal["missing", "corrupt", "extra"]


@dataclass(frozen=True)
class FileCheck:
    model: str
    path: str
    problem: Problem


@dataclass
class ModelStatus:
    """A model's row of ``status``. ``state``: ``present``, ``missing N files``, ``not applied``
    (files), or the server's view (``ok``, ``missing``, ``drift``, ``unknown``, ``unreachable``)."""

    name: str
    source: str
    applied: bool
    on_server: bool  # ollama://: its lock pins a digest, shown even when there is none yet
    state: str | None = None
    detail: str | None = None
    resolved: str | None = None
    bytes: int | None = None
    kind: Literal["model"] = "model"

    def as_dict(self) -> dict[str, object]:
        """The row of ``status --json``."""
        row: dict[str, object] = {"kind": self.kind, "name": self.name, "source": self.source, "applied": self.applied}
        if self.on_server:
            return row | {"resolved": self.resolved, "state": self.state, "detail": self.detail}
        given = {"state": self.state, "resolved": self.resolved, "bytes": self.bytes, "detail": self.detail}
        return row | {key: value for key, value in given.items() if value is not None}


@dataclass
class DeploymentStatus:
    """A deployment's row of ``status``, from what its backend would do now."""

    name: str
    engine: str
    model: str | None
    applied: bool
    state: str
    detail: str
    kind: Literal["deployment"] = "deployment"

    def as_dict(self) -> dict[str, object]:
        """The row of ``status --json``."""
        return {
            "kind": self.kind,
            "name": self.name,
            "engine": self.engine,
            "model": self.model,
            "applied": self.applied,
            "state": self.state,
            "detail": self.detail,
        }


StatusRow = ModelStatus | DeploymentStatus


@dataclass(frozen=True)
class ServerStatus:
    server: Literal["ollama", "docker"]
    address: str
    reachable: bool
    version: str | None
    error: str | None


def status(models: ModelReconciler, deployments: DeploymentReconciler) -> list[StatusRow]:
    """Per resource: applied here? and what is there now. Files by stat against the lock
    (offline); server models and deployments through their read-only observe."""
    manifest, lock = models.manifest, models.lock
    records = models.state.records(manifest.path)
    rows: list[StatusRow] = []
    model_rows: dict[str, ModelStatus] = {}
    on_server: dict[str, list[str]] = {}
    for name, spec in manifest.models.items():
        entry = lock.models.get(name)
        row = ModelStatus(name, spec.source, name in records["models"], on_server=spec.scheme not in FILE_SCHEMES)
        rows.append(row)
        model_rows[name] = row
        if row.on_server:
            on_server.setdefault(spec.scheme, []).append(name)
            row.resolved = (entry or {}).get("digest")
        elif entry is None:
            row.state = "not applied"
        else:
            model_dir = manifest.model_dir(name)
            missing = [p for p, meta in entry["files"].items() if size_of(model_dir / p) != meta["size"]]
            row.state = f"missing {plural(len(missing), 'file')}" if missing else "present"
            row.resolved = entry["resolved"]
            row.bytes = sum(meta["size"] for meta in entry["files"].values())
    for scheme, names in on_server.items():
        try:
            server = models.server_source(scheme)
            observed = server.observe(names)
        except ProvisionError as exc:
            for name in names:
                model_rows[name].state, model_rows[name].detail = "unreachable", exc.message
            continue
        for name in names:
            decide_model = functools.partial(
                server.plan, name, manifest.models[name], observed, lock.models.get(name), update=False, locked=False
            )
            model_rows[name].state, model_rows[name].detail = describe(decide_model)
    ctx = deployments.context()
    for name, dep in manifest.deployments.items():
        state, detail = describe(functools.partial(decide, name, dep, ctx))
        rows.append(DeploymentStatus(name, dep.engine, dep.model, name in records["deployments"], state, detail))
    return rows


def describe(decide: Callable[[], Action]) -> tuple[str, str]:
    """A resource's state and detail in words, from what its backend would do now."""
    try:
        action = decide()
    except ProvisionError as exc:
        return "unknown", exc.message
    state = {Change.NOOP: "ok", Change.CREATE: "missing"}.get(action.change, "drift")
    if action.details.get("drift"):  # left alone on purpose, but not what the lock pins
        state = "drift"
    # A backend with nothing to create still knows when it could not run (transformers
    # without its model folder) or that it cannot tell offline (a hosted API).
    state = action.details.get("state", state)
    return state, action.reason


def servers(models: ModelReconciler) -> list[ServerStatus]:
    """Reachability and version of the servers this manifest uses (Ollama, Docker)."""
    from ..hardware import probe_docker, probe_ollama  # docker-py and httpx: only when asked

    manifest = models.manifest
    engines = {d.engine for d in manifest.deployments.values()}
    out: list[ServerStatus] = []
    if "ollama" in engines or any(m.scheme == "ollama" for m in manifest.models.values()):
        probe = probe_ollama(manifest.settings.ollama.host)
        out.append(ServerStatus("ollama", probe.host, probe.reachable, probe.version, probe.error))
    if "vllm" in engines:
        docker = probe_docker()
        out.append(ServerStatus("docker", docker.host, docker.reachable, docker.server_version, docker.error))
    return out


def unlocked_models(models: ModelReconciler) -> list[str]:
    """Downloaded (file-based) models that no apply has locked yet: verify cannot vouch for them."""
    return [
        name
        for name, spec in models.manifest.models.items()
        if spec.scheme in FILE_SCHEMES and name not in models.lock.models
    ]


def verify(models: ModelReconciler, *, workers: int = 4) -> list[FileCheck]:
    """Re-hash every locked file offline; report missing, corrupt and extra files."""
    problems: list[FileCheck] = []
    jobs: list[tuple[str, str, Path, str | None]] = []
    for name, spec in models.manifest.models.items():
        entry = models.lock.models.get(name)
        if spec.scheme not in FILE_SCHEMES or entry is None:
            continue
        model_dir = models.manifest.model_dir(name)
        for path, meta in sorted(entry["files"].items()):
            target = model_dir / path
            size = size_of(target)
            if size is None:
                problems.append(FileCheck(name, path, "missing"))
            elif size != meta["size"] or inside(model_dir, path) is None or target.is_symlink():
                # never hash through a link: provision places regular files only
                problems.append(FileCheck(name, path, "corrupt"))
            else:
                jobs.append((name, path, target, meta.get("sha256")))
        problems += [FileCheck(name, p, "extra") for p in _extra_files(model_dir, set(entry["files"]))]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda job: (job, sha256_file(job[2])), jobs)
        for (name, path, _, expected), actual in results:
            models.progress.advance("verify", 1)
            if expected and actual != expected:
                problems.append(FileCheck(name, path, "corrupt"))
    return sorted(problems, key=lambda p: (p.model, p.path))


def _extra_files(model_dir: Path, known: set[str]) -> Iterable[str]:
    if not model_dir.is_dir():
        return []
    return sorted(
        rel
        for rel in (p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
        if rel not in known and not rel.startswith(".cache/") and rel != MARKER
    )
