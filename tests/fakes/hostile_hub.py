"""Hubs that lie: the honest fakes (``hf_hub``, ``modelscope_hub``) with hostile listings and links.

Each keeps serving the honest protocol and bytes, and per repo rewrites what its listing says
(``listing_edits[repo] = fn(entries) -> entries``: the tree API's entries on the HF fake, the
``Data.Files`` entries on the ModelScope fake), so one manifest can hold a poisoned model next to
a good one. The HF fake also misbehaves in the ways mirrors do:

- ``link``: ``"self"`` puts ``Link: <this page>; rel="next"`` on every tree page (a loop);
  ``"cross"`` points the next page at ``cross_origin`` (another server, which records whether
  the token reached it);
- ``slash_redirect``: tree URLs without a trailing slash answer ``307`` to the same URL with one
  (as some mirrors do for ``/api/models/{repo}/tree/{rev}``), and are served with it;
- ``file_loop``: file paths whose ``resolve`` answers ``302`` to itself, forever.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlencode

from tests.fakes import modelscope_hub
from tests.fakes._server import Recorded, Request
from tests.fakes.hf_hub import _RESOLVE, _TREE, FakeHFHub, _tree_entries

Edit = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


class HostileHFHub(FakeHFHub):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.listing_edits: dict[str, Edit] = {}
        self.link: str | None = None
        self.cross_origin: str | None = None
        self.slash_redirect = False
        self.file_loop: set[str] = set()

    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        tree = _TREE.match(request.path.rstrip("/")) if request.method == "GET" else None
        if tree is not None:
            if self.slash_redirect and not request.path.endswith("/"):
                query = urlencode({k: v[0] for k, v in request.query.items()})
                self.send(handler, record, 307, b"", {"Location": f"{request.path}/?{query}"})
                return
            if tree["repo"] in self.listing_edits or self.link or self.slash_redirect:
                self._hostile_tree(request, handler, record, tree["repo"], tree["rev"])
                return
        resolve = _RESOLVE.match(request.path)
        if resolve is not None and resolve["path"] in self.file_loop:
            self.send(handler, record, 302, b"", {"Location": request.path})
            return
        super().handle(request, handler, record)

    def _hostile_tree(
        self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded, repo_id: str, rev: str
    ) -> None:
        _, commit = self._lookup(repo_id, rev)
        entries = _tree_entries(commit)
        edit = self.listing_edits.get(repo_id)
        if edit is not None:
            entries = edit(entries)
        headers = {}
        query = urlencode({k: v[0] for k, v in request.query.items()})
        if self.link == "self":
            headers["Link"] = f'<{self.url}{request.path}?{query}>; rel="next"'
        elif self.link == "cross" and "cursor" not in request.query:
            headers["Link"] = f'<{self.cross_origin}{request.path}?{query}&cursor=100000>; rel="next"'
        self.send_json(handler, record, 200, entries, headers)


class HostileMSHub(modelscope_hub.FakeModelScopeHub):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.listing_edits: dict[str, Edit] = {}
        self._current = threading.local()

    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        match = modelscope_hub._MODEL_ROUTE.match(request.path)
        self._current.repo = f"{match[1]}/{match[2]}" if match else None
        super().handle(request, handler, record)

    def _list(
        self,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        revision: str,
        files: dict[str, modelscope_hub.Blob],
        root: str | None,
    ) -> None:
        edit = self.listing_edits.get(self._current.repo)
        if edit is None:
            return super()._list(handler, record, revision, files, root)
        entries = [modelscope_hub._blob_entry(path, blob, revision) for path, blob in sorted(files.items())]
        modelscope_hub._envelope(self, handler, record, 200, {"Files": edit(entries)})
        return None
