"""``validate`` refuses, without any network, what needs none to refuse: an invalid Ollama name,
two deployments on one host port, a ``models_dir`` that is a file or ``/``, names that YAML
reads as numbers or booleans. And ``plan`` says which token goes to which endpoint, never
the token itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provision.errors import ManifestError
from provision.manifest_loader import load_manifest, parse_manifest
from tests.cli_runner import run_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.manifest_files import write_manifest


def write(tmp_path: Path, body: str) -> Path:
    return write_manifest(tmp_path, "version: 1\n" + body)


def rejected(manifest: Path, line: int, field: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest(manifest)
    error = caught.value
    assert (error.line, error.field) == (line, field), str(error)
    assert message in error.message and error.hint
    result = run_cli("validate", manifest)
    assert result.returncode == 2 and f"{manifest}:{line}: {field}: " in result.stderr, result.stderr


@pytest.mark.parametrize("name", ["Bad Name!", "qwen3:0.6b:extra", "a/b/c/d", "-lead", "ns.dot/model", "q:"])
def test_an_invalid_ollama_name_is_refused(tmp_path: Path, name: str) -> None:
    manifest = write(tmp_path, f"models:\n  q: {{source: 'ollama://{name}'}}\n")
    rejected(manifest, 3, "models.q.source", "is not a valid Ollama model name")


@pytest.mark.parametrize("name", ["qwen3:0.6b", "qwen3", "library/qwen3:latest", "registry.example.com:5000/ns/m:t"])
def test_valid_ollama_names_pass(name: str) -> None:
    parse_manifest(f"version: 1\nmodels:\n  q: {{source: 'ollama://{name}'}}\n", env={})


VLLM_PAIR = """\
models:
  a: {{source: hf://o/a}}
deployments:
  one: {{engine: vllm, model: a, port: 8000{first}}}
  two: {{engine: vllm, model: a, port: {port}{second}}}
"""


@pytest.mark.parametrize(
    ("first", "second", "port"),
    [
        ("", "", 8000),
        (", bind: 0.0.0.0", "", 8000),
        ("", ", bind: 0.0.0.0", 8000),
    ],
)
def test_two_deployments_on_one_host_port_are_refused(tmp_path: Path, first: str, second: str, port: int) -> None:
    manifest = write(tmp_path, VLLM_PAIR.format(first=first, second=second, port=port))
    rejected(manifest, 6, "deployments.two.port", "port 8000")
    with pytest.raises(ManifestError, match="already taken by deployment 'one'") as caught:
        load_manifest(manifest)
    assert "its own `port:`" in caught.value.hint


def test_different_ports_or_addresses_are_fine() -> None:
    parse_manifest("version: 1\n" + VLLM_PAIR.format(first="", second="", port=8001), env={})
    parse_manifest("version: 1\n" + VLLM_PAIR.format(first="", second=", bind: 127.0.0.2", port=8000), env={})


def test_models_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    rejected(write(tmp_path, "settings:\n  models_dir: afile\n"), 3, "settings.models_dir", "is not a folder")


@pytest.mark.parametrize("models_dir", ["/", "/..", "../../../../../../../../../.."])
def test_models_dir_at_the_root_is_refused(tmp_path: Path, models_dir: str) -> None:
    rejected(
        write(tmp_path, f"settings:\n  models_dir: '{models_dir}'\n"),
        3,
        "settings.models_dir",
        "is the filesystem root",
    )


@pytest.mark.parametrize(("key", "shown"), [("1", "1"), ("true", "true"), ("1.5", "1.5"), ("null", "null")])
def test_a_model_name_yaml_reads_as_no_string_says_to_quote_it(tmp_path: Path, key: str, shown: str) -> None:
    manifest = write(tmp_path, f"models:\n  {key}: {{source: hf://o/a}}\n")
    with pytest.raises(ManifestError, match="in YAML, not a string") as caught:
        load_manifest(manifest)
    assert caught.value.line == 3 and caught.value.field == f"models.{shown}"
    assert caught.value.hint.startswith(f'quote it, as in "{shown}":')
    assert run_cli("validate", manifest).returncode == 2


# -- which token goes where -------------------------------------------------------------------

TOKEN = "hf_ROUTE_CANARY_5d1c"


def test_plan_says_which_token_goes_to_which_endpoint(tmp_path: Path) -> None:
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", {"config.json": b"{}"})
        manifest = write(
            tmp_path,
            f"settings:\n  models_dir: models\n  huggingface: {{endpoint: '{hub.url}', "
            "token: '${HF_TOKEN:-}'}\nmodels:\n  tiny: {source: hf://org/tiny}\n"
            "deployments:\n  api: {engine: openai, base_url: 'https://api.example.com/v1', "
            "served_model: chat, api_key: '${EXAMPLE_API_KEY}'}\n",
        )
        with_env = run_cli("plan", manifest, env={"HF_TOKEN": TOKEN})
        as_json = run_cli("plan", manifest, "--json", env={"HF_TOKEN": TOKEN})
        from_file = tmp_path / "token"
        from_file.write_text(TOKEN + "\n")
        logged_in = run_cli("plan", manifest, env={"HF_TOKEN_PATH": str(from_file)})
        without = run_cli("plan", manifest)
    assert with_env.returncode == 0, with_env.stdout + with_env.stderr
    assert f"huggingface token from $HF_TOKEN -> {hub.url}" in with_env.stdout, with_env.stdout
    assert "deployments.api.api_key from $EXAMPLE_API_KEY (not set) -> https://api.example.com/v1" in with_env.stdout
    routes = json.loads(as_json.stdout)["credentials"]
    assert {"service": "huggingface token", "source": "$HF_TOKEN", "endpoint": hub.url} in routes
    assert f"huggingface token from the file {from_file}" in logged_in.stdout, logged_in.stdout
    assert f"huggingface token: no token sent to {hub.url}" in without.stdout, without.stdout
    for result in (with_env, as_json, logged_in, without):
        assert TOKEN not in result.stdout + result.stderr
