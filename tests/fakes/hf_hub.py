"""A loopback Hugging Face Hub that the real, unpatched ``huggingface_hub`` client accepts.

Routes served (``{repo}`` is ``org/name`` or a legacy one-part id; ``{rev}`` is a branch,
tag or 40-hex commit, url-encoded by the client with ``quote(rev, safe="")``)::

    GET       /api/models/{repo}                        model info at the default branch
    GET       /api/models/{repo}/revision/{rev}         {"id", "sha", "siblings": [{"rfilename"}], ...}
    GET       /api/models/{repo}/tree/{rev}[/{subdir}]  ?recursive=true&expand=false, paginated with
                                                        Link: <absolute url>; rel="next"
    HEAD|GET  /{repo}/resolve/{rev}/{path}              the file, with X-Repo-Commit, ETag,
                                                        X-Linked-Etag / X-Linked-Size (LFS files),
                                                        Accept-Ranges, 206 for Range, 416 past the end

Repos are git-faithful: a file's ``oid`` is its git blob sha1, except that a file at or over
the repo's ``lfs_threshold`` is stored as an LFS pointer (its ``oid`` is the pointer's blob
sha1, and ``lfs.oid`` the content's sha256). Directory oids are git tree shas and commit
shas are git commit shas, so they follow from content alone.

Errors carry ``X-Error-Code`` (what the client keys its exception classes on), an
``X-Error-Message`` and a JSON ``{"error": msg}`` body:

    RepoNotFound      401   unknown repo                    -> RepositoryNotFoundError
    RevisionNotFound  404   unknown branch, tag or commit   -> RevisionNotFoundError
    EntryNotFound     404   unknown file or folder          -> RemoteEntryNotFoundError
    GatedRepo         401   gated repo, file without token  -> GatedRepoError
                      403   gated repo, token not in ``hub.tokens``

As on the real Hub, metadata of a gated repo is public; only file contents are gated.

With ``hub.redirect_to(cdn)``, LFS files answer ``302`` to ``{cdn.url}/blobs/{sha256}?sig=..``,
HEAD included, with the X-Linked-* headers on the 302 itself: the client reads metadata from
that response, does not follow a HEAD redirect to another origin, and drops ``Authorization``
when it downloads from there. ``FakeCDN`` serves the blob and keeps every request's headers.

``hub.faults`` (a ``Faults``) makes file bodies slow, cut, corrupt or failing, for tests of
resume, retry and verification. ``python -m tests.fakes.hf_hub --root DIR --repo org/name``
serves a folder from disk, for benchmarks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Self
from urllib.parse import unquote, urlencode

from tests.fakes._server import FakeServer, Recorded, Request

CHUNK = 1 << 20  # body write size, and read size for files served from disk
DEFAULT_LFS_THRESHOLD = 1024
_TRUE = {"true", "1"}

_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)?)(?:/revision/(?P<rev>[^/]+))?$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)?)/tree/(?P<rev>[^/]+)(?:/(?P<sub>.+))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


# -- content and git objects ---------------------------------------------------------------


def _git_oid(kind: str, payload: bytes) -> str:
    return hashlib.sha1(b"%s %d\0" % (kind.encode(), len(payload)) + payload).hexdigest()


@dataclass(frozen=True)
class Blob:
    """File content, in memory or on disk (big files are streamed, never loaded)."""

    size: int
    sha1: str  # git blob oid of the content
    sha256: str
    data: bytes | None = None
    path: Path | None = None

    @classmethod
    def of(cls, content: bytes | Path) -> Blob:
        if isinstance(content, bytes):
            return cls(len(content), _git_oid("blob", content), hashlib.sha256(content).hexdigest(), data=content)
        size = content.stat().st_size
        sha1, sha256 = hashlib.sha1(b"blob %d\0" % size), hashlib.sha256()
        with content.open("rb") as f:
            while chunk := f.read(CHUNK):
                sha1.update(chunk)
                sha256.update(chunk)
        return cls(size, sha1.hexdigest(), sha256.hexdigest(), path=content)

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start..end`` (end exclusive) in pieces of at most ``CHUNK``."""
        if self.data is not None:
            for offset in range(start, end, CHUNK):
                yield self.data[offset : min(offset + CHUNK, end)]
            return
        assert self.path is not None
        with self.path.open("rb") as f:
            f.seek(start)
            left = end - start
            while left > 0 and (chunk := f.read(min(CHUNK, left))):
                left -= len(chunk)
                yield chunk


