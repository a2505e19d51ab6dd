"""Engine ``vllm``, the side effects: the Docker container of a vLLM image serving a model from disk.

What the container is and what to do with the one found is decided in
:mod:`provision.deployments.vllm_spec` (pure, unit-tested); this module asks the Docker engine,
creates, starts, waits for readiness and removes.

Startup: the container starts with restart policy "no" so an exit while vLLM loads is seen
with its exit code (not hidden by a restart); once ``/health`` answers 200 and ``/v1/models``
lists the served name, the manifest's restart policy is set. Until then nothing listens
(through the published port a client sees "connection reset"), which counts as not ready.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import socket
import time
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import DeploymentError, EngineUnavailableError
from ..gpus import asks_for_gpus
from ..manifest import VllmDeployment
from ..plan import Action, Change
from .base import DeployContext
from .container_logs import failure_excerpt
from .vllm_spec import (
    CONTAINER_PORT,
    ENGINE,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    LABEL_MANIFEST,
    MOUNT_ROOT,
    ContainerSpec,
    ContainerView,
    Observed,
    Preflight,
    adoption,
    container_record,
    container_view,
    desired_spec,
    is_current,
    is_ours,
    plan,
    url_host,
)

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

LOG_LINES = 2000  # read from a failed container's log; the excerpt is chosen from these
# docker-py waits 60 s for an answer by default; creating or removing a container of a
# multi-GB image under the vfs storage driver copies it, which took 54 s to 3 min here.
SLOW_API_TIMEOUT = 600
CREATE_TRIES = 3
STATUS_EVERY = 10.0  # seconds between "waiting for vLLM" lines
STOP_TIMEOUT = 10
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # readiness is loopback


# -- talking to the engine ------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _docker(slow: bool = False) -> docker.DockerClient:
    """One client per process, and one with a long timeout for creating, starting and removing
    (a failure is not cached: the next call tries again)."""
    import docker
    from docker.errors import DockerException

    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        # from_env asks the engine for its API version: the reachability check
        return docker.from_env(timeout=SLOW_API_TIMEOUT) if slow else docker.from_env()
    except DockerException as exc:
        if "Permission denied" in str(exc) or isinstance(exc.__context__, PermissionError):
            raise EngineUnavailableError(
                f"permission denied on the Docker engine at {where}",
                hint="add yourself to the docker group (`sudo usermod -aG docker $USER`, then log in again)",
            ) from None
        source = "DOCKER_HOST" if os.environ.get("DOCKER_HOST") else "the default socket"
        raise EngineUnavailableError(
            f"no Docker engine answers at {where} ({source})",
            hint="start it (`sudo systemctl start docker`, or run `sudo dockerd`), or point DOCKER_HOST at one",
        ) from None


def _explain(exc: Exception) -> str:
    """The engine's own message, without the SDK's '500 Server Error for http+docker://...' prefix."""
    text = str(getattr(exc, "explanation", None) or exc)
    return text if len(text) <= 300 else text[:297] + "..."


def _find_by_name(client: docker.DockerClient, cname: str) -> ContainerView | None:
    # The name filter is a regex over "/name": anchored, and its dots escaped (a name may hold
    # them), so provision-<name>-x or provision-aXb is not taken for provision-a.b; then exact.
    pattern = "^/" + cname.replace(".", "\\.") + "$"
    found = [
        c for c in client.api.containers(all=True, filters={"name": pattern}) if f"/{cname}" in (c.get("Names") or ())
    ]
    return container_view(found[0]) if found else None


def _ours(client: docker.DockerClient, manifest: str, deployment: str) -> list[ContainerView]:
    labels = [f"{LABEL_MANAGED}=true", f"{LABEL_MANIFEST}={manifest}", f"{LABEL_DEPLOYMENT}={deployment}"]
    return [container_view(s) for s in client.api.containers(all=True, filters={"label": labels})]


def labelled_deployments(manifest: str) -> set[str]:
    """Deployments of ``manifest`` with a container carrying provision's labels, in any state:
    a failed apply records nothing in state, but its container is still provision's."""
    client = _docker()
    found = client.api.containers(
        all=True, filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_MANIFEST}={manifest}"]}
    )
    return {view.labels[LABEL_DEPLOYMENT] for view in map(container_view, found) if view.labels.get(LABEL_DEPLOYMENT)}


