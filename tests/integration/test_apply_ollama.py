"""`provision apply` / `destroy` with ``ollama://`` models and ``engine: ollama``, through the real
CLI and the real ``ollama`` client, against an in-process fake Ollama server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import pytest

from tests.cli_runner import run_cli
from tests.fakes.ollama_server import FakeOllama
from tests.manifest_files import lock_of, write_manifest
from tests.typed import json_object, known


@pytest.fixture()
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        server.registry_add("qwen3:0.6b")
        yield server


def ollama_manifest(tmp_path: Path, body: str, *, host: str | None) -> Path:
    """``tmp_path/m.yaml``: ``body`` (models, deployments) with the Ollama server at ``host``."""
    settings = f"settings: {{ollama: {{host: '{host}'}}}}\n" if host else ""
    return write_manifest(tmp_path, f"version: 1\n{settings}{body}")


def state_of(tmp_path: Path, kind: str = "models") -> dict[str, Any]:
    data = json_object(tmp_path / "state" / "state.json")
    [entry] = data["manifests"].values()
    records: dict[str, Any] = entry[kind]
    return records


def planned(manifest: Path, *args: str) -> dict[str, dict[str, Any]]:
    result = run_cli("plan", manifest, "--json", *args)
    assert result.returncode == 0, result.stderr
    return {a["address"]: a for a in json.loads(result.stdout)["actions"]}


def tiny_gguf(path: Path) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


QWEN = "models:\n  qwen: {source: 'ollama://qwen3:0.6b'}\n"


# -- pull, no-op, names --------------------------------------------------------
def test_pull_locks_the_manifest_digest_and_records_ownership(tmp_path: Path, fake: FakeOllama) -> None:
    manifest = ollama_manifest(tmp_path, QWEN, host=fake.url)
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stderr
    assert "qwen3:0.6b" in fake.local and fake.count("POST", "/api/pull") == 1
    digest = fake.registry["qwen3:0.6b"].digest
    assert lock_of(manifest)["models"]["qwen"] == {"spec": {"source": "ollama://qwen3:0.6b"}, "digest": digest}
    record = state_of(tmp_path)["qwen"]
    assert (record["model"], record["digest"], record["created"]) == ("qwen3:0.6b", digest, True)
    status = run_cli("status", manifest, "--json")
    [row] = [r for r in json.loads(status.stdout)["resources"] if r["name"] == "qwen"]
    assert row["resolved"] == digest


def test_second_apply_is_one_tags_call_and_no_pull(tmp_path: Path, fake: FakeOllama) -> None:
    fake.registry_add("llama3:8b")
    manifest = ollama_manifest(tmp_path, QWEN + "  llama: {source: 'ollama://llama3:8b'}\n", host=fake.url)
    assert run_cli("apply", manifest).returncode == 0
    before = len(fake.requests)
    started = time.monotonic()
    result = run_cli("apply", manifest)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "no changes" in result.stdout
    assert [(r.method, r.path) for r in fake.requests[before:]] == [("GET", "/api/tags")]
    print(f"no-op re-apply of two ollama:// models: {seconds:.2f} s (CLI process included)")
    assert run_cli("plan", manifest, "--detailed-exitcode").returncode == 0


def test_name_and_name_latest_are_the_same_model(tmp_path: Path, fake: FakeOllama) -> None:
    fake.registry_add("qwen3")
    manifest = ollama_manifest(tmp_path, "models:\n  q: {source: 'ollama://qwen3'}\n", host=fake.url)
    assert run_cli("apply", manifest).returncode == 0
    assert "qwen3:latest" in fake.local
    assert lock_of(manifest)["models"]["q"]["spec"] == {"source": "ollama://qwen3:latest"}

    ollama_manifest(tmp_path, "models:\n  q: {source: 'ollama://library/qwen3:latest'}\n", host=fake.url)
    result = run_cli("apply", manifest)
    assert result.returncode == 0 and "no changes" in result.stdout
    assert fake.count("POST", "/api/pull") == 1


def test_ollama_host_without_scheme_is_accepted(tmp_path: Path, fake: FakeOllama) -> None:
    manifest = ollama_manifest(tmp_path, QWEN, host=None)
    result = run_cli("apply", manifest, env={"OLLAMA_HOST": fake.url.removeprefix("http://")})
    assert result.returncode == 0, result.stderr
    assert "qwen3:0.6b" in fake.local


# -- drift ---------------------------------------------------------------------
def test_moved_tag_is_ignored_until_update(tmp_path: Path, fake: FakeOllama) -> None:
    manifest = ollama_manifest(tmp_path, QWEN, host=fake.url)
    assert run_cli("apply", manifest).returncode == 0
    old = lock_of(manifest)["models"]["qwen"]["digest"]
    new = fake.registry_move("qwen3:0.6b", [b"GGUF new weights", b"license"])

    assert run_cli("apply", manifest).returncode == 0
    assert lock_of(manifest)["models"]["qwen"]["digest"] == old and fake.count("POST", "/api/pull") == 1

    result = run_cli("apply", manifest, "--update")
    assert result.returncode == 0, result.stderr
    assert fake.count("POST", "/api/pull") == 2
    assert lock_of(manifest)["models"]["qwen"]["digest"] == new == fake.local["qwen3:0.6b"].manifest.digest
    assert state_of(tmp_path)["qwen"]["created"] is True


def test_server_digest_drift_is_reported_refused_when_locked_and_relocked_on_update(
    tmp_path: Path, fake: FakeOllama
) -> None:
    manifest = ollama_manifest(tmp_path, QWEN, host=fake.url)
    assert run_cli("apply", manifest).returncode == 0
    old = lock_of(manifest)["models"]["qwen"]["digest"]
    new = fake.registry_move("qwen3:0.6b", [b"GGUF newer", b"license"])
    ollama.Client(host=fake.url).pull("qwen3:0.6b")  # the user pulls the new version by hand
    pulls = fake.count("POST", "/api/pull")

    action = planned(manifest)["model.qwen"]
    assert action["change"] == "no change" and "drift" in action["reason"]
    assert run_cli("apply", manifest).returncode == 0
    assert lock_of(manifest)["models"]["qwen"]["digest"] == old

    refused = run_cli("apply", manifest, "--locked")
    assert refused.returncode == 1
    assert "lock pins" in refused.stderr and "hint:" in refused.stderr and "Traceback" not in refused.stderr

    assert run_cli("apply", manifest, "--update").returncode == 0
    assert fake.count("POST", "/api/pull") == pulls + 1
    assert lock_of(manifest)["models"]["qwen"]["digest"] == new


def test_locked_refuses_a_model_the_lock_lacks(tmp_path: Path, fake: FakeOllama) -> None:
    manifest = ollama_manifest(tmp_path, QWEN, host=fake.url)
    result = run_cli("apply", manifest, "--locked")
    assert result.returncode == 1 and "not in the lock" in result.stderr
    assert fake.count("POST", "/api/pull") == 0


# -- ownership -----------------------------------------------------------------
def test_destroy_deletes_what_it_pulled_and_leaves_the_users_model(tmp_path: Path, fake: FakeOllama) -> None:
    users = fake.preinstall("llama3:8b")
    manifest = ollama_manifest(
        tmp_path, QWEN + "  llama: {source: 'ollama://llama3'}\n  mine: {source: 'ollama://llama3:8b'}\n", host=fake.url
    )
    fake.registry_add("llama3")
    assert run_cli("apply", manifest).returncode == 0
    assert fake.count("POST", "/api/pull") == 2  # qwen3:0.6b and llama3:latest, not the user's llama3:8b
    assert lock_of(manifest)["models"]["mine"]["digest"] == users
    assert state_of(tmp_path)["mine"]["created"] is False

    result = run_cli("destroy", manifest, "--yes")
    assert result.returncode == 0, result.stderr
    assert set(fake.local) == {"llama3:8b"}
    assert fake.local["llama3:8b"].manifest.digest == users
    assert lock_of(manifest)["models"] == {}


def test_a_removed_model_is_deleted_on_the_next_apply_with_yes(tmp_path: Path, fake: FakeOllama) -> None:
    manifest = ollama_manifest(tmp_path, QWEN, host=fake.url)
    assert run_cli("apply", manifest).returncode == 0
    ollama_manifest(tmp_path, "models: {}\n", host=fake.url)
    kept = run_cli("apply", manifest)  # no terminal to ask on: kept until --yes (issue 12, item 12)
    assert kept.returncode == 1 and "--yes" in kept.stderr
    assert fake.local != {}
    result = run_cli("apply", manifest, "--yes")
    assert result.returncode == 0, result.stderr
    assert fake.local == {}


# -- create from GGUF ----------------------------------------------------------
GGUF_BODY = (
    "models:\n  tiny: {source: 'file://tiny.gguf'}\n"
    "deployments:\n"
    "  chat: {engine: ollama, model: tiny, system: Be brief., parameters: {temperature: 0.1, stop: ['</s>']}}\n"
)


def test_create_from_gguf_uploads_once_and_destroy_deletes_it(tmp_path: Path, fake: FakeOllama) -> None:
    tiny_gguf(tmp_path / "tiny.gguf")
    manifest = ollama_manifest(tmp_path, GGUF_BODY, host=fake.url)
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stderr
    created = fake.local["provision/chat:latest"]
    assert created.system == "Be brief." and created.parameters == {"temperature": 0.1, "stop": ["</s>"]}
    assert fake.count("POST", "/api/blobs/") == 1
    record = state_of(tmp_path, "deployments")["chat"]
    assert record["created"] is True and record["model"] == "provision/chat:latest"

    result = run_cli("apply", manifest)
    assert result.returncode == 0 and "no changes" in result.stdout, result.stdout + result.stderr
    assert fake.count("POST", "/api/create") == 1

    # A second deployment of the same file: the server has the blob, so no upload.
    ollama_manifest(
        tmp_path, GGUF_BODY + "  chat2: {engine: ollama, model: tiny, system: Be verbose.}\n", host=fake.url
    )
    assert run_cli("apply", manifest).returncode == 0
    assert fake.local["provision/chat2:latest"].system == "Be verbose."
    assert fake.count("POST", "/api/blobs/") == 1 and fake.count("HEAD", "/api/blobs/") == 2

    # A changed system prompt creates the model again.
    ollama_manifest(tmp_path, GGUF_BODY.replace("Be brief.", "Be terse."), host=fake.url)
    assert run_cli("apply", manifest).returncode == 0
    assert fake.local["provision/chat:latest"].system == "Be terse."
    assert "provision/chat2:latest" not in fake.local  # chat2 left the manifest

    fake.preinstall("llama3:8b")
    assert run_cli("destroy", manifest, "--yes").returncode == 0
    assert set(fake.local) == {"llama3:8b"}


def test_the_created_model_answers_a_streamed_chat(tmp_path: Path, fake: FakeOllama) -> None:
    from provision.client import open_engine
    from provision.deployments.base import DeployContext
    from provision.manifest import ChatMessage, SmokeTestSettings
    from provision.manifest_loader import load_manifest

    tiny_gguf(tmp_path / "tiny.gguf")
    manifest = ollama_manifest(tmp_path, GGUF_BODY, host=fake.url)
    assert run_cli("apply", manifest).returncode == 0
    loaded = load_manifest(manifest)
    chat = open_engine("chat", loaded.deployments["chat"], DeployContext(loaded, {}))
    try:
        events = list(chat.stream_chat(SmokeTestSettings(messages=(ChatMessage(role="user", content="one two"),))))
    finally:
        chat.close()
    assert "".join(e.text for e in events) == "one two" and events[-1].output_tokens == 2
    assert known(fake.last_chat_request)["model"] == "provision/chat:latest"


def test_a_model_provision_did_not_create_is_not_overwritten(tmp_path: Path, fake: FakeOllama) -> None:
    tiny_gguf(tmp_path / "tiny.gguf")
    fake.preinstall("provision/chat:latest")
    manifest = ollama_manifest(tmp_path, GGUF_BODY, host=fake.url)
    result = run_cli("apply", manifest)
    assert result.returncode == 1
    assert "provision did not create" in result.stderr and "ollama rm" in result.stderr
    assert fake.count("POST", "/api/create") == 0


# -- bad input -----------------------------------------------------------------
def test_server_not_running_names_the_host_and_how_to_start_it(tmp_path: Path) -> None:
    manifest = ollama_manifest(
        tmp_path, QWEN + "deployments:\n  chat: {engine: ollama, model: qwen}\n", host="http://127.0.0.1:9"
    )
    result = run_cli("apply", manifest)
    assert result.returncode == 1
    assert "cannot connect to Ollama at http://127.0.0.1:9" in result.stderr
    assert "ollama serve" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["-qwen3", "a/b/c/d", "qwen3:0.6b:x", "qwen 3", "team.x/qwen3"])
def test_invalid_name_is_caught_before_any_pull(tmp_path: Path, fake: FakeOllama, name: str) -> None:
    manifest = ollama_manifest(tmp_path, f"models:\n  bad: {{source: 'ollama://{name}'}}\n" + QWEN[8:], host=fake.url)
    result = run_cli("apply", manifest)
    # The manifest itself is refused (as `validate` does, issue 12 item 14): file:line, field, exit 2.
    assert result.returncode == 2
    assert f"{name!r} is not a valid Ollama model name" in result.stderr and "hint:" in result.stderr
    assert f"{manifest}:" in result.stderr and "models.bad.source" in result.stderr
    assert fake.count("POST", "/api/pull") == 0


def test_unknown_model_reports_the_registry_error(tmp_path: Path, fake: FakeOllama) -> None:
    manifest = ollama_manifest(tmp_path, "models:\n  nope: {source: 'ollama://nope:1b'}\n" + QWEN[8:], host=fake.url)
    result = run_cli("apply", manifest)
    assert result.returncode == 1
    assert "registry has no model nope:1b" in result.stderr and "file does not exist" in result.stderr
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    assert "nope" not in lock_of(manifest)["models"] and "qwen" in lock_of(manifest)["models"]


def test_interrupted_pull_is_retried_and_resumes(tmp_path: Path, fake: FakeOllama) -> None:
    fake.faults.drop_pull_after_lines = 4  # mid-way through the first layer
    manifest = ollama_manifest(tmp_path, QWEN, host=fake.url)
    result = run_cli("apply", manifest)
    assert result.returncode == 0, result.stderr
    assert fake.count("POST", "/api/pull") == 2
    assert lock_of(manifest)["models"]["qwen"]["digest"] == fake.registry["qwen3:0.6b"].digest


def test_a_pull_that_keeps_failing_gives_up_with_a_hint_then_resumes(tmp_path: Path, fake: FakeOllama) -> None:
    fake.faults.drop_pull_after_lines = 3
    fake.faults.drop_pull_times = 100
    manifest = ollama_manifest(tmp_path, QWEN, host=fake.url)
    result = run_cli("apply", manifest)
    assert result.returncode == 1
    assert "failed 3 times" in result.stderr and "RemoteProtocolError" in result.stderr
    assert "resumes" in result.stderr and "Traceback" not in result.stderr
    assert fake.partial, "the server kept the partial layer"

    fake.faults.drop_pull_times = 0
    assert run_cli("apply", manifest).returncode == 0
    assert "qwen3:0.6b" in fake.local and not fake.partial


def test_non_gguf_file_is_refused_before_anything_is_created(tmp_path: Path, fake: FakeOllama) -> None:
    (tmp_path / "tiny.gguf").write_bytes(b"PK\x03\x04 a zip, not a GGUF")
    manifest = ollama_manifest(tmp_path, GGUF_BODY, host=fake.url)
    result = run_cli("apply", manifest)
    assert result.returncode == 1
    assert "is not a GGUF file" in result.stderr and "hint:" in result.stderr
    assert fake.count("POST", "/api/blobs/") == 0 and fake.count("POST", "/api/create") == 0


def test_missing_gguf_file_is_named(tmp_path: Path, fake: FakeOllama) -> None:
    manifest = ollama_manifest(tmp_path, GGUF_BODY, host=fake.url)
    result = run_cli("apply", manifest)
    assert result.returncode == 1
    assert f"{tmp_path / 'tiny.gguf'} does not exist" in result.stderr and "Traceback" not in result.stderr
    assert fake.count("POST", "/api/create") == 0


def test_status_shows_present_missing_drift_and_the_server(tmp_path: Path, fake: FakeOllama) -> None:
    fake.registry_add("llama3:8b")
    manifest = ollama_manifest(tmp_path, QWEN + "  other: {source: 'ollama://llama3:8b'}\n", host=fake.url)
    assert run_cli("apply", manifest, "--only", "qwen").returncode == 0
    fake.registry_move("qwen3:0.6b", [b"GGUF newer"])
    ollama.Client(host=fake.url).pull("qwen3:0.6b")  # the server's copy drifts from the lock

    report = json.loads(run_cli("status", manifest, "--json").stdout)
    states = {row["name"]: row["state"] for row in report["resources"]}
    assert states == {"qwen": "drift", "other": "missing"}
    [server] = report["servers"]
    assert server["reachable"] and server["version"] == fake.version and server["address"] == fake.url

    down = ollama_manifest(tmp_path, QWEN, host="http://127.0.0.1:9")
    result = run_cli("status", down)
    assert result.returncode == 0 and "not reachable" in result.stderr