@dataclass(frozen=True)
class RepoFile:
    blob: Blob
    lfs: bool

    @property
    def pointer(self) -> bytes:
        spec = "version https://git-lfs.github.com/spec/v1"
        return f"{spec}\noid sha256:{self.blob.sha256}\nsize {self.blob.size}\n".encode()

    @property
    def oid(self) -> str:
        """What git stores: the content, or for LFS files the pointer to it."""
        return _git_oid("blob", self.pointer) if self.lfs else self.blob.sha1

    @property
    def etag(self) -> str:
        return self.blob.sha256 if self.lfs else self.blob.sha1


@dataclass(frozen=True)
class Commit:
    sha: str
    files: dict[str, RepoFile]
    trees: dict[str, str]  # directory path ("" is the root) -> git tree oid


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _tree_oids(files: Mapping[str, RepoFile]) -> dict[str, str]:
    """Git tree oid of every directory, deepest first so children are known before parents."""
    dirs = {""}
    for path in files:
        parts = path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    oids: dict[str, str] = {}
    for d in sorted(dirs, key=lambda d: d.count("/") + bool(d), reverse=True):
        entries = [(p.rpartition("/")[2], b"100644", f.oid) for p, f in files.items() if _parent(p) == d]
        entries += [(s.rpartition("/")[2], b"40000", oids[s]) for s in dirs if s and _parent(s) == d]
        # git orders a directory as if its name ended with "/"
        entries.sort(key=lambda e: e[0] + ("/" if e[1] == b"40000" else ""))
        payload = b"".join(mode + b" " + name.encode() + b"\0" + bytes.fromhex(oid) for name, mode, oid in entries)
        oids[d] = _git_oid("tree", payload)
    return oids


def _commit(repo_id: str, files: dict[str, RepoFile], parent: str | None) -> Commit:
    trees = _tree_oids(files)
    who = "Fake Hub <fake@hub.local> 0 +0000"
    text = f"tree {trees['']}\n" + (f"parent {parent}\n" if parent else "")
    text += f"author {who}\ncommitter {who}\n\nUpload {repo_id}\n"
    return Commit(_git_oid("commit", text.encode()), files, trees)


@dataclass
class Repo:
    id: str
    gated: bool
    lfs_threshold: int
    default_branch: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        sha = self.branches.get(rev) or self.tags.get(rev) or rev
        return self.commits.get(sha)


# -- faults ----------------------------------------------------------------------------------


