"""Probes of the machine: NVIDIA GPUs (NVML), RAM, disk, the Docker engine and Ollama.

Each probe is quick (no torch; a 1-2 s timeout on anything that talks to a daemon), never
raises, and returns frozen data plus :class:`Finding` s: a missing driver, an unreachable
engine or a full disk is a finding with a remedy, not a traceback.

What each probe asks, and of whom:

- GPUs: ``pynvml`` (package ``nvidia-ml-py``), imported inside :func:`probe_gpus`.
  ``nvmlInit``; driver version; CUDA driver version (``nvmlSystemGetCudaDriverVersion_v2``,
  an int such as 12040 for "12.4"); per device: name, UUID, memory info (total/free/used
  bytes) and CUDA compute capability; ``nvmlShutdown``. No driver raises
  ``NVMLError_LibraryNotFound``; a driver whose kernel module is not loaded,
  ``NVMLError_DriverNotLoaded``.
- RAM: ``psutil.virtual_memory()`` (total, available).
- Disk: ``shutil.disk_usage`` of the nearest existing folder above the path
  (:func:`free_bytes`, the one function tests replace).
- Docker: ``GET /info`` of the engine (the standard library on a unix socket, else the docker
  SDK's ``docker.from_env(timeout=2).info()``); GPU support is an ``nvidia`` entry in
  ``Runtimes`` or NVIDIA CDI devices in ``DiscoveredDevices`` (engine 28.3+).
- Ollama: ``GET {host}/api/version`` with urllib and a 1 s timeout.

:func:`collect_inventory` runs the probes in parallel threads and returns an :class:`Inventory`.

One module past 400 lines on purpose: each probe is a short function with its frozen result
beside it, they share no state, and :func:`collect_inventory` joins them; the list above is the
map of the file, and tests replace ``provision.hardware.free_bytes`` in one place.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .files import human_bytes

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
_DRIVER_REMEDY = "install the NVIDIA driver, then check that `nvidia-smi` lists the GPUs"


class Level(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    level: Level
    subject: str  # "gpu", "ram", "disk", "docker", "ollama", or a deployment's name
    message: str
    remedy: str = ""


def worst(findings: list[Finding] | tuple[Finding, ...]) -> Level:
    """The most severe level among ``findings`` (OK for none)."""
    levels = {f.level for f in findings}
    for level in (Level.FAIL, Level.WARN):
        if level in levels:
            return level
    return Level.OK


# -- GPUs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    uuid: str
    memory_total: int  # bytes
    memory_free: int
    memory_used: int
    compute_capability: tuple[int, int] | None


@dataclass(frozen=True)
class GpuProbe:
    gpus: tuple[Gpu, ...] = ()
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # the highest CUDA the driver supports, e.g. "12.4"
    findings: tuple[Finding, ...] = ()


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value  # old bindings return bytes


def cuda_version_string(value: int) -> str:
    """NVML's CUDA version integer (1000 x major + 10 x minor) as ``"major.minor"``."""
    return f"{value // 1000}.{value % 1000 // 10}"


def probe_gpus() -> GpuProbe:
    try:
        import pynvml
    except ImportError:
        return GpuProbe(
            findings=(
                Finding(
                    Level.WARN,
                    "gpu",
                    "cannot look for NVIDIA GPUs: nvidia-ml-py is not installed",
                    "pip install nvidia-ml-py",
                ),
            )
        )
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        return GpuProbe(
            findings=(Finding(Level.WARN, "gpu", "no NVIDIA driver found (libnvidia-ml is missing)", _DRIVER_REMEDY),)
        )
    except pynvml.NVMLError_DriverNotLoaded:
        return GpuProbe(
            findings=(
                Finding(
                    Level.WARN,
                    "gpu",
                    "the NVIDIA driver is installed but not loaded",
                    "load it (`sudo modprobe nvidia`, or reboot after a driver update), then check `nvidia-smi`",
                ),
            )
        )
    except pynvml.NVMLError as exc:
        return GpuProbe(findings=(Finding(Level.WARN, "gpu", f"NVML failed to start: {exc}", _DRIVER_REMEDY),))
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = cuda_version_string(pynvml.nvmlSystemGetCudaDriverVersion_v2())
        gpus = tuple(_read_gpu(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount()))
    except (pynvml.NVMLError, UnicodeDecodeError) as exc:  # new bindings decode names themselves, strictly
        return GpuProbe(
            findings=(
                Finding(
                    Level.WARN,
                    "gpu",
                    f"NVML could not read the GPUs: {exc}",
                    "check `nvidia-smi`; a driver/library version mismatch needs a reboot",
                ),
            )
        )
    finally:
        with contextlib.suppress(pynvml.NVMLError):  # nothing to release
            pynvml.nvmlShutdown()
    if not gpus:
        finding = Finding(
            Level.WARN,
            "gpu",
            f"NVIDIA driver {driver} is loaded but sees no GPU",
            "check `nvidia-smi` and CUDA_VISIBLE_DEVICES",
        )
    else:
        names = ", ".join(sorted({g.name for g in gpus}))
        finding = Finding(Level.OK, "gpu", f"{len(gpus)} x {names}; driver {driver}, CUDA {cuda}")
    return GpuProbe(gpus=gpus, driver_version=driver, cuda_driver_version=cuda, findings=(finding,))


