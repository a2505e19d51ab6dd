"""Shared plumbing for the loopback fake servers in tests/fakes/.

Each fake is a ``ThreadingHTTPServer`` bound to 127.0.0.1 on an ephemeral port,
run in a daemon thread, with a log of the requests it answered so tests can
count them (``server.requests``). Subclasses implement ``handle(request)``.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # keys lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Recorded:
    method: str
    path: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)  # when the request arrived
    ended: float | None = None  # when a file body's last byte went, or its client hung up
    peer: tuple[str, int] | None = None  # the client's address: one per TCP connection


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK stall every small keep-alive response by ~40 ms. Real servers
    # (nginx, the hubs' CDNs) set it too.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        record = Recorded(self.command, self.path, headers=request.headers, peer=self.client_address[:2])
        self.server.fake.requests.append(record)
        self.server.fake.handle(request, self, record)

    do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver listens with a backlog of 5: a client opening 16 range connections at once
    # overflowed it, and each dropped SYN cost that connection the kernel's 1 s SYN retry (a
    # range starting a second late, at random). Real servers listen with hundreds (nginx: 511).
    request_queue_size = 512
    fake: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-body (killed downloads, fault tests) are expected, not news.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FakeServer:
    """Base class: ``start()`` / ``stop()`` or use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[Recorded] = []
        self._host = host
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.fake = self
        self._thread: threading.Thread | None = None
        self._scheme = "http"

    @property
    def url(self) -> str:
        return f"{self._scheme}://{self._host}:{self._httpd.server_port}"

    def use_tls(self, certfile: Path, keyfile: Path) -> Self:
        """Serve HTTPS with this certificate (call before ``start``); ``url`` says https."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._scheme = "https"
        return self

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------
    @staticmethod
    def send(
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        head_only: bool = False,
    ) -> None:
        record.status = status
        handler.send_response(status)
        merged = {"Content-Length": str(len(body)), **(headers or {})}
        for key, value in merged.items():
            handler.send_header(key, value)
        handler.end_headers()
        if body and not head_only:
            handler.wfile.write(body)

    @classmethod
    def send_json(
        cls,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(payload).encode()
        cls.send(handler, record, status, body, {"Content-Type": "application/json", **(headers or {})})

    @staticmethod
    def start_stream(handler: BaseHTTPRequestHandler, record: Recorded, status: int, content_type: str) -> None:
        """Begin a chunked response (NDJSON or SSE); follow with ``write_chunk`` and ``end_stream``."""
        record.status = status
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

    @staticmethod
    def write_chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        handler.wfile.flush()

    @staticmethod
    def end_stream(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

    def count(self, method: str | None = None, prefix: str = "") -> int:
        """Requests answered so far, optionally filtered by method and path prefix."""
        return sum(1 for r in self.requests if (method is None or r.method == method) and r.path.startswith(prefix))


def text_vector(text: str, dimension: int) -> list[float]:
    """A deterministic unit vector for ``text``: its words (lower-cased, punctuation dropped) and
    CJK characters hashed into ``dimension`` buckets. Texts sharing words point the same way,
    so a paraphrase is closer than an unrelated text, as with a trained embedding model."""
    import hashlib
    import math
    import re

    tokens = re.findall(r"[\u4e00-\u9fff]|[^\W_]+", text.lower())
    vector = [0.0] * dimension
    for token in tokens:
        digest = hashlib.sha256(token.encode()).digest()
        vector[int.from_bytes(digest[:4], "big") % dimension] += 1.0 if digest[4] % 2 else -1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]