@dataclass
class Faults:
    """Misbehaviour of file bodies (GETs of files, not HEADs or API calls). ``reset()`` undoes all.

    Counted faults are used up by the requests they hit; concurrent requests take them in turn.
    Each server has its own: in redirect mode LFS bodies come from the CDN, so set
    ``cdn.faults`` for them (where ``corrupt`` names sha256s, not paths).
    """

    throttle_bps: int | None = None  # cap on body bytes per second
    drop_after_bytes: int | None = None  # close the connection after this many body bytes...
    drop_times: int | None = None  # ...for this many responses (None: for every one)
    status_5xx: dict[str, int] | None = None  # {"count": n, "status": 503}: the next n file GETs fail
    # {"count": n, "seconds": s[, "after": k]}: the next n (after k more) get 429 + Retry-After
    retry_after: dict[str, int] | None = None
    corrupt: set[str] = field(default_factory=set)  # repo paths whose middle byte is flipped
    stall_seconds: float = 0  # silence between the headers and the body
    ignore_range: bool = False  # a server without range support: 200 and the whole body, no Accept-Ranges
    # {"start": a, "end": b, "count": n, "status": s}: the next n GETs whose Range starts in [a, b) fail
    fail_range: dict[str, int] | None = None
    # {"start": a, "bps": b}: a GET whose Range starts at byte a is sent at b bytes per second (one
    # slow connection: a congested path, a busy node), whatever ``throttle_bps`` gives the others
    slow_range: dict[str, int] | None = None
    # what every 206 says in Content-Range instead of the truth: a format of {first}, {last} and
    # {complete} ("bytes 1-{last}/{complete}": another start), any text, or "" for no header
    content_range: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reset(self) -> None:
        with self._lock:
            self.throttle_bps = self.drop_after_bytes = self.drop_times = None
            self.status_5xx = self.retry_after = self.fail_range = self.slow_range = self.content_range = None
            self.ignore_range = False
            self.corrupt = set()
            self.stall_seconds = 0

    def take_error(self, range_start: int | None = None) -> tuple[int, dict[str, str]] | None:
        """The status (and headers) this file GET (whose Range starts at ``range_start``) must fail with."""
        with self._lock:
            failing = self.fail_range
            if (
                failing
                and failing["count"] > 0
                and range_start is not None
                and failing["start"] <= range_start < failing["end"]
            ):
                failing["count"] -= 1
                return failing.get("status", 503), {}
            if self.retry_after and self.retry_after.get("after", 0) > 0:
                self.retry_after["after"] -= 1
            elif self.retry_after and self.retry_after["count"] > 0:
                self.retry_after["count"] -= 1
                return 429, {"Retry-After": str(self.retry_after["seconds"])}
            if self.status_5xx and self.status_5xx["count"] > 0:
                self.status_5xx["count"] -= 1
                return self.status_5xx.get("status", 503), {}
            return None

    def rate(self, start: int) -> int | None:
        """Bytes per second for a body from ``start`` (None: as fast as it goes)."""
        slow = self.slow_range
        return slow["bps"] if slow and slow["start"] == start else self.throttle_bps

    def take_drop(self) -> int | None:
        """How many body bytes this response may send before the connection is cut, if limited."""
        with self._lock:
            if self.drop_after_bytes is None or self.drop_times == 0:
                return None
            if self.drop_times is not None:
                self.drop_times -= 1
            return self.drop_after_bytes


# -- serving file bodies (shared by the hub and the CDN) ---------------------------------------


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of one ``bytes=`` range, or None to send it all; empty if unsatisfiable."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if not match or match.groups() == ("", ""):
        return None  # absent, multi-range or malformed: RFC 9110 lets a server send the whole body
    first, last = match.groups()
    if first == "":  # suffix range: the last N bytes
        start, end = max(size - int(last), 0), size
    else:
        start, end = int(first), min(int(last) + 1, size) if last else size
    return start, end


