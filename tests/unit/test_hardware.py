"""Machine probes: NVML faked at the ``pynvml`` module boundary, the real no-GPU path, disk,
a Docker engine answering on a unix socket and through the SDK, Ollama, and the JSON report."""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from provision import hardware
from provision.fit import check_disk
from provision.hardware import (
    DockerProbe,
    Gpu,
    GpuProbe,
    Inventory,
    Level,
    MemoryProbe,
    collect_inventory,
    probe_disk,
    probe_docker,
    probe_gpus,
    probe_ollama,
    resolve_ollama_host,
)
from provision.report import console
from provision.report.hardware import hardware_dict, render_hardware
from tests.fakes._server import FakeServer
from tests.fakes.ollama_server import FakeOllama

GB24 = 25_757_220_864  # what NVML reports for a "24 GB" RTX 4090: 24564 MiB
GB80 = 85_899_345_920  # an "80 GB" A100: 81920 MiB


class FakeNVML(types.ModuleType):
    """A stand-in for the ``pynvml`` module with the calls probe_gpus makes; ``calls`` logs init and shutdown."""

    def __init__(self, devices: list[dict[str, Any]], init_error: str | None) -> None:
        super().__init__("pynvml")
        self.calls: list[str] = []
        self._devices = devices
        self._init_error = init_error

        class NVMLError(Exception):
            pass

        self.NVMLError = NVMLError
        self.NVMLError_NotSupported = type("NVMLError_NotSupported", (NVMLError,), {})
        for name in ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded"):
            setattr(self, name, type(name, (NVMLError,), {}))

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self._init_error:
            raise getattr(self, self._init_error)()

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return len(self._devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return str(self._devices[handle]["name"]).encode()  # older bindings: bytes

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle:08d}"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> types.SimpleNamespace:
        device = self._devices[handle]
        return types.SimpleNamespace(total=device["total"], free=device["free"], used=device["total"] - device["free"])

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        cc: tuple[int, int] | None = self._devices[handle].get("cc")
        if cc is None:
            raise self.NVMLError_NotSupported()
        return cc


def fake_pynvml(gpus: list[dict[str, Any]] | None = None, *, init_error: str | None = None) -> FakeNVML:
    return FakeNVML(gpus or [], init_error)


# -- GPUs ----------------------------------------------------------------------------------


def test_no_driver_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_pynvml(init_error="NVMLError_LibraryNotFound")
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    probe = probe_gpus()
    assert probe.gpus == ()
    [finding] = probe.findings
    assert finding.level is Level.WARN and "no NVIDIA driver found" in finding.message
    assert "nvidia-smi" in finding.remedy


def test_driver_not_loaded_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error="NVMLError_DriverNotLoaded"))
    [finding] = probe_gpus().findings
    assert "not loaded" in finding.message and "modprobe" in finding.remedy


def test_missing_binding_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    [finding] = probe_gpus().findings
    assert finding.level is Level.WARN and "nvidia-ml-py" in finding.remedy


def test_one_24gb_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = fake_pynvml([{"name": "NVIDIA GeForce RTX 4090", "total": GB24, "free": GB24 - 500_000_000, "cc": (8, 9)}])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    probe = probe_gpus()
    assert probe.driver_version == "550.54.15" and probe.cuda_driver_version == "12.4"
    [gpu] = probe.gpus
    assert gpu == Gpu(0, "NVIDIA GeForce RTX 4090", "GPU-00000000", GB24, GB24 - 500_000_000, 500_000_000, (8, 9))
    assert probe.findings[0].level is Level.OK and "1 x NVIDIA GeForce RTX 4090" in probe.findings[0].message
    assert nvml.calls == ["init", "shutdown"]


def test_two_80gb_gpus_one_without_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    a100 = {"name": "NVIDIA A100-SXM4-80GB", "total": GB80, "free": GB80}
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([{**a100, "cc": (8, 0)}, {**a100, "cc": None}]))
    probe = probe_gpus()
    assert [g.index for g in probe.gpus] == [0, 1]
    assert [g.compute_capability for g in probe.gpus] == [(8, 0), None]
    assert "2 x NVIDIA A100-SXM4-80GB" in probe.findings[0].message


def test_driver_without_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([]))
    probe = probe_gpus()
    assert probe.gpus == () and probe.findings[0].level is Level.WARN and "sees no GPU" in probe.findings[0].message


def test_real_nvml_on_this_machine_never_raises() -> None:
    probe = probe_gpus()  # the installed nvidia-ml-py against whatever driver is (not) here
    if not probe.gpus:
        assert probe.findings[0].level is Level.WARN
    else:
        assert all(g.memory_total > 0 for g in probe.gpus)


