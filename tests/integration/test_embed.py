"""`task: embed` on every engine: transformers in-process on a real model and a CLS-pooling
one, the Ollama and vLLM (OpenAI-compatible) stand-ins' embedding endpoints, and smoke-test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import provision
from provision.errors import DeploymentError, UsageError
from tests.cli_runner import run_cli
from tests.embed_models import cls_model_dir, minilm_dir  # noqa: F401 - fixtures
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.vllm_server import FakeVLLM
from tests.manifest_files import write_manifest

SENTENCE = "A man is playing a guitar on the stage."


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def local_manifest(tmp_path: Path, folder: Path, extra: str = "") -> Path:
    manifest = write_manifest(
        tmp_path,
        "version: 1\nsettings: {models_dir: models}\n"
        f"models: {{enc: {{source: 'file://{folder}'}}}}\n"
        f"deployments: {{vectors: {{engine: transformers, model: enc, task: embed, device: cpu{extra}}}}}\n",
    )
    assert run_cli("apply", manifest).returncode == 0
    return manifest


# -- transformers, in-process ----------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_client(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path):  # type: ignore[no-untyped-def]  # noqa: F811
    with provision.connect(local_manifest(tmp_path_factory.mktemp("minilm"), minilm_dir), "vectors") as client:
        yield client


def test_minilm_vectors_have_its_dimension_unit_norm_and_order(minilm_client) -> None:  # type: ignore[no-untyped-def]
    query, near, far = minilm_client.embed(
        [
            "How do I reset my password?",
            "What are the steps to change a forgotten password?",
            "The recipe calls for two cups of flour.",
        ]
    )
    assert len(query) == len(near) == len(far) == 384
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5 for v in (query, near, far))
    assert cosine(query, near) > 0.6 and cosine(query, far) < 0.2  # measured: 0.83 and 0.06


def test_minilm_matches_a_reference_computed_by_hand(minilm_client, minilm_dir: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir).eval()
    batch = tokenizer([SENTENCE], return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    reference = torch.nn.functional.normalize(mean, dim=1)[0].tolist()
    [ours] = minilm_client.embed([SENTENCE])
    assert cosine(ours, reference) >= 0.9999


def test_an_input_over_the_maximum_length_is_reported_cut(minilm_client) -> None:  # type: ignore[no-untyped-def]
    result = minilm_client.embeddings(["short", "word " * 400])
    assert result.truncated == (1,) and result.max_length == 256  # sentence_bert_config.json's max_seq_length
    assert len(result.vectors) == 2


def test_bad_embed_calls_are_one_line_errors(minilm_client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="embed takes a non-empty list of strings"):
        minilm_client.embed([])
    with pytest.raises(DeploymentError, match="vectors is an embedding deployment \\(task: embed\\); it cannot chat"):
        list(minilm_client.chat([{"role": "user", "content": "hi"}]))


def test_a_cls_pooling_model_is_pooled_with_its_first_token(tmp_path: Path, cls_model_dir: Path) -> None:  # noqa: F811
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cls_model_dir)
    model = AutoModel.from_pretrained(cls_model_dir).eval()
    batch = tokenizer([SENTENCE], return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state[0]
    with provision.connect(local_manifest(tmp_path, cls_model_dir), "vectors") as client:
        [ours] = client.embed([SENTENCE])
    assert cosine(ours, hidden[0].tolist()) >= 0.9999
    assert cosine(ours, hidden.mean(0).tolist()) < 0.999  # not mean pooling
    assert abs(math.sqrt(sum(x * x for x in ours)) - 1) > 1e-3  # no Normalize module: not normalized


def test_the_manifest_pooling_reaches_a_folder_without_pooling_files(tmp_path: Path, cls_model_dir: Path) -> None:  # noqa: F811
    import shutil

    import torch
    from transformers import AutoModel, AutoTokenizer

    bare = tmp_path / "bare-bert"  # as bge-base-zh may come: no modules.json, no 1_Pooling
    shutil.copytree(cls_model_dir, bare, ignore=shutil.ignore_patterns("modules.json", "1_Pooling"))
    tokenizer = AutoTokenizer.from_pretrained(bare)
    model = AutoModel.from_pretrained(bare).eval()
    with torch.inference_mode():
        cls = model(**tokenizer([SENTENCE], return_tensors="pt")).last_hidden_state[0, 0]
    expected = torch.nn.functional.normalize(cls, dim=0).tolist()
    with provision.connect(local_manifest(tmp_path, bare, ", pooling: cls, normalize: true"), "vectors") as client:
        [ours] = client.embed([SENTENCE])
    assert cosine(ours, expected) >= 0.9999
    assert abs(math.sqrt(sum(x * x for x in ours)) - 1) < 1e-5


def test_smoke_test_proves_the_real_model(tmp_path: Path, minilm_dir: Path) -> None:  # noqa: F811
    manifest = local_manifest(tmp_path, minilm_dir)
    result = run_cli("smoke-test", manifest, "--json", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [row] = json.loads(result.stdout)["results"]
    assert (row["task"], row["passed"], row["dimension"], len(row["norms"])) == ("embed", True, 384, 6)  # EN + ZH
    assert row["cos_positive"] > row["cos_negative"] and row["texts_per_s"] > 0 and row["input_tokens"] > 0
    table = run_cli("smoke-test", manifest, timeout=300)
    assert table.returncode == 0 and "smoke test: embeddings" in table.stdout and "384" in table.stdout


def test_smoke_test_fails_a_wrong_expected_dimension(tmp_path: Path, minilm_dir: Path) -> None:  # noqa: F811
    manifest = local_manifest(tmp_path, minilm_dir, extra=", expect_dimension: 1024")
    result = run_cli("smoke-test", manifest, timeout=300)
    assert result.returncode == 1
    assert "✗ vectors: dimension 384, but expect_dimension says 1024" in result.stdout


# -- Ollama and OpenAI-compatible stand-ins --------------------------------------------------


def test_ollama_embeds_with_truncate_false_and_proves_it(tmp_path: Path) -> None:
    with FakeOllama() as ollama:
        ollama.registry_add("all-minilm:latest")
        ollama.registry_add("qwen3:0.6b")
        ollama.embedding_models["all-minilm:latest"] = 48
        ollama.embed_context = 20
        manifest = write_manifest(
            tmp_path,
            f"version: 1\nsettings: {{ollama: {{host: '{ollama.url}'}}}}\n"
            "models: {minilm: {source: 'ollama://all-minilm'}, qwen: {source: 'ollama://qwen3:0.6b'}}\n"
            "deployments:\n  vectors: {engine: ollama, model: minilm, task: embed, expect_dimension: 48}\n"
            "  chatty: {engine: ollama, model: qwen, task: embed}\n",
        )
        assert run_cli("apply", manifest).returncode == 0
        with provision.connect(manifest, "vectors") as client:
            result = client.embeddings(["one two", "three"])
            assert [len(v) for v in result.vectors] == [48, 48] and result.input_tokens == 3
            assert ollama.embed_requests[-1]["truncate"] is False
            with pytest.raises(DeploymentError, match="input exceeds maximum context length"):
                client.embed(["word " * 21])  # over the context: an error, not silently cut
        smoke = run_cli("smoke-test", manifest, "--json")
        rows = {r["deployment"]: r for r in json.loads(smoke.stdout)["results"]}
        assert rows["vectors"]["passed"] and rows["vectors"]["dimension"] == 48
        assert not rows["chatty"]["passed"]  # a chat model asked to embed: one line
        assert rows["chatty"]["reason"] == (
            'Ollama answered HTTP 400: "qwen3:0.6b" does not support embeddings; see the Ollama server\'s log'
        )
        assert smoke.returncode == 1


def test_openai_compatible_embeddings_and_a_server_without_them(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with FakeVLLM(tmp_path, ["e5"], embedding_dimension=24) as pooling, FakeVLLM(tmp_path, ["e5"]) as chat_only:
        manifest = write_manifest(
            tmp_path,
            "version: 1\ndeployments:\n"
            f"  hosted: {{engine: openai, base_url: '{pooling.base_url}', served_model: e5, task: embed}}\n"
            f"  missing: {{engine: openai, base_url: '{chat_only.base_url}', served_model: e5, task: embed}}\n",
        )
        with provision.connect(manifest, "hosted") as client:
            result = client.embeddings(["alpha beta", "gamma"])
        assert [len(v) for v in result.vectors] == [24, 24]
        assert result.input_tokens == 11  # the server's usage: 2 words + 5 characters of "gamma" + 2 x 2 specials
        assert pooling.embed_requests[-1] == {
            "model": "e5",
            "input": ["alpha beta", "gamma"],
            "encoding_format": "float",
        }
        smoke = run_cli("smoke-test", manifest, "--json")
        rows = {r["deployment"]: r for r in json.loads(smoke.stdout)["results"]}
        assert rows["hosted"]["passed"], rows["hosted"]["reason"]
        assert rows["missing"]["reason"].startswith(f"404 from {chat_only.base_url}/embeddings: ")
        assert "\n" not in rows["missing"]["reason"]


@pytest.mark.docker
def test_vllm_task_embed_runs_the_pooling_runner_and_proves_it(tmp_path: Path) -> None:
    import os

    from docker.errors import DockerException

    from tests.fakes._server import free_port
    from tests.fakes.docker_env import build_vllm_image, ensure_engine

    try:
        docker_client = ensure_engine()
        image = build_vllm_image(client=docker_client)
    except (DockerException, OSError) as exc:
        pytest.fail(f"no Docker engine (scripts/start-docker.sh starts one): {exc}")
    name = f"embed-{os.getpid()}"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    manifest = write_manifest(
        tmp_path,
        "version: 1\nsettings: {models_dir: models}\nmodels: {enc: {source: 'file://src'}}\n"
        f"deployments:\n  {name}: {{engine: vllm, model: enc, task: embed, image: '{image}', port: {free_port()},"
        " gpus: 0, startup_timeout: 60, expect_dimension: 32}\n",
    )
    try:
        assert run_cli("apply", manifest, timeout=180).returncode == 0
        [container] = docker_client.containers.list(filters={"label": f"io.provision.manifest={manifest}"})
        command = container.attrs["Config"]["Cmd"]
        assert command[command.index("--runner") + 1] == "pooling"
        smoke = run_cli("smoke-test", manifest, "--json")
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        [row] = json.loads(smoke.stdout)["results"]
        assert (row["task"], row["dimension"]) == ("embed", 32)
        chat = run_cli("chat", manifest, name, input="hi\n")
        assert chat.returncode == 1 and "is an embedding deployment (task: embed); it cannot chat" in chat.stderr
    finally:
        for leftover in docker_client.containers.list(all=True, filters={"label": f"io.provision.manifest={manifest}"}):
            leftover.remove(force=True)
