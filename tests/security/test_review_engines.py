"""Review of the transport, the hubs' listing code, the deployment engines and the hardware probes:
what comes from outside (a token file, a proxy's URL, a server's answer, a probe) is checked
before use, and a secret never shows in an error."""

from __future__ import annotations

from pathlib import Path

from tests.apply_support import hub_manifest
from tests.cli_runner import run_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.fakes.modelscope_hub import FakeModelScopeHub
from tests.manifest_files import write_manifest

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