def test_cuda_version_string() -> None:
    assert hardware.cuda_version_string(12040) == "12.4"
    assert hardware.cuda_version_string(11080) == "11.8"


# -- disk ----------------------------------------------------------------------------------


def test_free_bytes_walks_up_to_an_existing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Path] = []

    def disk_usage(path: Path) -> Any:
        asked.append(Path(path))
        return types.SimpleNamespace(total=10, used=3, free=7)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)  # the module provision.hardware calls
    assert hardware.free_bytes(tmp_path / "models" / "not" / "yet") == 7
    assert asked == [tmp_path]


def test_probe_disk_uses_free_bytes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(hardware, "free_bytes", lambda path: 3 * 2**30)
    probe = probe_disk(tmp_path)
    assert probe.free == 3 * 2**30 and "3.0 GiB free" in probe.findings[0].message

    def broken(path: Any) -> int:
        raise PermissionError("denied")

    monkeypatch.setattr(hardware, "free_bytes", broken)
    assert probe_disk(tmp_path).findings[0].level is Level.WARN


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root, as in CI; a failed mount fails the test)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=False, capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_disk_check_on_a_real_small_filesystem(small_tmpfs: Path) -> None:
    free = hardware.free_bytes(small_tmpfs / "models" / "qwen")
    assert 0 < free <= 2 * 2**20
    assert check_disk(3 * 2**20, free, str(small_tmpfs)).level is Level.FAIL
    assert check_disk(100_000, free, str(small_tmpfs)).level is Level.OK
    (small_tmpfs / "filler").write_bytes(b"\0" * (1900 * 1024))
    after = hardware.free_bytes(small_tmpfs)
    assert after < free - 1900 * 1024 + 4096  # the filler's blocks are gone
    assert check_disk(after + 1, after, str(small_tmpfs)).level is Level.FAIL


# -- Docker --------------------------------------------------------------------------------

