"""Models: plan and fetch file-based models (hf://, ms://, file://), pull server models
(ollama://), write their lock entries and state records, delete them.

The decisions are :mod:`provision.plan`'s; this module observes (a stat of each file, one
read of a server) and acts. One model's failure never stops another: each is an
:class:`~provision.reconciler.common.Outcome`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import LockError, OwnershipError, ProvisionError, SourceError
from ..files import RemoteFile, Snapshot
from ..hashing import sha256_file
from ..lock import LockFile
from ..manifest import Manifest, ModelSpec
from ..ownership import MARKER, check_usable, inside, is_ours, mark, placeable, remove_placed
from ..plan import Action, Change, LocalFile, lock_spec, plan_files, refetch_reason, resolve_reason, stale_paths
from ..progress import Progress
from ..repair import placed_stats, to_refetch
from ..sources import FILE_SCHEMES, file_source, server_source
from ..sources.base import FileSource, ServerSource
from ..state import State
from .common import Outcome, Part, PlanResult, RunOptions, not_planned, run_step, size_of


class ModelReconciler(Part):
    """The models of one manifest; sources are opened on first use and closed with it."""

    def __init__(self, manifest: Manifest, state: State, lock: LockFile, progress: Progress) -> None:
        super().__init__(manifest, state, lock, progress)
        self._file_sources: dict[str, FileSource] = {}
        self._server_sources: dict[str, ServerSource] = {}

    def close(self) -> None:
        for source in self._file_sources.values():
            source.close()
        for server in self._server_sources.values():
            server.close()

    def file_source(self, scheme: str) -> FileSource:
        if scheme not in self._file_sources:
            self._file_sources[scheme] = file_source(scheme, self.manifest)
        return self._file_sources[scheme]

    def server_source(self, scheme: str) -> ServerSource:
        if scheme not in self._server_sources:
            self._server_sources[scheme] = server_source(scheme, self.manifest, self.state)
        return self._server_sources[scheme]

    # -- plan --------------------------------------------------------------------------------
    def plan(
        self, names: list[str], options: RunOptions, records: Mapping[str, Mapping[str, Any]], result: PlanResult
    ) -> list[Action]:
        """Decide each model (``records``: the state's); one that cannot be planned goes to
        ``result.failures`` (a lock violation stops the run: ``--locked`` is all or nothing)."""
        actions: list[Action] = []
        on_server: dict[str, list[str]] = {}
        for name in names:
            spec = self.manifest.models[name]
            if spec.scheme not in FILE_SCHEMES:
                on_server.setdefault(spec.scheme, []).append(name)
                continue
            try:
                action, snapshot = self._plan_file_model(name, spec, options, records.get(name))
            except LockError:
                raise
            except ProvisionError as exc:
                result.failures.append(not_planned("model", name, exc))
                continue
            actions.append(action)
            result.snapshots[name] = snapshot
        for scheme, server_names in on_server.items():
            actions.extend(self._plan_server_models(scheme, server_names, options, result))
        return actions

    def _plan_server_models(
        self, scheme: str, names: list[str], options: RunOptions, result: PlanResult
    ) -> list[Action]:
        try:
            server = self.server_source(scheme)
            observed = server.observe(names)
        except ProvisionError as exc:
            result.failures += [not_planned("model", name, exc) for name in names]
            return []
        actions = []
        for name in names:
            try:
                actions.append(
                    server.plan(
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
                result.failures.append(not_planned("model", name, exc))
        return actions

    def _plan_file_model(
        self, name: str, spec: ModelSpec, options: RunOptions, recorded: Mapping[str, Any] | None
    ) -> tuple[Action, Snapshot]:
        model_dir = self.manifest.model_dir(name)
        recorded_path = (recorded or {}).get("path")
        check_usable(model_dir, self.manifest.path, name, adopt=spec.adopt)
        source = self.file_source(spec.scheme)
        entry = self.lock.models.get(name)
        wanted_spec = lock_spec(spec, source.default_revision)
        locked_spec = entry.get("spec") if entry is not None else None
        why = resolve_reason(locked_spec, wanted_spec, scheme=spec.scheme, update=options.update)
        if why is not None and why.lock_must_change and options.locked:
            raise LockError(f"model {name} {why.value} ({self.manifest.lock_path.name})", resource=name)
        reason = ""
        if why is None:
            assert entry is not None  # resolve_reason covers a missing entry
            snapshot = self._snapshot_from_lock(spec, entry, source)
        else:
            snapshot = source.resolve(name, spec)
            pinned = entry["resolved"] if entry is not None else None
            reason = refetch_reason(
                why, scheme=spec.scheme, revision=wanted_spec["revision"], locked=pinned, resolved=snapshot.resolved
            )
            if entry is not None and not reason:
                snapshot = self._snapshot_from_lock(spec, entry, source)
            elif reason and options.locked:
                raise LockError(f"model {name}: {reason}; the lock pins {str(pinned)[:10]}", resource=name)
        local = {f.path: LocalFile(f.path, size_of(model_dir / f.path)) for f in snapshot.files}
        stale = stale_paths(entry.get("files", {}), snapshot.files) if entry is not None and reason else set()
        # Bytes of the right size are trusted only by a recorded stat, else hashed (repair).
        stats = (recorded or {}).get("files", {}) if recorded_path == str(model_dir) else {}
        sizes = {p: lf.size for p, lf in local.items()}
        changed = to_refetch(model_dir, snapshot.files, sizes, stats, rehash_all=options.verify) - stale
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
            action = replace(action, details={**action.details, "remove": removed})
        return action, snapshot

    @staticmethod
    def _snapshot_from_lock(spec: ModelSpec, entry: Mapping[str, Any], source: FileSource) -> Snapshot:
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

    # -- apply -------------------------------------------------------------------------------
    def apply(self, actions: list[Action], snapshots: dict[str, Snapshot], options: RunOptions) -> list[Outcome]:
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
                outcomes.append(run_step(action, functools.partial(self.delete, action.name)))
            elif self.manifest.models[action.name].scheme not in FILE_SCHEMES:
                outcomes.append(run_step(action, functools.partial(self._apply_server_model, action)))
        outcomes += self._download(file_actions, snapshots)
        return outcomes

    def _apply_server_model(self, action: Action) -> None:
        spec = self.manifest.models[action.name]
        server = self.server_source(spec.scheme)
        self.progress.status(action.name, f"{action.change.value}: {action.reason}")
        lock_entry, record = server.apply(
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
        placeable(model_dir, file.path, resource=name)  # every source writes at model_dir / file.path
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

    # -- delete ------------------------------------------------------------------------------
    def delete(self, name: str, record: Mapping[str, Any] | None = None) -> str | None:
        """Remove a model; for a folder, only the files provision placed (returns a note
        naming the files it kept), and only in a folder marked as this manifest's."""
        record = record or self.state.records(self.manifest.path)["models"].get(name, {})
        scheme = record.get("source", "").partition("://")[0]
        note = None
        if scheme and scheme not in FILE_SCHEMES:
            self.server_source(scheme).remove(name, dict(record))
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
        model_dir = next((c for c in candidates if is_ours(c, self.manifest.path, name)), None)
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
