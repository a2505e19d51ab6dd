"""Check before you spend: does each deployment fit this machine, and is there disk for the plan?

Used by ``provision check-hardware MANIFEST`` and, unless ``--force``, by ``apply`` before the
first weight file moves. What a model needs is read from what is already known: its
``config.json`` (on disk, or fetched alone through its source: a few KB, verified and placed
like any other file) and the weights' sizes from the hub listing or the lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import Engine, PlanResult
from .errors import PreflightError, ProvisionError
from .fit import DeploymentFit, ModelInfo, check_disk, fit_deployment
from .hardware import Finding, Inventory, Level, collect_inventory
from .sources import FILE_SCHEMES

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class PreflightReport:
    inventory: Inventory
    fits: tuple[DeploymentFit, ...]
    findings: tuple[Finding, ...]  # plan-wide: disk

    @property
    def failed(self) -> list[str]:
        failing = [f for fit in self.fits for f in fit.findings] + list(self.findings)
        return [f"{f.subject}: {f.message}" + (f" (to fix: {f.remedy})" if f.remedy else "")
                for f in failing if f.level is Level.FAIL]


def _weights_bytes(sizes: list[tuple[str, int]]) -> int | None:
    """The weights' total size: safetensors if any, else other weight formats."""
    safetensors = sum(size for path, size in sizes if path.endswith(".safetensors"))
    if safetensors:
        return safetensors
    total = sum(size for path, size in sizes if path.endswith(WEIGHT_SUFFIXES))
    return total or None


def model_info(engine: Engine, name: str, planned: PlanResult) -> ModelInfo:
    """What the estimator needs about one model, fetching at most its config.json."""
    manifest = engine.manifest
    spec = manifest.models[name]
    model_dir = manifest.model_dir(name)
    if spec.scheme not in FILE_SCHEMES:
        return ModelInfo()  # Ollama: the server holds it; the fit module warns "unknown"
    snapshot = planned.snapshots.get(name)
    sizes = [(f.path, f.size) for f in snapshot.files] if snapshot else [
        (path, meta["size"]) for path, meta in engine.lock.models.get(name, {}).get("files", {}).items()
    ]
    ggufs = sorted(model_dir.glob("*.gguf")) if model_dir.is_dir() else []
    if spec.scheme == "file" and not ggufs:
        source_path = manifest.local_source_path(spec)
        ggufs = [source_path] if source_path.suffix == ".gguf" and source_path.is_file() else []
    if ggufs:
        from .estimate import read_gguf

        try:
            return ModelInfo(gguf=read_gguf(ggufs[0]))
        except Exception:  # noqa: BLE001 - an unreadable header is an unknown estimate, not a crash
            return ModelInfo(weights_bytes=ggufs[0].stat().st_size)
    config = _read_config(engine, name, snapshot)
    return ModelInfo(config=config, weights_bytes=_weights_bytes(sizes))


def _read_config(engine: Engine, name: str, snapshot: Any) -> dict[str, Any] | None:
    manifest = engine.manifest
    spec = manifest.models[name]
    path = manifest.model_dir(name) / "config.json"
    if spec.scheme == "file" and not path.exists():
        root = manifest.local_source_path(spec)
        path = root / "config.json" if root.is_dir() else path
    if not path.exists() and snapshot is not None:
        remote = next((f for f in snapshot.files if f.path == "config.json"), None)
        if remote is not None and spec.scheme != "file":
            source = engine.file_source(spec.scheme)
            try:
                source.fetch(name, remote, manifest.model_dir(name), on_progress=lambda n: None)
            except ProvisionError:
                return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_preflight(engine: Engine, planned: PlanResult, *, inventory: Inventory | None = None) -> PreflightReport:
    manifest = engine.manifest
    inventory = inventory or collect_inventory(models_dir=manifest.models_dir,
                                               ollama_host=manifest.settings.ollama.host)
    deployments = [a.name for a in planned.plan.actions if a.kind == "deployment" and a.name in manifest.deployments]
    fits = []
    for name in deployments:
        spec = manifest.deployments[name]
        model = getattr(spec, "model", None)
        info = model_info(engine, model, planned) if model else None
        fits.append(fit_deployment(name, spec, info, inventory))
    download = sum(a.download_bytes for a in planned.plan.actions if a.kind == "model")
    free = inventory.disk.free if inventory.disk is not None else None
    findings = [check_disk(download, free, str(manifest.models_dir))] if download else []
    # A model or deployment that could not even be planned (hub unreachable, engine missing)
    # cannot be judged: say so rather than leave it out.
    # A failed preflight of the backend itself (no NVIDIA runtime, port taken) is a FAIL.
    findings += [Finding(Level.FAIL if isinstance(o.error, PreflightError) else Level.WARN, o.action.address,
                         o.error.message if isinstance(o.error, PreflightError) else f"not checked: {o.error.message}",
                         o.error.hint)
                 for o in planned.failures if o.error is not None]
    return PreflightReport(inventory, tuple(fits), tuple(findings))


def enforce(report: PreflightReport) -> None:
    """``apply`` refuses a deployment that cannot fit (``--force`` skips this)."""
    if report.failed:
        raise PreflightError(
            "this machine cannot take the plan: " + "; ".join(report.failed),
            hint="run `provision check-hardware MANIFEST` for the details and remedies, or pass --force",
        )
