"""``plan_files`` and ``plan_orphans``: pure decisions from what is wanted and what a stat found."""

from __future__ import annotations

from provision.files import RemoteFile
from provision.plan import Action, Change, LocalFile, Plan, plan_files, plan_orphans

CONFIG = RemoteFile("config.json", 100)
WEIGHTS = RemoteFile("model.safetensors", 5000, sha256="ab" * 32)
TOKENIZER = RemoteFile("tokenizer.json", 300)
WANTED = (CONFIG, WEIGHTS, TOKENIZER)


def _local(*files: RemoteFile, sizes: dict[str, int] | None = None) -> dict[str, LocalFile]:
    sizes = sizes or {}
    return {f.path: LocalFile(f.path, sizes.get(f.path, f.size)) for f in files}


def _plan(
    local: dict[str, LocalFile], *, first_time: bool = False, reason: str = "", stale: frozenset[str] = frozenset()
) -> Action:
    return plan_files("m", wanted=WANTED, local=local, first_time=first_time, reason_if_changed=reason, stale=stale)


def test_first_time_creates_and_fetches_everything() -> None:
    action = _plan({}, first_time=True)
    assert (action.change, action.address) == (Change.CREATE, "model.m")
    assert action.files == WANTED
    assert action.download_bytes == 5400
    assert "3 files" in action.reason


def test_first_time_fetches_only_what_is_missing() -> None:
    # e.g. a killed first apply: the state has no record yet, but some files landed
    action = _plan(_local(CONFIG, WEIGHTS), first_time=True)
    assert action.change is Change.CREATE
    assert action.files == (TOKENIZER,)
    assert action.download_bytes == 300


def test_missing_file_is_an_update() -> None:
    action = _plan(_local(CONFIG, TOKENIZER))
    assert action.change is Change.UPDATE
    assert action.files == (WEIGHTS,)
    assert action.download_bytes == 5000
    assert "1 of 3 files" in action.reason


def test_missing_size_counts_as_missing() -> None:
    local = _local(CONFIG, TOKENIZER) | {WEIGHTS.path: LocalFile(WEIGHTS.path, None)}
    assert _plan(local).files == (WEIGHTS,)


def test_wrong_size_is_an_update() -> None:
    action = _plan(_local(*WANTED, sizes={WEIGHTS.path: 4096}))
    assert action.change is Change.UPDATE
    assert action.files == (WEIGHTS,)
    assert action.download_bytes == 5000  # the whole file: the planner does not know what is valid


def test_stale_file_of_the_same_size_is_fetched_again() -> None:
    action = _plan(_local(*WANTED), reason="revision moved abc -> def", stale=frozenset({CONFIG.path}))
    assert action.change is Change.UPDATE
    assert action.files == (CONFIG,)
    assert action.download_bytes == 100
    assert action.reason == "revision moved abc -> def"


def test_everything_present_is_a_noop() -> None:
    action = _plan(_local(*WANTED))
    assert action.change is Change.NOOP
    assert action.is_noop
    assert (action.files, action.download_bytes) == ((), 0)
    assert "3 files present" in action.reason


def test_moved_revision_with_nothing_to_fetch_is_an_update_of_zero_bytes() -> None:
    action = _plan(_local(*WANTED), reason="revision moved abc -> def")
    assert action.change is Change.UPDATE
    assert (action.files, action.download_bytes) == ((), 0)
    assert action.reason == "revision moved abc -> def"


def test_extra_local_files_do_not_matter() -> None:
    local = _local(*WANTED) | {"notes.txt": LocalFile("notes.txt", 7)}
    assert _plan(local).change is Change.NOOP


def test_orphans_are_deleted_in_name_order() -> None:
    actions = plan_orphans("model", {"zeta": {}, "alpha": {}, "kept": {}}, {"kept", "new"})
    assert [(a.kind, a.name, a.change) for a in actions] == [
        ("model", "alpha", Change.DELETE),
        ("model", "zeta", Change.DELETE),
    ]
    assert all(a.reason == "no longer in the manifest" for a in actions)


def test_no_orphans() -> None:
    assert plan_orphans("deployment", {"a": {}}, {"a"}) == ()


def test_plan_totals() -> None:
    plan = Plan(
        (
            Action("model", "a", Change.CREATE, "new", download_bytes=10),
            Action("model", "b", Change.UPDATE, "moved", download_bytes=5),
            Action("model", "c", Change.NOOP, "present"),
            Action("deployment", "d", Change.DELETE, "gone"),
        )
    )
    assert plan.counts() == {"create": 1, "update": 1, "replace": 0, "no change": 1, "delete": 1}
    assert plan.has_changes
    assert plan.download_bytes == 15


def test_plan_of_noops_has_no_changes() -> None:
    plan = Plan((Action("model", "a", Change.NOOP, "present"), Action("model", "b", Change.NOOP, "present")))
    assert not plan.has_changes
    assert plan.download_bytes == 0
    assert plan.counts()["no change"] == 2


def test_empty_plan() -> None:
    plan = Plan(())
    assert not plan.has_changes
    assert set(plan.counts().values()) == {0}


def test_every_file_here_but_not_in_the_lock_is_an_update_with_nothing_to_fetch() -> None:
    # an apply killed between placing the last file and writing the lock
    action = plan_files(
        "m", wanted=WANTED, local=_local(*WANTED), first_time=False, reason_if_changed="", in_lock=False
    )
    assert (action.change, action.files, action.download_bytes) == (Change.UPDATE, (), 0)
    assert "not in the lock" in action.reason
