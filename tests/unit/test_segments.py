"""Range planning, the progress record and the contiguous prefix (provision/segments.py), and
the per-host gate (provision/hosts.py): pure logic, no network."""

from __future__ import annotations

import hashlib
import threading
from itertools import pairwise
from pathlib import Path

import pytest

from provision import segments
from provision.hosts import HostGate
from provision.segments import Range

MiB = 1 << 20


def covers(ranges: list[Range], size: int) -> bool:
    return ranges[0].start == 0 and ranges[-1].end == size and all(a.end == b.start for a, b in pairwise(ranges))


@pytest.mark.parametrize(
    ("size", "most", "parts"),
    [
        (16 * MiB, 16, 2),  # ranges of at least MIN_RANGE
        (256 * MiB, 16, 16),
        (256 * MiB, 4, 4),
        (100 * MiB + 7, 16, 12),
        (16 * MiB, 1, 1),
    ],
)
def test_plan_splits_into_at_most_n_ranges_of_at_least_min(size: int, most: int, parts: int) -> None:
    ranges = segments.plan(size, most)
    assert len(ranges) == parts
    assert covers(ranges, size)
    assert all(r.done == r.start for r in ranges)
    assert len(ranges) == 1 or min(r.end - r.start for r in ranges) >= segments.MIN_RANGE


def test_plan_keeps_a_single_streams_prefix_as_one_finished_range() -> None:
    ranges = segments.plan(64 * MiB, 4, kept=10 * MiB)
    assert ranges[0] == Range(0, 10 * MiB, 10 * MiB)
    assert covers(ranges, 64 * MiB) and len(ranges) == 5
    assert all(not r.finished for r in ranges[1:])


def test_only_files_of_two_ranges_or_more_go_the_ranged_way() -> None:
    assert segments.is_large(2 * segments.MIN_RANGE)
    assert not segments.is_large(2 * segments.MIN_RANGE - 1)


def test_contiguous_end_stops_at_the_first_gap() -> None:
    ranges = [Range(0, 10, 10), Range(10, 20, 15), Range(20, 30, 30)]
    assert segments.contiguous_end(ranges, 0) == 15
    assert segments.contiguous_end(ranges, 12) == 15
    assert segments.contiguous_end(ranges, 15) == 15  # range 2 is ahead of the gap
    ranges[1].done = 20
    assert segments.contiguous_end(ranges, 0) == 30
    assert segments.contiguous_end([Range(0, 10, 0), Range(10, 20, 20)], 0) == 0


def test_record_round_trips_and_a_torn_slot_falls_back_to_the_other(tmp_path: Path) -> None:
    part = tmp_path / "x.part"
    part.write_bytes(b"\0" * 30)
    first = [Range(0, 10, 4), Range(10, 20, 20), Range(20, 30, 25)]
    later = [Range(0, 10, 9), Range(10, 20, 20), Range(20, 30, 30)]
    record = segments.RangeRecord(part, 30)
    record.save(first)
    record.save(later)
    record.close()
    assert segments.read_record(part, 30) == later
    resumed = segments.RangeRecord(part, 30)  # a rerun goes on from the newest slot's sequence
    resumed.save(first)
    resumed.close()
    assert segments.read_record(part, 30) == first
    raw = bytearray(segments.record_path(part).read_bytes())
    assert b'"seq":3' in raw[4096:8192]  # updates alternate: 1 and 3 in slot 1, 2 in slot 0
    raw[4096 + 20] ^= 0xFF  # the newest slot half-written (power loss): its sha256 no longer matches
    segments.record_path(part).write_bytes(bytes(raw))
    assert segments.read_record(part, 30) == later
    segments.drop_record(part)
    assert segments.read_record(part, 30) is None and not segments.record_path(part).exists()