def _read_gpu(pynvml: Any, index: int) -> Gpu:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        capability: tuple[int, int] | None = (int(major), int(minor))
    except pynvml.NVMLError:
        capability = None  # reported as unknown rather than failing the whole probe
    return Gpu(
        index=index,
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
        memory_total=int(memory.total),
        memory_free=int(memory.free),
        memory_used=int(memory.used),
        compute_capability=capability,
    )


# -- RAM and disk --------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryProbe:
    total: int
    available: int
    findings: tuple[Finding, ...] = ()


def probe_memory() -> MemoryProbe:
    import psutil

    memory = psutil.virtual_memory()
    finding = Finding(Level.OK, "ram", f"{human_bytes(memory.available)} available of {human_bytes(memory.total)}")
    return MemoryProbe(total=int(memory.total), available=int(memory.available), findings=(finding,))


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Free bytes on the filesystem that holds ``path`` (or would: its nearest existing parent)."""
    return shutil.disk_usage(_existing(Path(path))).free


@dataclass(frozen=True)
class DiskProbe:
    path: str
    free: int | None
    findings: tuple[Finding, ...] = ()


def probe_disk(path: str | os.PathLike[str]) -> DiskProbe:
    try:
        free = free_bytes(path)
    except OSError as exc:
        return DiskProbe(
            path=str(path),
            free=None,
            findings=(
                Finding(
                    Level.WARN, "disk", f"cannot read free space at {path}: {exc}", "check the path and its permissions"
                ),
            ),
        )
    return DiskProbe(
        path=str(path), free=free, findings=(Finding(Level.OK, "disk", f"{human_bytes(free)} free at {path}"),)
    )


# -- Docker --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DockerProbe:
    reachable: bool
    host: str  # $DOCKER_HOST or the default socket
    server_version: str | None = None
    runtimes: tuple[str, ...] = ()
    cdi_devices: tuple[str, ...] = ()
    error: str | None = None
    findings: tuple[Finding, ...] = ()

    @property
    def nvidia(self) -> bool:
        return "nvidia" in self.runtimes or any(d.startswith("nvidia.com/gpu") for d in self.cdi_devices)


def _docker_info_unix(socket_path: str, timeout: float) -> dict[str, Any]:
    """``GET /info`` on the engine's unix socket with the standard library."""
    import http.client
    import json
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(socket_path)

    connection = UnixConnection("localhost", timeout=timeout)
    try:
        connection.request("GET", "/info")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise OSError(f"HTTP {response.status}: {body[:200].decode(errors='replace')}")
    info = json.loads(body)
    if not isinstance(info, dict):
        raise ValueError("the engine's /info is not a JSON object")
    return info


def _docker_info_sdk(timeout: float) -> dict[str, Any]:
    import docker

    client = docker.from_env(timeout=int(timeout))
    try:
        return client.info()
    finally:
        client.close()


