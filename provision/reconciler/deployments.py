"""Deployments: the context a backend sees, its decisions, apply, remove, and smoke-test jobs.

Which backend serves a deployment is :mod:`provision.deployments`'s business; this module
runs them in the manifest's order after the models, and keeps their records in state.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..deployments import decide, deploy, remove
from ..deployments.base import DeployContext, DeploymentRecord
from ..errors import EngineUnavailableError, ManifestError, ProvisionError
from ..manifest import Deployment
from ..plan import Action, Change
from .common import Outcome, Part, PlanResult, not_planned, run_step

if TYPE_CHECKING:
    from ..smoke import SmokeJob


class DeploymentReconciler(Part):
    """The deployments of one manifest."""

    def context(self, on_status: Callable[[str, str], None] | None = None) -> DeployContext:
        """What a backend may know now: read again after the models, it carries the new lock."""
        records = self.state.records(self.manifest.path)["deployments"]
        return DeployContext(
            manifest=self.manifest,
            model_dirs={name: self.manifest.model_dir(name) for name in self.manifest.models},
            model_locks=self.lock.models,
            records=records,
            on_status=on_status or self.progress.status,
        )

    def plan(self, names: list[str], result: PlanResult) -> list[Action]:
        ctx = self.context()
        actions = []
        for name in names:
            try:
                actions.append(decide(name, self.manifest.deployments[name], ctx))
            except ProvisionError as exc:
                result.failures.append(not_planned("deployment", name, exc))
        return actions

    def replan_if_model_changed(self, actions: list[Action], changed_models: set[str]) -> list[Action]:
        """Deployments planned before their model moved (new revision, re-pull) are decided again
        with the new lock, so the same apply replaces a container serving the old files."""
        if not changed_models or not actions:
            return actions
        ctx = self.context()  # after the models: it carries the new lock
        replanned = []
        for action in actions:
            spec = self.manifest.deployments.get(action.name)
            if spec is not None and action.change is not Change.DELETE and spec.model in changed_models:
                with contextlib.suppress(ProvisionError):  # keep the first decision; apply reports the failure
                    action = decide(action.name, spec, ctx)
            replanned.append(action)
        return replanned

    def apply(self, actions: list[Action], failed_models: set[str]) -> list[Outcome]:
        outcomes = []
        records = self.context().records
        for action in actions:
            if action.change is Change.DELETE:
                record = records.get(action.name, {})
                outcomes.append(run_step(action, functools.partial(self.remove, action.name, record)))
                continue
            spec = self.manifest.deployments[action.name]
            if spec.model in failed_models:
                err = ProvisionError(f"skipped: its model {spec.model} failed", resource=action.name)
                outcomes.append(Outcome(action, False, err))
                continue
            outcomes.append(run_step(action, functools.partial(self._deploy, action, spec)))
        return outcomes

    def _deploy(self, action: Action, spec: Deployment) -> None:
        record = deploy(action, spec, self.context())
        self.state.update(self.manifest.path, "deployments", action.name, dict(record))

    def remove(self, name: str, record: DeploymentRecord) -> None:
        remove(name, record, self.context())
        self.state.update(self.manifest.path, "deployments", name, None)

    def labelled(self, records: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """Deployments with a vLLM container labelled for this manifest: ownership is the label,
        so a failed apply (which records nothing) is destroyed too."""
        if not any(d.engine == "vllm" for d in self.manifest.deployments.values()) and not any(
            r.get("engine") == "vllm" for r in records.values()
        ):
            return set()
        from ..deployments.vllm import labelled_deployments  # docker-py: only when vLLM is in use

        try:
            return labelled_deployments(str(self.manifest.path.absolute()))
        except EngineUnavailableError:
            return set()  # no engine: nothing of ours can be running there

    def smoke_jobs(self, names: tuple[str, ...] = ()) -> list[SmokeJob]:
        """One smoke-test job per deployment (all, or ``names``); clients are made lazily."""
        from ..client import open_engine
        from ..smoke import SmokeJob

        unknown = [n for n in names if n not in self.manifest.deployments]
        if unknown:
            raise ManifestError(
                f"no such deployment: {', '.join(unknown)}",
                file=str(self.manifest.path),
                hint="deployments: " + (", ".join(sorted(self.manifest.deployments)) or "none"),
            )
        ctx = self.context()
        jobs = []
        for name, spec in self.manifest.deployments.items():
            if names and name not in names:
                continue
            jobs.append(
                SmokeJob(
                    name=name,
                    engine=spec.engine,
                    connect=functools.partial(open_engine, name, spec, ctx),
                    settings=self.manifest.smoke_settings(name),
                    expect=spec.expect,
                    max_ttft=spec.max_ttft,
                    min_tokens_per_s=spec.min_tokens_per_s,
                    task=spec.task,
                    expect_dimension=spec.expect_dimension,
                )
            )
        return jobs
