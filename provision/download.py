"""A resumable, verifying HTTP file downloader shared by the hub sources.

Why not ``snapshot_download``: huggingface_hub 2.4 restarts a killed file from byte 0 and
leaves the old partial behind, and never checks sha256 (notes/protocols.md). Here:

- a partial file has a stable name derived from its expected digest and path, so a rerun after
  SIGKILL resumes it with a ``Range`` request (at most the bytes in flight are fetched again);
- bytes are hashed while they stream (the kept prefix is re-hashed on resume) and the file is
  placed with ``os.replace`` only after its sha256 (or git blob sha1) matches: a final path
  never holds a partial or unverified file;
- a mismatch discards the partial and retries once from scratch, then raises IntegrityError;
- 5xx, 429 (honouring ``Retry-After``), resets, timeouts and truncated bodies are retried
  as :class:`provision.retry.RetryPolicy` says, resuming from the current offset; a 429 pauses
  every request to that host (:mod:`provision.hosts`, which also caps connections per host);
- a large file goes as several byte ranges at once (:mod:`provision.segmented`), each resumed
  from where its bytes reached the disk;
- redirects are followed by hand so that ``Authorization`` and ``Cookie`` are dropped when
  the origin changes (a hub redirecting to a CDN must not receive the token).

Connections, proxies, TLS and redirect rules are :mod:`provision.transport`.

Layout inside a model folder::

    <model>/.cache/provision/partial/<digest>-<path hash>.part    in-flight bytes, removed when placed
    <model>/.cache/provision/partial/<digest>-<path hash>.part.ranges   a ranged download's progress
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import stat
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import segmented, segments
from .errors import (
    DownloadError,
    EntryNotFoundError,
    GatedRepoError,
    HubUnreachableError,
    IntegrityError,
    OwnershipError,
    SourceError,
)
from .files import RemoteFile
from .hosts import DEFAULT_CONNECTIONS_PER_HOST, HostGate
from .listing import origin
from .ownership import inside
from .retry import DEFAULT_RETRY, RetryPolicy, parse_retry_after
from .signals import cancellable_sleep, check_cancelled
from .transport import REDIRECT_STATUSES, ConnectionPool, Redirects, drop_credentials, http_timeout

# 256 KiB: on ext4 with large folios, 1 MiB writes get 1 MiB folios, and on a VM whose idle
# memory went back to the host (virtio-balloon page reporting) each new one costs a host fault:
# 500 MiB took 0.9-1.2 s of kernel time after a few idle seconds, against 0.1 s at 256 KiB
# (`dd bs=1M` vs `bs=256k` after `sleep 4`). Smaller than 64 KiB costs syscalls instead.
CHUNK_SIZE = 256 << 10
_HEX_DIGEST = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
PARTIAL_DIR = Path(".cache") / "provision" / "partial"
ProgressCallback = Callable[[int], None]


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def partial_path(model_dir: Path, file: RemoteFile) -> Path:
    # The digest names a file, so it must be hex whatever the listing or the lock said (the
    # sources check it already; this keeps a bad one from ever becoming a path).
    digest = (
        next((d for d in (file.sha256, file.git_sha1) if d and _HEX_DIGEST.fullmatch(d)), None)
        or hashlib.sha256(f"{file.path}:{file.size}".encode()).hexdigest()
    )
    # The path too: files with the same content (duplicate shards, empty files) download side by side.
    where = hashlib.sha256(file.path.encode()).hexdigest()[:16]
    return model_dir / PARTIAL_DIR / f"{digest}-{where}.part"


def _check_partial(model_dir: Path, file: RemoteFile, part: Path, *, resource: str) -> None:
    """Make ``part``'s folder; refuse a partial, or its record, that provision did not write.

    A resume follows no link (its reads, hash and writes would leave the model folder), writes
    no file another name shares (a hard link), opens nothing but a regular file (a FIFO waits
    forever), and the partial folder itself must not lead out of the model folder.
    """
    if inside(model_dir, str(part.parent.relative_to(model_dir))) is None:
        raise OwnershipError(
            f"{file.path}: {PARTIAL_DIR} leads out of the model folder (through a link)",
            hint=f"remove the link on the way to {model_dir / PARTIAL_DIR}, then run the command again",
            resource=resource,
        )
    part.parent.mkdir(parents=True, exist_ok=True)
    for path in (part, segments.record_path(part)):
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            continue
        mode, links = found.st_mode, found.st_nlink
        if stat.S_ISLNK(mode) or (stat.S_ISREG(mode) and links > 1):
            kind = "a link"
        elif not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"
        else:
            continue
        raise OwnershipError(
            f"{file.path}: {path.relative_to(model_dir)} is {kind}, not a partial download provision wrote",
            hint=f"remove {path} and run the command again",
            resource=resource,
        )


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


@dataclass(frozen=True)
class ApiResponse:
    status: int
    headers: Mapping[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or ``None`` when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class Downloader:
    """Fetches :class:`RemoteFile` s into a model folder. Thread-safe: share one per run.

    Bodies are read with ``http.client`` straight into a reused buffer (``readinto``): the
    socket read, sha256 and the file write all release the GIL, so parallel files scale
    across cores. httpx's per-chunk Python overhead capped a stream at about 300 MiB/s here.
    """

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # None: http_timeout()
        retry: RetryPolicy = DEFAULT_RETRY,
        max_connections: int = 16,
        connections_per_host: int = DEFAULT_CONNECTIONS_PER_HOST,
        sleep: Callable[[float], None] = cancellable_sleep,  # a signal cuts a back-off short
    ) -> None:
        # Identity encoding: the bytes hashed must be the file's bytes, not a gzip stream.
        self._headers = {"User-Agent": "provision", "Accept-Encoding": "identity", **(headers or {})}
        self._retry = retry
        self._sleep = sleep
        self.hosts = HostGate(connections_per_host)
        self._pool = ConnectionPool(
            timeout=http_timeout() if timeout is None else timeout, size=max(max_connections, connections_per_host)
        )

    def close(self) -> None:
        self._pool.close()

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

    def sleep(self, seconds: float) -> None:
        self._sleep(seconds)

    def get_json(self, url: str, *, resource: str, endpoint: str, credentials: bool = True) -> ApiResponse:
        """GET a small JSON document from a hub's API on the same keep-alive connections.

        Redirects are followed as huggingface_hub's client follows them for API calls (httpx,
        ``follow_redirects=True``: a mirror may answer ``/tree/{rev}`` with a 307 to
        ``/tree/{rev}/``), without ``Authorization``/``Cookie`` once the origin changes, and
        without them at all when ``credentials`` is false; a loop or more than
        ``MAX_REDIRECTS`` is final. 5xx, 429 and dropped connections are retried (bounded);
        a refused connection or an unknown host is final (:class:`HubUnreachableError`).
        """
        failures = 0
        headers = {**self._headers, "Accept": "application/json"}
        if not credentials:
            drop_credentials(headers)
        redirects = Redirects(url, resource=resource)
        while True:
            try:
                conn, response = self._pool.request("GET", url, headers)
                try:
                    body = response.read()
                finally:
                    self._pool.release(conn, response)
                status = response.status
                if status in REDIRECT_STATUSES and response.getheader("Location"):
                    url = redirects.follow(url, response.getheader("Location", ""), headers)
                    continue
                if (status >= 500 or status == 429) and failures + 1 < self._retry.attempts:
                    raise _Transient(f"HTTP {status}", retry_after=parse_retry_after(response.getheader("Retry-After")))
                return ApiResponse(status, {k.lower(): v for k, v in response.getheaders()}, body)
            except SourceError as exc:  # final (the pool's verdict): ConnectionError must not retry it
                exc.resource = exc.resource or resource
                raise
            except (ConnectionRefusedError, socket.gaierror) as exc:
                raise HubUnreachableError(f"cannot reach {endpoint}: {exc}", resource=resource) from None
            except (_Transient, TimeoutError, http.client.HTTPException, ConnectionError, ssl.SSLError) as exc:
                failures += 1
                if failures >= self._retry.attempts:
                    raise HubUnreachableError(
                        f"cannot reach {endpoint}: {exc or type(exc).__name__}", resource=resource
                    ) from None
                self._sleep(self._retry.delay(failures, exc.retry_after if isinstance(exc, _Transient) else None))

    def fetch(
        self,
        file: RemoteFile,
        model_dir: Path,
        *,
        resource: str,
        on_progress: ProgressCallback = lambda n: None,
    ) -> str:
        """Download, verify and place ``file`` under ``model_dir``; return its sha256."""
        check_cancelled()  # queued files of an interrupted run start nothing
        if file.url is None:
            raise SourceError(f"no URL for {file.path}", resource=resource)
        target = model_dir / file.path
        part = partial_path(model_dir, file)
        _check_partial(model_dir, file, part, resource=resource)
        for attempt in (1, 2):
            hashes = None
            if segments.is_large(file.size):
                hashes = segmented.fetch_ranges(self, file, part, resource=resource, on_progress=on_progress)
            if hashes is None:  # small, or the server does not honour ranges: one stream
                segmented.settle_to_prefix(part, file.size)
                hashes = self._download_to(file, part, resource=resource, on_progress=on_progress)
            problem = hashes.mismatch(file)
            segments.drop_record(part)  # first: a partial without a record is read as one stream
            if problem is None:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(part, target)
                return hashes.sha256.hexdigest()
            # Never keep bytes that failed verification; the retry starts from scratch.
            on_progress(-file.size)
            part.unlink(missing_ok=True)
            if attempt == 2:
                raise IntegrityError(
                    f"{file.path}: downloaded bytes do not match the hub ({problem})", resource=resource
                )
        raise AssertionError("unreachable")

    def _download_to(self, file: RemoteFile, part: Path, *, resource: str, on_progress: ProgressCallback) -> _Hashes:
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
                    raise DownloadError(
                        f"{file.path}: {exc} (gave up after {failures} attempts)", resource=resource
                    ) from None
                self._sleep(self._retry.delay(failures, exc.retry_after))
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
        with self.get_body(file, offset, None, resource=resource) as response:
            if offset and response.status == 200:
                # Range ignored: the body starts at byte 0, so restart the file.
                on_progress(-offset)
                offset = 0
                hashes.reset()
            return self._stream_body(response, part, offset, file.size, hashes, on_progress)

    @contextmanager
    def get_body(
        self, file: RemoteFile, start: int, end: int | None, *, resource: str
    ) -> Iterator[http.client.HTTPResponse]:
        """GET bytes ``start..end`` of ``file`` (``end`` None: to its end) on a connection slot of its
        host, following redirects; yields the response (200, or 206 from ``start``) to read.

        Failures worth retrying raise :class:`_Transient` (a 429 also pauses the whole host);
        final ones raise :class:`SourceError` subclasses.
        """
        headers = dict(self._headers)
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        url = file.url
        assert url is not None
        host = origin(url)
        try:
            with self.hosts.slot(host):
                redirects = Redirects(url, resource=resource)
                while True:
                    conn, response = self._pool.request("GET", url, headers)
                    if response.status in REDIRECT_STATUSES:
                        self._pool.release(conn, response)
                        url = redirects.follow(url, response.getheader("Location", ""), headers)
                        continue
                    break
                reusable = False
                try:
                    try:
                        self._check_status(response, file, start, end, resource=resource)
                    except _Transient as exc:
                        if response.status == 429:
                            self.hosts.back_off(host, self._retry.delay(1, exc.retry_after))
                        raise
                    yield response
                    reusable = response.length == 0 or response.isclosed()
                finally:
                    if reusable:
                        self._pool.release(conn, response)
                    else:
                        conn.close()
        except SourceError as exc:  # final (the pool's verdict): ConnectionError must not retry it
            exc.resource = exc.resource or resource
            raise
        except TimeoutError as exc:
            raise _Transient(f"timed out ({exc or type(exc).__name__})") from None
        except ConnectionRefusedError as exc:
            raise HubUnreachableError(
                f"cannot connect to {origin(url)[1]}: {exc.strerror}", resource=resource
            ) from None
        except socket.gaierror as exc:
            raise HubUnreachableError(f"cannot resolve {origin(url)[1]}: {exc}", resource=resource) from None
        except (http.client.HTTPException, ConnectionError, ssl.SSLError) as exc:
            raise _Transient(f"connection error: {exc or type(exc).__name__}") from None
        except OSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ECONNRESET, errno.EPIPE):
                raise _Transient(f"connection error: {exc.strerror}") from None
            raise

    @staticmethod
    def _stream_body(
        response: http.client.HTTPResponse,
        part: Path,
        offset: int,
        size: int,
        hashes: _Hashes,
        on_progress: ProgressCallback,
    ) -> int:
        buffer = bytearray(CHUNK_SIZE)
        view = memoryview(buffer)
        with part.open("ab" if offset else "wb", buffering=0) as out:
            while offset < size:
                check_cancelled()  # SIGINT/SIGTERM: stop at the next chunk; the partial is kept
                want = min(CHUNK_SIZE, size - offset)  # never read past the listed size
                got = response.readinto(view[:want])
                if not got:
                    break
                chunk = view[:got]
                out.write(chunk)
                hashes.update(chunk)
                offset += got
                on_progress(got)
        return offset

    @staticmethod
    def _check_status(
        response: http.client.HTTPResponse, file: RemoteFile, start: int, end: int | None, *, resource: str
    ) -> None:
        status = response.status
        if status == 200:
            return
        if status == 206:  # bytes start..end were asked for: the body must be those, or a prefix of them
            header = response.getheader("Content-Range")
            span = segments.parse_content_range(header)
            if span is None:
                said = "none" if header is None else repr(header[:60])  # the server's text, quoted and cut short
                raise _Transient(f"a 206 without a valid Content-Range ({said})")
            first, until, complete = span
            if complete is not None and complete != file.size:
                raise IntegrityError(
                    f"{file.path}: the server says the file has {complete} bytes, the listing {file.size}",
                    resource=resource,
                )
            asked_end = file.size if end is None else end
            if first != start or until > asked_end:
                raise _Transient(f"server answered bytes {first}-{until - 1}, asked {start}-{asked_end - 1}")
            return
        if status == 416 and start:
            raise _Transient("range not satisfiable; restarting the file")
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}", retry_after=parse_retry_after(response.getheader("Retry-After")))
        code = response.getheader("X-Error-Code") or ""
        if status in (401, 403):
            raise GatedRepoError(f"{file.path}: access denied (HTTP {status} {code})".rstrip(), resource=resource)
        if status == 404:
            raise EntryNotFoundError(f"{file.path}: not found on the hub (HTTP 404 {code})".rstrip(), resource=resource)
        raise SourceError(f"{file.path}: unexpected HTTP {status}", resource=resource)
