"""Reconcile: observe -> plan -> preflight -> apply, models first, then deployments.

The engine owns ordering, parallelism, failure isolation (one model's failure never stops
another), the lock file and the state. Deciding is delegated to :mod:`provision.plan` and to
each backend's pure ``plan``; only the ``_apply_*`` methods change the world.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

from .errors import (
    EngineUnavailableError,
    LockError,
    ManifestError,
    OwnershipError,
    PreflightError,
    ProvisionError,
    SourceError,
    UsageError,
)
from .files import RemoteFile, Snapshot, plural
from .hashing import sha256_file
from .lock import LockFile
from .manifest import Manifest, ModelSpec
from .ownership import MARKER, check_usable, inside, is_ours, mark, remove_placed
from .plan import Action, Change, LocalFile, Plan, plan_files, plan_orphans
from .progress import NullProgress, Progress
from .repair import placed_stats, to_refetch
from .sources import FILE_SCHEMES, file_source, model_backend
from .sources.base import FileSource, ModelBackend, is_full_commit
from .state import State


@dataclass(frozen=True)
class RunOptions:
    only: tuple[str, ...] = ()  # model or deployment names; empty = everything
    update: bool = False  # re-resolve branches and tags, rewrite the lock
    locked: bool = False  # refuse any change to the lock
    force: bool = False  # skip the fit checks (not the disk check)
    verify: bool = False  # re-hash every placed file (else only those whose stat changed)
    yes: bool = False  # remove models no longer in the manifest (else they are kept and reported)


@dataclass
class Outcome:
    action: Action
    ok: bool
    error: ProvisionError | None = None
    seconds: float = 0.0


@dataclass
class PlanResult:
    plan: Plan
    failures: list[Outcome] = field(default_factory=list)  # resources that could not be planned
    snapshots: dict[str, Snapshot] = field(default_factory=dict)

    def orphan_models(self) -> list[str]:
        """Models this manifest created here but no longer declares: removed only with --yes."""
        return [a.name for a in self.plan.actions if a.kind == "model" and a.change is Change.DELETE]


@dataclass
class ApplyResult:
    outcomes: list[Outcome]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


@dataclass(frozen=True)
class FileCheck:
    model: str
    path: str
    problem: str  # missing | corrupt | extra


def lock_spec(spec: ModelSpec, default_revision: str) -> dict[str, Any]:
    """The part of a manifest entry the lock pins; a change to it needs a new resolution."""
    return {
        "source": spec.source,
        "revision": spec.revision or default_revision,
        "include": list(spec.include) if spec.include is not None else None,
        "exclude": list(spec.exclude) if spec.exclude is not None else None,
    }


class Engine:
    def __init__(self, manifest: Manifest, *, state: State | None = None, progress: Progress | None = None) -> None:
        self.manifest = manifest
        self.state = state or State()
        self.progress = progress or NullProgress()
        self.lock = LockFile.load(manifest.lock_path)
        self._file_sources: dict[str, FileSource] = {}
        self._model_backends: dict[str, ModelBackend] = {}

    def close(self) -> None:
        for source in self._file_sources.values():
            source.close()
        for backend in self._model_backends.values():
            backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            if m in only or any(getattr(self.manifest.deployments[d], "model", None) == m for d in deployments)
        ]
        return models, deployments

    def file_source(self, scheme: str) -> FileSource:
        if scheme not in self._file_sources:
            self._file_sources[scheme] = file_source(scheme, self.manifest)
        return self._file_sources[scheme]

    def _model_backend(self, scheme: str) -> ModelBackend:
        if scheme not in self._model_backends:
            self._model_backends[scheme] = model_backend(scheme, self.manifest, self.state)
        return self._model_backends[scheme]

    # -- observe + plan ----------------------------------------------------------------------
    def plan(self, options: RunOptions = RunOptions()) -> PlanResult:
        if options.update and options.locked:
            raise UsageError("--update and --locked contradict each other", hint="use one of them")
        models, deployments = self._selected(options.only)
        result = PlanResult(Plan(()))
        actions: list[Action] = []
        server_models: dict[str, list[str]] = {}
        records = self.state.records(self.manifest.path)
        for name in models:
            spec = self.manifest.models[name]
            if spec.scheme not in FILE_SCHEMES:
                server_models.setdefault(spec.scheme, []).append(name)
                continue
            try:
                action, snapshot = self._plan_file_model(name, spec, options, records["models"].get(name))
            except LockError:
                raise
            except ProvisionError as exc:
                result.failures.append(
                    Outcome(Action("model", name, Change.UPDATE, "could not be planned"), False, exc)
                )
                continue
            actions.append(action)
            result.snapshots[name] = snapshot
        for scheme, names in server_models.items():
            actions.extend(self._plan_server_models(scheme, names, options, result))
        ctx = self.deploy_context()
        for name in deployments:
            deployment = self.manifest.deployments[name]
            try:
                from .deployments import backend

                engine = backend(deployment.engine)
                observed = engine.observe(name, deployment, ctx)
                actions.append(engine.plan(name, deployment, observed, ctx))
            except ProvisionError as exc:
                result.failures.append(
                    Outcome(Action("deployment", name, Change.UPDATE, "could not be planned"), False, exc)
                )
        if not options.only:
            actions.extend(plan_orphans("model", records["models"], set(self.manifest.models)))
            actions.extend(plan_orphans("deployment", records["deployments"], set(self.manifest.deployments)))
        result.plan = Plan(tuple(actions))
        return result

    def _plan_server_models(
        self, scheme: str, names: list[str], options: RunOptions, result: PlanResult
    ) -> list[Action]:
        try:
            backend = self._model_backend(scheme)
            observed = backend.observe(names)
        except ProvisionError as exc:
            for name in names:
                result.failures.append(
                    Outcome(Action("model", name, Change.UPDATE, "could not be planned"), False, exc)
                )
            return []
        actions = []
        for name in names:
            try:
                actions.append(
                    backend.plan(
                        name,
                        self.manifest.models[name],
                        observed,
                        self.lock.models.get(name),
                        update=options.update,
                        locked=options.locked,
                    )
                )
            except LockError:
                raise
            except ProvisionError as exc:
                result.failures.append(
                    Outcome(Action("model", name, Change.UPDATE, "could not be planned"), False, exc)
                )
        return actions

    def _plan_file_model(
        self, name: str, spec: ModelSpec, options: RunOptions, recorded: Mapping[str, Any] | None
    ) -> tuple[Action, Snapshot]:
        model_dir = self.manifest.model_dir(name)
        recorded_path = (recorded or {}).get("path")
        check_usable(model_dir, self.manifest.path, name, adopt=spec.adopt, recorded_path=recorded_path)
        source = self.file_source(spec.scheme)
        entry = self.lock.models.get(name)
        wanted_spec = lock_spec(spec, source.default_revision)
        spec_changed = entry is None or entry.get("spec") != wanted_spec
        revision = wanted_spec["revision"]
        if spec_changed and options.locked:
            what = "is not in the lock" if entry is None else "changed since the lock was written"
            raise LockError(f"model {name} {what} ({self.manifest.lock_path.name})", resource=name)
        reason = ""
        refresh = spec.scheme == "file" or (options.update and not is_full_commit(revision))
        if spec_changed or refresh:
            snapshot = source.resolve(name, spec)
            if entry is not None and not spec_changed and snapshot.resolved == entry["resolved"]:
                snapshot = self._snapshot_from_lock(spec, entry, source)
            elif entry is not None:
                if spec_changed:
                    reason = "manifest entry changed"
                elif spec.scheme == "file":
                    reason = "local source changed"
                else:
                    reason = f"{revision} moved {entry['resolved'][:10]} -> {snapshot.resolved[:10]}"
                if options.locked:
                    raise LockError(f"model {name}: {reason}; the lock pins {entry['resolved'][:10]}", resource=name)
        else:
            assert entry is not None  # spec_changed covers a missing entry
            snapshot = self._snapshot_from_lock(spec, entry, source)
        local = {f.path: LocalFile(f.path, _size(model_dir / f.path)) for f in snapshot.files}
        stale = _stale_paths(entry, snapshot) if reason else set()
        # Bytes of the right size are trusted only by a recorded stat, else hashed (repair).
        stats = (recorded or {}).get("files", {}) if recorded_path == str(model_dir) else {}
        changed = (
            to_refetch(
                model_dir, snapshot.files, {p: lf.size for p, lf in local.items()}, stats, rehash_all=options.verify
            )
            - stale
        )
        repair = f"{len(changed)} files differ from the lock (changed on disk): fetching them again" if changed else ""
        stale |= changed
        first_time = entry is None and not any(lf.size is not None for lf in local.values())
        action = plan_files(
            name,
            wanted=snapshot.files,
            local=local,
            first_time=first_time,
            reason_if_changed=reason or repair,
            stale=stale,
            in_lock=entry is not None,
        )
        if entry is not None and reason:
            removed = sorted(set(entry.get("files", {})) - {f.path for f in snapshot.files})
            action = _with_details(action, remove=removed)
        return action, snapshot

    @staticmethod
    def _snapshot_from_lock(spec: ModelSpec, entry: dict[str, Any], source: FileSource) -> Snapshot:
        files = tuple(
            RemoteFile(
                path,
                meta["size"],
                meta.get("sha256"),
                meta.get("git_sha1"),
                source.file_url(spec, entry["resolved"], path),
            )
            for path, meta in sorted(entry["files"].items())
        )
        return Snapshot(spec.source, entry["spec"]["revision"], entry["resolved"], files)

    def deploy_context(self, on_status: Callable[[str, str], None] | None = None) -> Any:
        from .deployments.base import DeployContext

        records = self.state.records(self.manifest.path)["deployments"]
        return DeployContext(
            manifest=self.manifest,
            model_dirs={name: self.manifest.model_dir(name) for name in self.manifest.models},
            model_locks=self.lock.models,
            records=records,
            on_status=on_status or self.progress.status,
        )

    # -- apply -------------------------------------------------------------------------------
    def apply(self, options: RunOptions = RunOptions(), planned: PlanResult | None = None) -> ApplyResult:
        started = time.monotonic()
        with self.state.run_lock(self.manifest.path):
            planned = planned or self.plan(options)
            self._preflight_disk(planned.plan)
            outcomes = list(planned.failures)
            model_actions = [a for a in planned.plan.actions if a.kind == "model"]
            outcomes += self._apply_models(model_actions, planned.snapshots, options)
            failed_models = {o.action.name for o in outcomes if not o.ok and o.action.kind == "model"}
            changed_models = {o.action.name for o in outcomes if o.ok and o.action.kind == "model" and o.action.changes}
            deployment_actions = [a for a in planned.plan.actions if a.kind == "deployment"]
            outcomes += self._apply_deployments(
                self._replan_if_model_changed(deployment_actions, changed_models), failed_models
            )
        return ApplyResult(outcomes, time.monotonic() - started)

    def _replan_if_model_changed(self, actions: list[Action], changed_models: set[str]) -> list[Action]:
        """Deployments planned before their model moved (new revision, re-pull) are decided again
        with the new lock, so the same apply replaces a container serving the old files."""
        if not changed_models or not actions:
            return actions
        ctx = self.deploy_context()  # after the models: it carries the new lock
        replanned = []
        for action in actions:
            spec = self.manifest.deployments.get(action.name)
            if (
                spec is not None
                and action.change is not Change.DELETE
                and getattr(spec, "model", None) in changed_models
            ):
                try:
                    action = self._decide_deployment(action.name, spec, ctx)
                except ProvisionError:
                    pass  # keep the first decision; apply reports the failure
            replanned.append(action)
        return replanned

    def _preflight_disk(self, plan: Plan) -> None:
        needed = sum(
            a.download_bytes
            for a in plan.actions
            if a.kind == "model"
            and self.manifest.models.get(a.name, None) is not None
            and self.manifest.models[a.name].scheme in ("hf", "ms")
        )
        if not needed:
            return
        from .fit import check_disk
        from .hardware import Level, free_bytes

        finding = check_disk(needed, free_bytes(self.manifest.models_dir), str(self.manifest.models_dir))
        if finding.level is Level.FAIL:
            raise PreflightError(finding.message, hint=f"{finding.remedy}, or use --only")

    def _apply_models(
        self, actions: list[Action], snapshots: dict[str, Snapshot], options: RunOptions
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        file_actions = [
            a
            for a in actions
            if a.change not in (Change.NOOP, Change.DELETE) and self.manifest.models[a.name].scheme in FILE_SCHEMES
        ]
        recorded = self.state.records(self.manifest.path)["models"]  # read once, not per model
        for action in actions:
            if action.change is Change.NOOP:
                outcomes.append(Outcome(action, True))
                if self.manifest.models[action.name].scheme in FILE_SCHEMES:
                    self._record_model(action.name, snapshots[action.name], recorded.get(action.name))
            elif action.change is Change.DELETE and not options.yes:
                outcomes.append(
                    Outcome(
                        action,
                        False,
                        ProvisionError(
                            "kept: it is no longer in the manifest, and removing it needs confirmation",
                            resource=action.name,
                            hint="run `provision apply --yes` to remove it (asked on a terminal), or put it back",
                        ),
                    )
                )
            elif action.change is Change.DELETE:
                outcomes.append(self._run(action, functools.partial(self._delete_model, action.name)))
            elif self.manifest.models[action.name].scheme not in FILE_SCHEMES:
                outcomes.append(self._run(action, functools.partial(self._apply_server_model, action)))
        outcomes += self._download(file_actions, snapshots)
        return outcomes

    def _run(self, action: Action, work: Callable[[], str | None]) -> Outcome:
        """Run ``work``; a note it returns (e.g. files kept) is added to the action's reason."""
        started = time.monotonic()
        try:
            note = work()
        except ProvisionError as exc:
            return Outcome(action, False, exc, time.monotonic() - started)
        if note:
            action = replace(action, reason=f"{action.reason}; {note}")
        return Outcome(action, True, None, time.monotonic() - started)

    def _apply_server_model(self, action: Action) -> None:
        spec = self.manifest.models[action.name]
        backend = self._model_backend(spec.scheme)
        self.progress.status(action.name, f"{action.change.value}: {action.reason}")
        lock_entry, record = backend.apply(
            action, spec, on_progress=lambda what, done, total: self.progress.layer(action.name, what, done, total)
        )
        self.lock.models[action.name] = lock_entry
        self.lock.save()
        self.state.update(self.manifest.path, "models", action.name, record)

    def _download(self, actions: list[Action], snapshots: dict[str, Snapshot]) -> list[Outcome]:
        """Fetch every file of every model through one bounded pool; isolate failures per model."""
        if not actions:
            return []
        started = time.monotonic()
        digests: dict[str, dict[str, str]] = {a.name: {} for a in actions}
        errors: dict[str, ProvisionError] = {}
        workers = self.manifest.settings.max_parallel_downloads
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download") as pool:
            futures: list[tuple[Action, RemoteFile, Future[str]]] = []
            for action in actions:
                self.progress.model_started(action.name, len(action.files), action.download_bytes)
                model_dir = self.manifest.model_dir(action.name)
                source = self.file_source(self.manifest.models[action.name].scheme)
                mark(model_dir, self.manifest.path, action.name)  # before any file: the folder is provision's
                for file in action.files:
                    future = pool.submit(self._fetch_one, source, action.name, file, model_dir, errors)
                    futures.append((action, file, future))
            for action, file, future in futures:
                try:
                    digests[action.name][file.path] = future.result()
                    self.progress.file_done(action.name, file.path)
                except ProvisionError as exc:
                    errors.setdefault(action.name, exc)
                except OSError as exc:  # disk full, permissions: name the file
                    errors.setdefault(
                        action.name, SourceError(f"{file.path}: {exc.strerror or exc}", resource=action.name)
                    )
                except Exception as exc:  # noqa: BLE001 - a bug must not stop the other models
                    errors.setdefault(
                        action.name,
                        ProvisionError(
                            f"{file.path}: internal error {type(exc).__name__}: {exc}",
                            resource=action.name,
                            hint="rerun with PROVISION_DEBUG=1 and report it",
                        ),
                    )
        outcomes = []
        for action in actions:
            error = errors.get(action.name)
            if error is None:
                try:
                    self._finish_model(action, snapshots[action.name], digests[action.name])
                except OSError as exc:
                    error = SourceError(str(exc), resource=action.name)
            self.progress.model_done(action.name, error is None)
            outcomes.append(Outcome(action, error is None, error, time.monotonic() - started))
        return outcomes

    def _fetch_one(
        self, source: FileSource, name: str, file: RemoteFile, model_dir: Path, errors: dict[str, ProvisionError]
    ) -> str:
        if name in errors:  # the model already failed: do not spend bandwidth on it
            raise errors[name]
        return source.fetch(name, file, model_dir, on_progress=lambda n: self.progress.advance(name, n))

    def _finish_model(self, action: Action, snapshot: Snapshot, digests: dict[str, str]) -> None:
        model_dir = self.manifest.model_dir(action.name)
        for path in action.details.get("remove", ()):
            target = inside(model_dir, path)  # a link in the folder must not lead the unlink out
            if target is not None:
                target.unlink(missing_ok=True)
        locked = self.lock.models.get(action.name) or {}
        pinned = locked.get("files", {}) if locked.get("resolved") == snapshot.resolved else {}
        files = {}
        for file in snapshot.files:
            # A file an earlier, killed run placed was verified then but not hashed now: when the
            # hub published no sha256 (small git files), hash it so the lock always pins one.
            sha256 = digests.get(file.path) or file.sha256 or sha256_file(model_dir / file.path)
            entry = {"size": file.size, "sha256": sha256}
            # Such a file keeps its git sha1, also when fetched again from the lock (which has
            # both): a re-fetch must not rewrite the lock (an LFS file's is its pointer's: left out).
            if file.git_sha1 and (not file.sha256 or pinned.get(file.path, {}).get("git_sha1") == file.git_sha1):
                entry["git_sha1"] = file.git_sha1
            files[file.path] = entry
        source = self.file_source(self.manifest.models[action.name].scheme)
        source.finalize(action.name, snapshot, model_dir)
        self._write_lock_entry(action.name, snapshot, files)

    def _write_lock_entry(self, name: str, snapshot: Snapshot, files: dict[str, dict[str, Any]]) -> None:
        spec = self.manifest.models[name]
        source = self.file_source(spec.scheme)
        self.lock.models[name] = {
            "spec": lock_spec(spec, source.default_revision),
            "resolved": snapshot.resolved,
            "files": files,
        }
        self.lock.save()
        self._record_model(name, snapshot)

    def _record_model(self, name: str, snapshot: Snapshot, current: Mapping[str, Any] | None = None) -> None:
        """Record the model as provision's in state, with the stat of each (verified) file,
        unless ``current`` already says so."""
        model_dir = self.manifest.model_dir(name)
        record = {
            "source": self.manifest.models[name].source,
            "path": str(model_dir),
            "resolved": snapshot.resolved,
            "files": placed_stats(model_dir, snapshot.files),
        }
        if current != record:
            mark(model_dir, self.manifest.path, name)  # a folder applied before markers existed
            self.state.update(self.manifest.path, "models", name, record)

    def _delete_model(self, name: str, record: dict[str, Any] | None = None) -> str | None:
        """Remove a model; for a folder, only the files provision placed (returns a note
        naming the files it kept), and only in a folder marked as this manifest's."""
        record = record or self.state.records(self.manifest.path)["models"].get(name, {})
        scheme = record.get("source", "").partition("://")[0]
        note = None
        if scheme and scheme not in FILE_SCHEMES:
            self._model_backend(scheme).remove(name, record)
        else:
            note = self._delete_folder(name, record)
        self.lock.models.pop(name, None)
        self.lock.save()
        self.state.update(self.manifest.path, "models", name, None)
        return note

    def _delete_folder(self, name: str, record: Mapping[str, Any]) -> str | None:
        # The folder the manifest names, or the recorded one (models_dir moved) if its marker
        # proves it this model's: a path in the state alone never decides what is deleted.
        candidates = [self.manifest.model_dir(name)]
        recorded = Path(str(record.get("path", "")))
        if recorded.is_absolute() and recorded.name == name and recorded != candidates[0]:
            candidates.append(recorded)
        model_dir = next(
            (c for c in candidates if is_ours(c, self.manifest.path, name, recorded_path=record.get("path"))), None
        )
        if model_dir is None:
            if any(c.exists() for c in candidates):
                raise OwnershipError(
                    f"not removed: {candidates[0]} has no {MARKER} naming this manifest's model {name}",
                    resource=name,
                    hint="provision removes only folders it created; remove it yourself if you are sure",
                )
            return None
        placed = set((self.lock.models.get(name) or {}).get("files", {})) | set(record.get("files", {}))
        kept = remove_placed(model_dir, placed)
        if kept:
            shown = ", ".join(ascii(p) for p in kept[:5]) + (", ..." if len(kept) > 5 else "")
            return f"kept {len(kept)} files provision did not place in {model_dir}: {shown}"
        return None

    def _apply_deployments(self, actions: list[Action], failed_models: set[str]) -> list[Outcome]:
        from .deployments import backend

        outcomes = []
        ctx = self.deploy_context()
        records = ctx.records
        for action in actions:
            if action.change is Change.DELETE:
                record = records.get(action.name, {})
                outcomes.append(self._run(action, functools.partial(self._remove_deployment, action.name, record)))
                continue
            spec = self.manifest.deployments[action.name]
            model = getattr(spec, "model", None)
            if model in failed_models:
                err = ProvisionError(f"skipped: its model {model} failed", resource=action.name)
                outcomes.append(Outcome(action, False, err))
                continue
            engine = backend(spec.engine)

            def work(a: Action = action, s: Any = spec, e: Any = engine) -> None:
                record = e.apply(a, s, self.deploy_context())
                self.state.update(self.manifest.path, "deployments", a.name, record)

            outcomes.append(self._run(action, work))
        return outcomes

    def _remove_deployment(self, name: str, record: dict[str, Any]) -> None:
        from .deployments import backend

        engine_name = record.get("engine")
        if engine_name:
            backend(engine_name).remove(name, record, self.deploy_context())
        self.state.update(self.manifest.path, "deployments", name, None)

    def smoke_jobs(self, names: tuple[str, ...] = ()) -> list[Any]:
        """One smoke-test job per deployment (all, or ``names``); clients are made lazily."""
        from .client import open_engine
        from .smoke import SmokeJob

        unknown = [n for n in names if n not in self.manifest.deployments]
        if unknown:
            raise ManifestError(
                f"no such deployment: {', '.join(unknown)}",
                file=str(self.manifest.path),
                hint="deployments: " + (", ".join(sorted(self.manifest.deployments)) or "none"),
            )
        ctx = self.deploy_context()
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

    # -- destroy, status, verify -------------------------------------------------------------
    def destroy_plan(self, only: tuple[str, ...] = ()) -> Plan:
        records = self.state.records(self.manifest.path)
        labelled = self._labelled_containers(records["deployments"]) - set(records["deployments"])
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

    def _labelled_containers(self, records: Mapping[str, Any]) -> set[str]:
        """Deployments with a vLLM container labelled for this manifest: ownership is the label,
        so a failed apply (which records nothing) is destroyed too."""
        if not any(getattr(d, "engine", None) == "vllm" for d in self.manifest.deployments.values()) and not any(
            r.get("engine") == "vllm" for r in records.values()
        ):
            return set()
        from .deployments.vllm import labelled_deployments

        try:
            return labelled_deployments(str(self.manifest.path.absolute()))
        except EngineUnavailableError:
            return set()  # no engine: nothing of ours can be running there

    def destroy(self, plan: Plan) -> ApplyResult:
        started = time.monotonic()
        outcomes = []
        with self.state.run_lock(self.manifest.path):
            records = self.state.records(self.manifest.path)
            for action in plan.actions:
                if action.kind == "deployment":
                    record = records["deployments"].get(action.name) or dict(action.details)
                    outcomes.append(self._run(action, functools.partial(self._remove_deployment, action.name, record)))
                else:
                    record = records["models"].get(action.name, {})
                    outcomes.append(self._run(action, functools.partial(self._delete_model, action.name, record)))
        return ApplyResult(outcomes, time.monotonic() - started)

    def status(self) -> list[dict[str, Any]]:
        """Per resource: applied here? and what is there now. Files by stat against the lock
        (offline); server models and deployments through their backends' read-only observe."""
        records = self.state.records(self.manifest.path)
        rows: list[dict[str, Any]] = []
        server_models: dict[str, list[str]] = {}
        for name, spec in self.manifest.models.items():
            entry = self.lock.models.get(name)
            row: dict[str, Any] = {
                "kind": "model",
                "name": name,
                "source": spec.source,
                "applied": name in records["models"],
            }
            rows.append(row)
            if spec.scheme not in FILE_SCHEMES:
                server_models.setdefault(spec.scheme, []).append(name)
                row["resolved"] = (entry or {}).get("digest")
            elif entry is None:
                row["state"] = "not applied"
            else:
                model_dir = self.manifest.model_dir(name)
                missing = [p for p, meta in entry["files"].items() if _size(model_dir / p) != meta["size"]]
                row["state"] = f"missing {plural(len(missing), 'file')}" if missing else "present"
                row["resolved"] = entry["resolved"]
                row["bytes"] = sum(meta["size"] for meta in entry["files"].values())
        by_name = {row["name"]: row for row in rows}
        for scheme, names in server_models.items():
            try:
                backend = self._model_backend(scheme)
                observed = backend.observe(names)
            except ProvisionError as exc:
                for name in names:
                    by_name[name].update(state="unreachable", detail=exc.message)
                continue
            for name in names:
                decide = functools.partial(
                    backend.plan,
                    name,
                    self.manifest.models[name],
                    observed,
                    self.lock.models.get(name),
                    update=False,
                    locked=False,
                )
                by_name[name].update(self._describe(decide))
        ctx = self.deploy_context()
        for name, dep in self.manifest.deployments.items():
            row = {
                "kind": "deployment",
                "name": name,
                "engine": dep.engine,
                "model": dep.model,
                "applied": name in records["deployments"],
            }

            row.update(self._describe(functools.partial(self._decide_deployment, name, dep, ctx)))
            rows.append(row)
        return rows

    @staticmethod
    def _decide_deployment(name: str, deployment: Any, ctx: Any) -> Action:
        from .deployments import backend

        engine = backend(deployment.engine)
        return engine.plan(name, deployment, engine.observe(name, deployment, ctx), ctx)

    def servers(self) -> list[dict[str, Any]]:
        """Reachability and version of the servers this manifest uses (Ollama, Docker)."""
        from .hardware import probe_docker, probe_ollama

        engines = {d.engine for d in self.manifest.deployments.values()}
        out: list[dict[str, Any]] = []
        if "ollama" in engines or any(m.scheme == "ollama" for m in self.manifest.models.values()):
            probe = probe_ollama(self.manifest.settings.ollama.host)
            out.append(
                {
                    "server": "ollama",
                    "address": probe.host,
                    "reachable": probe.reachable,
                    "version": probe.version,
                    "error": probe.error,
                }
            )
        if "vllm" in engines:
            docker = probe_docker()
            out.append(
                {
                    "server": "docker",
                    "address": docker.host,
                    "reachable": docker.reachable,
                    "version": docker.server_version,
                    "error": docker.error,
                }
            )
        return out

    @staticmethod
    def _describe(decide: Callable[[], Action]) -> dict[str, str]:
        """A resource's state in words, from what its backend would do now."""
        try:
            action = decide()
        except ProvisionError as exc:
            return {"state": "unknown", "detail": exc.message}
        state = {Change.NOOP: "ok", Change.CREATE: "missing"}.get(action.change, "drift")
        if action.details.get("drift"):  # left alone on purpose, but not what the lock pins
            state = "drift"
        # A backend with nothing to create still knows when it could not run (transformers
        # without its model folder) or that it cannot tell offline (a hosted API).
        state = action.details.get("state", state)
        return {"state": state, "detail": action.reason}

    def unlocked_models(self) -> list[str]:
        """Downloaded (file-based) models that no apply has locked yet: verify cannot vouch for them."""
        return [
            name
            for name, spec in self.manifest.models.items()
            if spec.scheme in FILE_SCHEMES and name not in self.lock.models
        ]

    def verify(self, *, workers: int = 4) -> list[FileCheck]:
        """Re-hash every locked file offline; report missing, corrupt and extra files."""
        problems: list[FileCheck] = []
        jobs: list[tuple[str, str, Path, str | None]] = []
        for name, spec in self.manifest.models.items():
            entry = self.lock.models.get(name)
            if spec.scheme not in FILE_SCHEMES or entry is None:
                continue
            model_dir = self.manifest.model_dir(name)
            for path, meta in sorted(entry["files"].items()):
                target = model_dir / path
                size = _size(target)
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
                self.progress.advance("verify", 1)
                if expected and actual != expected:
                    problems.append(FileCheck(name, path, "corrupt"))
        return sorted(problems, key=lambda p: (p.model, p.path))


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        return None


def _extra_files(model_dir: Path, known: set[str]) -> Iterable[str]:
    if not model_dir.is_dir():
        return []
    return sorted(
        rel
        for rel in (p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
        if rel not in known and not rel.startswith(".cache/") and rel != MARKER
    )


def _stale_paths(entry: dict[str, Any] | None, snapshot: Snapshot) -> set[str]:
    """Files whose content differs between the locked and the new snapshot (same size or not)."""
    if entry is None:
        return {f.path for f in snapshot.files}
    old = entry.get("files", {})
    stale = set()
    for file in snapshot.files:
        meta = old.get(file.path)
        if (
            meta is None
            or file.sha256
            and meta.get("sha256") != file.sha256
            or not file.sha256
            and file.git_sha1
            and meta.get("git_sha1") != file.git_sha1
            or not file.sha256
            and not file.git_sha1
        ):
            stale.add(file.path)
    return stale


def _with_details(action: Action, **details: Any) -> Action:
    return replace(action, details={**action.details, **details})
