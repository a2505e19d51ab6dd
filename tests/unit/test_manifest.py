"""The manifest loader: the broken-manifest corpus, valid shapes, ``${ENV}`` references, secrets.

Each file in ``tests/manifests/broken/`` starts with ``# expect: LINE FIELD MESSAGE``: the line
and dotted field (``-`` for none) the error must name, and a substring of its message.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from provision.errors import ManifestError
from provision.manifest import Manifest, OllamaDeployment, OpenAIDeployment, TransformersDeployment, VllmDeployment
from provision.manifest_loader import load_manifest, parse_manifest
from tests.typed import instance

REPO_ROOT = Path(__file__).resolve().parents[2]
BROKEN = sorted((REPO_ROOT / "tests" / "manifests" / "broken").glob("*.yaml"))
HEADER = re.compile(r"^# expect: (\d+) (\S+) (.+)$")

# The shape of manifests/dev.yaml (the course's manifest); secrets come from the environment.
DESIGN_EXAMPLE = """\
version: 1
settings:
  models_dir: ../models
  huggingface: {endpoint: https://hf-mirror.com, token: "${HF_TOKEN}"}
  modelscope:  {endpoint: https://modelscope.cn}
  ollama:      {host: http://127.0.0.1:11434}
models:
  deepseek-r1-1.5b:
    source: hf://deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
    revision: main
    include: ["*.json", "*.safetensors", "tokenizer*"]
  qwen3-0.6b:   {source: ms://Qwen/Qwen3-0.6B}
  qwen3-ollama: {source: "ollama://qwen3:0.6b"}
  finetune:     {source: file:///data/checkpoints/ft-7}
deployments:
  deepseek-vllm:
    engine: vllm
    model: deepseek-r1-1.5b
    image: vllm/vllm-openai:v0.10.1
    port: 8000
    gpus: all
    args: [--max-model-len, "4096", --dtype, float16]
    api_key: "${VLLM_API_KEY}"
  deepseek-local: {engine: transformers, model: deepseek-r1-1.5b, dtype: float16, device: auto}
  qwen3-chat:     {engine: ollama, model: qwen3-ollama}
  deepseek-api:   {engine: openai, base_url: https://api.deepseek.com,
                   served_model: deepseek-chat, api_key: "${DEEPSEEK_API_KEY}"}
smoke_test:
  messages: [{role: system, content: You are a helpful assistant}, {role: user, content: 明月几时有}]
  max_tokens: 64
  temperature: 0.7
  top_p: 0.8
  top_k: 10
  repetition_penalty: 1.2
  timeout: 120
"""
SECRETS = {"HF_TOKEN": "hf_secret_0001", "VLLM_API_KEY": "vllm_secret_0002", "DEEPSEEK_API_KEY": "sk-secret-0003"}


def _expectation(path: Path) -> tuple[int, str | None, str]:
    match = HEADER.match(path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else "")
    assert match, f"{path.name}: the first line must be '# expect: LINE FIELD MESSAGE'"
    line, field, message = match.groups()
    return int(line), None if field == "-" else field, message


# -- the corpus ------------------------------------------------------------------------------


def test_corpus_is_there() -> None:
    assert len(BROKEN) >= 30


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_manifest(path: Path) -> None:
    line, field, message = _expectation(path)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    error = caught.value
    assert (error.line, error.field) == (line, field), str(error)
    assert message in error.message
    assert error.hint, "every manifest error says what to do next"
    assert error.exit_code == 2


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_manifest_str_starts_with_file_and_line(path: Path) -> None:
    line, _, _ = _expectation(path)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert "\n" not in str(caught.value)


def test_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such manifest"):
        load_manifest(tmp_path / "absent.yaml")


def test_a_wrong_value_does_not_echo_a_secret() -> None:
    text = 'version: 1\nsettings:\n  huggingface: "${HF_TOKEN}"\n'
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, file="m.yaml", env=SECRETS)
    assert (caught.value.line, caught.value.field) == (3, "settings.huggingface")
    assert "hf_secret_0001" not in str(caught.value)


def test_unset_variable_in_a_list_names_the_item() -> None:
    text = (
        "version: 1\nsmoke_test:\n  messages:\n"
        "    - {role: user, content: hi}\n"
        "    - {role: user, content: '${NOPE}'}\n"
    )
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, file="m.yaml", env={})
    assert (caught.value.line, caught.value.field) == (5, "smoke_test.messages[1].content")


# -- valid manifests -------------------------------------------------------------------------


def test_design_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "conf" / "dev.yaml"
    path.parent.mkdir()
    path.write_text(DESIGN_EXAMPLE, encoding="utf-8")
    manifest = load_manifest(path)

    assert list(manifest.models) == ["deepseek-r1-1.5b", "qwen3-0.6b", "qwen3-ollama", "finetune"]
    assert manifest.models["deepseek-r1-1.5b"].include == ("*.json", "*.safetensors", "tokenizer*")
    assert [m.scheme for m in manifest.models.values()] == ["hf", "ms", "ollama", "file"]
    assert manifest.models["qwen3-ollama"].location == "qwen3:0.6b"
    deployments = manifest.deployments
    assert isinstance(deployments["deepseek-vllm"], VllmDeployment)
    assert isinstance(deployments["deepseek-local"], TransformersDeployment)
    assert isinstance(deployments["qwen3-chat"], OllamaDeployment)
    assert isinstance(deployments["deepseek-api"], OpenAIDeployment)
    assert deployments["deepseek-vllm"].args == ("--max-model-len", "4096", "--dtype", "float16")
    assert manifest.smoke_test.messages[1].content == "明月几时有"
    assert manifest.smoke_test.top_k == 10
    assert manifest.local_source_path(manifest.models["finetune"]) == Path("/data/checkpoints/ft-7")


def test_shipped_dev_manifest_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test")
    manifest = load_manifest(REPO_ROOT / "manifests" / "dev.yaml")
    assert "deepseek-r1-1.5b" in manifest.models
    assert manifest.settings.huggingface.endpoint == "https://hf-mirror.com"  # the default after :-


def test_minimal_manifest_has_defaults() -> None:
    manifest = parse_manifest("version: 1\n", env={})
    assert (manifest.models, manifest.deployments) == ({}, {})
    assert manifest.settings.models_dir == "models"
    assert manifest.smoke_test.max_tokens > 0


def test_merge_keys_are_allowed_and_explicit_keys_win() -> None:
    text = (
        "version: 1\nmodels:\n  a: &base {source: hf://o/a, revision: main}\n  b:\n    <<: *base\n    revision: dev\n"
    )
    manifest = parse_manifest(text, env={})
    assert manifest.models["b"].source == "hf://o/a"
    assert manifest.models["b"].revision == "dev"


@pytest.mark.parametrize(("gpus", "expected"), [("all", "all"), ("0", 0), ("2", 2), ("[0, 1]", (0, 1)), ("'3'", 3)])
def test_gpu_requests(gpus: str, expected: object) -> None:
    text = (
        "version: 1\nmodels: {a: {source: hf://o/a}}\n"
        f"deployments: {{d: {{engine: vllm, model: a, gpus: {gpus}}}}}\n"
    )
    assert instance(parse_manifest(text, env={}).deployments["d"], VllmDeployment).gpus == expected


# -- ${ENV} references -----------------------------------------------------------------------


def _endpoint(value: str, env: dict[str, str]) -> str | None:
    return parse_manifest(
        f"version: 1\nsettings:\n  huggingface: {{endpoint: '{value}'}}\n", env=env
    ).settings.huggingface.endpoint


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${EP}", {"EP": "http://a"}, "http://a"),
        ("${EP:-http://b}", {}, "http://b"),
        ("${EP:-http://b}", {"EP": ""}, "http://b"),  # empty counts as unset, as in the shell
        ("${EP:-http://b}", {"EP": "http://a"}, "http://a"),
        ("${EP:-}", {}, ""),
        ("http://${HOST}:${PORT:-80}/v1", {"HOST": "h"}, "http://h:80/v1"),
        ("cost $$5", {}, "cost $5"),
        ("$${EP}", {"EP": "http://a"}, "${EP}"),  # $$ escapes a reference
        ("a $ b", {}, "a $ b"),  # a lone $ is kept
    ],
)
def test_references(value: str, env: dict[str, str], expected: str) -> None:
    assert _endpoint(value, env) == expected


def test_reference_to_an_unset_variable_fails() -> None:
    with pytest.raises(ManifestError, match="environment variable EP is not set") as caught:
        _endpoint("${EP}", {})
    assert caught.value.field == "settings.huggingface.endpoint"
    assert "${EP:-default}" in caught.value.hint


def test_reference_value_is_typed_after_substitution() -> None:
    text = "version: 1\nmodels: {a: {source: hf://o/a}}\ndeployments: {d: {engine: vllm, model: a, port: '${PORT}'}}\n"
    assert instance(parse_manifest(text, env={"PORT": "9000"}).deployments["d"], VllmDeployment).port == 9000


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_are_secretstr_and_never_shown() -> None:
    manifest = parse_manifest(DESIGN_EXAMPLE, env=SECRETS)
    token = manifest.settings.huggingface.token
    api_key = instance(manifest.deployments["deepseek-api"], OpenAIDeployment).api_key
    assert isinstance(token, SecretStr) and token.get_secret_value() == "hf_secret_0001"
    assert isinstance(api_key, SecretStr) and api_key.get_secret_value() == "sk-secret-0003"
    shown = [repr(manifest), str(manifest), manifest.model_dump_json(), repr(manifest.model_dump())]
    for text in shown:
        for secret in SECRETS.values():
            assert secret not in text


# -- derived settings and paths --------------------------------------------------------------


def test_smoke_settings_merge_overrides() -> None:
    text = """\
version: 1
models: {a: {source: hf://o/a}}
deployments:
  plain: {engine: transformers, model: a}
  tuned:
    engine: transformers
    model: a
    smoke_test: {max_tokens: 8, messages: [{role: user, content: hi}]}
smoke_test: {max_tokens: 64, temperature: 0.2, top_p: 0.9}
"""
    manifest = parse_manifest(text, env={})
    assert manifest.smoke_settings("plain") == manifest.smoke_test
    tuned = manifest.smoke_settings("tuned")
    assert tuned.max_tokens == 8
    assert [m.content for m in tuned.messages] == ["hi"]
    assert (tuned.temperature, tuned.top_p) == (0.2, 0.9)  # inherited
    assert manifest.smoke_test.max_tokens == 64  # the shared settings are not changed


@pytest.mark.parametrize(
    ("models_dir", "expected"), [("../models", "models"), ("store", "conf/store"), (None, "conf/models")]
)
def test_model_dir_is_relative_to_the_manifest(tmp_path: Path, models_dir: str | None, expected: str) -> None:
    path = tmp_path / "conf" / "m.yaml"
    path.parent.mkdir()
    settings_block = f"settings: {{models_dir: {models_dir}}}\n" if models_dir else ""
    path.write_text(f"version: 1\n{settings_block}models: {{a: {{source: hf://o/a}}}}\n", encoding="utf-8")
    manifest = load_manifest(path)
    assert manifest.model_dir("a") == (tmp_path / expected / "a").resolve()


def test_model_dir_refuses_unsafe_names(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\n", encoding="utf-8")
    manifest = load_manifest(path)
    for name in ("../evil", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            manifest.model_dir(name)


@pytest.mark.parametrize(
    ("name", "lock"),
    [("dev.yaml", "dev.lock.json"), ("provision.yml", "provision.lock.json"), ("a.b.yaml", "a.b.lock.json")],
)
def test_lock_path_is_beside_the_manifest(tmp_path: Path, name: str, lock: str) -> None:
    path = tmp_path / name
    path.write_text("version: 1\n", encoding="utf-8")
    assert load_manifest(path).lock_path == tmp_path / lock


def test_a_parsed_manifest_has_no_path() -> None:
    with pytest.raises(RuntimeError):
        _ = parse_manifest("version: 1\n", env={}).path


# -- fuzz: any input is a Manifest or a ManifestError, never a crash -------------------------

FIELD_NAMES = [
    "version",
    "settings",
    "models",
    "deployments",
    "smoke_test",
    "source",
    "engine",
    "model",
    "include",
    "exclude",
    "revision",
    "port",
    "gpus",
    "messages",
    "role",
    "content",
    "max_tokens",
    "top_p",
    "models_dir",
    "huggingface",
    "token",
    "api_key",
    "expect",
    "a",
    "b",
    "../x",
]
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["hf://o/a", "ollama://q:1", "vllm", "ollama", "openai", "all", "${NOPE}", "${X:-1}", "$$"])
)
yamlable = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8) | st.integers(), inner, max_size=5)
    ),
    max_leaves=30,
)
manifest_like = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 2, "1", None])},
    optional={
        "models": st.dictionaries(st.sampled_from(["a", "b", ".x", "a/b"]), yamlable, max_size=3),
        "deployments": st.dictionaries(st.sampled_from(["d", "e"]), yamlable, max_size=2),
        "settings": yamlable,
        "smoke_test": yamlable,
    },
)


def _parses_or_manifest_error(text: str) -> None:
    try:
        result = parse_manifest(text, file="fuzz.yaml", env={"X": "1"})
    except ManifestError as exc:
        assert str(exc).startswith("fuzz.yaml")
    else:
        assert isinstance(result, Manifest)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_fuzz_text(text: str) -> None:
    _parses_or_manifest_error(text)


@settings(max_examples=200, deadline=None)
@given(yamlable | manifest_like)
def test_fuzz_yaml_data(data: object) -> None:
    _parses_or_manifest_error(yaml.safe_dump(data, allow_unicode=True))


@pytest.mark.parametrize(
    "text",
    [
        "{[a]: b}",
        "version: 1\nmodels:\n  ? {a: 1}\n  : b\n",
        "a: &x [*x]",
        "a: &x {b: *x}",
        "\x00",
        "version: 1\n\x07",
        "version: 1\n---\nversion: 1\n",
        "!!python/object:os.system {}",
        "version: 1\n1: x\n",
        "version: 1\n~: x\n",
        "version: 1\nmodels: {1: {source: hf://o/a}}\n",
    ],
    ids=[
        "list-key",
        "mapping-key",
        "recursive-list",
        "recursive-map",
        "nul",
        "bell",
        "two-documents",
        "python-tag",
        "int-key",
        "null-key",
        "int-model-name",
    ],
)
def test_hostile_yaml_is_a_manifest_error(text: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, file="m.yaml", env={})
    assert caught.value.line is not None


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("models:\n  q: {source: hf://a/b, revison: main}\n", "'revision'"),
        ("models:\n  q: {source: hf://a/b}\ndeployments:\n  c: {engine: vllm, model: q, imgae: x}\n", "'image'"),
        ("settings: {huggingface: {endpont: x}}\n", "'endpoint'"),
        ("smoke_test: {max_token: 3}\n", "'max_tokens'"),
    ],
)
def test_a_misspelt_key_gets_a_did_you_mean_hint(text: str, suggestion: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest("version: 1\n" + text, file="m.yaml", env={})
    assert caught.value.hint.startswith(f"did you mean {suggestion}?")


def test_an_unset_secret_loads_and_is_reported_only_when_used() -> None:
    # destroy and plan never read the key, so they work without it (issue 14, defect 7)
    text = (
        "version: 1\nmodels:\n  m: {source: 'file:///x'}\ndeployments:\n  d:\n    engine: vllm\n    model: m\n"
        "    image: 'i:1'\n    api_key: '${UNSET_KEY_FOR_TEST}'\n"
    )
    manifest = parse_manifest(text, env={})
    with pytest.raises(ManifestError, match="UNSET_KEY_FOR_TEST is not set"):
        manifest.deployments["d"].api_key.get_secret_value()  # type: ignore[union-attr]
    with pytest.raises(ManifestError, match="UNSET_IMAGE is not set"):
        parse_manifest(text.replace("'i:1'", "'${UNSET_IMAGE}'"), env={})
