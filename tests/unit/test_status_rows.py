"""``status --json`` rows: each kind of row carries the keys it always had, in the same order."""

from __future__ import annotations

from provision.reconciler.inspection import DeploymentStatus, ModelStatus


def test_a_file_model_row_shows_only_what_is_known() -> None:
    row = ModelStatus("m", "hf://org/m", applied=False, on_server=False, state="not applied")
    assert row.as_dict() == {
        "kind": "model",
        "name": "m",
        "source": "hf://org/m",
        "applied": False,
        "state": "not applied",
    }
    row = ModelStatus("m", "hf://org/m", True, False, state="present", resolved="a" * 40, bytes=0)
    assert list(row.as_dict()) == ["kind", "name", "source", "applied", "state", "resolved", "bytes"]
    assert row.as_dict()["bytes"] == 0


def test_a_server_model_row_always_shows_its_digest() -> None:
    row = ModelStatus("q", "ollama://qwen3:0.6b", False, on_server=True, state="missing", detail="pull qwen3:0.6b")
    assert row.as_dict() == {
        "kind": "model",
        "name": "q",
        "source": "ollama://qwen3:0.6b",
        "applied": False,
        "resolved": None,
        "state": "missing",
        "detail": "pull qwen3:0.6b",
    }


def test_a_deployment_row() -> None:
    row = DeploymentStatus("api", "openai", None, False, "hosted", "hosted API: nothing to provision")
    assert list(row.as_dict()) == ["kind", "name", "engine", "model", "applied", "state", "detail"]
    assert row.as_dict()["model"] is None
