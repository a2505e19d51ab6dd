"""Byte ranges of one large file, and the record that lets a killed download resume each of them.

Pure decisions (how to split a file, what a progress record may say, how far the bytes on disk
run unbroken) plus the two small file operations on the record. The fetching is in
:mod:`provision.segmented`.

Layout beside the partial (see :mod:`provision.download`)::

    <digest>-<path hash>.part          the file's bytes, each range written at its own offset
    <digest>-<path hash>.part.ranges   {"version": 1, "size": N, "ranges": [[start, end, done], ...]}

A range's ``done`` only ever names bytes already written to the partial (the write comes first,
then the record is replaced atomically), so after a kill every range resumes from ``done`` and
what is fetched again is at most what was in flight. A partial without a record was written as
one stream from byte 0, so its size is how far it got.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

# A range smaller than this is not worth its own connection (a request costs a round trip);
# aria2c's -k (min split size) is the same idea. Files under two of these go as one stream.
MIN_RANGE = 8 << 20
# Ranges a file is split into (at most; fewer when small). More ranges than connections is fine:
# they queue for the host's connections, and a slow connection then holds back less of the file.
RANGES_PER_FILE = 16
RECORD_SUFFIX = ".ranges"
_VERSION = 1
_MAX_RANGES = 1024  # a record listing more was not written by us


@dataclass
class Range:
    """Bytes ``start..end`` (end exclusive) of the file; ``start..done`` are on disk."""

    start: int
    end: int
    done: int

    @property
    def finished(self) -> bool:
        return self.done >= self.end


def should_split(size: int, connections: int, *, min_range: int = MIN_RANGE) -> bool:
    """Whether a file is worth fetching as several ranges at once."""
    return connections > 1 and size >= 2 * min_range


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


def dump_record(size: int, ranges: list[Range]) -> bytes:
    return json.dumps({"version": _VERSION, "size": size,
                       "ranges": [[r.start, r.end, r.done] for r in ranges]}, separators=(",", ":")).encode()


def parse_record(raw: bytes, *, size: int, on_disk: int) -> list[Range] | None:
    """The ranges a record lists, or None when it is not one we would have written for this
    file: another size, gaps or overlaps, or ``done`` past what the partial holds (the model
    folder is not trusted; a bad record costs a fresh start, never a wrong byte)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("version") != _VERSION or data.get("size") != size:
        return None
    rows = data.get("ranges")
    if not isinstance(rows, list) or not 0 < len(rows) <= _MAX_RANGES:
        return None
    ranges, expected_start = [], 0
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and all(type(v) is int for v in row)):
            return None
        start, end, done = row
        if start != expected_start or not start <= done <= end or done > on_disk:
            return None
        ranges.append(Range(start, end, done))
        expected_start = end
    return ranges if expected_start == size else None


def record_path(part: Path) -> Path:
    return part.with_name(part.name + RECORD_SUFFIX)


def read_record(part: Path, size: int) -> list[Range] | None:
    """The partial's ranges, if it has a valid record (read together with the partial's size)."""
    try:
        raw = record_path(part).read_bytes()
        on_disk = part.stat().st_size
    except OSError:
        return None
    if len(raw) > 64 << 10:
        return None
    return parse_record(raw, size=size, on_disk=on_disk)


def write_record(part: Path, size: int, ranges: list[Range]) -> None:
    """Replace the record atomically: a kill leaves the old one or the new one, never half."""
    target = record_path(part)
    temporary = target.with_name(target.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, dump_record(size, ranges))
    finally:
        os.close(fd)
    os.replace(temporary, target)


def drop_record(part: Path) -> None:
    for path in (record_path(part), record_path(part).with_name(record_path(part).name + ".tmp")):
        path.unlink(missing_ok=True)
