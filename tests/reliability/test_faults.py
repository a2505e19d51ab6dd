"""A fault-injecting hub: 5xx, 429 with ``Retry-After``, connection resets, truncated bodies and
stalls hit one repo's file bodies only. A transient fault is retried and the apply succeeds;
a persistent one is retried a bounded number of times, then fails that model with one line
naming the file, while the other model lands; nothing corrupt is ever placed at a final path,
and once the hub behaves a plain apply completes.

Stalls use ``PROVISION_HTTP_TIMEOUT=1`` (the downloader's read timeout, 30 s by default).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.cli_runner import run_cli
from tests.fakes._server import Recorded, Request
from tests.fakes.hf_hub import Blob, FakeHFHub, Faults
from tests.manifest_files import lock_of
from tests.reliability._support import (
    hf_settings,
    leftovers,
    models_manifest,
    orphans,
    payload,
)

BAD = {"config.json": b'{"hidden_size": 8}', "weights.bin": payload(300_000, 11)}
GOOD = {"config.json": b"{}", "model.safetensors": payload(500_000, 12)}
MODELS = "  bad: {source: hf://org/bad}\n  good: {source: hf://org/good}\n"
TIMEOUT_ENV = {"PROVISION_HTTP_TIMEOUT": "1"}
ATTEMPTS = 5  # provision.retry.RetryPolicy.attempts: failures in a row without progress


@dataclass
class MoreFaults(Faults):
    """The hub's faults plus three it lacks; counts are used up like ``status_5xx``'s."""

    resets: int = 0  # cut with a TCP RST after ``drop_after_bytes`` (or 0) body bytes
    short_bodies: int = 0  # a clean 200 whose Content-Length and body stop half-way
    stalls: int = 0  # silence of ``stall_for`` seconds before the headers, for this many responses
    stall_for: float = 0.0  # (the base ``stall_seconds`` would stall every response)

    def take(self, name: str) -> bool:
        with self._lock:
            left: int = getattr(self, name)
            if left > 0:
                setattr(self, name, left - 1)
            return left > 0


class FaultyHub(FakeHFHub):
    """Faults apply to ``org/bad`` only: ``org/good`` is served by a hub that behaves."""

    def __init__(self) -> None:
        self._healthy = Faults()
        self.bad_faults = MoreFaults()
        self._serving = threading.local()
        super().__init__()

    @property
    def faults(self) -> Faults:
        return self.bad_faults if getattr(self._serving, "bad", False) else self._healthy

    @faults.setter
    def faults(self, value: Faults) -> None:
        pass  # the base class installs its own: keep ours

    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        self._serving.bad = request.path.startswith("/org/bad/resolve/")
        super().handle(request, handler, record)

    def serve_blob(
        self,
        request: Request,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        blob: Blob,
        headers: dict[str, str],
        *,
        name: str,
    ) -> None:
        faults = self.faults
        if request.method == "GET" and isinstance(faults, MoreFaults):
            if faults.take("short_bodies"):
                assert blob.data is not None
                half = blob.data[: blob.size // 2]
                self.send(handler, record, 200, half, {**headers, "Content-Type": "application/octet-stream"})
                return
            if faults.take("stalls"):
                threading.Event().wait(faults.stall_for)
            if faults.take("resets"):
                handler.send_response(200)
                handler.send_header("Content-Length", str(blob.size))
                handler.end_headers()
                handler.wfile.write((blob.data or b"")[: faults.drop_after_bytes or 0])
                handler.wfile.flush()
                # SO_LINGER 0: close() sends RST, the client sees ECONNRESET
                handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                handler.connection.close()
                handler.close_connection = True
                return
        super().serve_blob(request, handler, record, blob, headers, name=name)

    def gets_of(self, repo: str, path: str) -> int:
        return sum(
            1 for r in self.requests if r.method == "GET" and r.path == f"/{repo}/resolve/{self.sha(repo)}/{path}"
        )

    def sha(self, repo: str) -> str:
        return self.repos[repo].branches["main"]


@pytest.fixture()
def hub() -> Iterator[FaultyHub]:
    with FaultyHub() as server:
        server.add_repo("org/bad", BAD)
        server.add_repo("org/good", GOOD)
        yield server


def assert_good_landed_and_bad_clean(tmp_path: Path, manifest: Path) -> None:
    models = tmp_path / "models"
    for rel, data in GOOD.items():
        assert (models / "good" / rel).read_bytes() == data
    # A final path holds the whole, right file or nothing.
    for rel, data in BAD.items():
        target = models / "bad" / rel
        assert not target.exists() or target.read_bytes() == data
    lock = lock_of(manifest)
    assert "good" in lock["models"] and "bad" not in lock["models"]


def recover(tmp_path: Path, manifest: Path, hub: FaultyHub) -> None:
    """Once the hub behaves, a plain apply completes and leaves nothing behind."""
    hub.bad_faults = MoreFaults()
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    assert run_cli("verify", manifest).returncode == 0
    lock = lock_of(manifest)
    for rel, data in BAD.items():
        assert (tmp_path / "models" / "bad" / rel).read_bytes() == data
    assert leftovers(tmp_path / "models") == [] and orphans(tmp_path / "models", lock) == []


def arm(faults: MoreFaults, settings: Mapping[str, object]) -> None:
    """Set the named fault fields (e.g. ``{"resets": 2, "drop_after_bytes": 100_000}``)."""
    for name, value in settings.items():
        assert hasattr(faults, name), name
        setattr(faults, name, value)


TRANSIENT: dict[str, dict[str, object]] = {
    "5xx": {"status_5xx": {"count": 3, "status": 502}},
    "429-retry-after": {"retry_after": {"count": 2, "seconds": 1}},
    "reset-mid-body": {"resets": 2, "drop_after_bytes": 100_000},
    "reset-at-start": {"resets": 2},
    "cut-mid-body": {"drop_after_bytes": 120_000, "drop_times": 2},
    "short-body": {"short_bodies": 2},
    "stall": {"stalls": 1, "stall_for": 3},
}


@pytest.mark.parametrize("fault", sorted(TRANSIENT))
def test_transient_fault_is_retried_and_the_apply_succeeds(tmp_path: Path, hub: FaultyHub, fault: str) -> None:
    arm(hub.bad_faults, TRANSIENT[fault])
    manifest = models_manifest(tmp_path, hf_settings(hub.url), MODELS)
    result = run_cli("apply", manifest, env=TIMEOUT_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sum(hub.gets_of("org/bad", rel) for rel in BAD) > len(BAD), "no file of org/bad was retried"
    assert run_cli("verify", manifest).returncode == 0
    for rel, data in BAD.items():
        assert (tmp_path / "models" / "bad" / rel).read_bytes() == data
    assert leftovers(tmp_path / "models") == []


PERSISTENT: dict[str, tuple[dict[str, object], str]] = {
    "5xx": ({"status_5xx": {"count": 1000, "status": 503}}, "HTTP 503"),
    "429-retry-after": ({"retry_after": {"count": 1000, "seconds": 0}}, "HTTP 429"),
    "reset": ({"resets": 1000}, "connection"),
    "truncated": ({"drop_after_bytes": 0, "drop_times": None}, "body ended"),
    "short-body": ({"short_bodies": 1000}, "body ended"),
    "stall": ({"stalls": 1000, "stall_for": 2}, "timed out"),
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(PERSISTENT))
def test_persistent_fault_gives_up_naming_the_file_and_spares_the_other_model(
    tmp_path: Path, hub: FaultyHub, fault: str
) -> None:
    settings, symptom = PERSISTENT[fault]
    arm(hub.bad_faults, settings)
    manifest = models_manifest(tmp_path, hf_settings(hub.url), MODELS)
    result = run_cli("apply", manifest, env=TIMEOUT_ENV)
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if "model.bad" in line]
    assert any(f"{rel}: " in line for rel in BAD), f"the error must name the file: {line}"
    assert symptom in line and f"gave up after {ATTEMPTS} attempts" in line, line
    assert "model.good" not in result.stderr and "Traceback" not in result.stderr
    gets = sum(hub.gets_of("org/bad", rel) for rel in BAD)
    # per file: the attempts after its last progress, plus the one that made progress
    assert ATTEMPTS <= gets <= (ATTEMPTS + 1) * len(BAD), f"{gets} GETs: retries must be bounded"
    assert_good_landed_and_bad_clean(tmp_path, manifest)
    recover(tmp_path, manifest, hub)


def test_a_corrupt_body_is_never_placed_and_the_other_model_lands(tmp_path: Path, hub: FaultyHub) -> None:
    hub.bad_faults.corrupt = {"weights.bin"}
    manifest = models_manifest(tmp_path, hf_settings(hub.url), MODELS)
    result = run_cli("apply", manifest)
    assert result.returncode == 1
    assert "weights.bin" in result.stderr and "sha256" in result.stderr and "Traceback" not in result.stderr
    assert hub.gets_of("org/bad", "weights.bin") == 2  # once, then once from scratch
    assert not (tmp_path / "models" / "bad" / "weights.bin").exists()
    assert not list((tmp_path / "models" / "bad").rglob("*.part")), "bytes that failed verification were kept"
    assert_good_landed_and_bad_clean(tmp_path, manifest)
    recover(tmp_path, manifest, hub)