def probe_docker() -> DockerProbe:
    """The engine's ``/info``. A unix socket (the default) is asked with the standard library,
    ~0.15 s faster than importing the docker SDK; TCP, TLS and SSH hosts go through the SDK."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        if host.startswith("unix://"):
            info = _docker_info_unix(host.removeprefix("unix://"), timeout=2.0)
        else:
            info = _docker_info_sdk(timeout=2.0)
    except Exception as exc:  # noqa: BLE001 - OS errors, bad JSON, and the SDK's DockerException/requests errors
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return DockerProbe(
            reachable=False,
            host=host,
            error=message,
            findings=(
                Finding(
                    Level.WARN,
                    "docker",
                    f"Docker engine not reachable at {host}: {message}",
                    "start it (`sudo systemctl start docker`, or `sudo dockerd &`), check that you may use "
                    "/var/run/docker.sock (the docker group), or set DOCKER_HOST",
                ),
            ),
        )
    runtimes = tuple(sorted(info.get("Runtimes") or {}))
    cdi = tuple(str(d.get("ID", "")) for d in info.get("DiscoveredDevices") or () if isinstance(d, dict))
    probe = DockerProbe(
        reachable=True, host=host, server_version=info.get("ServerVersion"), runtimes=runtimes, cdi_devices=cdi
    )
    gpu_note = "NVIDIA runtime present" if probe.nvidia else "no NVIDIA runtime"
    finding = Finding(Level.OK, "docker", f"engine {probe.server_version} at {host}; {gpu_note}")
    return replace(probe, findings=(finding,))


_NO_NVIDIA_RUNTIME = Finding(
    Level.WARN,
    "docker",
    "this machine has NVIDIA GPUs but Docker has no NVIDIA runtime: vLLM containers cannot use them",
    "install the NVIDIA Container Toolkit, run `sudo nvidia-ctk runtime configure --runtime=docker` "
    "and restart dockerd",
)


# -- Ollama --------------------------------------------------------------------------------


def resolve_ollama_host(configured: str | None = None) -> str:
    """``settings.ollama.host``, else ``$OLLAMA_HOST``, else the default; as a URL a client can use.

    ``OLLAMA_HOST`` is often written as the server's bind address (``0.0.0.0:11434``, a bare
    host): add the scheme and default port, and reach a wildcard bind on loopback.
    """
    raw = (configured or os.environ.get("OLLAMA_HOST") or DEFAULT_OLLAMA_HOST).strip().rstrip("/")
    scheme, sep, rest = raw.partition("://")
    if not sep:
        scheme, rest = "http", raw
    hostport, slash, path = rest.partition("/")
    host, colon, port = hostport.rpartition(":") if not hostport.endswith("]") else (hostport, "", "")
    if not colon:
        host, port = hostport, ("443" if scheme == "https" else "11434")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}{slash}{path}"


@dataclass(frozen=True)
class OllamaProbe:
    host: str
    reachable: bool
    version: str | None = None
    error: str | None = None
    findings: tuple[Finding, ...] = ()


def probe_ollama(host: str | None = None) -> OllamaProbe:
    # The standard library, not httpx: importing httpx/httpcore costs ~0.25 s, half the budget.
    import json
    import urllib.error
    import urllib.request

    url = resolve_ollama_host(host)
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=1.0) as response:
            version = str(json.loads(response.read())["version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # URLError, HTTPError and timeouts are OSErrors
        message = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
        return OllamaProbe(
            host=url,
            reachable=False,
            error=message,
            findings=(
                Finding(
                    Level.WARN,
                    "ollama",
                    f"Ollama not reachable at {url}: {message}",
                    "start it with `ollama serve`, or set settings.ollama.host / $OLLAMA_HOST",
                ),
            ),
        )
    return OllamaProbe(
        host=url, reachable=True, version=version, findings=(Finding(Level.OK, "ollama", f"Ollama {version} at {url}"),)
    )


# -- the inventory -------------------------------------------------------------------------


@dataclass(frozen=True)
class Inventory:
    gpu: GpuProbe
    memory: MemoryProbe
    disk: DiskProbe | None
    docker: DockerProbe | None
    ollama: OllamaProbe | None

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return self.gpu.gpus

    @property
    def findings(self) -> tuple[Finding, ...]:
        """Every probe's findings, in a stable order, plus those that need two probes."""
        out: list[Finding] = [*self.gpu.findings, *self.memory.findings]
        for probe in (self.disk, self.docker, self.ollama):
            if probe is not None:
                out.extend(probe.findings)
        if self.gpus and self.docker is not None and self.docker.reachable and not self.docker.nvidia:
            out.append(_NO_NVIDIA_RUNTIME)
        return tuple(out)


def collect_inventory(
    *,
    models_dir: str | os.PathLike[str] | None = None,
    ollama_host: str | None = None,
    docker: bool = True,
    ollama: bool = True,
) -> Inventory:
    """Run every probe, in parallel threads (the slow part is importing the clients)."""
    with ThreadPoolExecutor(max_workers=5) as pool:
        gpu = pool.submit(probe_gpus)
        memory = pool.submit(probe_memory)
        disk = pool.submit(probe_disk, models_dir) if models_dir is not None else None
        docker_probe = pool.submit(probe_docker) if docker else None
        ollama_probe = pool.submit(probe_ollama, ollama_host) if ollama else None
        return Inventory(
            gpu=gpu.result(),
            memory=memory.result(),
            disk=disk.result() if disk else None,
            docker=docker_probe.result() if docker_probe else None,
            ollama=ollama_probe.result() if ollama_probe else None,
        )
