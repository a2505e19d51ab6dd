"""Fetch one large file as several byte ranges over several connections at once.

Mirrors and cross-border links cap each connection, so one stream per file is slow however
many files run at once; on a fast link, though, more connections only cost (the client's own
writes and sha256 are the limit). So a file starts as one ranged stream, and
:class:`provision.segments.Ramp` decides from its measured rate whether to split it
(:func:`provision.segments.split`) and how many ranges run at once. Each range is a bounded
``Range: bytes=a-b`` GET on its own connection, written at its own offset of the partial with
``pwrite``. The guarantees of the single stream stay:

- progress is persisted beside the partial (:mod:`provision.segments`), always after the bytes
  it names were written, so a kill -9 resumes every range from where its bytes reached the disk;
  a split shortens the running range and adds its tail in one record update, before the tail
  is asked for;
- the sha256 grows over the contiguous prefix, in its own thread: chunks that land at the
  prefix's end are handed over in memory, and bytes that arrived ahead of it are read back once
  (from the page cache) when the prefix reaches them;
- a range that fails is retried alone, from its own ``done``; the others keep streaming;
- a connection left idle (its range done, none waiting) takes over the end of the running range
  due last at its own rate, cut so that both are due together: one slow connection holds back
  only its own share, as aria2c's idle connections take unfinished pieces;
- the first range asked is the probe: only once it answers ``206`` with ``Accept-Ranges: bytes``
  do the other ranges start, and a ``200`` (or no ``Accept-Ranges``) sends the file back to the
  single stream, so a server without ranges never gets N whole-file requests.

Connections are bounded per host by the downloader's :class:`provision.hosts.HostGate`, shared
with every other file, and a 429 there pauses them all.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import download as _download
from . import segments
from .errors import DownloadError
from .files import RemoteFile
from .listing import origin
from .segments import Range
from .signals import check_cancelled

if TYPE_CHECKING:
    import http.client

    from .download import Downloader, ProgressCallback, _Hashes

_CATCH_UP_BLOCK = 1 << 20  # bytes read back from the page cache per step
_BUFFERS = 8  # chunks per file that may wait in memory for the hasher (2 MiB): its lead on the stream


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
        # One range to start with: the ramp splits it once more connections are shown to pay.
        ranges = segments.plan(file.size, 1, kept=min(kept, file.size))
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
    """One file's ranges: the workers that stream them, the ramp that says how many at once, and the hasher.

    One lock guards the ranges, the record, the hasher's queue and the counters; a range's bytes
    are written and its ``done`` advanced by its own worker only.
    """

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
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)  # no range is active any more
        self._ready = threading.Condition(self._lock)  # bytes for the hasher
        self._returned = threading.Condition(self._lock)  # the hasher gave a buffer back
        self._ramp = segments.Ramp(downloader.hosts.connections)
        self._host = origin(file.url or "")  # as the host's gate knows it
        self._pending = deque(r for r in ranges if not r.finished)
        self._active = 0  # ranges handed to a worker and not yet ended
        self._streams: list[_Streaming] = []  # of those, the ones receiving bytes
        self._idle_rate: float | None = None  # bytes per second of the stream that ended last
        self._received = 0  # bytes received by this run, and bytes still to come, for the ramp
        self._left = sum(r.end - r.done for r in ranges)
        self._futures: list[Future[None]] = []
        # The hasher's side: bytes 0..reach are on disk unbroken, 0..hashed are hashed; chunks
        # that landed at the reach wait in memory (start, length, buffer) so they are not read back.
        self._reach = segments.contiguous_end(ranges, 0)
        self._hashed = 0
        self._chunks: deque[tuple[int, int, bytearray]] = deque()
        self._spare: list[bytearray] = []  # buffers the hasher gave back
        self._buffers = 0  # buffers made so far, at most _BUFFERS
        self._finished = False  # no byte will arrive any more: the hasher ends at the reach
        self.probed = threading.Event()  # the first range proved that the server honours ranges
        self.stop = threading.Event()

    def run(self) -> _Hashes | None:
        already = sum(r.done - r.start for r in self.ranges)
        if already:
            self.on_progress(already)
        hasher = _Hasher(self)
        hasher.start()
        try:
            workers = segments.MAX_RANGES  # a thread per range at most (made as needed)
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="range") as pool, self._lock:
                self._dispatch(pool)
                while self._active:
                    self._idle.wait()
            errors = [e for f in self._futures if (e := f.exception()) is not None and not isinstance(e, _Stopped)]
        finally:
            with self._lock:
                self._finished = True
                self._ready.notify()
                self.record.save(self.ranges)
            hasher.join()
        if any(isinstance(e, _RangesIgnored) for e in errors):
            self.on_progress(-sum(r.done - r.start for r in self.ranges))
            return None
        if errors:
            raise errors[0]
        if hasher.error is not None:
            raise hasher.error
        assert self._hashed == self.file.size, (self._hashed, self.file.size)
        return self.hashes

    def _dispatch(self, pool: ThreadPoolExecutor) -> None:
        """Start pending ranges while the ramp allows more at once (called with the lock held).

        Once the ramp allows the host's every connection, every range starts and queues for
        them at the host's gate, so one that backs off (a 429, a 503) frees its connection for
        another range in the meantime.
        """
        ramp = self._ramp
        limit = len(self.ranges) if ramp.allowed >= ramp.most else ramp.allowed
        if not self.probed.is_set():
            limit = 1  # the probe alone, until it shows that the server honours ranges
        while self._pending and self._active < limit and not self.stop.is_set():
            r = self._pending[0]
            try:  # no thread (a process limit): this range never runs, so the job stops
                future = pool.submit(self._fetch_or_stop, pool, r, probe=not self.probed.is_set())
            except RuntimeError as exc:
                self.stop.set()
                raise DownloadError(
                    f"{self.file.path}: no thread for another range ({exc})",
                    hint="the process reached its thread limit (ulimit -u); lower settings.max_connections_per_host",
                    resource=self.resource,
                ) from None
            self._pending.popleft()
            self._active += 1  # the worker ends by taking the lock we hold: it cannot count down first
            self._futures.append(future)

    def _fetch_or_stop(self, pool: ThreadPoolExecutor, r: Range, *, probe: bool) -> None:
        try:
            self._fetch(pool, r, probe=probe)
        except BaseException:
            self.stop.set()  # one range failed for good: the others stop at their next chunk
            raise
        finally:
            with self._lock:
                self._active -= 1
                try:
                    if r.finished:
                        self._ask_for_work()
                    self._dispatch(pool)
                finally:  # even when no thread could start: the job must not wait for this one
                    if not self._active:
                        self._idle.notify()

    def _ask_for_work(self) -> None:
        """A worker is idle and no range waits: ask the range due last to give part of its rest.

        Its own worker cuts it between chunks (:meth:`_give_away`), as only it may move its end.
        Once every range may run (a host whose connections are each capped), so a range on a
        slow connection, or one that started late, does not hold the file back alone.
        """
        if self._pending or self.stop.is_set() or self._ramp.allowed < self._ramp.most:
            return
        if self.downloader.hosts.queued(self._host):  # ranges (ours or another file's) wait: it goes to one
            return
        now = time.monotonic()
        free = [s for s in self._streams if s.keeps is None]
        found = segments.steal_from([segments.Stream(s.range, s.rate(now)) for s in free], self._idle_rate)
        if found is not None:
            victim, keeps = found
            next(s for s in free if s.range is victim).keeps = keeps

    def _fetch(self, pool: ThreadPoolExecutor, r: Range, *, probe: bool) -> None:
        """Fetch one range to its end, retrying it alone; a run of failures without progress is final."""
        downloader, failures = self.downloader, 0
        while not r.finished:
            if self.stop.is_set():
                raise _Stopped
            before = r.done
            try:
                with downloader.get_body(self.file, r.done, r.end, resource=self.resource) as response:
                    if probe and not self.probed.is_set():
                        self._check_ranges_honoured(response)
                        with self._lock:
                            self.probed.set()
                            self._dispatch(pool)
                    self._stream(pool, response, r)
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

    @staticmethod
    def _check_ranges_honoured(response: http.client.HTTPResponse) -> None:
        accepts = (response.getheader("Accept-Ranges") or "").lower()
        if response.status != 206 or "bytes" not in accepts:
            raise _RangesIgnored

    def _stream(self, pool: ThreadPoolExecutor, response: http.client.HTTPResponse, r: Range) -> None:
        if response.status != 206:  # a 200 after the probe said 206: the server changed its mind
            raise _RangesIgnored
        own = bytearray(_download.CHUNK_SIZE)
        mine: _Streaming | None = None  # once its bytes arrive
        try:
            while not r.finished:
                if self.stop.is_set():
                    raise _Stopped
                check_cancelled()  # SIGINT/SIGTERM: stop at the next chunk; the record keeps the progress
                # At the reach, read into a buffer the hasher can take; elsewhere, into our own.
                buffer = (self._buffer() if r.done == self._reach else None) or own
                got = response.readinto(memoryview(buffer)[: min(len(buffer), r.end - r.done)])
                if not got:
                    return
                start, written = r.done, 0
                while written < got:
                    written += os.pwrite(self.fd, memoryview(buffer)[written:got], start + written)
                with self._lock:
                    if mine is None:
                        mine = _Streaming(r, time.monotonic(), start)
                        self._streams.append(mine)
                    r.done = start + got  # only now: the record must never name bytes not written
                    self._received += got
                    self._left -= got
                    self.record.save(self.ranges)
                    self._grow(pool, r)
                    if mine.keeps is not None:
                        self._give_away(pool, mine)
                    if start == self._reach:
                        self._reach = segments.contiguous_end(self.ranges, start)
                        if buffer is not own:
                            self._chunks.append((start, got, buffer))
                            buffer = own
                        self._ready.notify()
                    if buffer is not own:
                        self._spare.append(buffer)
                self.on_progress(got)
        finally:
            if mine is not None:
                with self._lock:
                    self._idle_rate = mine.rate(time.monotonic()) or self._idle_rate
                    self._streams.remove(mine)

    def _buffer(self) -> bytearray | None:
        """A buffer the hasher may keep until it has hashed its bytes (the caller's chunk is at the
        prefix's end). When the hasher holds them all, it is the bottleneck: wait for one rather
        than make it read the bytes back later; None once the job stops."""
        with self._lock:
            while not self._spare and self._buffers >= _BUFFERS:
                if self.stop.is_set():
                    return None
                self._returned.wait(0.1)
            if self._spare:
                return self._spare.pop()
            self._buffers += 1
            return bytearray(_download.CHUNK_SIZE)

    def _grow(self, pool: ThreadPoolExecutor, r: Range) -> None:
        """Ask the ramp how many ranges may run; split ``r`` (ours, between chunks) when none wait.

        The shortened range and its new tail go into the record in one save, before any tail
        byte is asked for: a kill in between finds the old record, whose range covers the tail.
        """
        before, hosts = self._ramp.allowed, self.downloader.hosts
        proven = hosts.proven(self._host)
        allowed = self._ramp.observe(time.monotonic(), self._received, self._left, len(self._streams), proven=proven)
        if allowed <= before:
            return
        if before == 2 and allowed == self._ramp.most and not proven:
            hosts.prove(self._host)  # our trial: the host's other files skip theirs
        if not self._pending:  # split into every range at once: the ramp only says how many run
            most, room = max(segments.RANGES_PER_FILE, self._ramp.most), segments.MAX_RANGES - len(self.ranges)
            pieces = segments.split(r, self.file.size, most, room=room)  # a resumed record may be full
            r.end = pieces[0].end  # ``r`` itself: its worker goes on with it, to the new end
            self._queue_after(r, pieces[1:])
        self._dispatch(pool)

    def _give_away(self, pool: ThreadPoolExecutor, stream: _Streaming) -> None:
        """Our stream (between chunks) was asked for work: the end of its range's rest becomes a new
        range for an idle connection; this worker reads on to the new end, then hangs up."""
        keeps, stream.keeps = stream.keeps, None
        if keeps is None or len(self.ranges) >= segments.MAX_RANGES:  # all the record's slot holds
            return
        tail = segments.give_away(stream.range, keeps)
        if tail is not None:
            self._queue_after(stream.range, [tail])
            self._dispatch(pool)

    def _queue_after(self, r: Range, tails: list[Range]) -> None:
        """Put ranges cut from ``r``'s end after it, in the record (one save, before any of their
        bytes is asked for: a kill in between finds the old record, whose ``r`` covers them), then
        in the queue."""
        at = next(i for i, each in enumerate(self.ranges) if each is r)
        self.ranges[at + 1 : at + 1] = tails
        self.record.save(self.ranges)
        self._pending.extend(tails)


@dataclass(eq=False)  # each is one stream: compared (and removed) by identity
class _Streaming:
    """A range receiving bytes: since when, and how far it was then (for its rate); ``keeps``:
    asked by an idle connection for work, the share of its rest it keeps."""

    range: Range
    began: float
    base: int
    keeps: float | None = None

    def rate(self, now: float) -> float | None:
        """Bytes per second so far; None until it has streamed a probe's worth of time."""
        seconds = now - self.began
        return (self.range.done - self.base) / seconds if seconds >= segments.PROBE_SECONDS else None


