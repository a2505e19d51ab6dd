"""The real, unpatched ``modelscope`` SDK against ``FakeModelScopeHub``.

These pin down both the fake (it must look like ModelScope to the SDK) and the SDK behaviour
that ``provision`` relies on: which requests a snapshot costs, which exception each failure
surfaces as, and what the SDK does *not* check.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import modelscope
import pytest
import requests
from modelscope.hub.api import HubApi
from modelscope_hub.errors import (
    AuthenticationError,
    FileDownloadError,
    FileIntegrityError,
    NotExistError,
)

from tests.fakes.modelscope_hub import (
    ESCAPE_BODY,
    REGION_PROBE_PATH,
    FakeModelScopeHub,
    Faults,
)

REPO = "acme/tiny"
FILES = {
    "config.json": b'{"model_type": "llama"}\n',
    "weights/model.safetensors": os.urandom(3 * 1024 * 1024 + 17),  # spans several 1 MiB chunks
}
LISTING = f"/api/v1/models/{REPO}/repo/files"


@pytest.fixture(autouse=True)
def _isolated_sdk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))  # the SDK writes credentials/session here
    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    monkeypatch.delenv("MODELSCOPE_ENDPOINT", raising=False)


@pytest.fixture
def hub() -> Iterator[FakeModelScopeHub]:
    with FakeModelScopeHub() as server:
        server.add_repo(REPO, FILES)
        yield server


def download(hub: FakeModelScopeHub, dest: Path, repo: str = REPO, **kwargs: object) -> Path:
    return Path(modelscope.snapshot_download(repo, local_dir=str(dest), endpoint=hub.url, **kwargs))


def assert_same_files(dest: Path, files: dict[str, bytes]) -> None:
    on_disk = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert on_disk == set(files)
    for path, body in files.items():
        assert (dest / path).read_bytes() == body, path


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("redirect", [False, True], ids=["direct", "cdn-redirect"])
def test_snapshot_is_byte_identical_and_second_call_only_lists(tmp_path: Path, redirect: bool) -> None:
    with FakeModelScopeHub(redirect=redirect) as hub:
        hub.add_repo(REPO, FILES)
        dest = tmp_path / "model"

        assert download(hub, dest) == dest
        assert_same_files(dest, FILES)
        assert hub.count("GET", LISTING) == 1
        assert hub.count("GET", REGION_PROBE_PATH) == 1
        assert hub.file_gets() == len(FILES)
        # The server counts a body after its last write returns, which can be after the client
        # has read it all: give the counter a moment to settle.
        assert eventually(lambda: hub.bytes_served == sum(map(len, FILES.values())))
        if hub.cdn is not None:
            assert hub.cdn.count("GET", "/objects/") == len(FILES)
            assert {r.status for r in hub.requests if r.path.startswith(f"/api/v1/models/{REPO}/repo?")} == {302}

        first = len(hub.requests)
        download(hub, dest)
        # A no-op call lists once and re-hashes the local files; it probes no region and fetches nothing.
        assert [r.path.split("?")[0] for r in hub.requests[first:]] == [LISTING]


def test_tag_revision_downloads_that_revision(hub: FakeModelScopeHub, tmp_path: Path) -> None:
    tagged = {"config.json": b'{"model_type": "qwen"}\n'}
    hub.add_revision(REPO, "v1.0", tagged)

    download(hub, tmp_path / "v1", revision="v1.0")

    assert_same_files(tmp_path / "v1", tagged)
    assert hub.count("GET", f"{LISTING}?Revision=v1.0") == 1


def test_allow_pattern_lists_only_its_folder(hub: FakeModelScopeHub, tmp_path: Path) -> None:
    download(hub, tmp_path / "weights", allow_patterns=["weights/*"])
    download(hub, tmp_path / "none", allow_patterns=["no-such-folder/*"])

    assert_same_files(tmp_path / "weights", {"weights/model.safetensors": FILES["weights/model.safetensors"]})
    assert hub.count("GET", f"{LISTING}?Revision=master&Recursive=True&Root=weights") == 1
    # A missing folder is no error, but the SDK asks for the model info to tell it from a missing repo.
    assert [r.status for r in hub.requests if r.path == f"/api/v1/models/{REPO}"] == [200]
    assert hub.file_gets() == 1


def test_sdk_reads_branches_and_tags(hub: FakeModelScopeHub) -> None:
    hub.add_revision(REPO, "v1.0", {"config.json": b"{}"})

    branches, tags = HubApi(endpoint=hub.url).get_model_branches_and_tags(REPO)

    assert (branches, tags) == (["master"], ["v1.0"])


def test_corrupt_body_fails_the_sdk_hash_check(hub: FakeModelScopeHub, tmp_path: Path) -> None:
    hub.faults.corrupt.add("config.json")

    with pytest.raises(FileDownloadError) as caught:
        download(hub, tmp_path / "model")

    assert isinstance(caught.value.failed_files["config.json"], FileIntegrityError)
    assert not (tmp_path / "model" / "config.json").exists()
    assert (tmp_path / "model" / "weights/model.safetensors").read_bytes() == FILES["weights/model.safetensors"]
    assert hub.count("GET", f"/api/v1/models/{REPO}/repo?Revision=master&FilePath=config.json") == 3


@pytest.mark.parametrize(("repo", "revision"), [("acme/missing", None), (REPO, "no-such-tag")])
def test_unknown_repo_or_revision_raises_http_error_from_not_exist(
    hub: FakeModelScopeHub, tmp_path: Path, repo: str, revision: str | None
) -> None:
    # The compat layer re-raises NotExistError as requests' HTTPError, keeping the original as the cause.
    with pytest.raises(requests.HTTPError) as caught:
        download(hub, tmp_path / "model", repo=repo, revision=revision)

    assert isinstance(caught.value.__cause__, NotExistError)
    assert hub.file_gets() == 0


def test_private_repo_needs_the_token(hub: FakeModelScopeHub, tmp_path: Path) -> None:
    hub.add_repo("acme/secret", FILES, token="s3cret")

    with pytest.raises(requests.HTTPError) as caught:
        download(hub, tmp_path / "anon", repo="acme/secret")
    assert isinstance(caught.value.__cause__, AuthenticationError)

    download(hub, tmp_path / "authed", repo="acme/secret", token="s3cret")
    assert_same_files(tmp_path / "authed", FILES)
    listing = [r for r in hub.requests if r.path.startswith("/api/v1/models/acme/secret/repo/files")][-1]
    assert listing.headers["authorization"] == "Bearer s3cret"
    assert "m_session_id=s3cret" in listing.headers["cookie"]


def test_dropped_connection_is_resumed_with_a_range_request(hub: FakeModelScopeHub, tmp_path: Path) -> None:
    hub.faults.drop_after_bytes = 1_500_000

    download(hub, tmp_path / "model", max_workers=1)

    assert_same_files(tmp_path / "model", FILES)
    ranged = [r for r in hub.requests if "range" in r.headers]
    assert [(r.headers["range"], r.status) for r in ranged] == [("bytes=1500000-", 206)]


def test_5xx_answers_are_retried(hub: FakeModelScopeHub, tmp_path: Path) -> None:
    hub.faults.status_5xx = 1

    download(hub, tmp_path / "model", max_workers=1)

    assert_same_files(tmp_path / "model", FILES)
    assert hub.file_gets() == len(FILES) + 1
    assert hub.faults.status_5xx == 0


def test_throttle_paces_the_body(tmp_path: Path) -> None:
    with FakeModelScopeHub(faults=Faults(throttle_bps=400_000)) as hub:
        hub.add_repo(REPO, {"blob.bin": bytes(200_000)})
        began = time.monotonic()
        download(hub, tmp_path / "model")
        assert time.monotonic() - began > 0.3  # 0.5 s at the set rate


def test_sdk_writes_an_escaping_listing_path_outside_local_dir(hub: FakeModelScopeHub, tmp_path: Path) -> None:
    # Verified fact about modelscope-hub 0.5.1: it joins listed paths onto local_dir unchecked,
    # so provision has to vet the listing itself before trusting the SDK with it.
    hub.faults.escape_path = True
    dest = tmp_path / "models" / "tiny"

    download(hub, dest)

    assert (tmp_path / "models" / "evil.txt").read_bytes() == ESCAPE_BODY


def test_range_requests_answer_206_or_416(hub: FakeModelScopeHub) -> None:
    url = f"{hub.url}/api/v1/models/{REPO}/repo?Revision=master&FilePath=config.json"
    body = FILES["config.json"]

    part = requests.get(url, headers={"Range": "bytes=2-5"}, timeout=5)
    beyond = requests.get(url, headers={"Range": f"bytes={len(body)}-"}, timeout=5)

    assert (part.status_code, part.content, part.headers["Content-Range"]) == (206, body[2:6], f"bytes 2-5/{len(body)}")
    assert (beyond.status_code, beyond.headers["Content-Range"]) == (416, f"bytes */{len(body)}")


def test_listing_carries_sha256_and_tree_entries(hub: FakeModelScopeHub) -> None:
    answer = requests.get(f"{hub.url}{LISTING}", params={"Revision": "master", "Recursive": "True"}, timeout=5).json()

    assert (answer["Code"], answer["Success"]) == (200, True)
    entries = {e["Path"]: e for e in answer["Data"]["Files"]}
    assert entries["weights"]["Type"] == "tree"
    weights = entries["weights/model.safetensors"]
    body = FILES["weights/model.safetensors"]
    assert (weights["Type"], weights["Name"], weights["Size"]) == ("blob", "model.safetensors", len(body))
    assert weights["Sha256"] == hashlib.sha256(body).hexdigest()


def test_cli_serves_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "weights").mkdir(parents=True)
    for path, body in FILES.items():
        (root / path).write_bytes(body)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.modelscope_hub", "--root", str(root), "--repo", REPO],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        modelscope.snapshot_download(REPO, local_dir=str(tmp_path / "model"), endpoint=url)
        assert_same_files(tmp_path / "model", FILES)
    finally:
        proc.kill()
        proc.wait(timeout=10)
