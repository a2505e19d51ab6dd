"""A forward HTTP proxy on loopback, as squid or a corporate proxy behaves toward a client.

- ``CONNECT host:port``: answers 200 and relays bytes both ways (HTTPS goes through this);
- ``GET http://host:port/path`` (absolute form): connects to that origin and relays the
  connection from that request on (plain HTTP goes through this; the fakes accept the
  absolute form, as real servers must);
- ``CONNECT`` to a port other than 443 is refused with 403 unless ``allow_connect_any_port``
  (squid's default ``http_access deny CONNECT !SSL_ports``);
- with ``credentials`` set, a request without the matching ``Proxy-Authorization: Basic``
  gets 407.

``proxy.seen`` lists the first request line of each client connection, and
``proxy.authorizations`` the ``Proxy-Authorization`` values received.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import socketserver
import threading
from typing import Self


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        client: socket.socket = self.request
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                return
            head += chunk
        header_block, _, rest = head.partition(b"\r\n\r\n")
        lines = header_block.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        proxy = self.server.proxy
        with proxy.lock:
            proxy.seen.append(f"{method} {target}")
            if "proxy-authorization" in headers:
                proxy.authorizations.append(headers["proxy-authorization"])
        if proxy.credentials and headers.get("proxy-authorization") != proxy.expected_authorization:
            client.sendall(
                b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="fake"\r\n'
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            if port != "443" and not proxy.allow_connect_any_port:
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            upstream = socket.create_connection((host, int(port)))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            first = rest
        elif target.startswith("http://"):
            authority = target[len("http://") :].split("/", 1)[0]
            host, _, port = authority.partition(":")
            upstream = socket.create_connection((host, int(port or 80)))
            first = head  # the request itself, still in absolute form
        else:
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with upstream:
            if first:
                upstream.sendall(first)
            _relay(client, upstream)


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(262144):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    other = threading.Thread(target=pump, args=(b, a), daemon=True)
    other.start()
    pump(a, b)
    other.join(timeout=5)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FakeProxy


class FakeProxy:
    def __init__(self, *, credentials: tuple[str, str] | None = None, allow_connect_any_port: bool = False) -> None:
        self.credentials = credentials
        self.allow_connect_any_port = allow_connect_any_port
        self.seen: list[str] = []
        self.authorizations: list[str] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self

    @property
    def expected_authorization(self) -> str | None:
        if self.credentials is None:
            return None
        return "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
