"""A real Docker engine for integration tests, and images built without a registry.

No registry is reachable here, so the fake vLLM image is built from scratch in two
cached steps, each skipped when its result is already there:

    cache_dir() ($PROVISION_TEST_CACHE, else the real user's ~/.cache/provision-tests)/
        bookworm-python3.tar     debootstrap --variant=minbase --include=python3 (~40 s)
    provision-test/vllm-fake:1   that tarball + /opt/fake/{vllm_server.py,_server.py},
                                 `docker import`ed with ENTRYPOINT python3 /opt/fake/vllm_server.py
                                 and label provision-test.content = sha256 of the two files
    provision-test/python-standin:1   that tarball alone: stands in for python:3.12-slim

So after a change to the fake server only the import runs again (a few seconds).
The engine itself is started by scripts/start-docker.sh when it does not answer.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from docker.models.containers import Container

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKES = Path(__file__).resolve().parent
START_SCRIPT = REPO_ROOT / "scripts" / "start-docker.sh"

DEFAULT_TAG = "provision-test/vllm-fake:1"
CONTENT_LABEL = "provision-test.content"
# deb.debian.org is the mirror apt is configured with on these machines (and reachable
# through their proxy); override for another network.
DEBIAN_MIRROR = os.environ.get("PROVISION_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# python3-minimal lacks json, http.server and dataclasses, which the fake server needs.
DEBOOTSTRAP_PACKAGES = "python3"
_SERVER_FILES = (FAKES / "vllm_server.py", FAKES / "_server.py")


def cache_dir() -> Path:
    """$PROVISION_TEST_CACHE, else ~/.cache/provision-tests of the real user.

    Not $HOME: tests run with HOME in a fresh temp folder (tests/conftest.py), which
    would throw the cache away each time.
    """
    default = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "provision-tests"
    path = Path(os.environ.get("PROVISION_TEST_CACHE") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_engine() -> docker.DockerClient:
    """A client for a running engine, starting one with scripts/start-docker.sh if needed."""
    try:
        client = docker.from_env()
        client.ping()
        return client
    except DockerException:
        pass
    subprocess.run(["bash", str(START_SCRIPT)], check=True)
    client = docker.from_env()
    client.ping()
    return client


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise builds across processes (pytest-xdist workers, parallel CI jobs)."""
    with open(cache_dir() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def rootfs_tarball() -> Path:
    """The cached Debian bookworm minbase + python3 root filesystem, made once."""
    tarball = cache_dir() / "bookworm-python3.tar"
    with _locked("rootfs"):
        if tarball.exists():
            return tarball
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            root = Path(tmp) / "rootfs"
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={DEBOOTSTRAP_PACKAGES}",
                    "bookworm",
                    str(root),
                    DEBIAN_MIRROR,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            # Downloaded .debs, apt lists and documentation are useless in the image.
            for junk in (
                "var/cache/apt/archives",
                "var/lib/apt/lists",
                "usr/share/doc",
                "usr/share/man",
                "usr/share/locale",
                "usr/share/info",
            ):
                shutil.rmtree(root / junk, ignore_errors=True)
            partial = Path(tmp) / "rootfs.tar"
            subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], check=True)
            partial.replace(tarball)  # atomic: an interrupted run leaves no half tarball
    return tarball


def _content_hash() -> str:
    digest = hashlib.sha256()
    for path in _SERVER_FILES:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _image_id(client: docker.DockerClient, tag: str, content: str | None = None) -> str | None:
    """The id of the image tagged ``tag``, if it exists (and carries ``content``)."""
    try:
        image = client.images.get(tag)
    except ImageNotFound:
        return None
    if content is not None and image.labels.get(CONTENT_LABEL) != content:
        return None
    return image.id


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build_vllm_image(tag: str = DEFAULT_TAG, *, client: docker.DockerClient | None = None) -> str:
    """Build the fake vLLM image (entrypoint: vllm_server.py) and return ``tag`` ("repo:version").

    One `docker import` of the cached root filesystem with the server files appended: a
    Dockerfile build would copy the whole root filesystem once per instruction under
    the vfs storage driver (12 s against 3 s).
    """
    client = client or ensure_engine()
    content = _content_hash()
    with _locked("image"):
        if _image_id(client, tag, content):
            return tag
        stale = _image_id(client, tag)
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            layer = Path(tmp) / "image.tar"
            shutil.copyfile(rootfs_tarball(), layer)
            with tarfile.open(layer, "a") as tar:
                for path in _SERVER_FILES:
                    tar.add(path, arcname=f"./opt/fake/{path.name}", filter=_root_owned)
            repository, _, version = tag.rpartition(":")
            client.api.import_image(
                src=str(layer),
                repository=repository,
                tag=version,
                changes=[
                    f"LABEL {CONTENT_LABEL}={content}",
                    "EXPOSE 8000",
                    'ENTRYPOINT ["python3", "/opt/fake/vllm_server.py"]',
                ],
            )
        if stale:  # the previous build, now untagged: vfs keeps a full copy of each
            with suppress(APIError):  # still used by a container; docker image prune gets it later
                client.images.remove(stale)
    return tag


PYTHON_STANDIN_TAG = "provision-test/python-standin:1"


def build_python_image(tag: str = PYTHON_STANDIN_TAG, *, client: docker.DockerClient | None = None) -> str:
    """An image standing in for python:3.12-slim (the rendered Kubernetes download step's):
    the same cached bookworm root filesystem, so python3 is Debian's 3.11; the step's script
    needs only a standard library of Python >= 3.9. Returns ``tag``."""
    client = client or ensure_engine()
    with _locked("image"):
        if _image_id(client, tag):
            return tag
        repository, _, version = tag.rpartition(":")
        client.api.import_image(
            src=str(rootfs_tarball()), repository=repository, tag=version, changes=['CMD ["python3"]']
        )
    return tag


def foreign_container(
    client: docker.DockerClient,
    *,
    image: str = DEFAULT_TAG,
    name: str | None = None,
    labels: dict[str, str] | None = None,
) -> Container:
    """A running container that provision did not create, for "never touched" tests.

    It uses the fake image with its entrypoint replaced by a sleep, so it needs no model.
    The caller removes it (``container.remove(force=True)``).
    """
    return client.containers.run(
        image,
        entrypoint=["sleep", "infinity"],
        name=name,
        labels=labels or {},
        detach=True,
    )