def slot(body: bytes) -> bytes:
    """A record slot whose sha256 matches ``body``: only the content can make it invalid."""
    return (body + b"\n" + hashlib.sha256(body).hexdigest().encode() + b"\n").ljust(4096, b"\0")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"version": 2, "seq": 1, "size": 30, "ranges": [[0, 30, 0]]}',
        b'{"version": 1, "seq": 1, "size": 31, "ranges": [[0, 31, 0]]}',  # another file's size
        b'{"version": 1, "seq": "1", "size": 30, "ranges": [[0, 30, 0]]}',
        b'{"version": 1, "seq": 1, "size": 30, "ranges": []}',
        b'{"version": 1, "seq": 1, "size": 30, "ranges": [[0, 10, 0], [12, 30, 12]]}',  # a gap
        b'{"version": 1, "seq": 1, "size": 30, "ranges": [[0, 20, 0], [10, 30, 10]]}',  # an overlap
        b'{"version": 1, "seq": 1, "size": 30, "ranges": [[0, 10, 11], [10, 30, 10]]}',  # done past its end
        b'{"version": 1, "seq": 1, "size": 30, "ranges": [[0, 10, 10], [10, 30, 29]]}',  # past what is on disk
        b'{"version": 1, "seq": 1, "size": 30, "ranges": [[0, 10, 5.5], [10, 30, 10]]}',
        b'{"version": 1, "seq": 1, "size": 30, "ranges": [[0, 10, true], [10, 30, 10]]}',
        b'{"version": 1, "seq": 1, "size": 30, "ranges": [[0, 20, 0]]}',  # does not reach the end
    ],
)
def test_a_record_we_would_not_have_written_is_refused(body: bytes) -> None:
    good = b'{"version": 1, "seq": 1, "size": 30, "ranges": [[0, 10, 10], [10, 30, 20]]}'
    assert segments.parse_record(slot(good) + slot(b""), size=30, on_disk=20) == (
        1,
        [Range(0, 10, 10), Range(10, 30, 20)],
    )
    assert segments.parse_record(slot(body) + slot(b""), size=30, on_disk=20) is None


def test_host_gate_back_off_holds_every_connection_of_that_host_only() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    gate = HostGate(2, clock=lambda: now[0], sleep=sleep)
    hub, other = ("https", "hub"), ("https", "cdn")
    gate.back_off(hub, 3.0)
    gate.back_off(hub, 1.0)  # a shorter wait does not cut the longer one short
    with gate.slot(other):
        assert slept == []
    with gate.slot(hub):
        assert now[0] == pytest.approx(103.0)
    with gate.slot(hub):  # the pause is over
        assert slept == [pytest.approx(3.0)]


def test_host_gate_caps_connections_per_host() -> None:
    gate = HostGate(2)
    inside, peak, lock = [0], [0], threading.Lock()
    release = threading.Event()

    def request() -> None:
        with gate.slot(("http", "hub")):
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            release.wait(5)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=request) for _ in range(5)]
    for t in threads:
        t.start()
    for _ in range(100):
        with lock:
            if inside[0] == 2:
                break
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join()
    assert peak[0] == 2


def test_host_gate_counts_the_requests_waiting_for_a_connection() -> None:
    gate, host, other = HostGate(1), ("https", "hub"), ("https", "cdn")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with gate.slot(host):
            holding.set()
            release.wait(5)

    first, second = threading.Thread(target=hold), threading.Thread(target=hold)
    first.start()
    assert holding.wait(5)
    holding.clear()
    second.start()
    for _ in range(500):  # until the second request is blocked on the one connection
        if gate.queued(host):
            break
        threading.Event().wait(0.01)
    assert (gate.queued(host), gate.queued(other)) == (1, 0)
    release.set()
    assert holding.wait(5)  # the second got the connection
    first.join(5)
    second.join(5)
    assert gate.queued(host) == 0


def test_ranges_with_no_byte_yet_are_valid_on_an_empty_partial() -> None:
    # a kill before the first byte lands: the partial is empty, every range still at its start
    fresh = b'{"version": 1, "seq": 1, "size": 30, "ranges": [[0, 10, 0], [10, 20, 10], [20, 30, 20]]}'
    assert segments.parse_record(slot(b"") + slot(fresh), size=30, on_disk=0) == (
        1,
        [Range(0, 10, 0), Range(10, 20, 10), Range(20, 30, 20)],
    )


