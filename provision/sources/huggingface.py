"""``hf://org/name``: the Hub's HTTP API for the listing, our downloader for the bytes.

Two API calls resolve a model, on the same keep-alive connections as the downloads:
``GET {E}/api/models/{repo}/revision/{rev}`` (skipped for a full commit) for the commit, and
``GET {E}/api/models/{repo}/tree/{commit}?recursive=true&expand=false`` (paginated by
``Link: <...>; rel="next"``) for paths, sizes, git blob sha1s and LFS sha256s. Errors are
keyed on ``X-Error-Code`` as huggingface_hub keys them. Doing this ourselves rather than
through ``HfApi`` saves its 0.3–0.45 s import (huggingface_hub 2.x + httpx2) on every apply
that resolves; huggingface_hub itself is used in the tests to prove the folders compatible.

After placing files it writes huggingface_hub's own ``local_dir`` bookkeeping so that
``hf download --local-dir`` into the same folder later sees them as up to date::

    <model>/.cache/huggingface/download/<path>.metadata   commit sha / etag / timestamp
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from ..credentials import clean_token
from ..download import ApiResponse, Downloader
from ..errors import (
    GatedRepoError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SourceError,
)
from ..files import RemoteFile, Snapshot, is_full_commit, plural, select_files
from ..hosts import DEFAULT_CONNECTIONS_PER_HOST
from ..listing import MalformedListingError, Pagination, checked_digest, checked_path, checked_size, shown
from ..manifest import HuggingFaceSettings, ModelSpec

DEFAULT_ENDPOINT = "https://huggingface.co"


def implicit_token() -> str | None:
    """The token huggingface_hub would send with no token given (see :func:`implicit_token_source`)."""
    found = implicit_token_source()
    return found[1] if found else None


def implicit_token_source() -> tuple[str, str] | None:
    """(where it came from, token) for the token huggingface_hub would send with no token given:
    ``$HF_TOKEN`` (or the older ``$HUGGING_FACE_HUB_TOKEN``), else the file ``hf auth login``
    writes (``$HF_TOKEN_PATH``, else ``$HF_HOME/token``, else ``~/.cache/huggingface/token``);
    none if ``HF_HUB_DISABLE_IMPLICIT_TOKEN``.

    Not followed: OIDC exchange and OAuth refresh (CI and browser logins; set HF_TOKEN there).
    """
    if os.environ.get("HF_HUB_DISABLE_IMPLICIT_TOKEN", "").lower() in ("1", "true", "yes", "on"):
        return None
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        token = clean_token(os.environ.get(variable))
        if token:
            return f"${variable}", token
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(cache, "huggingface")
    path = Path(os.path.expandvars(os.path.expanduser(os.environ.get("HF_TOKEN_PATH") or f"{home}/token")))
    try:
        token = clean_token(path.read_text(encoding="utf-8"))
    except OSError:  # not logged in (or the file is unreadable): no token, as huggingface_hub
        return None
    return (f"the file {path} (`hf auth login`)", token) if token else None


class HuggingFaceSource:
    scheme: ClassVar[str] = "hf"
    default_revision: ClassVar[str] = "main"

    def __init__(
        self,
        settings: HuggingFaceSettings,
        *,
        max_connections: int = 8,
        connections_per_host: int = DEFAULT_CONNECTIONS_PER_HOST,
    ) -> None:
        # huggingface_hub reads HF_ENDPOINT once at import; we pass the endpoint explicitly.
        self.endpoint = (settings.endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self._token = clean_token(settings.token.get_secret_value()) if settings.token else implicit_token()
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        self._downloader = Downloader(
            headers=headers, max_connections=max_connections, connections_per_host=connections_per_host
        )

    def close(self) -> None:
        self._downloader.close()

    def resolve(self, name: str, spec: ModelSpec) -> Snapshot:
        repo = spec.location
        revision = spec.revision or self.default_revision
        commit = revision if is_full_commit(revision) else self._commit(name, repo, revision)
        entries = self._tree(name, repo, revision, commit)
        files = [self._remote_file(name, spec, commit, entry) for entry in entries if entry.get("type") == "file"]
        chosen = select_files(files, spec.include, spec.exclude)
        if not chosen:
            raise SourceError(
                f"no file of {repo}@{revision} matches include/exclude ({plural(len(files), 'file')} listed)",
                resource=name,
                hint="fix `include:` / `exclude:`; nothing would be downloaded",
            )
        return Snapshot(spec.source, revision, commit, tuple(chosen))

    def _remote_file(self, name: str, spec: ModelSpec, commit: str, entry: dict[str, Any]) -> RemoteFile:
        """One tree entry, every field checked (the listing is untrusted; see provision.listing)."""
        path = checked_path(entry.get("path"), resource=name)
        lfs = entry.get("lfs")
        if lfs is not None and not isinstance(lfs, dict):
            raise MalformedListingError(
                f"listing field lfs of {shown(path)} = {shown(lfs)}: not an object", resource=name
            )
        return RemoteFile(
            path=path,
            size=checked_size(entry.get("size"), resource=name, field=f"size of {shown(path)}"),
            sha256=checked_digest((lfs or {}).get("oid"), 64, resource=name, field=f"lfs.oid of {shown(path)}"),
            git_sha1=checked_digest(entry.get("oid"), 40, resource=name, field=f"oid of {shown(path)}"),
            url=self.file_url(spec, commit, path),
        )

    def _commit(self, name: str, repo: str, revision: str) -> str:
        url = f"{self.endpoint}/api/models/{repo}/revision/{quote(revision, safe='')}"
        data = self._api(name, url, repo, revision).json()
        sha = data.get("sha") if isinstance(data, dict) else None
        if not (isinstance(sha, str) and is_full_commit(sha)):
            raise SourceError(f"the hub did not return a commit for {repo}@{revision}", resource=name)
        return sha

    def _tree(self, name: str, repo: str, revision: str, commit: str) -> list[dict[str, Any]]:
        url: str | None = f"{self.endpoint}/api/models/{repo}/tree/{commit}?recursive=true&expand=false"
        entries: list[dict[str, Any]] = []
        pages = Pagination(url or "", resource=name)
        while url:
            response = self._api(name, url, repo, revision, credentials=pages.credentials(url))
            page = response.json()
            if not isinstance(page, list) or not all(isinstance(e, dict) and "path" in e for e in page):
                raise MalformedListingError(
                    f"{repo}@{revision}: malformed tree listing from {self.endpoint}", resource=name
                )
            entries += page
            url = pages.next(response.headers.get("link", ""), url)
        return entries

    def _api(self, name: str, url: str, repo: str, revision: str, *, credentials: bool = True) -> ApiResponse:
        """GET an API document; hub errors become provision errors keyed on X-Error-Code."""
        response = self._downloader.get_json(url, resource=name, endpoint=self.endpoint, credentials=credentials)
        if response.status == 200:
            return response
        code = response.headers.get("x-error-code", "")
        where = f"{repo}@{revision} on {self.endpoint}"
        if code == "GatedRepo" or (response.status == 403 and code != "RepoNotFound"):
            raise GatedRepoError(f"{where} is gated: access denied", resource=name)
        if code == "RepoNotFound" or response.status == 401:
            raise RepositoryNotFoundError(
                f"repository {repo} not found on {self.endpoint} (or it is private)", resource=name
            )
        if code == "RevisionNotFound" or response.status == 404:
            raise RevisionNotFoundError(f"revision {revision!r} not found in {repo}", resource=name)
        raise SourceError(
            f"{where}: HTTP {response.status} from the hub",
            resource=name,
            hint="retry later; if it persists, check the endpoint",
        )

    def file_url(self, spec: ModelSpec, resolved: str, path: str) -> str:
        return f"{self.endpoint}/{spec.location}/resolve/{resolved}/{quote(path)}"

    def fetch(self, name: str, file: RemoteFile, model_dir: Path, *, on_progress: Callable[[int], None]) -> str:
        return self._downloader.fetch(file, model_dir, resource=name, on_progress=on_progress)

    def finalize(self, name: str, snapshot: Snapshot, model_dir: Path) -> None:
        """Write huggingface_hub's ``local_dir`` metadata (commit, etag, timestamp) per file."""
        meta_root = model_dir / ".cache" / "huggingface" / "download"
        now = time.time()
        for file in snapshot.files:
            etag = file.sha256 or file.git_sha1 or ""
            meta = meta_root / f"{file.path}.metadata"
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text(f"{snapshot.resolved}\n{etag}\n{now}\n", encoding="utf-8")
        gitignore = model_dir / ".cache" / "huggingface" / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("*", encoding="utf-8")