class _Hasher(threading.Thread):
    """Hashes the file's contiguous prefix as it grows, beside the workers (sha256 is a third
    of a single stream's CPU time: on its own core the stream is not held back by it).

    Bytes come from the chunks the workers queued at the prefix's end, from memory; bytes that
    arrived ahead of the prefix (another range's) are read back from the page cache once the
    prefix reaches them.
    """

    def __init__(self, job: _Job) -> None:
        super().__init__(name="hash", daemon=True)
        self.job = job
        self.error: Exception | None = None

    def run(self) -> None:
        job, block = self.job, None
        try:
            while True:
                with job._lock:
                    while not job._chunks and job._hashed >= job._reach and not job._finished:
                        job._ready.wait()
                    if job.stop.is_set() or (not job._chunks and job._hashed >= job._reach):
                        return  # a failed run keeps its bytes, not its hash
                    # queued chunks start at the reach of their time, so never before ``hashed``
                    chunk = job._chunks.popleft() if job._chunks and job._chunks[0][0] == job._hashed else None
                    until = job._chunks[0][0] if job._chunks else job._reach
                if chunk is not None:
                    _, length, buffer = chunk
                    job.hashes.update(memoryview(buffer)[:length])
                    job._hashed += length
                    with job._lock:
                        job._spare.append(buffer)
                        job._returned.notify()
                    continue
                if block is None:
                    block = memoryview(bytearray(_CATCH_UP_BLOCK))
                self._read_back(block, min(until - job._hashed, _CATCH_UP_BLOCK))
        except Exception as exc:  # noqa: BLE001 - any (EIO too): the workers must stop, not wait for it
            self.error = exc
            job.stop.set()

    def _read_back(self, block: memoryview, want: int) -> None:
        job = self.job
        got = os.preadv(job.fd, [block[:want]], job._hashed)
        if got <= 0:
            raise DownloadError(f"{job.file.path}: the partial file shrank while downloading", resource=job.resource)
        job.hashes.update(block[:got])
        job._hashed += got