def _image_present(client: docker.DockerClient, image: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.api.inspect_image(image)
    except ImageNotFound:
        return False
    return True


def _pull_error(client: docker.DockerClient, image: str) -> str | None:
    """Ask the registry for the image's manifest (no layers move); the reason if it cannot."""
    from docker.errors import APIError

    try:
        client.images.get_registry_data(image)
    except APIError as exc:
        return _explain(exc)
    return None


def _port_error(bind: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Lingering TIME_WAIT connections are no obstacle to Docker; a listener is.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((bind or "0.0.0.0", port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


class VllmBackend:
    """``engine: vllm``: reconcile one labelled container per deployment."""

    engine: ClassVar[str] = ENGINE

    # -- observe (reads only) --------------------------------------------------------------
    def observe(self, name: str, spec: VllmDeployment, ctx: DeployContext) -> Observed:
        desired = desired_spec(name, spec, ctx)
        client = _docker()
        view = _find_by_name(client, desired.name)
        if view is not None and is_current(view, desired):
            return Observed(view, None)  # the fast no-op path: one list call
        present = _image_present(client, spec.image)
        runtimes = tuple(client.info().get("Runtimes") or {}) if asks_for_gpus(spec.gpus) else None
        ours_holds_port = view is not None and is_ours(view, desired) and spec.port in view.host_ports
        preflight = Preflight(
            image_present=present,
            pull_error=None if present else _pull_error(client, spec.image),
            runtimes=runtimes,
            port_error=None if ours_holds_port else _port_error(spec.bind, spec.port),
        )
        return Observed(view, preflight)

    # -- plan (pure: vllm_spec.plan) -------------------------------------------------------
    def plan(self, name: str, spec: VllmDeployment, observed: Observed, ctx: DeployContext) -> Action:
        return plan(name, spec, observed, ctx)  # the module-level pure function

    # -- apply ---------------------------------------------------------------------------
    def apply(self, action: Action, spec: VllmDeployment, ctx: DeployContext) -> dict[str, Any]:
        if action.change is Change.NOOP:
            return dict(action.details["record"])  # decided from one list call; no more work
        name = action.name
        # Recomputed: the model may have been downloaded since planning, fixing its revision.
        desired = desired_spec(name, spec, ctx)
        client = _docker(slow=True)
        from docker.errors import APIError, NotFound

        try:
            if action.change is Change.UPDATE:
                container = client.containers.get(action.details["container_id"])
                ctx.on_status(name, f"starting the {container.status} container {desired.name}")
                if container.status == "paused":
                    container.unpause()
                elif container.status == "restarting":  # crash-looping under the restart policy
                    container.restart(timeout=STOP_TIMEOUT)
                else:
                    container.start()
            else:
                adopted: Container | None = None
                for old in _ours(client, desired.public["manifest"], name):
                    if adopted is None and old.name == desired.name and adoption(old, desired) == "reuse":
                        # what a create that timed out left: this spec, never started
                        ctx.on_status(name, f"starting {old.name} ({old.id[:12]}), created for this spec earlier")
                        adopted = client.containers.get(old.id)
                        _start(adopted)
                        continue
                    ctx.on_status(name, f"removing the old container {old.name} ({old.id[:12]})")
                    _stop_and_remove(client, old.id)
                container = adopted if adopted is not None else self._create(client, name, spec, desired, ctx)
            self._wait_ready(container, name, spec, desired, ctx)
            # The stubs list only "always" and "on-failure"; the Engine API also takes "no" and "unless-stopped".
            container.update(restart_policy={"Name": spec.restart})  # type: ignore[arg-type]
        except NotFound as exc:
            raise DeploymentError(
                f"container vanished while applying: {_explain(exc)}", hint="run `provision apply` again", resource=name
            ) from None
        except APIError as exc:
            raise DeploymentError(
                f"Docker refused: {_explain(exc)}",
                resource=name,
                hint=f"see `docker ps -a --filter name={desired.name}`",
            ) from None
        return container_record(desired, str(container.id))  # a created container has an id; the stubs allow None

    def _create(
        self, client: docker.DockerClient, name: str, spec: VllmDeployment, desired: ContainerSpec, ctx: DeployContext
    ) -> Container:
        from docker.errors import APIError
        from docker.types import DeviceRequest, Mount

        if not _image_present(client, spec.image):
            ctx.on_status(name, f"pulling {spec.image} (vLLM images are large: this takes minutes)")
            self._pull(client, name, spec.image)
        gpus: list[DeviceRequest] = []
        if spec.gpus == "all":
            gpus = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        elif isinstance(spec.gpus, int) and spec.gpus > 0:
            gpus = [DeviceRequest(count=spec.gpus, capabilities=[["gpu"]])]
        elif isinstance(spec.gpus, tuple) and spec.gpus:
            gpus = [DeviceRequest(device_ids=[str(i) for i in spec.gpus], capabilities=[["gpu"]])]
        ctx.on_status(name, f"creating container {desired.name} from {spec.image}")
        container = self._create_or_adopt(
            client,
            name,
            desired,
            {
                "image": spec.image,
                "command": list(desired.command),
                "name": desired.name,
                "labels": desired.labels,
                "environment": dict(desired.environment),
                "mounts": [Mount(f"{MOUNT_ROOT}/{spec.model}", desired.model_dir, type="bind", read_only=True)],
                "ports": {f"{CONTAINER_PORT}/tcp": (spec.bind, spec.port)},
                "device_requests": gpus or None,
                "ipc_mode": "host" if spec.ipc_host else None,
                "shm_size": None if spec.ipc_host else spec.shm_size,
                "restart_policy": {"Name": "no"},  # until ready: see the module docstring
            },
            ctx,
        )
        try:
            _start(container)
        except APIError as exc:
            container.remove(force=True)  # never leave a `created` container behind
            raise DeploymentError(
                f"the container did not start: {_explain(exc)}",
                resource=name,
                hint="check gpus, port and the model folder; nothing was left behind",
            ) from None
        return container

    @staticmethod
    def _create_or_adopt(
        client: docker.DockerClient, name: str, desired: ContainerSpec, options: dict[str, Any], ctx: DeployContext
    ) -> Container:
        """Create the container; when the engine answers late (the client's timeout) or says the
        name is taken, the engine may have made it anyway: find it by name and reuse it when it
        is ours, this spec and never started, remove it when it is ours otherwise."""
        from docker.errors import APIError
        from requests.exceptions import ReadTimeout

        for _ in range(CREATE_TRIES):
            try:
                return client.containers.create(**options)
            except (ReadTimeout, APIError) as exc:
                if isinstance(exc, APIError) and exc.status_code != 409:
                    raise
                why = "no answer in time" if isinstance(exc, ReadTimeout) else _explain(exc)
            view = _find_by_name(client, desired.name)
            decision = adoption(view, desired)
            ctx.on_status(name, f"creating {desired.name}: {why}; found {view.status if view else 'none'}: {decision}")
            if view is not None and decision == "reuse":
                return client.containers.get(view.id)
            if view is not None and decision == "replace":
                _stop_and_remove(client, view.id)
            elif decision == "foreign":
                raise DeploymentError(
                    f"container {desired.name} appeared while creating it and is not provision's",
                    hint=f"remove it (`docker rm -f {desired.name}`) or rename this deployment",
                    resource=name,
                )
        raise DeploymentError(
            f"the Docker engine did not create {desired.name} after {CREATE_TRIES} tries",
            hint="see the engine's log (journalctl -u docker); it may be short of disk or busy",
            resource=name,
        )

    @staticmethod
    def _pull(client: docker.DockerClient, name: str, image: str) -> None:
        from docker.errors import APIError
        from docker.utils import parse_repository_tag

        repository, tag = parse_repository_tag(image)
        try:
            client.images.pull(repository, tag=tag or "latest")  # without a tag it pulls every tag
        except APIError as exc:
            raise DeploymentError(
                f"cannot pull {image}: {_explain(exc)}",
                resource=name,
                hint="check the image name and tag, and `docker login` for a private registry",
            ) from None

    def _wait_ready(
        self, container: Container, name: str, spec: VllmDeployment, desired: ContainerSpec, ctx: DeployContext
    ) -> None:
        """Poll /health, then /v1/models for the served name; fail on exit or timeout with the log."""
        base = f"http://{url_host(spec.bind)}:{spec.port}"
        key = desired.environment.get("VLLM_API_KEY")
        started = time.monotonic()
        next_status = started
        while True:
            if _ready(base, desired.served, key):
                return
            elapsed = time.monotonic() - started
            container.reload()
            state = container.attrs["State"]
            if state["Status"] in ("exited", "dead"):
                raise DeploymentError(
                    f"vLLM exited with code {state['ExitCode']} after {elapsed:.0f} s; "
                    f"from its log:\n{_log_excerpt(container)}",
                    hint=f"full log: `docker logs {desired.name}`; fix the cause, then `provision apply` again",
                    resource=name,
                )
            if elapsed >= spec.startup_timeout:
                container.kill()  # stopped, so the next apply starts it again instead of a no-op
                raise DeploymentError(
                    f"vLLM was not ready after {spec.startup_timeout:.0f} s (startup_timeout); "
                    f"from its log:\n{_log_excerpt(container)}",
                    hint="large models load for minutes: raise startup_timeout, or see the log for a hang",
                    resource=name,
                )
            if time.monotonic() >= next_status:
                ctx.on_status(name, f"waiting for vLLM to load the model ({elapsed:.0f} s)")
                next_status += STATUS_EVERY
            time.sleep(min(1.0, 0.1 + elapsed / 20))  # quick at first, then gentle

    # -- remove --------------------------------------------------------------------------
    def remove(self, name: str, record: Mapping[str, Any], ctx: DeployContext) -> None:
        client = _docker(slow=True)
        for view in _ours(client, str(ctx.manifest.path.absolute()), name):
            ctx.on_status(name, f"removing container {view.name} ({view.id[:12]})")
            _stop_and_remove(client, view.id)


def _stop_and_remove(client: docker.DockerClient, container_id: str) -> None:
    from docker.errors import NotFound

    try:
        client.api.stop(container_id, timeout=STOP_TIMEOUT)
        client.api.remove_container(container_id)
    except NotFound:
        pass  # already gone: the goal is reached


def _ready(base: str, served: str, key: str | None) -> bool:
    """True once /health is 200 and /v1/models lists ``served``; any failure means not yet."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with _NO_PROXY.open(f"{base}/health", timeout=2) as response:
            if response.status != 200:
                return False
        with _NO_PROXY.open(urllib.request.Request(f"{base}/v1/models", headers=headers), timeout=2) as response:
            models = json.load(response)
    except (OSError, http.client.HTTPException, ValueError):  # refused, reset, 503, half a body
        return False
    listed = models.get("data") if isinstance(models, dict) else None  # another server may answer anything
    return isinstance(listed, list) and any(isinstance(m, dict) and m.get("id") == served for m in listed)


def _start(container: Container) -> None:
    """Start; an answer that comes too late is asked again (starting a started container is a no-op)."""
    from requests.exceptions import ReadTimeout

    try:
        container.start()
    except ReadTimeout:
        container.start()


def _log_excerpt(container: Container) -> str:
    text = container.logs(tail=LOG_LINES).decode(errors="replace")
    return "\n".join(f"    {line}" for line in failure_excerpt(text)) or "    (no output)"
