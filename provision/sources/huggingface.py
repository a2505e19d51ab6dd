"""``hf://org/name``: listing and auth through huggingface_hub, bytes through our downloader.

huggingface_hub resolves the revision (``/api/models/{repo}/revision/{rev}``, skipped for a
full commit) and lists the tree with LFS sha256s; :class:`~provision.download.Downloader`
fetches ``{endpoint}/{repo}/resolve/{commit}/{path}`` with resume and verification.

After placing files it writes huggingface_hub's own ``local_dir`` bookkeeping so that
``hf download --local-dir`` into the same folder later sees them as up to date::

    <model>/.cache/huggingface/download/<path>.metadata   commit sha / etag / timestamp
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from ..download import Downloader
from ..errors import (
    GatedRepoError,
    HubUnreachableError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SourceError,
)
from ..files import RemoteFile, Snapshot, safe_relpath, select_files
from ..manifest import HuggingFaceSettings, ModelSpec
from .base import is_full_commit

DEFAULT_ENDPOINT = "https://huggingface.co"


class HuggingFaceSource:
    scheme = "hf"
    default_revision = "main"

    def __init__(self, settings: HuggingFaceSettings, *, max_connections: int = 8) -> None:
        # huggingface_hub reads HF_ENDPOINT once at import; we pass the endpoint explicitly.
        self.endpoint = (settings.endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        token = settings.token.get_secret_value() if settings.token else os.environ.get("HF_TOKEN")
        self._token = token or None
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        self._downloader = Downloader(headers=headers, max_connections=max_connections)

    def close(self) -> None:
        self._downloader.close()

    def resolve(self, name: str, spec: ModelSpec) -> Snapshot:
        from huggingface_hub import HfApi

        repo = spec.location
        revision = spec.revision or self.default_revision
        # token=False: never fall back to a token saved by `hf auth login` behind the user's back.
        api = HfApi(endpoint=self.endpoint, token=self._token or False)
        with _hub_errors(name, repo, revision, self.endpoint):
            commit = revision if is_full_commit(revision) else api.model_info(repo, revision=revision).sha
            entries = list(api.list_repo_tree(repo, revision=commit, recursive=True))
        if not commit:
            raise SourceError(f"the hub did not return a commit for {repo}@{revision}", resource=name)
        files = [
            RemoteFile(
                path=safe_relpath(entry.path, resource=name),
                size=entry.size,
                sha256=entry.lfs.sha256 if entry.lfs else None,
                git_sha1=entry.blob_id,
                url=self.file_url(spec, commit, entry.path),
            )
            for entry in entries
            if hasattr(entry, "blob_id") and hasattr(entry, "size")  # files, not folders
        ]
        chosen = select_files(files, spec.include, spec.exclude)
        if not chosen:
            raise SourceError(
                f"no file of {repo}@{revision} matches include/exclude ({len(files)} files listed)",
                resource=name,
                hint="fix `include:` / `exclude:`; nothing would be downloaded",
            )
        return Snapshot(spec.source, revision, commit, tuple(chosen))

    def file_url(self, spec: ModelSpec, resolved: str, path: str) -> str:
        return f"{self.endpoint}/{spec.location}/resolve/{resolved}/{quote(path)}"

    def fetch(
        self, name: str, file: RemoteFile, model_dir: Path, *, on_progress: Callable[[int], None]
    ) -> str:
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


class _hub_errors:
    """Translate huggingface_hub / httpx failures into provision errors naming the model."""

    def __init__(self, name: str, repo: str, revision: str, endpoint: str) -> None:
        self.name, self.repo, self.revision, self.endpoint = name, repo, revision, endpoint

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None:
            return False
        from huggingface_hub import errors as hf

        where = f"{self.repo}@{self.revision} on {self.endpoint}"
        if isinstance(exc, hf.GatedRepoError):
            raise GatedRepoError(f"{where} is gated: access denied", resource=self.name) from None
        if isinstance(exc, hf.RepositoryNotFoundError):
            raise RepositoryNotFoundError(f"repository {self.repo} not found on {self.endpoint} (or it is private)",
                                          resource=self.name) from None
        if isinstance(exc, hf.RevisionNotFoundError):
            raise RevisionNotFoundError(f"revision {self.revision!r} not found in {self.repo}",
                                        resource=self.name) from None
        if isinstance(exc, ConnectionError) or _is_transport_error(exc):
            raise HubUnreachableError(f"cannot reach {self.endpoint}: {exc}", resource=self.name) from None
        if isinstance(exc, hf.HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else "?"
            raise SourceError(f"{where}: HTTP {status} from the hub", resource=self.name,
                              hint="retry later; if it persists, check the endpoint") from None
        return False


def _is_transport_error(exc: BaseException) -> bool:
    """A connection/timeout error of httpx or of httpx2 (which huggingface_hub 2.x uses)."""
    return any(
        cls.__module__.split(".")[0] in ("httpx", "httpx2") and cls.__name__ == "TransportError"
        for cls in type(exc).__mro__
    )
