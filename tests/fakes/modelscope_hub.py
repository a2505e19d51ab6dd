"""A loopback ModelScope hub that the real ``modelscope`` SDK (1.40 → modelscope-hub 0.5) accepts.

Endpoints served (``{o}/{n}`` is ``owner/name``; every JSON answer uses the legacy envelope
``{"Code", "Data", "Message", "RequestId", "Success"}``)::

    GET  /api/v1/repos/internalAccelerationInfo           region probe (SDK waits 0.2 s, then ignores it)
    GET  /api/v1/models/{o}/{n}                           model info
    GET  /api/v1/models/{o}/{n}/revisions                 {"RevisionMap": {"Branches": [...], "Tags": [...]}}
    GET  /api/v1/models/{o}/{n}/repo/files?Revision=&Recursive=[&Root=folder]
                                                          {"Files": [{"Path","Name","Type","Size","Sha256",...}]}
    GET  /api/v1/models/{o}/{n}/repo?Revision=&FilePath=  file bytes; honours ``Range`` (206 + Content-Range)
    HEAD (same)                                           headers only (the SDK's redirect probe)

Unknown repo, revision or file: HTTP 404 with ``Success: false`` (the SDK raises ``NotExistError``).
A repo added with ``token=`` is private: without ``Cookie: m_session_id=<token>`` or
``Authorization: Bearer <token>`` it answers 401 (``AuthenticationError``).

With ``redirect=True`` file requests answer 302 to a second origin, ``hub.cdn`` (``FakeMSCDN``),
which serves ``/objects/{sha256}`` like the OSS CDN does, with ``X-Linked-ETag: "<sha256>"``.
Faults (``hub.faults``) apply to bodies wherever they are served.

CLI for benchmarks: ``python -m tests.fakes.modelscope_hub --root DIR --repo owner/name [--port N]``.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, unquote

from tests.fakes._server import FakeServer, Recorded, Request

REGION_PROBE_PATH = "/api/v1/repos/internalAccelerationInfo"
CHUNK = 1024 * 1024
ESCAPE_PATH = "../evil.txt"
ESCAPE_BODY = b"written outside the target folder\n"
_MODEL_ROUTE = re.compile(r"^/api/v1/models/([^/]+)/([^/]+)(/revisions|/repo/files|/repo)?$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_COMMIT_DATE = 1_700_000_000


@dataclass
class Faults:
    """Switches that make the next answers misbehave; tests flip them between calls."""

    corrupt: set[str] = field(default_factory=set)  # flip the middle byte; length and listed Sha256 unchanged
    drop_after_bytes: int | None = None  # close the connection after this many body bytes of a longer body...
    drops: int = 1  # ...for this many responses
    status_5xx: int = 0  # answer this many file requests with 503 first
    throttle_bps: int | None = None  # pace every body at this rate
    escape_path: bool = False  # list and serve an extra file whose Path is "../evil.txt"


@dataclass(frozen=True)
class Blob:
    """One file's body, kept in memory or read from disk on demand."""

    data: bytes | Path
    size: int
    sha256: str

    @classmethod
    def of(cls, data: bytes | Path) -> Blob:
        if isinstance(data, bytes):
            return cls(data, len(data), hashlib.sha256(data).hexdigest())
        digest = hashlib.sha256()
        with data.open("rb") as fh:
            while block := fh.read(CHUNK):
                digest.update(block)
        return cls(data, data.stat().st_size, digest.hexdigest())

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) in chunks of at most 1 MiB."""
        if isinstance(self.data, bytes):
            for pos in range(start, end, CHUNK):
                yield self.data[pos : min(pos + CHUNK, end)]
            return
        with self.data.open("rb") as fh:
            fh.seek(start)
            pos = start
            while pos < end and (block := fh.read(min(CHUNK, end - pos))):
                pos += len(block)
                yield block


@dataclass
class _Repo:
    revisions: dict[str, dict[str, Blob]]
    token: str | None = None


class FakeModelScopeHub(FakeServer):
    """``hub.add_repo("owner/name", files={...})``, then point the SDK's ``endpoint=`` at ``hub.url``."""

    def __init__(self, *, port: int = 0, faults: Faults | None = None, redirect: bool = False) -> None:
        super().__init__(port=port)
        self.faults = faults or Faults()
        self.bytes_served = 0
        self.cdn: FakeMSCDN | None = FakeMSCDN(self) if redirect else None
        self._repos: dict[str, _Repo] = {}
        self._lock = threading.Lock()

    # -- content -----------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        revision: str = "master",
        token: str | None = None,
    ) -> None:
        """Add a repo; ``token`` makes it private."""
        self._repos[repo_id] = _Repo({}, token)
        self.add_revision(repo_id, revision, files)

    def add_revision(self, repo_id: str, revision: str, files: Mapping[str, bytes | Path]) -> None:
        """Add a branch or tag to an existing repo."""
        self._repos[repo_id].revisions[revision] = {path: Blob.of(data) for path, data in files.items()}

    # -- counters ----------------------------------------------------------------
    def file_gets(self) -> int:
        """File body requests answered by the hub itself (not the CDN)."""
        return sum(1 for r in self.requests if r.method == "GET" and r.path.split("?")[0].endswith("/repo"))

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_served += n

    def _take(self, name: str) -> bool:
        """Consume one unit of a countdown fault."""
        with self._lock:
            left = getattr(self.faults, name)
            if left <= 0:
                return False
            setattr(self.faults, name, left - 1)
            return True

    # -- lifecycle: the CDN lives and dies with the hub ------------------------------
    def start(self) -> Self:
        if self.cdn is not None:
            self.cdn.start()
        super().start()
        return self

    def stop(self) -> None:
        super().stop()
        if self.cdn is not None:
            self.cdn.stop()

    # -- routing -----------------------------------------------------------------
    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        if request.path == REGION_PROBE_PATH:
            # An empty query address tells the SDK it is not inside Alibaba Cloud: no second probe.
            return _envelope(self, handler, record, 200, {"InternalRegionQueryAddress": ""})
        match = _MODEL_ROUTE.match(request.path)
        if match is None:
            return _envelope(self, handler, record, 404, None, f"no route for {request.path}")
        repo_id = f"{unquote(match[1])}/{unquote(match[2])}"
        repo = self._repos.get(repo_id)
        if repo is None:
            return _envelope(self, handler, record, 404, None, f"model {repo_id} does not exist")
        if repo.token is not None and _token(request) != repo.token:
            return _envelope(self, handler, record, 401, None, "login required for a private model")
        suffix = match[3] or ""
        if suffix == "":
            return _envelope(self, handler, record, 200, _model_info(repo_id, repo))
        if suffix == "/revisions":
            return _envelope(self, handler, record, 200, _revision_map(repo))
        revision = _param(request, "Revision") or "master"
        files = repo.revisions.get(revision)
        if files is None:
            return _envelope(self, handler, record, 404, None, f"revision {revision} does not exist")
        if suffix == "/repo/files":
            return self._list(handler, record, revision, files, _param(request, "Root"))
        return self._file(request, handler, record, revision, files)

    def _list(
        self,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        revision: str,
        files: dict[str, Blob],
        root: str | None,
    ) -> None:
        listed = dict(files)
        if root:
            # The SDK lists only the literal folder of an allow pattern such as "weights/*".
            listed = {path: blob for path, blob in files.items() if path.startswith(f"{root.strip('/')}/")}
            if not listed:
                return _envelope(self, handler, record, 404, None, f"folder {root} does not exist at {revision}")
        if self.faults.escape_path:
            listed[ESCAPE_PATH] = Blob.of(ESCAPE_BODY)
        dirs = {str(parent) for path in listed for parent in Path(path).parents if str(parent) not in (".", "..")}
        entries = [_tree_entry(d, revision) for d in sorted(dirs)]
        entries += [_blob_entry(path, blob, revision) for path, blob in sorted(listed.items())]
        return _envelope(self, handler, record, 200, {"Files": entries})

    def _file(
        self,
        request: Request,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        revision: str,
        files: dict[str, Blob],
    ) -> None:
        path = _param(request, "FilePath") or ""
        blob = files.get(path)
        if blob is None and path == ESCAPE_PATH and self.faults.escape_path:
            blob = Blob.of(ESCAPE_BODY)
        if blob is None:
            return _envelope(self, handler, record, 404, None, f"file {path} does not exist at {revision}")
        if request.method == "GET" and self._take("status_5xx"):
            return _envelope(self, handler, record, 503, None, "service unavailable")
        if self.cdn is not None:
            location = f"{self.cdn.url}/objects/{blob.sha256}?path={quote(path)}&Expires={int(time.time()) + 3600}"
            self.cdn.publish(path, blob)
            return self.send(handler, record, 302, headers={"Location": location}, head_only=request.method == "HEAD")
        return serve_body(self, request, handler, record, path, blob, {})


