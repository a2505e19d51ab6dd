"""HTTPS endpoints: a mirror behind its own CA works once SSL_CERT_FILE trusts it, and an
untrusted certificate fails at once with a hint instead of being retried."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apply_support import hub_manifest, payload
from tests.cli_runner import run_cli
from tests.fakes.hf_hub import FakeHFHub

FILES = {"config.json": b'{"hidden_size": 64}', "model.safetensors": payload(300_000, 7)}


@pytest.fixture()
def tls_hub(certificate: tuple[Path, Path]) -> Iterator[FakeHFHub]:
    with FakeHFHub().use_tls(*certificate) as hub:
        assert hub.url.startswith("https://")
        hub.add_repo("org/tiny", FILES)
        yield hub


def test_trusted_mirror_downloads_over_tls(tmp_path: Path, tls_hub: FakeHFHub, certificate: tuple[Path, Path]) -> None:
    manifest = hub_manifest(tmp_path, tls_hub.url, tiny="org/tiny")
    result = run_cli("apply", manifest, env={"SSL_CERT_FILE": str(certificate[0])})
    assert result.returncode == 0, result.stderr
    for name, content in FILES.items():
        assert (tmp_path / "models" / "tiny" / name).read_bytes() == content


def test_untrusted_certificate_fails_at_once_with_a_hint(tmp_path: Path, tls_hub: FakeHFHub) -> None:
    manifest = hub_manifest(tmp_path, tls_hub.url, tiny="org/tiny")
    result = run_cli("apply", manifest, env={"PROVISION_HTTP_TIMEOUT": "5"})
    assert result.returncode == 1, result.stderr
    assert "certificate" in result.stderr and "not trusted" in result.stderr
    assert "SSL_CERT_FILE" in result.stderr and "Traceback" not in result.stderr
    listing = [r for r in tls_hub.requests if r.path.startswith("/api/")]
    assert listing == []  # nothing got past the handshake
    assert not (tmp_path / "models" / "tiny" / "model.safetensors").exists()
