"""The fake Hugging Face Hub against the real, unpatched huggingface_hub client."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from tests.fakes.hf_hub import FakeCDN, FakeHFHub

REPO = "org/tiny"
TOKEN = "hf_secret"
FILES = {
    "config.json": b'{"model_type": "tiny"}',
    "model.safetensors": random.Random(1).randbytes(300_000),
    "tokenizer/vocab.json": b'{"a": 0}',
    "tokenizer/merges/big.bin": random.Random(2).randbytes(5_000),
}
SMALL = ("config.json", "tokenizer/vocab.json")  # under the 1 KiB LFS threshold


@pytest.fixture(autouse=True)
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the client's caches and token lookups in tmp_path, with plain HTTP (no Xet)."""
    home = tmp_path / "hf_home"
    for name in ("HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub reads these once, at import: set the variables and the constants both
    values = {
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture
def hub() -> Iterator[FakeHFHub]:
    with FakeHFHub() as server:
        yield server


def download(hub: FakeHFHub, dest: Path, *, revision: str = "main", token: str | bool = False) -> Path:
    return Path(snapshot_download(REPO, revision=revision, local_dir=dest, endpoint=hub.url, token=token))


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(root).parts
    }


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# -- downloads ----------------------------------------------------------------------------------


def test_snapshot_download_is_byte_identical_and_records_hub_digests(hub: FakeHFHub, tmp_path: Path) -> None:
    sha = hub.add_repo(REPO, FILES)
    out = download(hub, tmp_path / "out")
    assert read_tree(out) == FILES
    meta = (out / ".cache/huggingface/download/model.safetensors.metadata").read_text().splitlines()
    assert meta[:2] == [sha, hashlib.sha256(FILES["model.safetensors"]).hexdigest()]
    meta = (out / ".cache/huggingface/download/config.json.metadata").read_text().splitlines()
    assert meta[:2] == [sha, git_blob_sha1(FILES["config.json"])]
    assert hub.file_gets() == len(FILES)
    assert hub.bytes_served == sum(map(len, FILES.values()))


def test_shas_are_the_ones_git_computes(tmp_path: Path) -> None:
    assert shutil.which("git"), "git is needed to check the fake's shas against real git"
    with FakeHFHub() as hub:
        sha = hub.add_repo(REPO, FILES, lfs_threshold=1 << 30)  # no LFS: git stores the content
        trees = hub.repos[REPO].commits[sha].trees
    work = tmp_path / "git"
    for name, data in FILES.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)
    who = {"NAME": "Fake Hub", "EMAIL": "fake@hub.local", "DATE": "@0 +0000"}
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    env |= {f"GIT_{role}_{k}": v for role in ("AUTHOR", "COMMITTER") for k, v in who.items()}

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=work, env=env, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", f"Upload {REPO}")
    assert git("rev-parse", "HEAD").strip() == sha
    assert git("rev-parse", "HEAD:tokenizer").strip() == trees["tokenizer"]


def test_branch_moves_while_old_commit_and_tag_stay_downloadable(hub: FakeHFHub, tmp_path: Path) -> None:
    old = hub.add_repo(REPO, FILES)
    hub.tag(REPO, "v1", old)
    new = hub.add_commit(REPO, {"config.json": b'{"model_type": "tiny2"}'}, delete=("tokenizer/vocab.json",))
    api = HfApi(endpoint=hub.url, token=False)
    assert api.model_info(REPO).sha == new
    assert api.model_info(REPO, revision="v1").sha == old
    release = hub.add_commit(REPO, {"README.md": b"# tiny"}, branch="release/v1")  # sent as release%2Fv1
    assert api.model_info(REPO, revision="release/v1").sha == release != new

    latest = read_tree(download(hub, tmp_path / "new"))
    assert latest["config.json"] == b'{"model_type": "tiny2"}' and "tokenizer/vocab.json" not in latest
    assert read_tree(download(hub, tmp_path / "v1", revision="v1")) == FILES
    assert read_tree(download(hub, tmp_path / "sha", revision=old)) == FILES


def test_model_info_lists_siblings_and_lfs_metadata(hub: FakeHFHub) -> None:
    sha = hub.add_repo(REPO, FILES)
    info = HfApi(endpoint=hub.url, token=False).model_info(REPO, revision="main", files_metadata=True)
    assert info.id == REPO and info.sha == sha
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == set(FILES)
    lfs = siblings["model.safetensors"].lfs
    assert lfs is not None and lfs.sha256 == hashlib.sha256(FILES["model.safetensors"]).hexdigest()
    assert siblings["config.json"].lfs is None


