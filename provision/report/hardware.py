"""Rendering for ``provision check-hardware``: the machine, the checks, the deployment fits.

Human output is rich tables on stdout; ``--json`` is :func:`hardware_dict`, one document::

    {"level": "OK|WARN|FAIL",
     "machine": {"gpus": [...], "driver_version", "cuda_driver_version", "ram", "disk", "docker", "ollama"},
     "findings": [{"level", "subject", "message", "remedy"}],
     "deployments": [{"name", "level", "estimate": {...} | null, "smallest_gpu", "findings": [...]}],
     "target": {"label", "count", "memory", "compute_capability", "gpu"} | null}

With ``--gpu``/``--vram`` the machine is the target's (its RAM is this machine's) and ``target``
says so. ``--list-gpus`` is :func:`gpu_table_dict` / :func:`render_gpu_table`. Sizes in JSON are
bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.table import Table

from ..estimate import GIB
from ..files import human_bytes
from ..hardware import Finding, Inventory, Level, worst
from . import console, literal
from .text import shorten_middle, shorten_words

if TYPE_CHECKING:  # provision.fit imports the manifest models (pydantic): not needed to print
    from ..fit import DeploymentFit, MemoryEstimate
    from ..gpus import GpuModel, Target

_STYLE = {Level.OK: "green", Level.WARN: "yellow", Level.FAIL: "red"}


def _gib(n: int | None) -> str:
    return "?" if n is None else human_bytes(n)


def _level(level: Level) -> str:
    return f"[{_STYLE[level]}]{level.value}[/]"


_SUBJECT_WIDTH = 26
_DETAIL_WORD = 28  # the detail column's narrowest at 80 columns: longer words are shortened


def _detail(finding: Finding) -> str:
    """The message and its remedy, escaped, with words short enough to wrap only at spaces."""
    remedy = finding.remedy and finding.level is not Level.OK
    message = literal(shorten_words(finding.message, _DETAIL_WORD))
    return message + (f"\n[dim]→ {literal(shorten_words(finding.remedy, _DETAIL_WORD))}[/]" if remedy else "")


def _subject(name: str) -> str:
    return literal(shorten_middle(name, _SUBJECT_WIDTH))


# -- JSON ----------------------------------------------------------------------------------


def finding_dict(finding: Finding) -> dict[str, Any]:
    return {
        "level": finding.level.value,
        "subject": finding.subject,
        "message": finding.message,
        "remedy": finding.remedy,
    }


def inventory_dict(inventory: Inventory) -> dict[str, Any]:
    docker, ollama, disk = inventory.docker, inventory.ollama, inventory.disk
    return {
        "gpus": [
            {
                **asdict(gpu),
                "compute_capability": ".".join(map(str, gpu.compute_capability)) if gpu.compute_capability else None,
            }
            for gpu in inventory.gpus
        ],
        "driver_version": inventory.gpu.driver_version,
        "cuda_driver_version": inventory.gpu.cuda_driver_version,
        "ram": {"total": inventory.memory.total, "available": inventory.memory.available},
        "disk": None if disk is None else {"path": disk.path, "free": disk.free},
        "docker": None
        if docker is None
        else {
            "reachable": docker.reachable,
            "host": docker.host,
            "server_version": docker.server_version,
            "runtimes": list(docker.runtimes),
            "cdi_devices": list(docker.cdi_devices),
            "nvidia": docker.nvidia,
            "error": docker.error,
        },
        "ollama": None
        if ollama is None
        else {
            "host": ollama.host,
            "reachable": ollama.reachable,
            "version": ollama.version,
            "error": ollama.error,
        },
    }


def estimate_dict(estimate: MemoryEstimate | None) -> dict[str, Any] | None:
    return None if estimate is None else asdict(estimate)


def fit_dict(fit: DeploymentFit) -> dict[str, Any]:
    return {
        "name": fit.name,
        "level": fit.level.value,
        "estimate": estimate_dict(fit.estimate),
        "smallest_gpu": fit.smallest_gpu,
        "findings": [finding_dict(f) for f in fit.findings],
    }


def _capability(value: tuple[int, int] | None) -> str | None:
    return ".".join(map(str, value)) if value else None


def target_dict(target: Target | None) -> dict[str, Any] | None:
    if target is None:
        return None
    return {
        "label": target.label,
        "count": target.count,
        "memory": target.memory_bytes,
        "compute_capability": _capability(target.compute_capability),
        "gpu": target.model.name if target.model else None,
    }


def hardware_dict(
    inventory: Inventory,
    fits: Iterable[DeploymentFit] = (),
    findings: Iterable[Finding] = (),
    target: Target | None = None,
) -> dict[str, Any]:
    """The ``--json`` document. ``findings``: more machine-level ones, such as the disk check."""
    fits = list(fits)
    all_findings = [*inventory.findings, *findings]
    level = worst([*all_findings, *(f for fit in fits for f in fit.findings)])
    return {
        "level": level.value,
        "machine": inventory_dict(inventory),
        "findings": [finding_dict(f) for f in all_findings],
        "deployments": [fit_dict(fit) for fit in fits],
        "target": target_dict(target),
    }


def gpu_model_dict(gpu: GpuModel) -> dict[str, Any]:
    return {
        "name": gpu.name,
        "title": gpu.title,
        "kind": gpu.kind,
        "aliases": list(gpu.aliases),
        "memory_gb": gpu.memory_gb,
        "memory": gpu.memory_bytes,
        "reported_mib": gpu.reported_mib,
        "compute_capability": _capability(gpu.compute_capability),
        "bf16": gpu.bf16,
        "fp8": gpu.fp8,
    }


def gpu_table_dict(gpus: Iterable[GpuModel]) -> dict[str, Any]:
    return {"gpus": [gpu_model_dict(g) for g in gpus]}


# -- tables --------------------------------------------------------------------------------


def render_gpus(inventory: Inventory) -> None:
    if not inventory.gpus:
        return
    table = Table(show_edge=False, pad_edge=False, box=None, title_justify="left")
    for column in ("gpu", "name", "total", "free", "compute", "driver", "CUDA"):
        table.add_column(column, justify="right" if column in ("total", "free") else "left")
    for gpu in inventory.gpus:
        capability = ".".join(map(str, gpu.compute_capability)) if gpu.compute_capability else "?"
        table.add_row(
            str(gpu.index),
            literal(gpu.name),
            _gib(gpu.memory_total),
            _gib(gpu.memory_free),
            capability,
            literal(inventory.gpu.driver_version or "?"),
            literal(inventory.gpu.cuda_driver_version or "?"),
        )
    console().print(table)


def render_findings(findings: Iterable[Finding]) -> None:
    findings = list(findings)
    if not findings:
        return
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("check", "", "detail"):
        table.add_column(column, no_wrap=column != "detail")
    for finding in findings:
        table.add_row(_subject(finding.subject), _level(finding.level), _detail(finding))
    console().print(table)


def _num(n: int | None) -> str:
    return "?" if n is None else f"{n / GIB:.1f}"


def render_fits(fits: Iterable[DeploymentFit]) -> None:
    """One row of numbers per deployment (GiB; unknown: ?), then each deployment's findings."""
    fits = list(fits)
    table = Table(
        show_edge=False,
        pad_edge=False,
        box=None,
        caption_justify="left",
        caption="GiB; KV: the KV cache at ctx tokens; other: runtime overhead; max: the longest ctx that fits",
    )
    for column in ("deployment", "", "where", "weights", "KV", "other", "needed", "has", "ctx", "max", "smallest"):
        table.add_column(
            column,
            justify="left" if column in ("deployment", "", "where", "smallest") else "right",
            no_wrap=column != "smallest",
        )
    for fit in fits:
        est = fit.estimate
        numbers = (
            ["", "", "", "", "", "", "", ""]
            if est is None
            else [
                est.where,
                _num(est.weights),
                "" if est.kv_cache is None and est.needed is not None else _num(est.kv_cache),  # in "other"
                _num(est.overhead),
                _num(est.needed),
                _num(est.available),
                str(est.context_len or ""),
                str(est.max_context_len or ""),
            ]
        )
        table.add_row(_subject(fit.name), _level(fit.level), *numbers, fit.smallest_gpu or "")
    console().print(table)
    console().print()
    render_findings([finding for fit in fits for finding in fit.findings])