class FakeMSCDN(FakeServer):
    """The storage origin the hub redirects to in ``redirect=True`` mode."""

    def __init__(self, hub: FakeModelScopeHub) -> None:
        super().__init__()
        self.hub = hub
        self._objects: dict[str, tuple[str, Blob]] = {}

    def publish(self, path: str, blob: Blob) -> None:
        self._objects[blob.sha256] = (path, blob)

    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        found = self._objects.get(request.path.removeprefix("/objects/"))
        if found is None:
            return self.send(handler, record, 404, b"NoSuchKey")
        path, blob = found
        return serve_body(self.hub, request, handler, record, path, blob, {"X-Linked-ETag": f'"{blob.sha256}"'})


def serve_body(
    hub: FakeModelScopeHub,
    request: Request,
    handler: BaseHTTPRequestHandler,
    record: Recorded,
    path: str,
    blob: Blob,
    extra_headers: dict[str, str],
) -> None:
    """Send ``blob`` (or the requested range of it), applying the hub's faults."""
    headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **extra_headers}
    start, end, status = 0, blob.size, 200
    if match := _RANGE.match(request.headers.get("range", "")):
        start = int(match[1])
        end = min(int(match[2]) + 1, blob.size) if match[2] else blob.size
        if start >= blob.size:
            headers["Content-Range"] = f"bytes */{blob.size}"
            FakeServer.send(handler, record, 416, headers=headers)
            return
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
    headers["Content-Length"] = str(end - start)
    record.status = status
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.end_headers()
    if request.method == "HEAD":
        return
    faults = hub.faults
    cut = faults.drop_after_bytes
    limit = cut if cut is not None and cut < end - start and hub._take("drops") else None
    flip_at = blob.size // 2 if path in faults.corrupt else -1
    sent = 0
    for chunk in _paced(blob.read(start, end), faults.throttle_bps):
        if start + sent <= flip_at < start + sent + len(chunk):
            i = flip_at - start - sent
            chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
        if limit is not None and sent + len(chunk) >= limit:
            handler.wfile.write(chunk[: limit - sent])
            hub._count(limit - sent)
            handler.close_connection = True  # the client sees a short body and must resume
            return
        handler.wfile.write(chunk)
        sent += len(chunk)
        hub._count(len(chunk))


