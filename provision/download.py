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
  with bounded exponential backoff, resuming from the current offset; a 429 pauses every
  request to that host (:mod:`provision.hosts`, which also caps connections per host);
- a large file goes as several byte ranges at once (:mod:`provision.segmented`), each resumed
  from where its bytes reached the disk;
- redirects are followed by hand so that ``Authorization`` and ``Cookie`` are dropped when
  the origin changes (a hub redirecting to a CDN must not receive the token).

``PROVISION_HTTP_TIMEOUT`` (seconds, default 30) bounds each connect and each silent read of
a body; read here only (:func:`http_timeout`).

Layout inside a model folder::

    <model>/.cache/provision/partial/<digest>-<path hash>.part    in-flight bytes, removed when placed
    <model>/.cache/provision/partial/<digest>-<path hash>.part.ranges   a ranged download's progress
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit
from urllib.request import getproxies, proxy_bypass

from . import segmented, segments
from .errors import (
    DownloadError,
    EntryNotFoundError,
    GatedRepoError,
    HubUnreachableError,
    IntegrityError,
    SourceError,
)
from .files import RemoteFile
from .hosts import DEFAULT_CONNECTIONS_PER_HOST, HostGate
from .signals import cancellable_sleep, check_cancelled

# 256 KiB: on ext4 with large folios, 1 MiB writes get 1 MiB folios, and on a VM whose idle
# memory went back to the host (virtio-balloon page reporting) each new one costs a host fault:
# 500 MiB took 0.9-1.2 s of kernel time after a few idle seconds, against 0.1 s at 256 KiB
# (`dd bs=1M` vs `bs=256k` after `sleep 4`). Smaller than 64 KiB costs syscalls instead.
CHUNK_SIZE = 256 << 10
_HEX_DIGEST = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
PARTIAL_DIR = Path(".cache") / "provision" / "partial"
ProgressCallback = Callable[[int], None]
TIMEOUT_ENV = "PROVISION_HTTP_TIMEOUT"
DEFAULT_TIMEOUT = 30.0


def http_timeout() -> float:
    """Seconds a connect or a read may stay silent before it is retried."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        value = DEFAULT_TIMEOUT  # a typo must not turn into no timeout at all
    return value if value > 0 else DEFAULT_TIMEOUT


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # consecutive failures without progress before giving up
    backoff: float = 0.5  # seconds, doubled each time
    max_backoff: float = 10.0
    max_retry_after: float = 60.0

    def delay(self, failures: int, retry_after: float | None) -> float:
        """Seconds to wait after ``failures`` failed tries in a row (the server's word first)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return min(self.backoff * 2 ** max(failures - 1, 0), self.max_backoff)


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def partial_path(model_dir: Path, file: RemoteFile) -> Path:
    # The digest names a file, so it must be hex whatever the listing or the lock said (the
    # sources check it already; this keeps a bad one from ever becoming a path).
    digest = (
        next((d for d in (file.sha256, file.git_sha1) if d and _HEX_DIGEST.match(d)), None)
        or hashlib.sha256(f"{file.path}:{file.size}".encode()).hexdigest()
    )
    # The path too: files with the same content (duplicate shards, empty files) download side by side.
    where = hashlib.sha256(file.path.encode()).hexdigest()[:16]
    return model_dir / PARTIAL_DIR / f"{digest}-{where}.part"


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
        retry: RetryPolicy = RetryPolicy(),
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
            _drop_credentials(headers)
        redirects = _Redirects(url, resource=resource)
        while True:
            try:
                conn, response = self._pool.request("GET", url, headers)
                try:
                    body = response.read()
                finally:
                    self._pool.release(conn, response)
                status = response.status
                if status in _REDIRECTS and response.getheader("Location"):
                    url = redirects.follow(url, response.getheader("Location", ""), headers)
                    continue
                if (status >= 500 or status == 429) and failures + 1 < self._retry.attempts:
                    raise _Transient(f"HTTP {status}", retry_after=_retry_after(response.getheader("Retry-After")))
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
                delay = getattr(exc, "retry_after", None)
                self._sleep(
                    min(
                        delay if delay is not None else self._retry.backoff * 2 ** (failures - 1),
                        self._retry.max_backoff,
                    )
                )

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
        part.parent.mkdir(parents=True, exist_ok=True)
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
        host = _origin(url)
        try:
            with self.hosts.slot(host):
                redirects = _Redirects(url, resource=resource)
                while True:
                    conn, response = self._pool.request("GET", url, headers)
                    if response.status in _REDIRECTS:
                        self._pool.release(conn, response)
                        url = redirects.follow(url, response.getheader("Location", ""), headers)
                        continue
                    break
                reusable = False
                try:
                    try:
                        self._check_status(response, file, start, resource=resource)
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
                f"cannot connect to {_origin(url)[1]}: {exc.strerror}", resource=resource
            ) from None
        except socket.gaierror as exc:
            raise HubUnreachableError(f"cannot resolve {_origin(url)[1]}: {exc}", resource=resource) from None
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
    def _check_status(response: http.client.HTTPResponse, file: RemoteFile, offset: int, *, resource: str) -> None:
        status = response.status
        if status in (200, 206):
            if status == 206:
                start = (response.getheader("Content-Range") or "").removeprefix("bytes ").split("-")[0]
                if start and start.isdigit() and int(start) != offset:
                    raise _Transient(f"server answered range from {start}, asked {offset}")
            return
        if status == 416 and offset:
            raise _Transient("range not satisfiable; restarting the file")
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}", retry_after=_retry_after(response.getheader("Retry-After")))
        code = response.getheader("X-Error-Code") or ""
        if status in (401, 403):
            raise GatedRepoError(f"{file.path}: access denied (HTTP {status} {code})".rstrip(), resource=resource)
        if status == 404:
            raise EntryNotFoundError(f"{file.path}: not found on the hub (HTTP 404 {code})".rstrip(), resource=resource)
        raise SourceError(f"{file.path}: unexpected HTTP {status}", resource=resource)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


_REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 20  # httpx's default, which huggingface_hub uses


def _drop_credentials(headers: dict[str, str]) -> None:
    for secret in ("Authorization", "Cookie"):  # never hand the token to another origin
        headers.pop(secret, None)


class _Redirects:
    """The redirects of one request: final (not retried) on a loop or past ``MAX_REDIRECTS``,
    since asking again gets the same answer; credentials dropped once the origin changes."""

    def __init__(self, url: str, *, resource: str) -> None:
        self._seen = {url}
        self._resource = resource

    def follow(self, url: str, location: str, headers: dict[str, str]) -> str:
        target = urljoin(url, location)
        if not location or urlsplit(target).scheme not in ("http", "https"):
            raise SourceError(f"redirect from {url} to {location!r}: not an http(s) URL", resource=self._resource)
        if target in self._seen or len(self._seen) > MAX_REDIRECTS:
            what = "a redirect loop" if target in self._seen else f"more than {MAX_REDIRECTS} redirects"
            raise SourceError(
                f"{what} at {target}",
                resource=self._resource,
                hint="the hub or mirror is misconfigured; retrying will not help: check the endpoint",
            )
        self._seen.add(target)
        if _origin(target) != _origin(url):
            _drop_credentials(headers)
        return target


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _untrusted(where: str, exc: ssl.SSLCertVerificationError) -> HubUnreachableError:
    """A certificate that does not verify is final: retrying cannot make it trusted."""
    return HubUnreachableError(
        f"TLS certificate of {where} not trusted: {exc.verify_message or exc}",
        hint="for a mirror behind a private CA, point SSL_CERT_FILE at that CA's bundle",
    )


@dataclass(frozen=True)
class _Proxy:
    host: str
    port: int
    headers: dict[str, str]  # Proxy-Authorization, from credentials in the proxy's URL
    variable: str = "HTTP_PROXY"  # where it came from, for messages

    @property
    def address(self) -> str:
        """How errors name it: never with its credentials."""
        return f"http://{self.host}:{self.port}"


def _proxy_for(scheme: str, netloc: str) -> _Proxy | None:
    """The proxy curl would use: ``$<scheme>_proxy``, unless ``$no_proxy`` covers the host."""
    address = getproxies().get(scheme)
    if not address or proxy_bypass(urlsplit(f"//{netloc}").hostname or netloc):
        return None
    proxy = urlsplit(address if "://" in address else f"http://{address}")
    headers = {}
    if proxy.username:
        credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials).decode()
    return _Proxy(proxy.hostname or "", proxy.port or 80, headers, f"{scheme.upper()}_PROXY")


def _proxy_refused(proxy: _Proxy, detail: str) -> HubUnreachableError:
    """The proxy said no: final, since asking again gets the same answer."""
    hint = (
        "put the credentials in the proxy's URL (HTTPS_PROXY=http://user:password@host:port)"
        if "407" in detail
        else "check the proxy's rules, or list the hub's host in NO_PROXY to bypass it"
    )
    return HubUnreachableError(
        f"the proxy {proxy.address} (from ${proxy.variable}) refused the request: {detail}", hint=hint
    )


