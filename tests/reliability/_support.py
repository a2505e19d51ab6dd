"""Shared pieces of the reliability suite: payloads, manifests, kill switches on the fakes,
and the invariants every scenario checks afterwards.

A kill switch is armed with the pid of a running ``provision`` and fires ``SIGKILL`` from
inside the fake server, at an exact point of the protocol: when the n-th request arrives
(before it is answered), or once n body bytes have been written. So a kill lands where the
test says, not wherever the scheduler happened to be.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.apply_support import payload as payload  # re-exported for the suite
from tests.fakes._server import Recorded, Request
from tests.fakes.hf_hub import FakeHFHub
from tests.fakes.modelscope_hub import FakeModelScopeHub
from tests.fakes.ollama_server import FakeOllama
from tests.manifest_files import lock_path, write_manifest

# Files huggingface_hub's own ``local_dir`` bookkeeping keeps (documented in the README).
HF_BOOKKEEPING = ".cache/huggingface/"
# What an interrupted run may leave and a completed one must not.
TEMP_SUFFIXES = (".part", ".tmp", ".incomplete", ".lock")


def models_manifest(tmp_path: Path, settings: str, models: str, extra: str = "") -> Path:
    """``tmp_path/m.yaml``: ``models`` placed under ``models/``, with these ``settings`` lines."""
    return write_manifest(tmp_path, f"version: 1\nsettings:\n  models_dir: models\n{settings}models:\n{models}{extra}")


def hf_settings(url: str) -> str:
    return f"  huggingface: {{endpoint: '{url}', token: '${{HF_TOKEN:-}}'}}\n"


def ms_settings(url: str) -> str:
    return f"  modelscope: {{endpoint: '{url}', token: '${{MODELSCOPE_API_TOKEN:-}}'}}\n"


def ollama_settings(url: str) -> str:
    return f"  ollama: {{host: '{url}'}}\n"


# -- kill switches ---------------------------------------------------------------------------


@dataclass
class KillSwitch:
    """Fires SIGKILL at ``pid`` at the ``at_request``-th request or after ``at_bytes`` body bytes."""

    pid: int | None = None
    at_request: int | None = None
    at_bytes: int | None = None
    requests: int = 0
    bytes: int = 0
    generation: int = 0  # bumped by each arm, so a handler knows which run it serves
    fired_generation: int = -1

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def arm(self, pid: int, *, at_request: int | None = None, at_bytes: int | None = None) -> None:
        with self._lock:
            self.pid, self.at_request, self.at_bytes = pid, at_request, at_bytes
            self.requests = self.bytes = 0
            self.generation += 1

    def disarm(self) -> None:
        with self._lock:
            self.pid = None
            self.generation += 1  # later requests belong to no killed run

    def fire(self) -> None:
        with self._lock:
            self._fire()

    def fired_in(self, generation: int) -> bool:
        return self.fired_generation >= generation

    def on_request(self) -> int:
        """Count a request; return the generation the handler serves."""
        with self._lock:
            self.requests += 1
            if self.at_request is not None and self.requests >= self.at_request:
                self._fire()
            return self.generation

    def on_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            if self.at_bytes is not None and self.bytes >= self.at_bytes:
                self._fire()

    def _fire(self) -> None:
        if self.pid is not None and self.fired_generation != self.generation:
            self.fired_generation = self.generation
            with contextlib.suppress(ProcessLookupError):  # it finished first: the trial tests a kill after completion
                os.kill(self.pid, signal.SIGKILL)


class _KillOnTraffic:
    """Mixin for the hub fakes: feed every request and every body byte to a KillSwitch."""

    kill: KillSwitch

    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        self.kill.on_request()
        super().handle(request, handler, record)  # type: ignore[misc]

    def _count(self, n: int) -> None:  # both hub fakes count body bytes here
        super()._count(n)  # type: ignore[misc]
        self.kill.on_bytes(n)


class KillableHFHub(_KillOnTraffic, FakeHFHub):
    def __init__(self) -> None:
        super().__init__()
        self.kill = KillSwitch()


class KillableMSHub(_KillOnTraffic, FakeModelScopeHub):
    def __init__(self) -> None:
        super().__init__()
        self.kill = KillSwitch()


class KillableOllama(FakeOllama):
    """Counts NDJSON lines as "bytes": ``at_bytes=n`` kills once n stream lines were written.

    Pull lines are paced (``line_delay``), and a pull whose client was killed stops at its next
    line, as Ollama cancels a pull with its request; otherwise the fake would finish every
    killed pull in the background and the next trial would find nothing left to interrupt.
    """

    def __init__(self, *, line_delay: float = 0.1) -> None:
        super().__init__()
        self.kill = KillSwitch()
        self.line_delay = line_delay
        self._serving = threading.local()

    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        self._serving.generation = self.kill.on_request()
        super().handle(request, handler, record)

    def write_chunk(self, handler: BaseHTTPRequestHandler, data: bytes) -> None:  # type: ignore[override]
        if self.kill.fired_in(self._serving.generation):
            raise BrokenPipeError("the client was killed")
        time.sleep(self.line_delay)
        super().write_chunk(handler, data)
        self.kill.on_bytes(1)


# -- invariants ------------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    """Parse a file provision wrote; a half-written one fails the test here."""
    return json.loads(path.read_text(encoding="utf-8"))


def assert_bookkeeping_parses(manifest: Path, state_dir: Path) -> None:
    """Lock and state are whole JSON documents, with no temporary sibling left beside them."""
    lock = lock_path(manifest)
    if lock.exists():
        assert read_json(lock)["version"] == 1
    state = state_dir / "state.json"
    if state.exists():
        assert read_json(state)["version"] == 1


def assert_no_stray_temp(manifest: Path, state_dir: Path) -> None:
    strays = [p.name for p in manifest.parent.glob(".*.tmp")]
    strays += [p.name for p in state_dir.glob(".*.tmp")] if state_dir.exists() else []
    assert not strays, f"temporary files of an atomic write left behind: {strays}"


def leftovers(models_dir: Path) -> list[str]:
    """Partial or temporary files anywhere under ``models_dir`` (HF bookkeeping excepted)."""
    if not models_dir.exists():
        return []
    found = []
    for path in models_dir.rglob("*"):
        rel = path.relative_to(models_dir).as_posix()
        if HF_BOOKKEEPING in rel + "/":
            continue
        if path.is_file() and (path.name.endswith(TEMP_SUFFIXES) or "/.cache/provision/partial/" in f"/{rel}"):
            found.append(rel)
    return sorted(found)


def orphans(models_dir: Path, lock: dict[str, Any], *, foreign: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Files under ``models_dir`` that no lock entry accounts for (HF bookkeeping and provision's
    ownership marker excepted)."""
    if not models_dir.exists():
        return []
    found = []
    for path in sorted(models_dir.rglob("*")):
        if not path.is_file():
            continue
        model, _, rel = path.relative_to(models_dir).as_posix().partition("/")
        if model in foreign or rel.startswith(HF_BOOKKEEPING) or rel == ".provision.json":
            continue
        if rel not in lock.get("models", {}).get(model, {}).get("files", {}):
            found.append(f"{model}/{rel}")
    return found


def assert_final_paths_hold_only_good_bytes(model_dir: Path, files: dict[str, bytes]) -> None:
    """At any moment, a file at its final path is the whole, right file (never a partial)."""
    for rel, data in files.items():
        target = model_dir / rel
        if target.exists():
            assert target.read_bytes() == data, f"{rel} at its final path is not the hub's file"


def secrets_in(paths: list[Path], canaries: list[str]) -> list[tuple[str, str]]:
    hits = []
    for path in paths:
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            hits += [(str(path), c) for c in canaries if c in text]
    return hits