class _BodyServer(FakeServer):
    """A FakeServer that serves blobs with ranges and faults, and counts what it sent."""

    file_url: re.Pattern[str]  # paths whose GETs ``file_gets`` counts

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.faults = Faults()
        self.bytes_served = 0
        self.bodies_now = self.bodies_peak = 0  # file bodies being sent at once (connections in use)
        self._served_lock = threading.Lock()

    def __enter__(self) -> Self:  # typed, so tests get the subclass back
        self.start()
        return self

    def file_gets(self) -> int:
        """GETs of file URLs answered so far (any status)."""
        return sum(1 for r in self.requests if r.method == "GET" and self.file_url.match(r.path.partition("?")[0]))

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
        head = request.method == "HEAD"
        span = None if self.faults.ignore_range else _parse_range(request.headers.get("range"), blob.size)
        failure = None if head else self.faults.take_error(span[0] if span else None)
        if failure:
            status, extra = failure
            self.send(handler, record, status, b"", extra)
            return
        headers = {**headers, "Content-Type": "application/octet-stream"}
        if not self.faults.ignore_range:
            headers["Accept-Ranges"] = "bytes"
        if span is not None and span[0] >= span[1]:
            self.send(handler, record, 416, b"", {**headers, "Content-Range": f"bytes */{blob.size}"})
            return
        status, (start, end) = (200, (0, blob.size)) if span is None else (206, span)
        said = self.faults.content_range
        if status == 206 and said != "":
            truth = "bytes {first}-{last}/{complete}"
            headers["Content-Range"] = (said or truth).format(first=start, last=end - 1, complete=blob.size)
        record.status = status
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(end - start)}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if not head:
            try:
                self._write_body(handler, blob, start, end, corrupt=name in self.faults.corrupt)
            finally:
                record.ended = time.monotonic()

    def _write_body(self, handler: BaseHTTPRequestHandler, blob: Blob, start: int, end: int, *, corrupt: bool) -> None:
        faults = self.faults
        limit = faults.take_drop()
        flip_at = blob.size // 2 if corrupt else -1  # an absolute offset, so resumed ranges agree
        bps = faults.rate(start)
        step = max(1, min(CHUNK, bps // 20)) if bps else CHUNK  # small writes keep the rate smooth
        time.sleep(faults.stall_seconds)
        began, sent = time.monotonic(), 0
        with self._served_lock:
            self.bodies_now += 1
            self.bodies_peak = max(self.bodies_peak, self.bodies_now)
        try:
            for chunk in blob.chunks(start, end):
                for i in range(0, len(chunk), step):
                    piece, offset = chunk[i : i + step], start + sent
                    if offset <= flip_at < offset + len(piece):
                        j = flip_at - offset
                        piece = piece[:j] + bytes([piece[j] ^ 0xFF]) + piece[j + 1 :]
                    if limit is not None and sent + len(piece) >= limit:
                        handler.wfile.write(piece[: limit - sent])
                        self._count(limit - sent)
                        self._cut(handler)
                        return
                    handler.wfile.write(piece)
                    sent += len(piece)
                    self._count(len(piece))
                    if bps and self._hung_up(handler, sent / bps - (time.monotonic() - began)):
                        handler.close_connection = True
                        return
        except (BrokenPipeError, ConnectionResetError):  # the client gave up; nothing to report
            handler.close_connection = True
        finally:
            with self._served_lock:
                self.bodies_now -= 1

    @staticmethod
    def _hung_up(handler: BaseHTTPRequestHandler, seconds: float) -> bool:
        """Wait ``seconds`` (the throttle), unless the client hangs up meanwhile: a client that
        stops reading a body (a range cut short) closes its end, and a server sees that at once,
        not only at its next write; ``bodies_now`` must not count it."""
        deadline = time.monotonic() + seconds
        readable, _, _ = select.select([handler.connection], [], [], max(0.0, seconds))
        if readable:
            try:
                if handler.connection.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except OSError:
                return True
            time.sleep(max(0.0, deadline - time.monotonic()))  # data, not a hang-up: wait the rest
        return False

    def _count(self, n: int) -> None:
        with self._served_lock:
            self.bytes_served += n

    @staticmethod
    def _cut(handler: BaseHTTPRequestHandler) -> None:
        """Close mid-body: the client sees a short read, as with a dropped network link."""
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
        handler.close_connection = True


# -- the CDN ---------------------------------------------------------------------------------


def _signature(sha256: str) -> str:
    return hashlib.sha1(f"fake-cdn:{sha256}".encode()).hexdigest()[:16]


class FakeCDN(_BodyServer):
    """Serves ``GET|HEAD /blobs/{sha256}?sig=..`` for a hub that redirects to it.

    A request without the right ``sig`` gets 403, as an expired signed URL would: the client
    must use the redirect's URL as given. ``authorizations()`` lists any Authorization
    headers that reached it (there should be none).
    """

    file_url = re.compile(r"^/blobs/")

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.blobs: dict[str, Blob] = {}  # sha256 -> blob; filled by FakeHFHub.redirect_to

    def link(self, blob: Blob) -> str:
        return f"{self.url}/blobs/{blob.sha256}?sig={_signature(blob.sha256)}"

    def authorizations(self) -> list[str]:
        return [r.headers["authorization"] for r in self.requests if "authorization" in r.headers]

    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        sha256 = request.path.removeprefix("/blobs/")
        blob = self.blobs.get(sha256)
        if request.method not in ("GET", "HEAD") or blob is None:
            self.send(handler, record, 404, b"NoSuchKey", head_only=request.method == "HEAD")
        elif request.query.get("sig") != [_signature(sha256)]:
            self.send(handler, record, 403, b"AccessDenied", head_only=request.method == "HEAD")
        else:
            self.serve_blob(request, handler, record, blob, {"ETag": f'"{sha256}"'}, name=sha256)


# -- the hub ---------------------------------------------------------------------------------


class _HubError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


class FakeHFHub(_BodyServer):
    """In-memory model repos served over the Hub's HTTP API (see the module docstring)."""

    file_url = _RESOLVE

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, page_size: int = 1000) -> None:
        super().__init__(host, port)
        self.repos: dict[str, Repo] = {}
        self.tokens: set[str] = set()  # tokens that open gated repos
        self.page_size = page_size  # tree entries per page
        self.cdn: FakeCDN | None = None
        self._lfs_blobs: dict[str, Blob] = {}  # sha256 -> blob, what a CDN may serve

    # -- setting up repos --------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        branch: str = "main",
        gated: bool = False,
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
    ) -> str:
        """Create a repo whose ``branch`` (also its default) holds ``files``; returns the commit sha."""
        self.repos[repo_id] = Repo(repo_id, gated, lfs_threshold, default_branch=branch)
        return self.add_commit(repo_id, files, branch=branch)

    def add_commit(
        self, repo_id: str, files: Mapping[str, bytes | Path], *, branch: str = "main", delete: tuple[str, ...] = ()
    ) -> str:
        """Commit ``files`` (added or replaced) and ``delete`` on top of ``branch`` and move it there.

        A new branch starts from the default branch. Earlier commits stay downloadable by sha.
        """
        repo = self.repos[repo_id]
        parent = repo.branches.get(branch) or repo.branches.get(repo.default_branch)
        tree = dict(repo.commits[parent].files) if parent else {}
        for path, content in files.items():
            blob = Blob.of(content)
            tree[path] = RepoFile(blob, lfs=blob.size >= repo.lfs_threshold)
            if tree[path].lfs:
                self._lfs_blobs[blob.sha256] = blob
        for path in delete:
            del tree[path]
        commit = _commit(repo_id, dict(sorted(tree.items())), parent)
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit.sha

    def tag(self, repo_id: str, tag: str, sha: str) -> None:
        self.repos[repo_id].tags[tag] = sha

    def redirect_to(self, cdn: FakeCDN) -> None:
        """From now on, answer LFS file requests with a 302 to ``cdn``."""
        cdn.blobs = self._lfs_blobs  # shared, so later commits are served too
        self.cdn = cdn

    # -- routing ------------------------------------------------------------------------------
    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        try:
            if request.method == "GET" and (m := _TREE.match(request.path)):
                self._tree(request, handler, record, m["repo"], unquote(m["rev"]), unquote(m["sub"] or ""))
            elif request.method == "GET" and (m := _INFO.match(request.path)):
                self._info(request, handler, record, m["repo"], unquote(m["rev"]) if m["rev"] else None)
            elif request.method in ("GET", "HEAD") and (m := _RESOLVE.match(request.path)):
                self._resolve(request, handler, record, m["repo"], unquote(m["rev"]), unquote(m["path"]))
            else:
                raise _HubError(404, "", f"no route for {request.method} {request.path}")
        except _HubError as e:
            # A header is latin-1 on the wire: a path outside it (a listing's "Ā") is escaped, not a crash.
            message = e.args[0].encode("ascii", "backslashreplace").decode("ascii")
            headers = {"X-Error-Message": message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            body = json.dumps({"error": e.args[0]}).encode()
            headers["Content-Type"] = "application/json"
            self.send(handler, record, e.status, body, headers, head_only=request.method == "HEAD")

    def _lookup(self, repo_id: str, rev: str | None) -> tuple[Repo, Commit]:
        """The repo and the commit ``rev`` names (None: the default branch's head)."""
        repo = self.repos.get(repo_id)
        if repo is None:
            raise _HubError(401, "RepoNotFound", "Repository not found")
        commit = repo.resolve(rev or repo.default_branch)
        if commit is None:
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo, commit

    def _info(
        self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded, repo_id: str, rev: str | None
    ) -> None:
        repo, commit = self._lookup(repo_id, rev)
        with_blobs = request.query.get("blobs", [""])[0].lower() in _TRUE
        siblings = []
        for path, f in commit.files.items():
            sibling: dict[str, object] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=f.blob.size, blobId=f.oid)
                if f.lfs:
                    sibling["lfs"] = {"sha256": f.blob.sha256, "size": f.blob.size, "pointerSize": len(f.pointer)}
            siblings.append(sibling)
        payload = {
            "id": repo.id,
            "modelId": repo.id,
            "sha": commit.sha,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }
        self.send_json(handler, record, 200, payload)

    def _tree(
        self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded, repo_id: str, rev: str, sub: str
    ) -> None:
        _, commit = self._lookup(repo_id, rev)
        sub = sub.strip("/")
        if sub and sub not in commit.trees:
            raise _HubError(404, "EntryNotFound", f"{sub} does not exist on {rev}", {"X-Repo-Commit": commit.sha})
        recursive = request.query.get("recursive", [""])[0].lower() in _TRUE
        entries = [e for e in _tree_entries(commit) if _is_under(str(e["path"]), sub, recursive=recursive)]
        start = int(request.query.get("cursor", ["0"])[0])
        page = entries[start : start + self.page_size]
        headers = {}
        if start + self.page_size < len(entries):
            query = {k: v[0] for k, v in request.query.items()} | {"cursor": str(start + self.page_size)}
            headers["Link"] = f'<{self.url}{request.path}?{urlencode(query)}>; rel="next"'
        self.send_json(handler, record, 200, page, headers)

    def _resolve(
        self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded, repo_id: str, rev: str, path: str
    ) -> None:
        repo = self.repos.get(repo_id)
        if repo is not None and repo.gated:
            self._check_access(request, repo)
        _, commit = self._lookup(repo_id, rev)
        f = commit.files.get(path)
        if f is None:
            raise _HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{f.etag}"'}
        if f.lfs:
            headers |= {"X-Linked-Etag": f'"{f.blob.sha256}"', "X-Linked-Size": str(f.blob.size)}
        if f.lfs and self.cdn is not None:
            self.send(handler, record, 302, b"", {**headers, "Location": self.cdn.link(f.blob)})
        else:
            self.serve_blob(request, handler, record, f.blob, headers, name=path)

    def _check_access(self, request: Request, repo: Repo) -> None:
        auth = request.headers.get("authorization", "")
        if not auth:
            raise _HubError(401, "GatedRepo", f"Access to model {repo.id} is restricted. You must be authenticated.")
        if auth.removeprefix("Bearer ") not in self.tokens:
            raise _HubError(
                403, "GatedRepo", f"Access to model {repo.id} is restricted and you are not in the authorized list."
            )


