"""The download step of a rendered Kubernetes model: fetch exactly the locked files, verify them.

This file is shipped verbatim in the model's ConfigMap and run by the serving pod's init
container (``python3 /etc/provision/fetch_files.py /etc/provision/files.json``) in a public
Python image; so it uses the standard library only and runs on any Python >= 3.9. It never
imports provision. ``files.json`` is rendered from the lock::

    {"target": "/models/<model>", "auth": "bearer" | "modelscope",
     "files": [{"path", "size", "sha256", "url"}, ...]}

The token (optional) comes from ``$PROVISION_HUB_TOKEN``, which the pod takes from a Secret.
The volume's layout is provision's own::

    <target>/<path>                                   verified files
    <target>/.cache/provision/partial/<sha256>-<h>.part   in-flight downloads (resumed with Range)
    <target>/.cache/provision/fetch.lock              flock: one fetcher per volume at a time

Every start re-hashes every file, so nothing on the volume is served unverified, even after
someone wrote to it. A file whose bytes do not match the lock is fetched once more from
scratch; a second mismatch exits 1 naming the file and both digests. Files on the volume
that the lock does not list (an older revision's shards) are removed, since the server
would load them too. Exit 0 only when every locked file is in place with its sha256.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import posixpath
import sys
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

CHUNK = 1 << 18
ATTEMPTS = 6  # per file: dropped connections and 5xx, each resuming where the last stopped
PERMANENT = (400, 401, 403, 404, 410)  # retrying cannot help
CACHE = ".cache"
PARTIAL = ".cache/provision/partial"


class StepError(Exception):
    """A failure that ends the step: the init container exits 1 and the pod never serves."""


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class _SameOriginAuth(urllib.request.HTTPRedirectHandler):
    """Follow redirects, carrying the token only to the hub's own origin (never to a CDN)."""

    def __init__(self, auth: dict[str, str]) -> None:
        self.auth = auth

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) == _origin(req.full_url):
            for key, value in self.auth.items():
                new.add_unredirected_header(key, value)
        return new


def _auth_headers(style: str, token: str) -> dict[str, str]:
    if not token:
        return {}
    if style == "modelscope":  # Bearer, and the cookie older ModelScope endpoints read
        return {"Authorization": f"Bearer {token}", "Cookie": f"m_session_id={token}"}
    return {"Authorization": f"Bearer {token}"}


def _safe(path: str) -> str:
    normal = posixpath.normpath(path)
    if not path or path.startswith("/") or normal == "." or normal.startswith("..") or normal.split("/")[0] == CACHE:
        raise StepError(f"refusing path {path!r}: it would land outside the model folder")
    return normal


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _download(
    opener: urllib.request.OpenerDirector, auth: dict[str, str], url: str, part: str, size: int, shown: str
) -> None:
    """Bring ``part`` to ``size`` bytes, resuming with Range; retried with backoff."""
    for attempt in range(ATTEMPTS):
        have = os.path.getsize(part) if os.path.exists(part) else 0
        if have > size:
            os.unlink(part)
            have = 0
        if have == size:
            return
        request = urllib.request.Request(url)
        for key, value in auth.items():
            request.add_unredirected_header(key, value)
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            with opener.open(request, timeout=60) as response:
                append = have > 0 and response.status == 206
                with open(part, "ab" if append else "wb") as out:
                    while block := response.read(CHUNK):
                        out.write(block)
        except urllib.error.HTTPError as exc:
            if exc.code in PERMANENT:
                raise StepError(
                    f"{shown}: HTTP {exc.code} from {_origin(url)[1]} (a private or gated model needs the token Secret)"
                ) from None
            print(f"{shown}: HTTP {exc.code}; retrying", flush=True)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            print(f"{shown}: {type(exc).__name__}: {exc}; resuming", flush=True)
        else:
            if os.path.getsize(part) >= size:
                return
            print(f"{shown}: short body; resuming", flush=True)
        time.sleep(min(2**attempt, 30))
    raise StepError(f"{shown}: download failed after {ATTEMPTS} attempts")


def ensure_file(
    opener: urllib.request.OpenerDirector, auth: dict[str, str], target: str, entry: dict[str, Any]
) -> bool:
    """Make ``entry`` present and verified; True when bytes were fetched."""
    path, size, sha256, url = _safe(entry["path"]), int(entry["size"]), str(entry["sha256"]), str(entry["url"])
    final = os.path.join(target, path)
    if os.path.isfile(final) and not os.path.islink(final) and os.path.getsize(final) == size:
        if _sha256(final) == sha256:
            return False
        print(f"{path}: bytes on the volume do not match the lock; fetching it again", flush=True)
    where = hashlib.sha256(path.encode()).hexdigest()[:16]
    part = os.path.join(target, PARTIAL, f"{sha256}-{where}.part")
    got = ""
    for attempt in (1, 2):
        _download(opener, auth, url, part, size, path)
        got = _sha256(part)
        if got == sha256 and os.path.getsize(part) == size:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(part, final)
            return True
        os.unlink(part)
        if attempt == 1:
            print(f"{path}: sha256 mismatch ({got}); fetching it once more from scratch", flush=True)
    raise StepError(
        f"{path}: sha256 mismatch: the lock pins {sha256}, the hub served {got} "
        "(twice); the hub or a proxy altered it, or the revision moved since the lock "
        "was written (then run `provision apply --update` and render again)"
    )


def remove_unlisted(target: str, wanted: set[str]) -> list[str]:
    """Delete regular files the lock does not list (never following links, never .cache)."""
    removed = []
    for folder, dirs, files in os.walk(target):
        relative = os.path.relpath(folder, target)
        if relative == ".":
            dirs[:] = [d for d in dirs if d != CACHE]
        for name in files:
            path = posixpath.normpath(posixpath.join(relative.replace(os.sep, "/"), name))
            if path not in wanted:
                os.unlink(os.path.join(folder, name))
                removed.append(path)
    return sorted(removed)


def run(plan: dict[str, Any], token: str) -> str:
    target = plan["target"]
    auth = _auth_headers(plan.get("auth", "bearer"), token)
    opener = urllib.request.build_opener(_SameOriginAuth(auth))
    os.makedirs(os.path.join(target, PARTIAL), exist_ok=True)
    with open(os.path.join(target, CACHE, "provision", "fetch.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second pod on this volume waits here
        fetched = sum(ensure_file(opener, auth, target, entry) for entry in plan["files"])
        removed = remove_unlisted(target, {_safe(e["path"]) for e in plan["files"]})
    total = sum(int(e["size"]) for e in plan["files"])
    return f"verified {len(plan['files'])} files ({total} bytes) against the lock; fetched {fetched}" + (
        f"; removed unlisted {', '.join(removed)}" if removed else ""
    )


def main(argv: list[str]) -> int:
    try:
        with open(argv[1], encoding="utf-8") as handle:
            plan = json.load(handle)
        print(run(plan, os.environ.get("PROVISION_HUB_TOKEN", "")), flush=True)
    except StepError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