def _proxy_unreachable(proxy: _Proxy, exc: OSError) -> HubUnreachableError:
    """The proxy itself is down or unknown: the hub was never asked, so do not blame it."""
    return HubUnreachableError(
        f"cannot reach the proxy {proxy.address} (from ${proxy.variable}): {exc.strerror or exc}",
        hint=f"start the proxy or fix ${proxy.variable}; list the hub's host in NO_PROXY to bypass it",
    )


class ConnectionPool:
    """Keep-alive HTTP(S) connections per origin, shared by the download threads.

    Honours ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` like curl, since mirrors are often
    reached through a proxy: HTTPS through a CONNECT tunnel, plain HTTP as absolute-form
    requests, and ``user:password@`` in the proxy's URL sent as ``Proxy-Authorization``.
    """

    def __init__(self, *, timeout: float, size: int) -> None:
        self._timeout = timeout
        self._size = size
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None  # made on the first HTTPS connection
        self._proxies: dict[tuple[str, str], _Proxy | None] = {}  # per origin, read from the environment once

    def _ssl_context(self) -> ssl.SSLContext:
        # Loading the system CA bundle takes ~20 ms: not worth paying for a plain-HTTP mirror.
        with self._lock:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            return self._ssl

    def _proxy(self, key: tuple[str, str]) -> _Proxy | None:
        with self._lock:
            if key not in self._proxies:
                self._proxies[key] = _proxy_for(*key)
            return self._proxies[key]

    def request(
        self, method: str, url: str, headers: Mapping[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send on an idle keep-alive connection (or a new one if it went stale).

        A certificate that does not verify and a proxy's refusal raise :class:`HubUnreachableError`
        at once: they are final, unlike the resets and timeouts the callers retry.
        """
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        key = (parts.scheme, parts.netloc)
        proxy = self._proxy(key)
        if proxy and parts.scheme == "http":  # absolute form through the proxy (see _connect)
            target, headers = url, {**headers, **proxy.headers}
        for fresh in (False, True):
            conn = self._take(key) if not fresh else self._connect(key, proxy)
            if conn is None:
                continue
            try:
                conn.request(method, target or "/", headers=dict(headers))
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if fresh:
                    raise
                continue
            except ssl.SSLCertVerificationError as exc:
                conn.close()
                raise _untrusted(parts.netloc, exc) from None
            except OSError as exc:
                conn.close()
                if proxy and str(exc).startswith("Tunnel connection failed"):  # http.client's CONNECT refusal
                    raise _proxy_refused(proxy, str(exc)) from None
                if proxy and fresh and isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
                    raise _proxy_unreachable(proxy, exc) from None
                raise
            if proxy and response.status == 407:  # plain HTTP through a proxy that wants credentials
                conn.close()
                raise _proxy_refused(proxy, "407 Proxy Authentication Required")
            return conn, response
        raise AssertionError("unreachable")

    def release(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        """Return a connection whose response was fully read; anything else is closed."""
        response.read()  # drain a small redirect/error body so the connection can be reused
        if response.will_close:
            conn.close()
            return
        key = conn._provision_key  # type: ignore[attr-defined]
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._size:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            for conns in self._idle.values():
                for conn in conns:
                    conn.close()
            self._idle.clear()

    def _take(self, key: tuple[str, str]) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def _connect(self, key: tuple[str, str], proxy: _Proxy | None) -> http.client.HTTPConnection:
        scheme, netloc = key
        host = netloc.rsplit("@", 1)[-1]
        conn: http.client.HTTPConnection
        if scheme == "https":
            if proxy:  # TCP to the proxy, CONNECT, then TLS to the hub itself (http.client does this)
                conn = http.client.HTTPSConnection(
                    proxy.host, proxy.port, timeout=self._timeout, context=self._ssl_context()
                )
                conn.set_tunnel(host, headers=proxy.headers)
            else:
                conn = http.client.HTTPSConnection(host, timeout=self._timeout, context=self._ssl_context())
        elif scheme == "http":
            # Through a proxy, plain HTTP goes as absolute-form requests (see ``request``), not a
            # CONNECT tunnel: proxies such as squid refuse CONNECT to ports other than 443.
            if proxy:
                conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=self._timeout)
            else:
                conn = http.client.HTTPConnection(host, timeout=self._timeout)
        else:
            raise SourceError(f"unsupported URL scheme {scheme!r} in a download URL")
        conn._provision_key = key  # type: ignore[attr-defined]
        return conn
