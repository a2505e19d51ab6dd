"""Byte ranges of one large file, and the record that lets a killed download resume each of them.

Pure decisions (how to split a file, which running range gives work to an idle connection,
what a progress record may say, how far the bytes on disk run unbroken) plus the two small file
operations on the record. The fetching is in
:mod:`provision.segmented`.

Layout beside the partial (see :mod:`provision.download`)::

    <digest>-<path hash>.part          the file's bytes, each range written at its own offset
    <digest>-<path hash>.part.ranges   two 4 KiB slots (:class:`RangeRecord`), each
                                       {"version": 1, "seq": n, "size": N, "ranges": [[start, end, done], ...]}
                                       then its sha256 on the next line, NUL-padded

A range's ``done`` only ever names bytes already written to the partial (the write comes first,
then the record is updated), so after a kill every range resumes from ``done`` and what is
fetched again is at most what was in flight. A partial without a record was written as
one stream from byte 0, so its size is how far it got.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

# A range smaller than this is not worth its own connection (a request costs a round trip);
# aria2c's -k (min split size) is the same idea. Files under two of these go as one stream.
MIN_RANGE = 8 << 20
# Ranges a file is split into (at most; fewer when small). More ranges than connections is fine:
# they queue for the host's connections, and a slow connection then holds back less of the file.
RANGES_PER_FILE = 16
# A file starts as one stream; more connections only pay where each one is capped (see Ramp).
PROBE_SECONDS = 0.1  # of streaming before a rate is trusted (a capped link shows its cap at once)
SPLIT_AFTER_SECONDS = 1.0  # a stream due to finish sooner than this gains too little from a split
GAIN = 1.3  # two streams must go this much faster than one before the rest start (capped: 2x; shared: 1x)
# An idle connection takes over part of the running range due last (so a slow connection holds
# back only its own share), while that one is due in more than STEAL_AFTER_SECONDS and each part
# is at least STEAL_MIN bytes (aria2c's pieces are 1 MiB).
STEAL_MIN = 1 << 20
STEAL_AFTER_SECONDS = 0.5
RECORD_SUFFIX = ".ranges"
_VERSION = 1
MAX_RANGES = 80  # what fits a slot: the plan's (<= 64) and a kept prefix, then parts idle connections took
_SLOT = 4096


@dataclass
class Range:
    """Bytes ``start..end`` (end exclusive) of the file; ``start..done`` are on disk."""

    start: int
    end: int
    done: int

    @property
    def finished(self) -> bool:
        return self.done >= self.end


def is_large(size: int, *, min_range: int = MIN_RANGE) -> bool:
    """Whether a file goes the ranged way (:mod:`provision.segmented`): one stream, with its sha256
    in a thread of its own, that :class:`Ramp` splits where more connections pay. Even with one
    connection allowed, the hash beside the stream is worth its thread."""
    return size >= 2 * min_range


def plan(size: int, most: int, *, kept: int = 0, min_range: int = MIN_RANGE) -> list[Range]:
    """Split ``size`` bytes into at most ``most`` ranges of at least ``min_range`` each.

    ``kept`` bytes from byte 0 are already on disk (a single stream got that far): they become
    one finished range and only the rest is split.
    """
    kept = max(0, min(kept, size))
    ranges = [Range(0, kept, kept)] if kept else []
    left = size - kept
    parts = max(1, min(most, left // min_range))
    bounds = [kept + left * i // parts for i in range(parts + 1)]
    ranges += [Range(a, b, a) for a, b in pairwise(bounds) if b > a]
    return ranges


def split(r: Range, size: int, most: int, *, room: int = MAX_RANGES, min_range: int = MIN_RANGE) -> list[Range]:
    """Running range ``r`` cut at the boundaries of ``plan(size, most)`` past its ``done``: ``r``
    shortened, then new ranges for its tail (just ``[r]`` when no boundary falls inside), at
    most ``room`` of them (the rows the record has left: the last one runs on to ``r``'s end).

    The boundaries depend on the file alone, not on when the split happens, so a range's start
    is the same on every run (a server's faults and a test can name it).
    """
    cuts = [b.start for b in plan(size, most, min_range=min_range) if r.done < b.start < r.end][: max(0, room)]
    bounds = [r.start, *cuts, r.end]
    return [Range(a, b, r.done if a == r.start else a) for a, b in pairwise(bounds)]


@dataclass(frozen=True)
class Stream:
    """A range receiving bytes, and its rate so far (None until it has streamed a probe's worth)."""

    range: Range
    rate: float | None


def steal_from(streams: list[Stream], idle_rate: float | None) -> tuple[Range, float] | None:
    """Which streaming range an idle connection (that moved ``idle_rate`` bytes/s) should help,
    and the share of its rest it keeps: the one due last at its own rate, cut so that both are
    due together (half, when a rate is unknown). None when none is due in over
    ``STEAL_AFTER_SECONDS`` (a new request would gain too little) or every rate is unknown."""
    rated = [s for s in streams if s.rate]
    if not rated:
        return None
    due = max(rated, key=lambda s: ((s.range.end - s.range.done) / (s.rate or 1), -s.range.start))
    rate = due.rate or 1.0
    if (due.range.end - due.range.done) / rate <= STEAL_AFTER_SECONDS:
        return None
    return due.range, (rate / (rate + idle_rate) if idle_rate else 0.5)


def give_away(r: Range, keeps: float, *, least: int = STEAL_MIN) -> Range | None:
    """Shorten running range ``r`` to the first ``keeps`` of what it has left; the rest as a new
    range (nothing on disk yet), or None when that rest would be under ``least`` bytes (not
    worth its request) or nothing would be left to ``r``."""
    left = r.end - r.done
    kept = round(left * keeps)
    if kept <= 0 or left - kept < least:
        return None
    tail = Range(r.done + kept, r.end, r.done + kept)
    r.end = tail.start
    return tail


class Ramp:
    """How many of one file's ranges may stream at once: one, until more are shown to pay.

    More connections pay where each one is capped (mirrors, cross-border links). On a fast link
    the client's own writes and sha256 are the limit, and each extra connection only adds a
    request, bytes that arrive ahead of the hash (read back from the page cache later) and load
    on the server. So a file streams alone for ``probe`` seconds; if at that rate it would still
    take more than ``split_after`` seconds, a second range may start; only if the two together
    go ``gain`` times as fast as the one did may up to ``most`` run. Once one file showed that
    of a host (``proven``), another skips the trial. Pure: the caller passes the clock and the
    byte counts.
    """

    def __init__(
        self,
        most: int,
        *,
        probe: float = PROBE_SECONDS,
        split_after: float = SPLIT_AFTER_SECONDS,
        gain: float = GAIN,
    ) -> None:
        self.allowed = 1
        self.most = max(1, most)
        self._probe, self._split_after, self._gain = probe, split_after, gain
        self._mark: tuple[float, int] | None = None  # (time, bytes received) the current window began at
        self._single: float | None = None  # bytes per second of the one stream
        self._settled = self.most == 1

    def observe(self, now: float, received: int, left: int, streaming: int, *, proven: bool = False) -> int:
        """Ranges allowed at once, after ``received`` bytes in all by ``now`` with ``left`` to go
        and ``streaming`` ranges receiving bytes; ``proven``: more connections paid on this host."""
        if proven and self._single is not None and not self._settled:
            self.allowed, self._settled = self.most, True  # split already: no trial of our own
        if self._settled or (self._single is not None and streaming < 2):
            self._mark = None  # a trial's window starts once both streams receive bytes
            return self.allowed
        if self._mark is None:
            self._mark = (now, received)
            return self.allowed
        began, base = self._mark
        if now - began < self._probe:
            return self.allowed
        rate = (received - base) / (now - began)
        self._mark = (now, received)
        if self._single is None:
            if left > rate * self._split_after:
                self._single, self.allowed = rate, 2
                self._settled = self.most == 2
                self._mark = None
        else:
            self.allowed = self.most if rate >= self._gain * self._single else 2
            self._settled = True
        return self.allowed


def contiguous_end(ranges: list[Range], position: int) -> int:
    """Where the bytes on disk that run unbroken from ``position`` end (``ranges`` cover the file in order)."""
    for r in ranges:
        if r.end <= position:
            continue
        if r.start > position or r.done <= position:
            return position
        position = r.done
        if not r.finished:
            return position
    return position


# RFC 9110 section 14.4: ``bytes FIRST-LAST/COMPLETE`` (COMPLETE ``*`` when unknown); the unit is case-insensitive.
_CONTENT_RANGE = re.compile(r"bytes[ \t]+(\d{1,19})-(\d{1,19})/(\d{1,19}|\*)", re.IGNORECASE)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """A 206's ``Content-Range`` as (first byte, end, complete length), ``end`` exclusive and the
    length None for ``*``; None when absent or malformed (LAST before FIRST, or past the length)."""
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        return None
    first, last = int(match[1]), int(match[2])
    complete = None if match[3] == "*" else int(match[3])
    if last < first or (complete is not None and last >= complete):
        return None
    return first, last + 1, complete


def dump_record(size: int, ranges: list[Range], *, seq: int) -> bytes:
    """One slot of the record: JSON, its sha256, padded to the slot (see :class:`RangeRecord`)."""
    body = json.dumps(
        {"version": _VERSION, "seq": seq, "size": size, "ranges": [[r.start, r.end, r.done] for r in ranges]},
        separators=(",", ":"),
    ).encode()
    slot = body + b"\n" + hashlib.sha256(body).hexdigest().encode() + b"\n"
    if len(slot) > _SLOT:
        raise ValueError(f"{len(ranges)} ranges do not fit a record slot")
    return slot.ljust(_SLOT, b"\0")


def parse_record(raw: bytes, *, size: int, on_disk: int) -> tuple[int, list[Range]] | None:
    """The newest whole slot's (seq, ranges), or None when neither slot is one we would have
    written for this file: torn or edited (its sha256), another size, gaps or overlaps, a
    ``done`` past what the partial holds, or a partial longer than the file (ranges never write
    past its end, and the tail would be placed unhashed). The model folder is not trusted: a bad
    record costs a fresh start, never a wrong byte."""
    if on_disk > size:
        return None
    slots = [_parse_slot(raw[i : i + _SLOT], size=size, on_disk=on_disk) for i in (0, _SLOT)]
    valid = [slot for slot in slots if slot is not None]
    return max(valid, key=lambda slot: slot[0]) if valid else None


def _parse_slot(raw: bytes, *, size: int, on_disk: int) -> tuple[int, list[Range]] | None:
    body, _, rest = raw.rstrip(b"\0").partition(b"\n")
    if rest != hashlib.sha256(body).hexdigest().encode() + b"\n":
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("version") != _VERSION or data.get("size") != size:
        return None
    seq, rows = data.get("seq"), data.get("ranges")
    if type(seq) is not int or not isinstance(rows, list) or not 0 < len(rows) <= MAX_RANGES:
        return None
    ranges, expected_start = [], 0
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and all(type(v) is int for v in row)):
            return None
        start, end, done = row
        # a range with no byte yet (done == start) may begin past the end of a fresh partial
        if start != expected_start or not start <= done <= end or (done > start and done > on_disk):
            return None
        ranges.append(Range(start, end, done))
        expected_start = end
    return (seq, ranges) if expected_start == size else None


def record_path(part: Path) -> Path:
    return part.with_name(part.name + RECORD_SUFFIX)


def read_record(part: Path, size: int) -> list[Range] | None:
    """The partial's ranges, if it has a valid record (read together with the partial's size)."""
    found = _read(part, size)
    return found[1] if found else None


def _read(part: Path, size: int) -> tuple[int, list[Range]] | None:
    try:
        with record_path(part).open("rb") as handle:
            raw = handle.read(2 * _SLOT)
        on_disk = part.stat().st_size
    except OSError:
        return None
    return parse_record(raw, size=size, on_disk=on_disk)


class RangeRecord:
    """The progress record of one partial, updated in place: two slots, written in turn.

    Each update is one ``pwrite`` of a whole 4 KiB slot at a 4 KiB offset, which a kill cannot
    split (the page cache takes a page whole); a torn slot (power loss) fails its sha256 and the
    other, older slot is used. So a reader always finds the last update or the one before it,
    as with an atomic rename, at 6 µs an update instead of the 3–4 ms an ``os.replace`` costs
    on ext4 here (it flushes the replacing file).
    """

    def __init__(self, part: Path, size: int) -> None:
        self.size = size
        found = _read(part, size)
        self._seq = found[0] if found else 0
        self._fd = os.open(record_path(part), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)

    def save(self, ranges: list[Range]) -> None:
        self._seq += 1
        os.pwrite(self._fd, dump_record(self.size, ranges, seq=self._seq), (self._seq % 2) * _SLOT)

    def close(self) -> None:
        os.close(self._fd)


def drop_record(part: Path) -> None:
    record_path(part).unlink(missing_ok=True)
