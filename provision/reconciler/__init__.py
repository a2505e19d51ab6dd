"""Reconcile: observe -> plan -> preflight -> apply, models first, then deployments.

:class:`Reconciler` is the facade: it selects what a run covers, orders it, holds the run lock
and gathers the results; one part per resource kind does the work (:mod:`.models`,
:mod:`.deployments`, read-only :mod:`.inspection`). Failures are isolated: one model's never
stops another. Deciding is :mod:`provision.plan`'s and each backend's pure ``plan``; only the
apply steps change the world.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Self

from ..errors import ManifestError, PreflightError, UsageError
from ..lock import LockFile
from ..manifest import Manifest
from ..plan import Action, Change, Plan, plan_orphans
from ..progress import NullProgress, Progress
from ..state import State
from . import inspection
from .common import ApplyResult, Outcome, PlanResult, RunOptions, run_step
from .deployments import DeploymentReconciler
from .inspection import FileCheck, ServerStatus, StatusRow
from .models import ModelReconciler

if TYPE_CHECKING:
    from ..deployments.base import DeployContext
    from ..smoke import SmokeJob
    from ..sources.base import FileSource

__all__ = [
    "ApplyResult",
    "FileCheck",
    "Outcome",
    "PlanResult",
    "Reconciler",
    "RunOptions",
    "ServerStatus",
    "StatusRow",
]

EVERYTHING = RunOptions()  # the default run: every model and deployment, following the lock


class Reconciler:
    def __init__(self, manifest: Manifest, *, state: State | None = None, progress: Progress | None = None) -> None:
        self.manifest = manifest
        self.state = state or State()
        self.progress = progress or NullProgress()
        self.lock = LockFile.load(manifest.lock_path)
        self.models = ModelReconciler(manifest, self.state, self.lock, self.progress)
        self.deployments = DeploymentReconciler(manifest, self.state, self.lock, self.progress)

    def close(self) -> None:
        self.models.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def file_source(self, scheme: str) -> FileSource:
        return self.models.file_source(scheme)

    def deploy_context(self, on_status: Callable[[str, str], None] | None = None) -> DeployContext:
        return self.deployments.context(on_status)

    # -- selection ---------------------------------------------------------------------------
    def _selected(self, only: tuple[str, ...]) -> tuple[list[str], list[str]]:
        known = set(self.manifest.models) | set(self.manifest.deployments)
        unknown = [n for n in only if n not in known]
        if unknown:
            raise ManifestError(
                f"--only {', '.join(unknown)}: no such model or deployment",
                file=str(self.manifest.path),
                hint="names: " + ", ".join(sorted(known)),
            )
        if not only:
            return list(self.manifest.models), list(self.manifest.deployments)
        deployments = [d for d in self.manifest.deployments if d in only]
        # A selected deployment brings its model along.
        models = [
            m
            for m in self.manifest.models
            if m in only or any(self.manifest.deployments[d].model == m for d in deployments)
        ]
        return models, deployments

    # -- observe + plan ----------------------------------------------------------------------
    def plan(self, options: RunOptions = EVERYTHING) -> PlanResult:
        if options.update and options.locked:
            raise UsageError("--update and --locked contradict each other", hint="use one of them")
        models, deployments = self._selected(options.only)
        result = PlanResult(Plan(()))
        records = self.state.records(self.manifest.path)
        actions = self.models.plan(models, options, records["models"], result)
        actions += self.deployments.plan(deployments, result)
        if not options.only:
            actions.extend(plan_orphans("model", records["models"], set(self.manifest.models)))
            actions.extend(plan_orphans("deployment", records["deployments"], set(self.manifest.deployments)))
        result.plan = Plan(tuple(actions))
        return result

    # -- apply -------------------------------------------------------------------------------
    def apply(self, options: RunOptions = EVERYTHING, planned: PlanResult | None = None) -> ApplyResult:
        started = time.monotonic()
        with self.state.run_lock(self.manifest.path):
            planned = planned or self.plan(options)
            self._check_disk(planned.plan)
            outcomes = list(planned.failures)
            model_actions = [a for a in planned.plan.actions if a.kind == "model"]
            outcomes += self.models.apply(model_actions, planned.snapshots, options)
            failed_models = {o.action.name for o in outcomes if not o.ok and o.action.kind == "model"}
            changed_models = {
                o.action.name for o in outcomes if o.ok and o.action.kind == "model" and not o.action.is_noop
            }
            deployment_actions = [a for a in planned.plan.actions if a.kind == "deployment"]
            deployment_actions = self.deployments.replan_if_model_changed(deployment_actions, changed_models)
            outcomes += self.deployments.apply(deployment_actions, failed_models)
        return ApplyResult(outcomes, time.monotonic() - started)

    def _check_disk(self, plan: Plan) -> None:
        """The disk check (``--force`` does not skip it): the same rule as ``check-hardware``."""
        from ..hardware import Level, free_bytes  # NVML, psutil: only when something is fetched
        from ..preflight import disk_finding

        if not plan.disk_bytes:
            return
        finding = disk_finding(plan, free_bytes(self.manifest.models_dir), self.manifest.models_dir)
        if finding is not None and finding.level is Level.FAIL:
            raise PreflightError(finding.message, hint=f"{finding.remedy}, or use --only")

    # -- destroy -----------------------------------------------------------------------------
    def destroy_plan(self, only: tuple[str, ...] = ()) -> Plan:
        records = self.state.records(self.manifest.path)
        labelled = self.deployments.labelled(records["deployments"]) - set(records["deployments"])
        actions = [
            Action("deployment", n, Change.DELETE, "destroy")
            for n in sorted(records["deployments"])
            if not only or n in only
        ]
        actions += [
            Action(
                "deployment",
                n,
                Change.DELETE,
                "destroy: a container labelled for it (an apply that failed)",
                details={"engine": "vllm"},
            )
            for n in sorted(labelled)
            if not only or n in only
        ]
        actions += [
            Action("model", n, Change.DELETE, "destroy") for n in sorted(records["models"]) if not only or n in only
        ]
        return Plan(tuple(actions))

    def destroy(self, plan: Plan) -> ApplyResult:
        started = time.monotonic()
        outcomes = []
        with self.state.run_lock(self.manifest.path):
            records = self.state.records(self.manifest.path)
            for action in plan.actions:
                if action.kind == "deployment":
                    record = records["deployments"].get(action.name) or dict(action.details)
                    outcomes.append(run_step(action, functools.partial(self.deployments.remove, action.name, record)))
                else:
                    model_record = records["models"].get(action.name, {})
                    outcomes.append(run_step(action, functools.partial(self.models.delete, action.name, model_record)))
        return ApplyResult(outcomes, time.monotonic() - started)

    # -- read-only ---------------------------------------------------------------------------
    def status(self) -> list[StatusRow]:
        return inspection.status(self.models, self.deployments)

    def servers(self) -> list[ServerStatus]:
        return inspection.servers(self.models)

    def unlocked_models(self) -> list[str]:
        return inspection.unlocked_models(self.models)

    def verify(self, *, workers: int = 4) -> list[FileCheck]:
        return inspection.verify(self.models, workers=workers)

    def smoke_jobs(self, names: tuple[str, ...] = ()) -> list[SmokeJob]:
        return self.deployments.smoke_jobs(names)