def test_list_repo_tree_follows_pagination(hub: FakeHFHub) -> None:
    sha = hub.add_repo(REPO, FILES)
    hub.page_size = 2
    entries = list(HfApi(endpoint=hub.url, token=False).list_repo_tree(REPO, revision=sha, recursive=True))
    files = {e.path: e for e in entries if isinstance(e, RepoFile)}
    folders = {e.path for e in entries if isinstance(e, RepoFolder)}
    assert set(files) == set(FILES) and folders == {"tokenizer", "tokenizer/merges"}
    assert hub.count("GET", f"/api/models/{REPO}/tree/") == 3  # 6 entries, 2 a page
    assert files["config.json"].blob_id == git_blob_sha1(FILES["config.json"])
    assert files["config.json"].lfs is None
    big = files["tokenizer/merges/big.bin"]
    assert big.size == 5_000 and big.lfs is not None
    assert big.lfs.sha256 == hashlib.sha256(FILES["tokenizer/merges/big.bin"]).hexdigest()


def test_list_repo_tree_of_a_folder(hub: FakeHFHub) -> None:
    hub.add_repo(REPO, FILES)
    api = HfApi(endpoint=hub.url, token=False)
    assert {e.path for e in api.list_repo_tree(REPO, "tokenizer")} == {"tokenizer/vocab.json", "tokenizer/merges"}
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree(REPO, "nope"))
    for flag in ("1", "True"):  # spellings other clients send
        assert len(httpx.get(f"{hub.url}/api/models/{REPO}/tree/main?recursive={flag}").json()) == 6


# -- errors -------------------------------------------------------------------------------------


def test_missing_repo_revision_and_file_raise_the_clients_errors(hub: FakeHFHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, FILES)
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("org/absent", local_dir=tmp_path / "a", endpoint=hub.url, token=False)
    with pytest.raises(RevisionNotFoundError):
        download(hub, tmp_path / "b", revision="no-such-branch")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "absent.json", local_dir=tmp_path / "c", endpoint=hub.url, token=False)


def test_gated_repo_needs_an_accepted_token(hub: FakeHFHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, FILES, gated=True)
    hub.tokens = {TOKEN}
    with pytest.raises(GatedRepoError) as no_token:
        download(hub, tmp_path / "a")
    assert no_token.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as wrong_token:
        download(hub, tmp_path / "b", token="hf_wrong")
    assert wrong_token.value.response.status_code == 403
    assert read_tree(download(hub, tmp_path / "c", token=TOKEN)) == FILES


# -- redirects to a CDN ---------------------------------------------------------------------------


def test_lfs_files_come_from_the_cdn_without_the_token(hub: FakeHFHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, FILES, gated=True)
    hub.tokens = {TOKEN}
    with FakeCDN() as cdn:
        hub.redirect_to(cdn)
        assert read_tree(download(hub, tmp_path / "out", token=TOKEN)) == FILES
        assert cdn.file_gets() == 2
        assert cdn.authorizations() == []
    assert hub.file_gets() == len(SMALL)  # LFS GETs went straight to the HEAD's Location
    assert hub.bytes_served == sum(len(FILES[p]) for p in SMALL)
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests)


def test_cdn_refuses_a_url_without_its_signature(hub: FakeHFHub) -> None:
    hub.add_repo(REPO, FILES)
    with FakeCDN() as cdn:
        hub.redirect_to(cdn)
        redirect = httpx.get(f"{hub.url}/{REPO}/resolve/main/model.safetensors")
        assert redirect.status_code == 302
        assert redirect.headers["x-linked-size"] == str(len(FILES["model.safetensors"]))
        signed = redirect.headers["location"]
        assert httpx.get(signed, headers={"Range": "bytes=10-19"}).content == FILES["model.safetensors"][10:20]
        assert httpx.get(signed.partition("?")[0]).status_code == 403


# -- ranges and headers ---------------------------------------------------------------------------


def test_range_requests(hub: FakeHFHub) -> None:
    hub.add_repo(REPO, FILES)
    url = f"{hub.url}/{REPO}/resolve/main/model.safetensors"
    body = FILES["model.safetensors"]
    part = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == body[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(body)}"
    assert httpx.get(url, headers={"Range": "bytes=299990-"}).content == body[299_990:]
    assert httpx.get(url, headers={"Range": "bytes=-5"}).content == body[-5:]
    assert httpx.get(url, headers={"Range": f"bytes={len(body)}-"}).status_code == 416