def test_split_cuts_a_running_range_at_the_files_own_boundaries() -> None:
    size = 64 * MiB
    running = Range(0, size, 3 * MiB)
    pieces = segments.split(running, size, 4)
    # the boundaries of plan(size, 4), whatever ``done`` was: 16, 32, 48 MiB
    assert [(r.start, r.end, r.done) for r in pieces] == [
        (0, 16 * MiB, 3 * MiB),
        (16 * MiB, 32 * MiB, 16 * MiB),
        (32 * MiB, 48 * MiB, 32 * MiB),
        (48 * MiB, 64 * MiB, 48 * MiB),
    ]
    # past a boundary, the range keeps going to the next one
    assert [r.start for r in segments.split(Range(0, size, 20 * MiB), size, 4)] == [0, 32 * MiB, 48 * MiB]
    # a resumed range (not from 0) is cut only inside itself; with no boundary inside, it stays whole
    assert [r.start for r in segments.split(Range(16 * MiB, 48 * MiB, 17 * MiB), size, 4)] == [16 * MiB, 32 * MiB]
    assert segments.split(Range(50 * MiB, size, 51 * MiB), size, 4) == [Range(50 * MiB, size, 51 * MiB)]


def test_split_adds_no_more_ranges_than_the_record_has_room_for() -> None:
    size = 64 * MiB
    # room for one more row: the first cut only, the last piece runs on to the range's end
    assert [(r.start, r.end) for r in segments.split(Range(0, size, 3 * MiB), size, 4, room=1)] == [
        (0, 16 * MiB),
        (16 * MiB, size),
    ]
    assert segments.split(Range(0, size, 3 * MiB), size, 4, room=0) == [Range(0, size, 3 * MiB)]


def feed(ramp: segments.Ramp, rate: float, probes: float, *, at: float, got: int, streaming: int) -> tuple[float, int]:
    """Chunks arriving at ``rate`` bytes/s for ``probes`` probe windows (100 a window); the time and bytes after."""
    step = segments.PROBE_SECONDS / 100
    for _ in range(round(probes * 100)):
        at, got = at + step, got + int(rate * step)
        ramp.observe(at, got, 1 << 40, streaming)
    return at, got


def test_ramp_keeps_a_fast_stream_alone() -> None:
    ramp = segments.Ramp(16)
    at, got, size, step = 0.0, 0, 512 * MiB, segments.PROBE_SECONDS / 20
    while got < size:  # 600 MiB/s: under SPLIT_AFTER_SECONDS from the end at every check
        at, got = at + step, got + int(600 * MiB * step)
        assert ramp.observe(at, got, max(size - got, 0), 1) == 1, at
    slow = segments.Ramp(16)
    feed(slow, 300 * MiB, 1.5, at=0.0, got=0, streaming=1)  # a TiB left: over a second even at 300 MiB/s
    assert slow.allowed == 2


def test_ramp_splits_a_slow_stream_and_widens_when_two_go_faster() -> None:
    ramp = segments.Ramp(16)
    at, got = feed(ramp, 16 * MiB, 0.75, at=0.0, got=0, streaming=1)
    assert ramp.allowed == 1  # not measured long enough yet
    at, got = feed(ramp, 16 * MiB, 0.5, at=at, got=got, streaming=1)
    assert ramp.allowed == 2  # 16 MiB/s with a TiB to go: try a second connection
    at, got = feed(ramp, 16 * MiB, 3, at=at, got=got, streaming=1)
    assert ramp.allowed == 2  # the second is not receiving yet: no verdict
    feed(ramp, 32 * MiB, 1.5, at=at, got=got, streaming=2)
    assert ramp.allowed == 16  # two went twice as fast: each connection is capped


def test_ramp_stays_at_two_when_a_second_connection_does_not_pay() -> None:
    ramp = segments.Ramp(16)
    at, got = feed(ramp, 100 * MiB, 1.5, at=0.0, got=0, streaming=1)
    assert ramp.allowed == 2
    at, got = feed(ramp, 110 * MiB, 1.5, at=at, got=got, streaming=2)
    assert ramp.allowed == 2
    feed(ramp, 400 * MiB, 5, at=at, got=got, streaming=2)
    assert ramp.allowed == 2  # settled


def test_ramp_with_two_connections_goes_to_both_at_once_and_with_one_never_splits() -> None:
    two = segments.Ramp(2)
    feed(two, MiB, 1.5, at=0.0, got=0, streaming=1)
    assert two.allowed == 2
    one = segments.Ramp(1)
    feed(one, MiB, 5, at=0.0, got=0, streaming=1)
    assert one.allowed == 1


