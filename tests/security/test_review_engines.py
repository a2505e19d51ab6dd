"""Review of the transport, the hubs' listing code, the deployment engines and the hardware probes:
what comes from outside (a token file, a proxy's URL, a server's answer, a probe) is checked
before use, and a secret never shows in an error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from provision.deployments.vllm import _ready
from provision.hardware import Level, probe_gpus
from tests.apply_support import hub_manifest
from tests.cli_runner import run_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.fakes.modelscope_hub import FakeModelScopeHub
from tests.fakes.proxy import FakeProxy
from tests.fakes.vllm_server import FakeVLLM
from tests.manifest_files import write_manifest
from tests.unit.test_hardware import GB24, FakeNVML

TOKEN = "tok_CANARY_review_engines_51c2"


# -- a token with a CRLF ending (a token file written on Windows, `$(cat file)`) ---------------


def test_a_manifest_token_with_a_crlf_ending_is_cleaned_not_shown(tmp_path: Path) -> None:
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", {"config.json": b"{}"})
        manifest = write_manifest(
            tmp_path,
            "version: 1\nsettings:\n  models_dir: models\n"
            f"  huggingface: {{endpoint: '{hub.url}', token: '${{MY_HF_TOKEN}}'}}\n"
            "models:\n  tiny: {source: 'hf://org/tiny'}\n",
        )
        result = run_cli("plan", manifest, env={"MY_HF_TOKEN": f"{TOKEN}\r\n"})
        sent = {r.headers.get("authorization") for r in hub.requests}
    assert TOKEN not in result.stdout + result.stderr
    assert result.returncode == 0, result.stderr
    assert sent == {f"Bearer {TOKEN}"}


def test_a_modelscope_token_with_a_crlf_ending_opens_a_private_repo(tmp_path: Path) -> None:
    with FakeModelScopeHub() as hub:
        hub.add_repo("org/tiny", {"config.json": b"{}"}, token=TOKEN)
        manifest = hub_manifest(tmp_path, hub.url, "ms", tiny="org/tiny")
        result = run_cli("plan", manifest, env={"MODELSCOPE_API_TOKEN": f"{TOKEN}\r"})
    assert TOKEN not in result.stdout + result.stderr
    assert result.returncode == 0, result.stderr


# -- a proxy URL provision cannot speak to as written -------------------------------------------

PROXY_PASSWORD = "proxy_CANARY_review_engines_77d0"


def proxy_env(**proxies: str) -> dict[str, str]:
    """Only these proxies, no bypass list (the suite's conftest sets NO_PROXY for loopback)."""
    env = {"NO_PROXY": "", "no_proxy": "", "HTTP_PROXY": "", "http_proxy": "", "HTTPS_PROXY": "", "https_proxy": ""}
    for name, value in proxies.items():
        env[name.upper()] = env[name.lower()] = value
    return env


@pytest.mark.parametrize("scheme", ["https", "socks5"])
def test_a_tls_or_socks_proxy_is_refused_not_sent_credentials_in_clear(tmp_path: Path, scheme: str) -> None:
    with FakeHFHub() as hub, FakeProxy() as proxy:
        hub.add_repo("org/tiny", {"config.json": b"{}"})
        manifest = hub_manifest(tmp_path, hub.url, tiny="org/tiny")
        address = proxy.url.replace("http://", f"{scheme}://alice:{PROXY_PASSWORD}@")
        result = run_cli("plan", manifest, env={**proxy_env(http_proxy=address), "HF_TOKEN": TOKEN})
    shown = result.stdout + result.stderr
    assert PROXY_PASSWORD not in shown and TOKEN not in shown
    assert proxy.seen == [] and proxy.authorizations == []  # nothing went to it unencrypted
    assert result.returncode != 0 and "internal error" not in shown, shown
    assert f"$HTTP_PROXY names a {scheme}:// proxy" in shown and "http://host:port" in shown, shown


@pytest.mark.parametrize("where", ["127.0.0.1:99999", "127.0.0.1:port", "127.0.0.1:0", ":3128"])
def test_a_proxy_url_without_a_usable_host_or_port_is_a_one_line_error(tmp_path: Path, where: str) -> None:
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", {"config.json": b"{}"})
        manifest = hub_manifest(tmp_path, hub.url, tiny="org/tiny")
        address = f"http://alice:{PROXY_PASSWORD}@{where}"
        result = run_cli("plan", manifest, env=proxy_env(https_proxy=address, http_proxy=address))
    shown = result.stdout + result.stderr
    assert PROXY_PASSWORD not in shown
    assert result.returncode != 0 and "internal error" not in shown, shown
    assert "$HTTP_PROXY is not a proxy URL" in shown, shown


# -- vLLM's readiness answer, from whatever listens on the published port -----------------------


@pytest.mark.parametrize(
    "body",
    [b"[]", b'"ready"', b"null", b'{"data": 5}', b'{"data": {"id": "m"}}', b'{"data": [{"id": ["m"]}]}'],
)
def test_a_models_list_that_is_not_vllms_means_not_ready_not_a_crash(tmp_path: Path, body: bytes) -> None:
    with FakeVLLM(tmp_path, ["m"]) as server:
        assert _ready(server.url, "m", None)  # the real answer: ready
        server.raw_models = body
        assert _ready(server.url, "m", None) is False


# -- NVML's strings ---------------------------------------------------------------------------


class _NameNotUtf8(FakeNVML):
    """A GPU name that is not UTF-8: old bindings return the bytes, nvidia-ml-py 12+ decodes them strictly."""

    def __init__(self, *, decodes: bool) -> None:
        super().__init__([{"name": "x", "total": GB24, "free": GB24, "cc": (8, 9)}], None)
        self._decodes = decodes

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        raw = b"NVIDIA \xff\xfe\x1b[2J"
        if self._decodes:
            raw.decode()  # raises, as pynvml's convertStrBytes does
        return raw


def test_a_gpu_name_that_is_not_utf8_from_old_bindings_is_shown_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _NameNotUtf8(decodes=False))
    [gpu] = probe_gpus().gpus
    assert gpu.name == "NVIDIA \ufffd\ufffd\x1b[2J"  # the terminal escape is the renderer's to escape


def test_a_gpu_name_nvml_cannot_decode_is_a_finding_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = _NameNotUtf8(decodes=True)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    probe = probe_gpus()
    assert probe.gpus == () and [f.level for f in probe.findings] == [Level.WARN]
    assert "NVML could not read the GPUs" in probe.findings[0].message
    assert nvml.calls == ["init", "shutdown"]
