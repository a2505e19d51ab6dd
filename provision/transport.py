"""The HTTP transport under the downloader: keep-alive connections, proxies, TLS and redirects.

Connections are pooled by :class:`ConnectionKey` (scheme, host, port and the proxy that leads
there): two connections are interchangeable exactly when their keys are equal, and a pooled
connection carries its key (:class:`PooledConnection`) so it goes back to the right idle list.

``PROVISION_HTTP_TIMEOUT`` (seconds, default 30) bounds each connect and each silent read of
a body; read here only (:func:`http_timeout`).
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urljoin, urlsplit
from urllib.request import getproxies, proxy_bypass

from .errors import HubUnreachableError, SourceError
from .listing import origin

TIMEOUT_ENV = "PROVISION_HTTP_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 20  # httpx's default, which huggingface_hub uses
_DEFAULT_PORTS = {"http": 80, "https": 443}


def http_timeout() -> float:
    """Seconds a connect or a read may stay silent before it is retried."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        value = DEFAULT_TIMEOUT  # a typo must not turn into no timeout at all
    return value if value > 0 else DEFAULT_TIMEOUT


def drop_credentials(headers: dict[str, str]) -> None:
    for secret in ("Authorization", "Cookie"):  # never hand the token to another origin
        headers.pop(secret, None)


class Redirects:
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
        if origin(target) != origin(url):
            drop_credentials(headers)
        return target


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = None  # Proxy-Authorization, from credentials in the proxy's URL
    variable: str = "HTTP_PROXY"  # where it came from, for messages

    @property
    def headers(self) -> dict[str, str]:
        return {"Proxy-Authorization": self.authorization} if self.authorization else {}

    @property
    def address(self) -> str:
        """How errors name it: never with its credentials."""
        return f"http://{self.host}:{self.port}"


def proxy_for(scheme: str, netloc: str) -> Proxy | None:
    """The proxy curl would use: ``$<scheme>_proxy``, unless ``$no_proxy`` covers the host."""
    address = getproxies().get(scheme)
    if not address or proxy_bypass(urlsplit(f"//{netloc}").hostname or netloc):
        return None
    proxy = urlsplit(address if "://" in address else f"http://{address}")
    variable = f"{scheme.upper()}_PROXY"
    if proxy.scheme.lower() != "http":  # TLS to the proxy (https://) or SOCKS is not spoken here
        raise HubUnreachableError(
            f"${variable} names a {proxy.scheme}:// proxy ({proxy.hostname}): provision speaks plain HTTP to proxies, "
            "so its credentials and plain-HTTP requests would go unencrypted",
            hint=f"write ${variable}=http://host:port (HTTPS still goes end to end through the CONNECT tunnel), "
            "or list the hub's host in NO_PROXY",
        )
    try:
        port = 80 if proxy.port is None else proxy.port
    except ValueError:  # "abc" or past 65535: urllib's message, without the rest of the URL
        port = 0
    if not proxy.hostname or not port:
        raise HubUnreachableError(
            f"${variable} is not a proxy URL: it needs a host and a port from 1 to 65535",
            hint=f"write ${variable}=http://host:port (with user:password@ before the host if the proxy asks)",
        )
    authorization = None
    if proxy.username:
        credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode()
    return Proxy(proxy.hostname, port, authorization, variable)


@dataclass(frozen=True)
class ConnectionKey:
    """What makes two connections interchangeable: where they lead, and through which proxy."""

    scheme: str  # "http" or "https" (TLS to ``host``, through a CONNECT tunnel when proxied)
    host: str
    port: int
    proxy: Proxy | None = None

    @classmethod
    def of(cls, parts: SplitResult, proxy: Proxy | None) -> ConnectionKey:
        if parts.scheme not in _DEFAULT_PORTS:
            raise SourceError(f"unsupported URL scheme {parts.scheme!r} in a download URL")
        try:
            port = parts.port
        except ValueError:  # as http.client says it: a transient HTTPException to the callers
            raise http.client.InvalidURL(f"nonnumeric port in {parts.netloc!r}") from None
        return cls(parts.scheme, parts.hostname or "", port or _DEFAULT_PORTS[parts.scheme], proxy)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


@dataclass(frozen=True)
class PooledConnection:
    """A connection and the key of the idle list it returns to."""

    key: ConnectionKey
    conn: http.client.HTTPConnection

    def close(self) -> None:
        self.conn.close()


def _untrusted(where: str, exc: ssl.SSLCertVerificationError) -> HubUnreachableError:
    """A certificate that does not verify is final: retrying cannot make it trusted."""
    return HubUnreachableError(
        f"TLS certificate of {where} not trusted: {exc.verify_message or exc}",
        hint="for a mirror behind a private CA, point SSL_CERT_FILE at that CA's bundle",
    )