INFO = {"ServerVersion": "28.3.0", "Runtimes": {"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}}}


class _DockerHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        assert isinstance(self.server, _DockerServer)
        body = json.dumps(
            self.server.info if self.path.endswith("/info") else {"ApiVersion": "1.41", "Version": "28.3.0"}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _DockerServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    info: dict[str, Any] = INFO


@pytest.fixture
def docker_socket(tmp_path: Path) -> Iterator[_DockerServer]:
    """A Docker-engine stand-in answering ``GET /info`` on a unix socket."""
    server = _DockerServer(str(tmp_path / "docker.sock"), _DockerHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_docker_on_a_unix_socket_with_nvidia_runtime(
    docker_socket: _DockerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{docker_socket.server_address}")
    probe = probe_docker()
    assert probe.reachable and probe.server_version == "28.3.0"
    assert probe.runtimes == ("nvidia", "runc") and probe.nvidia


def test_docker_cdi_devices_count_as_gpu_support(docker_socket: _DockerServer, monkeypatch: pytest.MonkeyPatch) -> None:
    docker_socket.info = {
        "ServerVersion": "28.3.0",
        "Runtimes": {"runc": {}},
        "DiscoveredDevices": [{"Source": "cdi", "ID": "nvidia.com/gpu=all"}],
    }
    monkeypatch.setenv("DOCKER_HOST", f"unix://{docker_socket.server_address}")
    probe = probe_docker()
    assert probe.cdi_devices == ("nvidia.com/gpu=all",) and probe.nvidia


class FakeDockerTcp(FakeServer):
    """The two calls the docker SDK makes for ``info()``: ``/version`` (API negotiation), ``/v1.41/info``."""

    def handle(self, request: Any, handler: Any, record: Any) -> None:
        if request.path == "/version":
            self.send_json(handler, record, 200, {"ApiVersion": "1.41", "Version": "20.10.24"})
        else:
            self.send_json(handler, record, 200, {"ServerVersion": "20.10.24", "Runtimes": {"runc": {}}})


def test_docker_over_tcp_goes_through_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeDockerTcp() as server:
        monkeypatch.setenv("DOCKER_HOST", server.url.replace("http://", "tcp://"))
        probe = probe_docker()
        assert server.count(prefix="/v1.41/info") == 1
    assert probe.reachable and probe.server_version == "20.10.24" and not probe.nvidia


def test_unreachable_docker_is_a_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/missing.sock")
    probe = probe_docker()
    assert not probe.reachable
    [finding] = probe.findings
    assert finding.level is Level.WARN and "missing.sock" in finding.message
    assert "DOCKER_HOST" in finding.remedy and "dockerd" in finding.remedy


# -- Ollama --------------------------------------------------------------------------------


def test_ollama_version_from_a_server() -> None:
    with FakeOllama() as server:
        probe = probe_ollama(server.url)
    assert probe.reachable and probe.version == "0.12.6"


def test_ollama_unreachable_is_a_finding() -> None:
    with FakeOllama() as server:
        url = server.url  # a port that was just freed: nothing listens there now
    probe = probe_ollama(url)
    assert not probe.reachable and "ollama serve" in probe.findings[0].remedy


@pytest.mark.parametrize(
    ("configured", "env", "expected"),
    [
        (None, None, "http://127.0.0.1:11434"),
        (None, "0.0.0.0:11434", "http://127.0.0.1:11434"),
        (None, "gpu-box", "http://gpu-box:11434"),
        ("http://10.0.0.5:8080/", "ignored:1", "http://10.0.0.5:8080"),
        ("https://ollama.example.com", None, "https://ollama.example.com:443"),
    ],
)
def test_resolve_ollama_host(
    configured: str | None, env: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is None:
        monkeypatch.delenv("OLLAMA_HOST", raising=False)
    else:
        monkeypatch.setenv("OLLAMA_HOST", env)
    assert resolve_ollama_host(configured) == expected


# -- the inventory and its rendering -------------------------------------------------------


def _inventory(gpus: tuple[Gpu, ...], docker: DockerProbe | None) -> Inventory:
    return Inventory(
        gpu=GpuProbe(gpus, "550.54.15", "12.4"),
        memory=MemoryProbe(64 * 2**30, 60 * 2**30),
        disk=None,
        docker=docker,
        ollama=None,
    )


def test_gpus_without_docker_nvidia_runtime_warn() -> None:
    gpu = Gpu(0, "NVIDIA GeForce RTX 4090", "GPU-0", GB24, GB24, 0, (8, 9))
    runc_only = DockerProbe(reachable=True, host="unix:///var/run/docker.sock", runtimes=("runc",))
    assert any("NVIDIA Container Toolkit" in f.remedy for f in _inventory((gpu,), runc_only).findings)
    assert not any("NVIDIA Container Toolkit" in f.remedy for f in _inventory((), runc_only).findings)


def test_collect_inventory_on_this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with FakeOllama() as server:
        inventory = collect_inventory(models_dir=tmp_path / "models", ollama_host=server.url)
    assert inventory.memory.total > 0 and inventory.disk is not None and inventory.disk.free
    assert inventory.ollama is not None and inventory.ollama.reachable
    assert {f.subject for f in inventory.findings} >= {"gpu", "ram", "disk", "docker", "ollama"}


def test_check_hardware_imports_no_heavy_client(tmp_path: Path) -> None:
    code = (
        "import sys; from provision.hardware import collect_inventory; "
        "from provision.report.hardware import render_hardware; render_hardware(collect_inventory()); "
        "heavy = {'torch', 'transformers', 'docker', 'httpx', 'pydantic'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr


def test_inventory_json_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = tuple(Gpu(i, "NVIDIA A100-SXM4-80GB", f"GPU-{i}", GB80, GB80 - 2**30, 2**30, (8, 0)) for i in range(2))
    docker = DockerProbe(
        reachable=True, host="unix:///var/run/docker.sock", server_version="28.3.0", runtimes=("nvidia", "runc")
    )
    document = json.loads(json.dumps(hardware_dict(_inventory(gpus, docker))))
    assert document["level"] == "OK"
    machine = document["machine"]
    assert [g["compute_capability"] for g in machine["gpus"]] == ["8.0", "8.0"]
    assert machine["gpus"][1]["memory_total"] == GB80 and machine["cuda_driver_version"] == "12.4"
    assert machine["docker"]["nvidia"] is True and machine["ollama"] is None
    assert document["findings"] == [] and document["deployments"] == []


def test_render_shows_gpus_and_remedies() -> None:
    gpu = Gpu(0, "NVIDIA GeForce RTX 4090", "GPU-0", GB24, GB24, 0, (8, 9))
    unreachable = DockerProbe(
        reachable=False,
        host="unix:///x.sock",
        findings=(hardware.Finding(Level.WARN, "docker", "Docker engine not reachable", "start dockerd"),),
    )
    with console().capture() as captured:
        render_hardware(_inventory((gpu,), unreachable))
    text = captured.get()
    assert "RTX 4090" in text and "8.9" in text and "start dockerd" in text
