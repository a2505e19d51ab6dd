"""Downloads through a forward proxy, as curl does: $HTTP_PROXY / $HTTPS_PROXY / $NO_PROXY."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apply_support import hub_manifest, payload
from tests.cli_runner import run_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.fakes.proxy import FakeProxy
from tests.manifest_files import lock_of

FILES = {"config.json": b'{"hidden_size": 64}', "model.safetensors": payload(300_000, 11)}
PASSWORD = "proxy_canary_PASS_93b1"  # must never appear in output, state or lock


def proxy_env(**proxies: str) -> dict[str, str]:
    """Only these proxies, no bypass list (the suite's conftest sets NO_PROXY for loopback)."""
    env = {"NO_PROXY": "", "no_proxy": "", "HTTP_PROXY": "", "http_proxy": "", "HTTPS_PROXY": "", "https_proxy": ""}
    for name, value in proxies.items():
        env[name.upper()] = env[name.lower()] = value
    return env


@pytest.fixture()
def hub() -> Iterator[FakeHFHub]:
    with FakeHFHub() as server:
        server.add_repo("org/tiny", FILES)
        yield server


def assert_downloaded(tmp_path: Path) -> None:
    for name, content in FILES.items():
        assert (tmp_path / "models" / "tiny" / name).read_bytes() == content


def test_plain_http_goes_as_absolute_form_requests_not_a_tunnel(tmp_path: Path, hub: FakeHFHub) -> None:
    # The fake refuses CONNECT to any port but 443, as squid does by default.
    with FakeProxy() as proxy:
        manifest = hub_manifest(tmp_path, hub.url, tiny="org/tiny")
        result = run_cli("apply", manifest, env=proxy_env(http_proxy=proxy.url))
    assert result.returncode == 0, result.stderr
    assert_downloaded(tmp_path)
    assert proxy.seen and all(line.startswith(f"GET {hub.url}/") for line in proxy.seen), proxy.seen


def test_https_tunnels_through_the_proxy_with_its_credentials_kept_secret(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    with (
        FakeHFHub().use_tls(*certificate) as hub,
        FakeProxy(credentials=("alice", PASSWORD), allow_connect_any_port=True) as proxy,
    ):
        hub.add_repo("org/tiny", FILES)
        address = proxy.url.replace("http://", f"http://alice:{PASSWORD}@")
        manifest = hub_manifest(tmp_path, hub.url, tiny="org/tiny")
        env = {**proxy_env(https_proxy=address), "SSL_CERT_FILE": str(certificate[0])}
        result = run_cli("apply", manifest, env=env)
    assert result.returncode == 0, result.stderr
    assert_downloaded(tmp_path)
    port = hub.url.rsplit(":", 1)[1]
    assert proxy.seen and all(line == f"CONNECT 127.0.0.1:{port}" for line in proxy.seen), proxy.seen
    assert proxy.authorizations and set(proxy.authorizations) == {proxy.expected_authorization}
    stored = [result.stdout, result.stderr, json.dumps(lock_of(manifest))]
    stored += [p.read_text(errors="replace") for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert not any(PASSWORD in text for text in stored)


def test_wrong_proxy_credentials_fail_at_once_with_a_hint(tmp_path: Path, hub: FakeHFHub) -> None:
    with FakeProxy(credentials=("alice", PASSWORD)) as proxy:
        address = proxy.url.replace("http://", "http://alice:wrong@")
        manifest = hub_manifest(tmp_path, hub.url, tiny="org/tiny")
        result = run_cli("apply", manifest, env=proxy_env(http_proxy=address))
    assert result.returncode == 1
    assert f"the proxy {proxy.url} (from $HTTP_PROXY) refused the request" in result.stderr
    assert "407" in result.stderr
    assert "HTTPS_PROXY=http://user:password@host:port" in result.stderr
    assert "Traceback" not in result.stderr and "wrong" not in result.stderr
    assert len(proxy.seen) == 1  # refused once: not retried
    assert hub.requests == []


def test_no_proxy_bypasses_it(tmp_path: Path, hub: FakeHFHub) -> None:
    env = {**proxy_env(http_proxy="http://127.0.0.1:9"), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    manifest = hub_manifest(tmp_path, hub.url, tiny="org/tiny")
    result = run_cli("apply", manifest, env=env)
    assert result.returncode == 0, result.stderr
    assert_downloaded(tmp_path)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_proxy_that_is_down_is_named_not_the_hub(tmp_path: Path, hub: FakeHFHub) -> None:
    down = f"http://127.0.0.1:{_closed_port()}"
    manifest = hub_manifest(tmp_path, hub.url, tiny="org/tiny")
    result = run_cli("apply", manifest, env=proxy_env(http_proxy=down))
    assert result.returncode == 1
    assert f"cannot reach the proxy {down} (from $HTTP_PROXY)" in result.stderr
    assert f"cannot reach {hub.url}" not in result.stderr
    assert "NO_PROXY" in result.stderr and "Traceback" not in result.stderr
    assert hub.requests == []


def test_a_proxy_refusing_the_tunnel_is_named(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    # squid's default: CONNECT only to port 443; the hub listens elsewhere, so it is refused (403)
    with FakeHFHub().use_tls(*certificate) as hub, FakeProxy() as proxy:
        hub.add_repo("org/tiny", FILES)
        manifest = hub_manifest(tmp_path, hub.url, tiny="org/tiny")
        env = {**proxy_env(https_proxy=proxy.url), "SSL_CERT_FILE": str(certificate[0])}
        result = run_cli("apply", manifest, env=env)
    assert result.returncode == 1
    assert f"the proxy {proxy.url} (from $HTTPS_PROXY) refused the request" in result.stderr
    assert "403" in result.stderr and "Traceback" not in result.stderr
    assert hub.requests == []
