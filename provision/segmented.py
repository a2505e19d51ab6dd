"""Fetch one large file as several byte ranges over several connections at once.

Mirrors and cross-border links cap each connection, so one stream per file is slow however
many files run at once. Here a file is split (:func:`provision.segments.plan`) and each range
is a bounded ``Range: bytes=a-b`` GET on its own connection, written at its own offset of the
partial with ``pwrite``. The guarantees of the single stream stay:

- progress is persisted beside the partial (:mod:`provision.segments`), always after the bytes
  it names were written, so a kill -9 resumes every range from where its bytes reached the disk;
- the sha256 grows over the contiguous prefix: bytes at the hash's position are hashed from
  memory as they arrive, and bytes that arrived ahead of it are read back once (from the page
  cache) when the prefix reaches them; with every range running at once that is mostly after
  the last byte, so only the first range's bytes are never read twice;
- a range that fails is retried alone, from its own ``done``; the others keep streaming;
- the first range asked is the probe: only once it answers ``206`` with ``Accept-Ranges: bytes``
  do the other ranges start, and a ``200`` (or no ``Accept-Ranges``) sends the file back to the
  single stream, so a server without ranges never gets N whole-file requests.

Connections are bounded per host by the downloader's :class:`provision.hosts.HostGate`, shared
with every other file, and a 429 there pauses them all.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from . import download as _download
from . import segments
from .errors import DownloadError
from .files import RemoteFile
from .segments import Range
from .signals import check_cancelled

if TYPE_CHECKING:
    import http.client

    from .download import Downloader, ProgressCallback, _Hashes

_CATCH_UP_BLOCK = 1 << 20  # bytes read back per step, so no connection waits long on the hash


class _RangesIgnored(Exception):
    """The server sent the whole file (or offers no ranges): fetch it as one stream."""


class _Stopped(Exception):
    """Another range failed for good: stop this one (its progress is kept)."""


def settle_to_prefix(part: Path, size: int) -> None:
    """Before a single stream resumes ``part``: keep only the bytes that run unbroken from 0.

    A partial with a range record has holes; the single stream trusts the partial's size.
    """
    if not segments.record_path(part).exists():
        return
    ranges = segments.read_record(part, size)
    keep = segments.contiguous_end(ranges, 0) if ranges else 0
    if part.exists():
        fd = os.open(part, os.O_RDWR | os.O_NOFOLLOW)
        try:
            os.ftruncate(fd, keep)
        finally:
            os.close(fd)
    segments.drop_record(part)


def fetch_ranges(
    downloader: Downloader, file: RemoteFile, part: Path, *, resource: str, on_progress: ProgressCallback
) -> _Hashes | None:
    """Download ``file`` into ``part`` as ranges; its hashes, or None to fall back to one stream."""
    ranges = segments.read_record(part, file.size)
    if ranges is None:
        # No record: a partial is a single stream's prefix; a record we cannot trust: start over.
        trusted = part.exists() and not segments.record_path(part).exists()
        kept = part.stat().st_size if trusted else 0
        parts = max(segments.RANGES_PER_FILE, downloader.hosts.connections)
        ranges = segments.plan(file.size, parts, kept=min(kept, file.size))
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | (0 if trusted else os.O_TRUNC), 0o644)
        os.ftruncate(fd, min(kept, file.size))  # a longer partial than the file is not ours
        os.close(fd)
        segments.drop_record(part)
    record = segments.RangeRecord(part, file.size)
    fd = os.open(part, os.O_RDWR | os.O_NOFOLLOW)
    try:
        record.save(ranges)  # before any byte lands at an offset
        job = _Job(downloader, file, record, fd, ranges, resource=resource, on_progress=on_progress)
        return job.run()
    finally:
        os.close(fd)
        record.close()


class _Job:
    def __init__(
        self,
        downloader: Downloader,
        file: RemoteFile,
        record: segments.RangeRecord,
        fd: int,
        ranges: list[Range],
        *,
        resource: str,
        on_progress: ProgressCallback,
    ) -> None:
        self.downloader, self.file, self.record, self.fd, self.ranges = downloader, file, record, fd, ranges
        self.resource, self.on_progress = resource, on_progress
        self.hashes = _download._Hashes(file)
        self.hashed = 0  # the hash covers bytes 0..hashed
        self._hash_lock = threading.Lock()
        self._record_lock = threading.Lock()
        self.probed = threading.Event()  # the first range proved that the server honours ranges
        self.stop = threading.Event()

    def run(self) -> _Hashes | None:
        already = sum(r.done - r.start for r in self.ranges)
        if already:
            self.on_progress(already)
        pending = [r for r in self.ranges if not r.finished]
        try:
            if pending:
                with ThreadPoolExecutor(max_workers=len(pending), thread_name_prefix="range") as pool:
                    futures = [pool.submit(self._fetch_or_stop, r, probe=i == 0) for i, r in enumerate(pending)]
                errors = [e for f in futures if (e := f.exception()) is not None and not isinstance(e, _Stopped)]
                if any(isinstance(e, _RangesIgnored) for e in errors):
                    self.on_progress(-sum(r.done - r.start for r in self.ranges))
                    return None
                if errors:
                    raise errors[0]
        finally:
            self._save()
        with self._hash_lock:
            self._catch_up(limit=None)
        assert self.hashed == self.file.size, (self.hashed, self.file.size)
        return self.hashes

    def _fetch_or_stop(self, r: Range, *, probe: bool) -> None:
        try:
            self._fetch(r, probe=probe)
        except BaseException:
            self.stop.set()  # one range failed for good: the others stop at their next chunk
            raise

    def _fetch(self, r: Range, *, probe: bool) -> None:
        """Fetch one range to its end, retrying it alone; a run of failures without progress is final."""
        if not probe:
            while not self.probed.wait(0.1):
                if self.stop.is_set():
                    raise _Stopped
        downloader, failures = self.downloader, 0
        while not r.finished:
            before = r.done
            try:
                with downloader.get_body(self.file, r.done, r.end, resource=self.resource) as response:
                    if probe and not self.probed.is_set():
                        self._check_ranges_honoured(response)
                        self.probed.set()
                    self._stream(response, r)
                if not r.finished:
                    raise _download._Transient(f"range body ended at byte {r.done} of {r.start}-{r.end}")
            except _download._Transient as exc:
                failures = 0 if r.done > before else failures + 1
                if failures >= downloader.retry.attempts:
                    raise DownloadError(
                        f"{self.file.path}: bytes {r.start}-{r.end - 1}: {exc} (gave up after {failures} attempts)",
                        resource=self.resource,
                    ) from None
                downloader.sleep(downloader.retry.delay(failures, exc.retry_after))
                if self.stop.is_set():
                    raise _Stopped from None

    @staticmethod
    def _check_ranges_honoured(response: http.client.HTTPResponse) -> None:
        accepts = (response.getheader("Accept-Ranges") or "").lower()
        if response.status != 206 or "bytes" not in accepts:
            raise _RangesIgnored

    def _stream(self, response: http.client.HTTPResponse, r: Range) -> None:
        if response.status != 206:  # a 200 after the probe said 206: the server changed its mind
            raise _RangesIgnored
        view = memoryview(bytearray(_download.CHUNK_SIZE))
        while not r.finished:
            if self.stop.is_set():
                raise _Stopped
            check_cancelled()  # SIGINT/SIGTERM: stop at the next chunk; the record keeps the progress
            got = response.readinto(view[: min(len(view), r.end - r.done)])
            if not got:
                return
            chunk, start = view[:got], r.done
            written = 0
            while written < got:
                written += os.pwrite(self.fd, chunk[written:], start + written)
            r.done = start + got  # only now: the record must never name bytes not written
            self._save()
            self._offer(start, chunk)
            self.on_progress(got)

    def _save(self) -> None:
        with self._record_lock:
            self.record.save(self.ranges)

    def _offer(self, start: int, chunk: memoryview) -> None:
        """Hash ``chunk`` from memory if it is next; else catch up a little from the disk.

        Never waits: a connection that finds another one hashing goes back to its socket.
        """
        if not self._hash_lock.acquire(blocking=False):
            return
        try:
            if start == self.hashed:
                self.hashes.update(chunk)
                self.hashed += len(chunk)
            self._catch_up(limit=_CATCH_UP_BLOCK)
        finally:
            self._hash_lock.release()

    def _catch_up(self, *, limit: int | None) -> None:
        """Hash bytes already on disk that continue the prefix (at most ``limit`` of them)."""
        budget = limit
        buffer = None
        while (reach := segments.contiguous_end(self.ranges, self.hashed)) > self.hashed:
            if budget is not None and budget <= 0:
                return
            want = min(reach - self.hashed, _CATCH_UP_BLOCK, budget if budget is not None else _CATCH_UP_BLOCK)
            if buffer is None:
                buffer = memoryview(bytearray(_CATCH_UP_BLOCK))
            got = os.preadv(self.fd, [buffer[:want]], self.hashed)
            if got <= 0:
                raise DownloadError(
                    f"{self.file.path}: the partial file shrank while downloading", resource=self.resource
                )
            self.hashes.update(buffer[:got])
            self.hashed += got
            if budget is not None:
                budget -= got