def test_ramp_skips_its_trial_once_the_host_proved_that_connections_are_capped() -> None:
    ramp = segments.Ramp(16)
    at, got = feed(ramp, 16 * MiB, 0.5, at=0.0, got=0, streaming=1)
    assert ramp.observe(at + 0.001, got + 1, 1 << 40, 1, proven=True) == 1  # its own rate decides the split
    at, got = feed(ramp, 16 * MiB, 1.5, at=at, got=got, streaming=1)
    assert ramp.allowed == 2
    assert ramp.observe(at + 0.001, got + 1, 1 << 40, 1, proven=True) == 16  # split, and no trial of its own
    gate = HostGate(4)
    assert not gate.proven(("http", "hub"))
    gate.prove(("http", "hub"))
    assert gate.proven(("http", "hub")) and not gate.proven(("http", "cdn"))


def test_a_record_beside_a_partial_longer_than_the_file_is_refused() -> None:
    finished = b'{"version": 1, "seq": 1, "size": 30, "ranges": [[0, 30, 30]]}'
    assert segments.parse_record(slot(finished) + slot(b""), size=30, on_disk=30) == (1, [Range(0, 30, 30)])
    assert segments.parse_record(slot(finished) + slot(b""), size=30, on_disk=31) is None  # its tail is not ours


def test_an_idle_connection_helps_the_range_due_last_and_both_are_then_due_together() -> None:
    fast, slow = 16 * MiB, 2 * MiB  # bytes per second
    near = Range(0, 16 * MiB, 8 * MiB)  # 8 MiB left at 16 MiB/s: due in 0.5 s
    far = Range(16 * MiB, 32 * MiB, 20 * MiB)  # 12 MiB left at 16 MiB/s: 0.75 s
    crawling = Range(32 * MiB, 48 * MiB, 44 * MiB)  # 4 MiB left at 2 MiB/s: 2 s, the last one due
    streams = [segments.Stream(near, fast), segments.Stream(far, fast), segments.Stream(crawling, slow)]
    victim, keeps = segments.steal_from(streams, fast) or (None, 0.0)
    assert victim is crawling and keeps == slow / (slow + fast)
    tail = segments.give_away(crawling, keeps)
    assert tail is not None
    assert (crawling.start, crawling.done) == (32 * MiB, 44 * MiB)  # its bytes on disk stay its own
    assert crawling.end == tail.start == tail.done and tail.end == 48 * MiB
    # due together: what each has left, at its rate
    assert (crawling.end - crawling.done) / slow == pytest.approx((tail.end - tail.start) / fast, rel=1e-6)
    # an unknown rate for the idle connection: halves
    assert segments.steal_from([segments.Stream(far, fast)], None) == (far, 0.5)


def test_no_help_for_a_range_due_soon_or_of_unknown_rate_or_too_small_to_cut() -> None:
    soon = Range(0, 16 * MiB, 12 * MiB)  # 4 MiB at 16 MiB/s: due in 0.25 s
    assert segments.steal_from([segments.Stream(soon, 16 * MiB)], 16 * MiB) is None
    assert segments.steal_from([segments.Stream(Range(0, 16 * MiB, MiB), None)], 16 * MiB) is None
    assert segments.steal_from([], 16 * MiB) is None
    small = Range(0, 16 * MiB, 16 * MiB - 2 * segments.STEAL_MIN + 1)  # its second half: under STEAL_MIN
    assert segments.give_away(small, 0.5) is None
    assert segments.give_away(small, 0.0) is None  # nothing left to it
    assert small.end == 16 * MiB  # untouched


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("bytes 0-9/10", (0, 10, 10)),
        ("bytes 8388608-16777215/67108864", (8388608, 16777216, 67108864)),
        ("BYTES 5-5/*", (5, 6, None)),  # the unit is case-insensitive; the length may be unknown
        (" bytes 1-2/3 ", (1, 3, 3)),
    ],
)
def test_content_range_gives_the_bytes_a_206_holds(value: str, parsed: tuple[int, int, int | None]) -> None:
    assert segments.parse_content_range(value) == parsed


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "bytes */10",  # a 416's form, not a range
        "bytes 9-0/10",  # last before first
        "bytes 0-10/10",  # last past the length
        "bytes 0-1,3-4/10",  # several ranges belong in a multipart body
        "bytes -1-5/10",
        "items 0-1/10",
        "bytes 0-1/10 trailing",
        "bytes 0-99999999999999999999/*",  # 20 digits: no file is that large
    ],
)
def test_content_range_that_describes_no_single_range_is_refused(value: str | None) -> None:
    assert segments.parse_content_range(value) is None
