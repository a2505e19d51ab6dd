"""The HTTP transport (provision/transport.py): connection keys, proxies from the environment,
and keep-alive reuse by key."""

from __future__ import annotations

import http.client
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

import pytest

from provision.errors import SourceError
from provision.transport import ConnectionKey, ConnectionPool, Proxy, proxy_for
from tests.fakes._server import FakeServer, Recorded, Request


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://Hub.example/a", ConnectionKey("https", "hub.example", 443)),
        ("http://hub.example/a", ConnectionKey("http", "hub.example", 80)),
        ("http://user@127.0.0.1:8080/a", ConnectionKey("http", "127.0.0.1", 8080)),
        ("https://[::1]:8443/", ConnectionKey("https", "::1", 8443)),
    ],
)
def test_a_key_names_scheme_host_and_port(url: str, key: ConnectionKey) -> None:
    assert ConnectionKey.of(urlsplit(url), None) == key
    assert key.tls is (key.scheme == "https")


def test_a_key_refuses_other_schemes_and_bad_ports() -> None:
    with pytest.raises(SourceError, match="unsupported URL scheme 'ftp'"):
        ConnectionKey.of(urlsplit("ftp://hub.example/a"), None)
    with pytest.raises(http.client.InvalidURL):  # an HTTPException: retried like http.client's own
        ConnectionKey.of(urlsplit("http://hub.example:port/a"), None)


def test_the_proxy_is_part_of_the_key() -> None:
    proxy = Proxy("127.0.0.1", 3128)
    parts = urlsplit("https://hub.example/")
    assert ConnectionKey.of(parts, proxy) != ConnectionKey.of(parts, None)
    assert hash(ConnectionKey.of(parts, proxy)) == hash(ConnectionKey.of(parts, Proxy("127.0.0.1", 3128)))


def test_proxy_from_the_environment_with_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://us%40er:p%3Ass@127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "mirror.internal")
    proxy = proxy_for("https", "hub.example")
    assert proxy is not None
    assert (proxy.host, proxy.port, proxy.variable, proxy.address) == (
        "127.0.0.1",
        3128,
        "HTTPS_PROXY",
        "http://127.0.0.1:3128",
    )
    assert proxy.headers == {"Proxy-Authorization": "Basic dXNAZXI6cDpzcw=="}  # base64 of us@er:p:ss
    assert proxy_for("https", "mirror.internal") is None
    assert proxy_for("http", "hub.example") is None  # no HTTP_PROXY


class _Echo(FakeServer):
    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        self.send(handler, record, 200, f"{handler.client_address[1]}".encode())


def test_a_released_connection_is_reused_for_the_same_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    pool = ConnectionPool(timeout=5, size=4)
    with _Echo() as server:
        try:
            ports = []
            for _ in range(3):
                pooled, response = pool.request("GET", f"{server.url}/x", {})
                assert pooled.key == ConnectionKey("http", "127.0.0.1", int(server.url.rsplit(":", 1)[1]))
                ports.append(response.read())
                pool.release(pooled, response)
        finally:
            pool.close()
    assert len(set(ports)) == 1, ports  # one TCP connection (the client's port) for all three