def _tree_entries(commit: Commit) -> list[dict[str, object]]:
    """Every folder and file of a commit, as the tree API lists them."""
    entries: list[dict[str, object]] = [
        {"type": "directory", "oid": oid, "size": 0, "path": d} for d, oid in commit.trees.items() if d
    ]
    for path, f in commit.files.items():
        entry: dict[str, object] = {"type": "file", "oid": f.oid, "size": f.blob.size, "path": path}
        if f.lfs:
            entry["lfs"] = {"oid": f.blob.sha256, "size": f.blob.size, "pointerSize": len(f.pointer)}
        entries.append(entry)
    return sorted(entries, key=lambda e: str(e["path"]))


def _is_under(path: str, folder: str, *, recursive: bool) -> bool:
    if folder:
        if not path.startswith(f"{folder}/"):
            return False
        path = path[len(folder) + 1 :]
    return recursive or "/" not in path


# -- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a folder as one Hugging Face model repo.")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--repo", required=True, help="repo id, e.g. org/name")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--throttle-bps",
        type=int,
        default=None,
        help="cap each response's body at this many bytes per second, as a mirror caps a connection",
    )
    parser.add_argument(
        "--ignore-range", action="store_true", help="answer every GET with the whole file and no Accept-Ranges"
    )
    parser.add_argument(
        "--slow-range",
        metavar="START:BPS",
        help="send a GET whose Range starts at byte START at BPS bytes per second (one slow connection)",
    )
    args = parser.parse_args(argv)
    files = {
        p.relative_to(args.root).as_posix(): p
        for p in sorted(args.root.rglob("*"))
        # a folder downloaded before holds the client's bookkeeping, which is not repo content
        if p.is_file() and p.relative_to(args.root).parts[0] not in (".git", ".cache")
    }
    hub = FakeHFHub(port=args.port)
    hub.add_repo(args.repo, files)
    hub.faults.throttle_bps = args.throttle_bps
    hub.faults.ignore_range = args.ignore_range
    if args.slow_range:
        start, bps = (int(v) for v in args.slow_range.split(":"))
        hub.faults.slow_range = {"start": start, "bps": bps}
    hub.start()
    print(hub.url, flush=True)
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()