def test_head_carries_what_the_client_reads(hub: FakeHFHub) -> None:
    sha = hub.add_repo(REPO, FILES)
    head = httpx.head(f"{hub.url}/{REPO}/resolve/main/model.safetensors")
    digest = hashlib.sha256(FILES["model.safetensors"]).hexdigest()
    assert head.status_code == 200 and head.content == b""
    assert head.headers["x-repo-commit"] == sha
    assert head.headers["etag"] == head.headers["x-linked-etag"] == f'"{digest}"'
    assert head.headers["content-length"] == head.headers["x-linked-size"] == "300000"
    assert head.headers["accept-ranges"] == "bytes"
    small = httpx.head(f"{hub.url}/{REPO}/resolve/{sha}/config.json")
    assert small.headers["etag"] == f'"{git_blob_sha1(FILES["config.json"])}"' and "x-linked-etag" not in small.headers


# -- faults ---------------------------------------------------------------------------------------


def test_dropped_connection_is_resumed_by_the_client(
    hub: FakeHFHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the client resumes from its last whole read chunk (10 MiB in 2.4.0): make chunks small
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    hub.add_repo(REPO, {"model.safetensors": FILES["model.safetensors"]})
    hub.faults.drop_after_bytes, hub.faults.drop_times = 100_000, 1
    assert read_tree(download(hub, tmp_path / "out")) == {"model.safetensors": FILES["model.safetensors"]}
    assert hub.file_gets() == 2
    assert hub.requests[-1].headers["range"] == "bytes=65536-"
    assert hub.bytes_served == 100_000 + 300_000 - 65536  # the retry fetched only the rest


def test_corrupt_body_keeps_length_and_headers(hub: FakeHFHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, FILES)
    hub.faults.corrupt = {"model.safetensors"}
    got = read_tree(download(hub, tmp_path / "out"))["model.safetensors"]  # 2.4.0 does not check sha256
    want = FILES["model.safetensors"]
    assert len(got) == len(want) and sum(a != b for a, b in zip(got, want, strict=True)) == 1
    flipped = httpx.get(f"{hub.url}/{REPO}/resolve/main/model.safetensors", headers={"Range": "bytes=149999-150000"})
    assert flipped.content == want[149_999:150_000] + bytes([want[150_000] ^ 0xFF])  # same byte in any range


def test_status_faults_are_used_up(hub: FakeHFHub) -> None:
    hub.add_repo(REPO, FILES)
    url = f"{hub.url}/{REPO}/resolve/main/config.json"
    hub.faults.retry_after = {"count": 1, "seconds": 7}
    hub.faults.status_5xx = {"count": 1, "status": 502}
    first, second, third = httpx.get(url), httpx.get(url), httpx.get(url)
    assert (first.status_code, first.headers["retry-after"]) == (429, "7")
    assert second.status_code == 502
    assert third.status_code == 200 and third.content == FILES["config.json"]


def test_client_retries_after_429_but_not_after_503(hub: FakeHFHub, tmp_path: Path) -> None:
    hub.add_repo(REPO, {"config.json": FILES["config.json"]})
    hub.faults.retry_after = {"count": 1, "seconds": 0}
    assert read_tree(download(hub, tmp_path / "a")) == {"config.json": FILES["config.json"]}
    hub.faults.status_5xx = {"count": 1, "status": 503}
    with pytest.raises(HfHubHTTPError):
        download(hub, tmp_path / "b")


def test_throttle_stall_and_reset(hub: FakeHFHub) -> None:
    hub.add_repo(REPO, FILES)
    url = f"{hub.url}/{REPO}/resolve/main/model.safetensors"
    hub.faults.throttle_bps = 1_000_000
    began = time.monotonic()
    assert httpx.get(url).content == FILES["model.safetensors"]
    assert time.monotonic() - began >= 0.25  # 300 kB at 1 MB/s: a floor, never flaky
    hub.faults.stall_seconds = 2
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(url, timeout=httpx.Timeout(5, read=0.3))
    hub.faults.reset()
    assert hub.faults.throttle_bps is None and hub.faults.stall_seconds == 0


# -- command line ---------------------------------------------------------------------------------


def test_cli_serves_a_folder_from_disk(tmp_path: Path) -> None:
    root = tmp_path / "model"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.hf_hub", "--root", str(root), "--repo", REPO],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        out = snapshot_download(REPO, local_dir=tmp_path / "out", endpoint=url, token=False)
        assert read_tree(Path(out)) == FILES
    finally:
        proc.kill()
        proc.wait()