def render_gpu_table(gpus: Iterable[GpuModel]) -> None:
    """``--list-gpus``: the names --gpu takes, with what each is judged by."""
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("--gpu", "GPU", "kind", "spec", "judged at", "compute", "bf16", "fp8", "aliases"):
        table.add_column(column, justify="right" if column in ("spec", "judged at") else "left")
    for gpu in gpus:
        table.add_row(
            gpu.name,
            gpu.title,
            gpu.kind,
            f"{gpu.memory_gb} GB",
            _gib(gpu.memory_bytes),
            _capability(gpu.compute_capability) or "?",
            "yes" if gpu.bf16 else "no",
            "yes" if gpu.fp8 else "no",
            ", ".join(gpu.aliases),
        )
    console().print(table)
    console().print(
        "[dim]judged at: the total CUDA sees (nvidia-smi's, where recorded); --vram SIZE[xN] for any other GPU[/]"
    )


def render_hardware(inventory: Inventory, fits: Iterable[DeploymentFit] = (), findings: Iterable[Finding] = ()) -> None:
    """The whole ``check-hardware`` report: GPUs, machine checks, then deployments if any."""
    fits = list(fits)
    render_gpus(inventory)
    render_findings([*inventory.findings, *findings])
    if fits:
        console().print()
        render_fits(fits)
