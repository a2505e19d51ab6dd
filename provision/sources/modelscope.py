"""``ms://owner/name``: one listing over plain HTTP, bytes through the shared downloader.

Protocol served (the legacy ``/api/v1`` surface the modelscope SDK itself uses)::

    GET {E}/api/v1/models/{owner}/{name}/repo/files?Revision={rev}&Recursive=True
        -> {"Code": 200, "Success": true,
            "Data": {"Files": [{"Path", "Type": "blob"|"tree", "Size", "Sha256", ...}]}}
    GET {E}/api/v1/models/{owner}/{name}/repo?Revision={rev}&FilePath={path}
        -> the bytes (often a redirect to a CDN); Range requests resume
    GET {E}/api/v1/models/{owner}/{name}
        -> only after a 404, to tell an unknown repo from an unknown revision

The SDK is not used: importing it costs seconds, it probes the public site for a region
when no endpoint is set, writes lock files under ``$MODELSCOPE_CACHE`` and would write a
``../`` path from a hostile listing; here every listed field passes ``provision.listing`` before
anything is written. Auth is the access token as ``Authorization: Bearer`` and as the
``m_session_id`` cookie (older endpoints read only the cookie), on hub requests only.

The resolved revision: ModelScope has no snapshot commit to pin. Its per-file ``Revision`` /
``CommitId`` fields are the last commit touching each file (the old SDK keys its cache on
``(Path, Revision)``), and downloads take a branch or tag name, not a commit. So the lock
pins a content fingerprint, ``ms-`` + sha256 over the sorted ``(path, size, sha256)`` of the
chosen files: a moved branch that changes any chosen file changes it (seen on ``--update``);
a change to files outside ``include`` does not. Bytes are always fetched by the branch name,
so a branch that moved after locking shows up as a sha256 mismatch, never as a wrong file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, quote_plus, urlencode

from ..credentials import clean_token
from ..download import ApiResponse, Downloader
from ..errors import (
    GatedRepoError,
    IntegrityError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SourceError,
)
from ..files import RemoteFile, Snapshot, plural, select_files
from ..hosts import DEFAULT_CONNECTIONS_PER_HOST
from ..listing import MalformedListingError, checked_digest, checked_path, checked_size, shown
from ..manifest import ModelScopeSettings, ModelSpec
from ..retry import RetryPolicy

DEFAULT_ENDPOINT = "https://www.modelscope.cn"
# The hub silently truncates a recursive listing at this many entries (modelscope-hub's
# REPO_FILES_TRUNCATION_LIMIT); a listing that long may be incomplete.
LISTING_CAP = 3000
_AUTH_HINT = "a private model needs a token: set modelscope.token: ${MODELSCOPE_API_TOKEN} (or export it)"


class ModelScopeSource:
    scheme: ClassVar[str] = "ms"
    default_revision: ClassVar[str] = "master"

    def __init__(
        self,
        settings: ModelScopeSettings,
        *,
        max_connections: int = 8,
        attempts: int = 3,
        connections_per_host: int = DEFAULT_CONNECTIONS_PER_HOST,
    ) -> None:
        self.endpoint = (settings.endpoint or os.environ.get("MODELSCOPE_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        token = clean_token(
            settings.token.get_secret_value() if settings.token else os.environ.get("MODELSCOPE_API_TOKEN")
        )
        auth = {"Authorization": f"Bearer {token}", "Cookie": f"m_session_id={token}"} if token else {}
        self._downloader = Downloader(
            headers=auth,
            max_connections=max_connections,
            connections_per_host=connections_per_host,
            retry=RetryPolicy(attempts=attempts),
        )

    def close(self) -> None:
        self._downloader.close()

    def resolve(self, name: str, spec: ModelSpec) -> Snapshot:
        repo = spec.location
        revision = spec.revision or self.default_revision
        files = [
            self._remote_file(name, spec, revision, entry)
            for entry in self._list(name, repo, revision)
            if entry.get("Type", "blob") != "tree"
        ]
        chosen = select_files(files, spec.include, spec.exclude)
        if not chosen:
            raise SourceError(
                f"nothing would be downloaded: no file of {repo}@{revision} matches include/exclude "
                f"({plural(len(files), 'file')} listed)",
                resource=name,
                hint="fix `include:` / `exclude:`",
            )
        return Snapshot(spec.source, revision, fingerprint(chosen), tuple(chosen))

    def file_url(self, spec: ModelSpec, resolved: str, path: str) -> str:
        # ``resolved`` is a content fingerprint, not something the hub serves: fetch by name.
        revision = spec.revision or self.default_revision
        return (
            f"{self.endpoint}/api/v1/models/{_repo_path(spec.location)}/repo"
            f"?Revision={quote_plus(revision)}&FilePath={quote_plus(path)}"
        )

    def fetch(self, name: str, file: RemoteFile, model_dir: Path, *, on_progress: Callable[[int], None]) -> str:
        try:
            return self._downloader.fetch(file, model_dir, resource=name, on_progress=on_progress)
        except IntegrityError as exc:
            # Files are fetched by branch name, so a branch moved since the lock looks the same.
            raise IntegrityError(
                exc.message,
                resource=name,
                hint=(
                    "the hub or a proxy served altered bytes, or the branch moved since the lock was "
                    "written (then run `provision apply --update`)"
                ),
            ) from None

    def finalize(self, name: str, snapshot: Snapshot, model_dir: Path) -> None:
        """Nothing to write: the SDK re-hashes a ``local_dir`` instead of reading bookkeeping."""

    # -- listing ---------------------------------------------------------------------------
    def _list(self, name: str, repo: str, revision: str) -> list[dict[str, Any]]:
        query = urlencode({"Revision": revision, "Recursive": "True"})
        response = self._get(name, f"{self.endpoint}/api/v1/models/{_repo_path(repo)}/repo/files?{query}")
        if response.status == 404:
            info = self._get(name, f"{self.endpoint}/api/v1/models/{_repo_path(repo)}")
            if info.status == 200:
                raise RevisionNotFoundError(
                    f"revision {revision!r} not found in {repo} on {self.endpoint}", resource=name
                )
            raise RepositoryNotFoundError(
                f"repository {repo} not found on {self.endpoint} (or it is private)",
                resource=name,
                hint=f"check the repository id in `source:`; {_AUTH_HINT}",
            )
        if response.status in (401, 403):
            raise GatedRepoError(
                f"{repo}@{revision} on {self.endpoint}: access denied (HTTP {response.status})",
                resource=name,
                hint=_AUTH_HINT,
            )
        body = _json(response)
        if response.status != 200 or body.get("Success") is False or body.get("Code", 200) not in (200, "200"):
            message = str(body.get("Message") or "")[:200]
            raise SourceError(
                f"{repo}@{revision}: HTTP {response.status} from {self.endpoint} {message}".rstrip(),
                resource=name,
                hint="retry later; if it persists, check the endpoint",
            )
        data = body.get("Data")
        files = data.get("Files") if isinstance(data, dict) else data
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise MalformedListingError(
                f"{repo}@{revision}: malformed file listing from {self.endpoint}", resource=name
            )
        if len(files) >= LISTING_CAP:
            raise SourceError(
                f"{repo}@{revision}: the hub listed {len(files)} entries, its truncation limit",
                resource=name,
                hint="the listing may be incomplete; narrow the model with `include:`",
            )
        return files

    def _get(self, name: str, url: str) -> ApiResponse:
        """GET with bounded retries on 5xx/429 and dropped connections; refused is final."""
        return self._downloader.get_json(url, resource=name, endpoint=self.endpoint)

    def _remote_file(self, name: str, spec: ModelSpec, revision: str, entry: dict[str, Any]) -> RemoteFile:
        path = checked_path(entry.get("Path"), resource=name, field="Path")
        size = checked_size(entry.get("Size"), resource=name, field=f"Size of {shown(path)}")
        sha256 = checked_digest(entry.get("Sha256") or None, 64, resource=name, field=f"Sha256 of {shown(path)}")
        # A file listed without Sha256 is hashed while it streams and pinned in the lock then.
        return RemoteFile(path=path, size=size, sha256=sha256, url=self.file_url(spec, revision, path))


def fingerprint(files: list[RemoteFile]) -> str:
    """``ms-`` + sha256 of the sorted (path, size, sha256) lines: the snapshot's identity."""
    lines = "".join(f"{f.path}\0{f.size}\0{f.sha256 or ''}\n" for f in sorted(files, key=lambda f: f.path))
    return "ms-" + hashlib.sha256(lines.encode()).hexdigest()


def _repo_path(repo: str) -> str:
    owner, _, name = repo.partition("/")
    return f"{quote(owner, safe='')}/{quote(name, safe='')}"


def _json(response: ApiResponse) -> dict[str, Any]:
    body = response.json()
    if body is None:
        return {}
    return body if isinstance(body, dict) else {"Data": body}