def _proxy_refused(proxy: Proxy, detail: str) -> HubUnreachableError:
    """The proxy said no: final, since asking again gets the same answer."""
    hint = (
        "put the credentials in the proxy's URL (HTTPS_PROXY=http://user:password@host:port)"
        if "407" in detail
        else "check the proxy's rules, or list the hub's host in NO_PROXY to bypass it"
    )
    return HubUnreachableError(
        f"the proxy {proxy.address} (from ${proxy.variable}) refused the request: {detail}", hint=hint
    )


def _proxy_unreachable(proxy: Proxy, exc: OSError) -> HubUnreachableError:
    """The proxy itself is down or unknown: the hub was never asked, so do not blame it."""
    return HubUnreachableError(
        f"cannot reach the proxy {proxy.address} (from ${proxy.variable}): {exc.strerror or exc}",
        hint=f"start the proxy or fix ${proxy.variable}; list the hub's host in NO_PROXY to bypass it",
    )


class ConnectionPool:
    """Keep-alive HTTP(S) connections per :class:`ConnectionKey`, shared by the download threads.

    Honours ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` like curl, since mirrors are often
    reached through a proxy: HTTPS through a CONNECT tunnel, plain HTTP as absolute-form
    requests, and ``user:password@`` in the proxy's URL sent as ``Proxy-Authorization``.
    """

    def __init__(self, *, timeout: float, size: int) -> None:
        self._timeout = timeout
        self._size = size
        self._idle: dict[ConnectionKey, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None  # made on the first HTTPS connection
        self._keys: dict[tuple[str, str], ConnectionKey] = {}  # per origin: the proxy is read from the environment once

    def _ssl_context(self) -> ssl.SSLContext:
        # Loading the system CA bundle takes ~20 ms: not worth paying for a plain-HTTP mirror.
        with self._lock:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            return self._ssl

    def _key(self, parts: SplitResult) -> ConnectionKey:
        where = (parts.scheme, parts.netloc)
        with self._lock:
            if where not in self._keys:
                self._keys[where] = ConnectionKey.of(parts, proxy_for(*where))
            return self._keys[where]

    def request(
        self, method: str, url: str, headers: Mapping[str, str]
    ) -> tuple[PooledConnection, http.client.HTTPResponse]:
        """Send on an idle keep-alive connection (or a new one if it went stale).

        A certificate that does not verify and a proxy's refusal raise :class:`HubUnreachableError`
        at once: they are final, unlike the resets and timeouts the callers retry.
        """
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        key = self._key(parts)
        proxy = key.proxy
        if proxy and not key.tls:  # absolute form through the proxy (see _connect)
            target, headers = url, {**headers, **proxy.headers}
        for fresh in (False, True):
            conn = self._take(key) if not fresh else self._connect(key)
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
            return PooledConnection(key, conn), response
        raise AssertionError("unreachable")

    def release(self, pooled: PooledConnection, response: http.client.HTTPResponse) -> None:
        """Return a connection whose response was fully read; anything else is closed."""
        response.read()  # drain a small redirect/error body so the connection can be reused
        if response.will_close:
            pooled.close()
            return
        with self._lock:
            idle = self._idle.setdefault(pooled.key, [])
            if len(idle) < self._size:
                idle.append(pooled.conn)
                return
        pooled.close()

    def close(self) -> None:
        with self._lock:
            for conns in self._idle.values():
                for conn in conns:
                    conn.close()
            self._idle.clear()

    def _take(self, key: ConnectionKey) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def _connect(self, key: ConnectionKey) -> http.client.HTTPConnection:
        proxy = key.proxy
        if key.tls:
            if proxy:  # TCP to the proxy, CONNECT, then TLS to the hub itself (http.client does this)
                tunnel = http.client.HTTPSConnection(
                    proxy.host, proxy.port, timeout=self._timeout, context=self._ssl_context()
                )
                tunnel.set_tunnel(key.host, key.port, headers=proxy.headers)
                return tunnel
            return http.client.HTTPSConnection(key.host, key.port, timeout=self._timeout, context=self._ssl_context())
        # Through a proxy, plain HTTP goes as absolute-form requests (see ``request``), not a
        # CONNECT tunnel: proxies such as squid refuse CONNECT to ports other than 443.
        if proxy:
            return http.client.HTTPConnection(proxy.host, proxy.port, timeout=self._timeout)
        return http.client.HTTPConnection(key.host, key.port, timeout=self._timeout)
