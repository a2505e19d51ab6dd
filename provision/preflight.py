"""Check before you spend: does each deployment fit this machine, and is there disk for the plan?

Used by ``provision check-hardware MANIFEST`` and, unless ``--force``, by ``apply`` before the
first weight file moves. What a model needs is read from what is already known: its
``config.json`` (on disk, or fetched alone through its source: a few KB, verified and placed
like any other file) and the weights' sizes from the hub listing or the lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import PreflightError, ProvisionError
from .estimate import parse_vllm_args
from .fit import DeploymentFit, ModelInfo, check_disk, fit_deployment
from .gpus import Target, asks_for_gpus, by_memory, model_inventory, planned_inventory
from .hardware import Finding, Inventory, Level, MemoryProbe, collect_inventory
from .plan import Plan
from .reconciler import PlanResult, Reconciler, RunOptions
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
        return [
            f"{f.subject}: {f.message}" + (f" (to fix: {f.remedy})" if f.remedy else "")
            for f in failing
            if f.level is Level.FAIL
        ]


def _weights_bytes(sizes: list[tuple[str, int]]) -> int | None:
    """The weights' total size: safetensors if any, else other weight formats."""
    safetensors = sum(size for path, size in sizes if path.endswith(".safetensors"))
    if safetensors:
        return safetensors
    total = sum(size for path, size in sizes if path.endswith(WEIGHT_SUFFIXES))
    return total or None


def model_info(reconciler: Reconciler, name: str, planned: PlanResult) -> ModelInfo:
    """What the estimator needs about one model, fetching at most its config.json."""
    manifest = reconciler.manifest
    spec = manifest.models[name]
    model_dir = manifest.model_dir(name)
    if spec.scheme not in FILE_SCHEMES:
        return ModelInfo()  # Ollama: the server holds it; the fit module warns "unknown"
    snapshot = planned.snapshots.get(name)
    sizes = (
        [(f.path, f.size) for f in snapshot.files]
        if snapshot
        else [(path, meta["size"]) for path, meta in reconciler.lock.models.get(name, {}).get("files", {}).items()]
    )
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
    config = _read_config(reconciler, name, snapshot)
    return ModelInfo(config=config, weights_bytes=_weights_bytes(sizes))


def _read_config(reconciler: Reconciler, name: str, snapshot: Any) -> dict[str, Any] | None:
    manifest = reconciler.manifest
    spec = manifest.models[name]
    path = manifest.model_dir(name) / "config.json"
    if spec.scheme == "file" and not path.exists():
        root = manifest.local_source_path(spec)
        path = root / "config.json" if root.is_dir() else path
    if not path.exists() and snapshot is not None:
        remote = next((f for f in snapshot.files if f.path == "config.json"), None)
        if remote is not None and spec.scheme != "file":
            from .ownership import check_usable, mark

            model_dir = manifest.model_dir(name)
            source = reconciler.file_source(spec.scheme)
            try:
                # placed like any other file: only in a folder provision may write, marked first
                check_usable(model_dir, manifest.path, name, adopt=spec.adopt)
                mark(model_dir, manifest.path, name)
                source.fetch(name, remote, model_dir, on_progress=lambda n: None)
            except ProvisionError:
                return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def disk_finding(plan: Plan, free: int | None, models_dir: Path) -> Finding | None:
    """The one disk check (``apply``, ``check-hardware``): room at ``models_dir`` for the bytes
    the plan fetches there (:attr:`~provision.plan.Plan.disk_bytes`); None when it fetches nothing."""
    needed = plan.disk_bytes
    return check_disk(needed, free, str(models_dir)) if needed else None


def _planned_deployments(reconciler: Reconciler, planned: PlanResult) -> list[str]:
    """The manifest's deployments the plan covers, planned or not (its blockers are findings)."""
    named = {a.name for a in planned.plan.actions if a.kind == "deployment"}
    named |= {o.action.name for o in planned.failures if o.action.kind == "deployment"}
    return [name for name in reconciler.manifest.deployments if name in named]