def _paced(chunks: Iterator[bytes], bps: int | None) -> Iterator[bytes]:
    """Re-slice into small pieces and sleep so the stream averages ``bps``."""
    if not bps:
        yield from chunks
        return
    piece = max(1, bps // 20)  # about 20 writes a second
    began, sent = time.monotonic(), 0
    for chunk in chunks:
        for pos in range(0, len(chunk), piece):
            part = chunk[pos : pos + piece]
            yield part
            sent += len(part)
            time.sleep(max(0.0, began + sent / bps - time.monotonic()))


# -- JSON shapes ------------------------------------------------------------------
def _envelope(
    server: FakeServer,
    handler: BaseHTTPRequestHandler,
    record: Recorded,
    status: int,
    data: Any,
    message: str = "success",
) -> None:
    request_id = uuid.uuid4().hex
    body = {"Code": status, "Data": data, "Message": message, "RequestId": request_id, "Success": status == 200}
    server.send_json(handler, record, status, body, {"X-Request-Id": request_id})


def _blob_entry(path: str, blob: Blob, revision: str) -> dict[str, Any]:
    return {
        "CommitId": _commit(revision),
        "CommitMessage": "upload",
        "CommittedDate": _COMMIT_DATE,
        "Committer": "fake",
        "InCheck": False,
        "IsLFS": blob.size > CHUNK,
        "Mode": "33188",
        "Name": Path(path).name,
        "Path": path,
        "Revision": _commit(revision),
        "Sha256": blob.sha256,
        "Size": blob.size,
        "Type": "blob",
    }


def _tree_entry(path: str, revision: str) -> dict[str, Any]:
    name = Path(path).name
    return {"Mode": "16384", "Name": name, "Path": path, "Revision": _commit(revision), "Size": 0, "Type": "tree"}


def _model_info(repo_id: str, repo: _Repo) -> dict[str, Any]:
    owner, name = repo_id.split("/", 1)
    # Visibility: 5 public, 1 private.
    return {"Id": int(_commit(repo_id)[:6], 16), "Name": name, "Path": owner, "Visibility": 1 if repo.token else 5}


def _revision_map(repo: _Repo) -> dict[str, Any]:
    refs = [{"Revision": rev, "CommitId": _commit(rev), "CreatedAt": _COMMIT_DATE} for rev in repo.revisions]
    branches = [r for r in refs if r["Revision"] == "master"]
    return {"RevisionMap": {"Branches": branches, "Tags": [r for r in refs if r not in branches]}}


def _commit(revision: str) -> str:
    return hashlib.sha1(revision.encode()).hexdigest()


def _param(request: Request, name: str) -> str | None:
    values = request.query.get(name)
    return values[0] if values else None


def _token(request: Request) -> str | None:
    """The SDK sends the token twice: as the ``m_session_id`` cookie and as a Bearer header."""
    auth = request.headers.get("authorization", "")
    if auth.startswith("Bearer "):
        return auth.removeprefix("Bearer ")
    for part in request.headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == "m_session_id":
            return value
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder whose files the repo holds")
    parser.add_argument("--repo", required=True, help="owner/name")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    files = {p.relative_to(args.root).as_posix(): p for p in sorted(args.root.rglob("*")) if p.is_file()}
    hub = FakeModelScopeHub(port=args.port)
    hub.add_repo(args.repo, files)
    hub.start()
    print(hub.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
