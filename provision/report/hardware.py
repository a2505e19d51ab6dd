"""Rendering for ``provision check-hardware``: the machine, the checks, the deployment fits.

Human output is rich tables on stdout; ``--json`` is :func:`hardware_dict`, one document::

    {"level": "OK|WARN|FAIL",
     "machine": {"gpus": [...], "driver_version", "cuda_driver_version", "ram", "disk", "docker", "ollama"},
     "findings": [{"level", "subject", "message", "remedy"}],
     "deployments": [{"name", "level", "estimate": {...} | null, "findings": [...]}]}

Sizes in JSON are bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.table import Table

from ..files import human_bytes
from ..hardware import Finding, Inventory, Level, worst
from . import console, literal

if TYPE_CHECKING:  # provision.fit imports the manifest models (pydantic): not needed to print
    from ..fit import DeploymentFit, MemoryEstimate

_STYLE = {Level.OK: "green", Level.WARN: "yellow", Level.FAIL: "red"}


def _gib(n: int | None) -> str:
    return "?" if n is None else human_bytes(n)


def _level(level: Level) -> str:
    return f"[{_STYLE[level]}]{level.value}[/]"


def _detail(finding: Finding) -> str:
    remedy = finding.remedy and finding.level is not Level.OK
    return literal(finding.message) + (f"\n[dim]→ {literal(finding.remedy)}[/]" if remedy else "")


# -- JSON ----------------------------------------------------------------------------------


def finding_dict(finding: Finding) -> dict[str, Any]:
    return {"level": finding.level.value, "subject": finding.subject, "message": finding.message,
            "remedy": finding.remedy}


def inventory_dict(inventory: Inventory) -> dict[str, Any]:
    docker, ollama, disk = inventory.docker, inventory.ollama, inventory.disk
    return {
        "gpus": [
            {**asdict(gpu), "compute_capability": ".".join(map(str, gpu.compute_capability))
             if gpu.compute_capability else None}
            for gpu in inventory.gpus
        ],
        "driver_version": inventory.gpu.driver_version,
        "cuda_driver_version": inventory.gpu.cuda_driver_version,
        "ram": {"total": inventory.memory.total, "available": inventory.memory.available},
        "disk": None if disk is None else {"path": disk.path, "free": disk.free},
        "docker": None if docker is None else {
            "reachable": docker.reachable, "host": docker.host, "server_version": docker.server_version,
            "runtimes": list(docker.runtimes), "cdi_devices": list(docker.cdi_devices),
            "nvidia": docker.nvidia, "error": docker.error,
        },
        "ollama": None if ollama is None else {
            "host": ollama.host, "reachable": ollama.reachable, "version": ollama.version, "error": ollama.error,
        },
    }


def estimate_dict(estimate: MemoryEstimate | None) -> dict[str, Any] | None:
    return None if estimate is None else asdict(estimate)


def fit_dict(fit: DeploymentFit) -> dict[str, Any]:
    return {"name": fit.name, "level": fit.level.value, "estimate": estimate_dict(fit.estimate),
            "findings": [finding_dict(f) for f in fit.findings]}


def hardware_dict(inventory: Inventory, fits: Iterable[DeploymentFit] = (),
                  findings: Iterable[Finding] = ()) -> dict[str, Any]:
    """The ``--json`` document. ``findings``: more machine-level ones, such as the disk check."""
    fits = list(fits)
    all_findings = [*inventory.findings, *findings]
    level = worst([*all_findings, *(f for fit in fits for f in fit.findings)])
    return {
        "level": level.value,
        "machine": inventory_dict(inventory),
        "findings": [finding_dict(f) for f in all_findings],
        "deployments": [fit_dict(fit) for fit in fits],
    }


# -- tables --------------------------------------------------------------------------------


def render_gpus(inventory: Inventory) -> None:
    if not inventory.gpus:
        return
    table = Table(show_edge=False, pad_edge=False, box=None, title_justify="left")
    for column in ("gpu", "name", "total", "free", "compute", "driver", "CUDA"):
        table.add_column(column, justify="right" if column in ("total", "free") else "left")
    for gpu in inventory.gpus:
        capability = ".".join(map(str, gpu.compute_capability)) if gpu.compute_capability else "?"
        table.add_row(str(gpu.index), literal(gpu.name), _gib(gpu.memory_total), _gib(gpu.memory_free), capability,
                      literal(inventory.gpu.driver_version or "?"), literal(inventory.gpu.cuda_driver_version or "?"))
    console().print(table)


def render_findings(findings: Iterable[Finding]) -> None:
    findings = list(findings)
    if not findings:
        return
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("check", "", "detail"):
        table.add_column(column)
    for finding in findings:
        table.add_row(literal(finding.subject), _level(finding.level), _detail(finding))
    console().print(table)


def render_fits(fits: Iterable[DeploymentFit]) -> None:
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("deployment", "", "where", "needed", "available", "max context", "detail"):
        table.add_column(column, justify="right" if column in ("needed", "available", "max context") else "left")
    for fit in fits:
        est = fit.estimate
        first = True
        for finding in fit.findings:
            cells = (literal(fit.name), _level(fit.level), literal(est.where), _gib(est.needed), _gib(est.available),
                     str(est.max_context_len or "")) if first and est else (
                     literal(fit.name) if first else "", _level(fit.level) if first else "", "", "", "", "")
            table.add_row(*cells, _detail(finding))
            first = False
    console().print(table)


def render_hardware(inventory: Inventory, fits: Iterable[DeploymentFit] = (),
                    findings: Iterable[Finding] = ()) -> None:
    """The whole ``check-hardware`` report: GPUs, machine checks, then deployments if any."""
    fits = list(fits)
    render_gpus(inventory)
    render_findings([*inventory.findings, *findings])
    if fits:
        console().print()
        render_fits(fits)