def run_preflight(
    reconciler: Reconciler,
    planned: PlanResult,
    *,
    inventory: Inventory | None = None,
    deployments: list[str] | None = None,
) -> PreflightReport:
    """Every deployment's estimate and fit (``deployments``: those the plan covers), and the disk."""
    manifest = reconciler.manifest
    inventory = inventory or collect_inventory(
        models_dir=manifest.models_dir, ollama_host=manifest.settings.ollama.host
    )
    fits = []
    for name in deployments if deployments is not None else _planned_deployments(reconciler, planned):
        spec = manifest.deployments[name]
        model = getattr(spec, "model", None)
        info = model_info(reconciler, model, planned) if model else None
        fit = fit_deployment(name, spec, info, inventory)
        fits.append(replace(fit, smallest_gpu=smallest_gpu(name, spec, info, inventory.memory)))
    probe = inventory.disk  # None: planning for another machine, whose disk is not known
    disk = disk_finding(planned.plan, probe.free, manifest.models_dir) if probe is not None else None
    findings = [disk] if disk is not None else []
    # A model or deployment that could not even be planned (hub unreachable, engine missing)
    # cannot be judged: say so rather than leave it out.
    # A failed preflight of the backend itself (no NVIDIA runtime, port taken) is a FAIL.
    findings += [
        Finding(
            Level.FAIL if isinstance(o.error, PreflightError) else Level.WARN,
            o.action.address,
            o.error.message if isinstance(o.error, PreflightError) else f"not checked: {o.error.message}",
            o.error.hint,
        )
        for o in planned.failures
        if o.error is not None
    ]
    return PreflightReport(inventory, tuple(fits), tuple(findings))


def preflight_for(reconciler: Reconciler, target: Target) -> PreflightReport:
    """Every deployment against ``target``'s GPUs: only the models are planned (their sizes and
    config.json); this machine's drivers, Docker, images and ports are not asked."""
    manifest = reconciler.manifest
    used = {getattr(spec, "model", None) for spec in manifest.deployments.values()}
    models = tuple(name for name, spec in manifest.models.items() if name in used and spec.scheme in FILE_SCHEMES)
    planned = reconciler.plan(RunOptions(only=models)) if models else PlanResult(Plan(()))
    return run_preflight(
        reconciler, planned, inventory=planned_inventory(target), deployments=list(manifest.deployments)
    )


def _gpu_count(spec: Any) -> int | None:
    """How many GPUs a deployment takes (None: it runs without one)."""
    if spec.engine == "vllm":
        if not asks_for_gpus(spec.gpus):
            return None
        try:
            tp = parse_vllm_args(spec.args).tensor_parallel_size
        except ValueError:
            return None
        asked = spec.gpus if isinstance(spec.gpus, int) else 1 if spec.gpus == "all" else len(spec.gpus)
        return max(tp, asked)
    if spec.engine == "transformers":
        return None if spec.device in ("cpu", "mps") else 1
    return 1 if spec.engine == "ollama" else None


def smallest_gpu(name: str, spec: Any, info: ModelInfo | None, memory: MemoryProbe) -> str | None:
    """The table's smallest GPU (as many as the deployment takes) on which it fits, e.g. ``L4x2``."""
    count = _gpu_count(spec)
    if count is None:
        return None
    if spec.engine == "vllm":
        spec = spec.model_copy(update={"gpus": count})  # device ids name GPUs of this machine
    for model in by_memory():
        fit = fit_deployment(name, spec, info, model_inventory(model, count, memory))
        if fit.estimate is not None and fit.estimate.needed is not None and fit.level is not Level.FAIL:
            return model.name + (f"x{count}" if count > 1 else "")
    return None


def enforce(report: PreflightReport) -> None:
    """``apply`` refuses a deployment that cannot fit (``--force`` skips this)."""
    if report.failed:
        raise PreflightError(
            "this machine cannot take the plan: " + "; ".join(report.failed),
            hint="run `provision check-hardware MANIFEST` for the details and remedies, or pass --force",
        )
