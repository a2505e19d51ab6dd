"""A resumable, verifying HTTP file downloader shared by the hub sources.

Why not ``snapshot_download``: huggingface_hub 2.4 restarts a killed file from byte 0 and
leaves the old partial behind, and never checks sha256 (notes/protocols.md). Here:

- a partial file has a stable name derived from its expected digest, so a rerun after
  SIGKILL resumes it with a ``Range`` request (at most the bytes in flight are fetched again);
- bytes are hashed while they stream (the kept prefix is re-hashed on resume) and the file is
  placed with ``os.replace`` only after its sha256 (or git blob sha1) matches: a final path
  never holds a partial or unverified file;
- a mismatch discards the partial and retries once from scratch, then raises IntegrityError;
- 5xx, 429 (honouring ``Retry-After``), resets, timeouts and truncated bodies are retried
  with bounded exponential backoff, resuming from the current offset;
- redirects are followed by hand so that ``Authorization`` is dropped when the origin changes
  (a hub redirecting to a CDN must not receive the token).

Layout inside a model folder::

    <model>/.cache/provision/partial/<digest>.part    in-flight bytes, removed when placed
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urljoin, urlsplit

import httpx

from .errors import (
    DownloadError,
    EntryNotFoundError,
    GatedRepoError,
    HubUnreachableError,
    IntegrityError,
    SourceError,
)
from .files import RemoteFile

CHUNK_SIZE = 1 << 20
PARTIAL_DIR = Path(".cache") / "provision" / "partial"
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # consecutive failures without progress before giving up
    backoff: float = 0.5  # seconds, doubled each time
    max_backoff: float = 10.0
    max_retry_after: float = 60.0


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def partial_path(model_dir: Path, file: RemoteFile) -> Path:
    digest = file.sha256 or file.git_sha1 or hashlib.sha256(f"{file.path}:{file.size}".encode()).hexdigest()
    return model_dir / PARTIAL_DIR / f"{digest}.part"


class _Hashes:
    """sha256 always; the git blob sha1 too when that is all the hub published."""

    def __init__(self, file: RemoteFile) -> None:
        self._file = file
        self.reset()

    def reset(self) -> None:
        self.sha256 = hashlib.sha256()
        self.git = None
        if self._file.sha256 is None and self._file.git_sha1 is not None:
            self.git = hashlib.sha1(b"blob %d\0" % self._file.size)

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        if self.git is not None:
            self.git.update(data)

    def mismatch(self, file: RemoteFile) -> str | None:
        if file.sha256 is not None and self.sha256.hexdigest() != file.sha256:
            return f"sha256 {self.sha256.hexdigest()[:12]}… != expected {file.sha256[:12]}…"
        if self.git is not None and self.git.hexdigest() != file.git_sha1:
            return f"git sha1 {self.git.hexdigest()[:12]}… != expected {file.git_sha1[:12]}…"  # type: ignore[index]
        return None


class Downloader:
    """Fetches :class:`RemoteFile` s into a model folder. Thread-safe: share one per run."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        max_connections: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._headers = dict(headers or {})
        self._retry = retry
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=10.0),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            # Identity encoding: the bytes hashed must be the file's bytes, not a gzip stream.
            headers={"User-Agent": "provision", "Accept-Encoding": "identity"},
            trust_env=True,
        )

    def close(self) -> None:
        self._client.close()

    def fetch(
        self,
        file: RemoteFile,
        model_dir: Path,
        *,
        resource: str,
        on_progress: ProgressCallback = lambda n: None,
    ) -> str:
        """Download, verify and place ``file`` under ``model_dir``; return its sha256."""
        if file.url is None:
            raise SourceError(f"no URL for {file.path}", resource=resource)
        target = model_dir / file.path
        part = partial_path(model_dir, file)
        part.parent.mkdir(parents=True, exist_ok=True)
        for attempt in (1, 2):
            hashes = self._download_to(file, part, resource=resource, on_progress=on_progress)
            problem = hashes.mismatch(file)
            if problem is None:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, target)
                return hashes.sha256.hexdigest()
            # Never keep bytes that failed verification; the retry starts from scratch.
            on_progress(-file.size)
            part.unlink(missing_ok=True)
            if attempt == 2:
                raise IntegrityError(f"{file.path}: downloaded bytes do not match the hub ({problem})",
                                     resource=resource)
        raise AssertionError("unreachable")

    def _download_to(
        self, file: RemoteFile, part: Path, *, resource: str, on_progress: ProgressCallback
    ) -> _Hashes:
        hashes = _Hashes(file)
        offset = part.stat().st_size if part.exists() else 0
        if offset > file.size:
            part.unlink()
            offset = 0
        if offset:
            with part.open("rb") as kept:  # re-hash the kept prefix so the digest covers it
                while chunk := kept.read(CHUNK_SIZE):
                    hashes.update(chunk)
            on_progress(offset)
        failures = 0
        while offset < file.size or (file.size == 0 and not part.exists()):
            before = offset
            try:
                offset = self._get_range(file, part, offset, hashes, resource=resource, on_progress=on_progress)
                if offset < file.size:
                    raise _Transient(f"body ended at byte {offset} of {file.size}")
            except _Transient as exc:
                offset = part.stat().st_size if part.exists() else 0
                failures = 0 if offset > before else failures + 1
                if failures >= self._retry.attempts:
                    raise DownloadError(f"{file.path}: {exc} (gave up after {failures} attempts)",
                                        resource=resource) from None
                delay = exc.retry_after if exc.retry_after is not None else min(
                    self._retry.backoff * 2 ** max(failures - 1, 0), self._retry.max_backoff
                )
                self._sleep(min(delay, self._retry.max_retry_after))
        return hashes

    def _get_range(
        self,
        file: RemoteFile,
        part: Path,
        offset: int,
        hashes: _Hashes,
        *,
        resource: str,
        on_progress: ProgressCallback,
    ) -> int:
        """One GET from ``offset``; appends to ``part``; returns the new offset."""
        headers = dict(self._headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        url = file.url
        assert url is not None
        try:
            for _ in range(10):  # redirects
                request = self._client.build_request("GET", url, headers=headers)
                response = self._client.send(request, stream=True)
                if response.is_redirect:
                    location = urljoin(url, response.headers["Location"])
                    response.close()
                    if _origin(location) != _origin(url):
                        headers.pop("Authorization", None)
                    url = location
                    continue
                break
            else:
                raise _Transient("too many redirects")
            try:
                self._check_status(response, file, offset, resource=resource)
                if offset and response.status_code == 200:
                    # Range ignored: the body starts at byte 0, so restart the file.
                    on_progress(-offset)
                    offset = 0
                    hashes.reset()
                    mode = "wb"
                else:
                    mode = "ab" if offset else "wb"
                with part.open(mode) as out:
                    for chunk in response.iter_raw(CHUNK_SIZE):
                        remaining = file.size - offset
                        if len(chunk) > remaining:
                            chunk = chunk[:remaining]  # a server sending more than listed
                        out.write(chunk)
                        hashes.update(chunk)
                        offset += len(chunk)
                        on_progress(len(chunk))
                        if offset >= file.size:
                            break
                return offset
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise _Transient(f"timed out ({type(exc).__name__})") from None
        except httpx.ConnectError as exc:
            raise HubUnreachableError(f"cannot connect to {_origin(url)}: {exc}", resource=resource) from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise _Transient(f"connection error: {exc or type(exc).__name__}") from None

    @staticmethod
    def _check_status(response: httpx.Response, file: RemoteFile, offset: int, *, resource: str) -> None:
        status = response.status_code
        if status in (200, 206):
            if status == 206:
                start = response.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
                if start and start.isdigit() and int(start) != offset:
                    raise _Transient(f"server answered range from {start}, asked {offset}")
            return
        if status == 416 and offset:
            raise _Transient("range not satisfiable; restarting the file")
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}", retry_after=_retry_after(response.headers.get("Retry-After")))
        code = response.headers.get("X-Error-Code", "")
        if status in (401, 403):
            raise GatedRepoError(f"{file.path}: access denied (HTTP {status} {code})".rstrip(), resource=resource)
        if status == 404:
            raise EntryNotFoundError(f"{file.path}: not found on the hub (HTTP 404 {code})".rstrip(),
                                     resource=resource)
        raise SourceError(f"{file.path}: unexpected HTTP {status}", resource=resource)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
