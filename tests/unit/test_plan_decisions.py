"""The pure decisions behind a file model's plan (re-resolve? re-fetch? which files?) and the
disk check's rule: which models count, and with which bytes."""

from __future__ import annotations

from pathlib import Path

from provision.files import RemoteFile
from provision.hardware import Level
from provision.manifest import ModelSpec
from provision.plan import (
    Action,
    Change,
    Plan,
    Resolve,
    content_changed,
    lock_spec,
    refetch_reason,
    resolve_reason,
    stale_paths,
)
from provision.preflight import disk_finding

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
WANTED = {"source": "hf://org/m", "revision": "main", "include": None, "exclude": None}


def test_lock_spec_pins_source_revision_and_filters() -> None:
    spec = ModelSpec(source="hf://org/m", include=("*.json",))
    assert lock_spec(spec, "main") == {
        "source": "hf://org/m",
        "revision": "main",
        "include": ["*.json"],
        "exclude": None,
    }
    assert lock_spec(ModelSpec(source="hf://org/m", revision="v1"), "main")["revision"] == "v1"


def test_a_locked_unchanged_hub_model_is_not_resolved_again() -> None:
    assert resolve_reason(WANTED, WANTED, scheme="hf", update=False) is None


def test_resolve_reasons_in_order_of_precedence() -> None:
    assert resolve_reason(None, WANTED, scheme="hf", update=True) is Resolve.NOT_LOCKED
    assert resolve_reason({**WANTED, "revision": "v1"}, WANTED, scheme="file", update=True) is Resolve.SPEC_CHANGED
    assert resolve_reason(WANTED, WANTED, scheme="file", update=False) is Resolve.LOCAL
    assert resolve_reason(WANTED, WANTED, scheme="hf", update=True) is Resolve.UPDATE


def test_update_leaves_a_full_commit_alone() -> None:
    pinned = {**WANTED, "revision": COMMIT_A}
    assert resolve_reason(pinned, pinned, scheme="hf", update=True) is None
    short = {**WANTED, "revision": COMMIT_A[:12]}  # a short sha may be ambiguous: resolve it
    assert resolve_reason(short, short, scheme="hf", update=True) is Resolve.UPDATE


def test_only_a_missing_or_changed_entry_forces_a_new_lock() -> None:
    assert {r for r in Resolve if r.lock_must_change} == {Resolve.NOT_LOCKED, Resolve.SPEC_CHANGED}


def test_refetch_reason_after_a_new_resolution() -> None:
    def why(resolve: Resolve, scheme: str = "hf", locked: str | None = COMMIT_A, resolved: str = COMMIT_B) -> str:
        return refetch_reason(resolve, scheme=scheme, revision="main", locked=locked, resolved=resolved)

    assert why(Resolve.NOT_LOCKED, locked=None) == ""  # first time: plan_files says what is missing
    assert why(Resolve.SPEC_CHANGED, resolved=COMMIT_A) == "manifest entry changed"  # even at the same commit
    assert why(Resolve.UPDATE, resolved=COMMIT_A) == ""  # the branch did not move: the lock stands
    assert why(Resolve.UPDATE) == "main moved aaaaaaaaaa -> bbbbbbbbbb"
    assert why(Resolve.LOCAL, scheme="file", locked="local-" + "1" * 40, resolved="local-" + "2" * 40) == (
        "local source changed"
    )
    assert why(Resolve.LOCAL, scheme="file", locked="local-" + "1" * 40, resolved="local-" + "1" * 40) == ""


def test_content_changed_compares_the_strongest_digest_the_hub_gives() -> None:
    lfs = RemoteFile("w.safetensors", 10, sha256="1" * 64, git_sha1="9" * 40)
    assert not content_changed({"size": 10, "sha256": "1" * 64}, lfs)
    assert content_changed({"size": 10, "sha256": "2" * 64, "git_sha1": "9" * 40}, lfs)  # sha256 decides
    small = RemoteFile("config.json", 2, git_sha1="3" * 40)
    assert not content_changed({"size": 2, "sha256": "5" * 64, "git_sha1": "3" * 40}, small)
    assert content_changed({"size": 2, "sha256": "5" * 64, "git_sha1": "4" * 40}, small)
    assert content_changed({"size": 2, "sha256": "5" * 64}, RemoteFile("notes.txt", 2))  # no digest: never trusted
    assert content_changed(None, lfs)  # a new path


def test_stale_paths() -> None:
    same = RemoteFile("a.json", 2, sha256="1" * 64)
    moved = RemoteFile("b.json", 2, sha256="2" * 64)
    new = RemoteFile("c.json", 2, sha256="3" * 64)
    locked = {"a.json": {"size": 2, "sha256": "1" * 64}, "b.json": {"size": 2, "sha256": "0" * 64}}
    assert stale_paths(locked, (same, moved, new)) == {"b.json", "c.json"}
    assert stale_paths(None, (same, moved)) == {"a.json", "b.json"}


def _model(name: str, fetch: int, change: Change = Change.UPDATE) -> Action:
    files = (RemoteFile(f"{name}.safetensors", fetch),) if fetch else ()
    return Action("model", name, change, "why", fetch, files)


def test_the_disk_counts_only_the_bytes_the_plan_fetches() -> None:
    plan = Plan(
        (
            _model("hub", 700),  # hf:// or ms://: the files still to download
            _model("local", 200),  # file://: copied into models_dir, so it counts too
            _model("present", 0, Change.NOOP),
            Action("model", "pulled", Change.CREATE, "pull qwen3:0.6b"),  # ollama://: the server's disk
            Action("deployment", "chat", Change.CREATE, "new container"),
        )
    )
    assert plan.disk_bytes == 900
    fits = disk_finding(plan, 10_000, Path("/models"))
    assert fits is not None and fits.level is Level.OK
    short = disk_finding(plan, 899, Path("/models"))
    assert short is not None and short.level is Level.FAIL and "900 B to download" in short.message


def test_no_disk_check_when_nothing_is_fetched() -> None:
    plan = Plan((_model("present", 0, Change.NOOP), Action("model", "pulled", Change.UPDATE, "re-pull")))
    assert plan.disk_bytes == 0
    assert disk_finding(plan, 0, Path("/models")) is None
