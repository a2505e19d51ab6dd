"""Large files fetched as several byte ranges at once (provision/segmented.py), against the
real CLI and the fake hub: kill -9 at random points, a server that ignores ``Range``, a range
that keeps failing, a 429 storm, and the cap on connections per host.

The seed is printed (``-s``) and can be pinned with ``PROVISION_RELIABILITY_SEED``.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from provision import segmented, segments
from provision.download import CHUNK_SIZE, Downloader
from provision.errors import DownloadError
from provision.files import RemoteFile
from provision.segments import Range
from tests.cli_runner import run_cli, start_cli
from tests.fakes._server import Recorded
from tests.fakes.hf_hub import FakeCDN, FakeHFHub
from tests.manifest_files import lock_of
from tests.reliability._support import (
    KillableHFHub,
    assert_final_paths_hold_only_good_bytes,
    hf_settings,
    leftovers,
    models_manifest,
    payload,
)

pytestmark = pytest.mark.slow

BIG = payload(4 * segments.MIN_RANGE, 11)  # four ranges with the default connections
FILES = {"config.json": b'{"hidden_size": 64}', "model.safetensors": BIG}
THROTTLE = 4 << 20  # per connection: each range takes 2 s, so kills land mid-range
# A file is split only once its one stream proves slow (segments.Ramp): the tests of ranges cap
# each connection so that it does (8 MiB/s: 4 s alone, about 1 s in four ranges).
CAPPED = 8 << 20


@pytest.fixture()
def seed() -> int:
    value = int(os.environ.get("PROVISION_RELIABILITY_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"\nreliability seed: {value} (rerun with PROVISION_RELIABILITY_SEED={value})")
    return value


def manifest_for(tmp_path: Path, url: str, extra_settings: str = "") -> Path:
    return models_manifest(tmp_path, hf_settings(url) + extra_settings, "  tiny: {source: hf://org/tiny}\n")


def big_gets(hub: FakeHFHub) -> list[str]:
    """The Range header of every GET of the big file, in arrival order ("" when none)."""
    return [
        r.headers.get("range", "") for r in hub.requests if r.method == "GET" and r.path.endswith("/model.safetensors")
    ]


def on_disk(model: Path) -> int:
    """Bytes of the big file a resume would not fetch again."""
    if (model / "model.safetensors").exists():
        return len(BIG)
    parts = (model / ".cache" / "provision" / "partial").glob("*.part")
    return sum(r.done - r.start for part in parts for r in segments.read_record(part, len(BIG)) or [])


def assert_placed(tmp_path: Path) -> None:
    model = tmp_path / "models" / "tiny"
    assert (model / "model.safetensors").read_bytes() == BIG
    lock = lock_of(tmp_path / "m.yaml")
    assert lock["models"]["tiny"]["files"]["model.safetensors"]["sha256"] == hashlib.sha256(BIG).hexdigest()
    assert leftovers(tmp_path / "models") == []  # no partial, no record, no record's temp


def test_kill_at_random_points_of_a_multi_range_download_resumes_every_range(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    with KillableHFHub() as hub:
        hub.add_repo("org/tiny", FILES)
        hub.faults.throttle_bps = THROTTLE
        manifest = manifest_for(tmp_path, hub.url)
        model = tmp_path / "models" / "tiny"
        part_dir = model / ".cache" / "provision" / "partial"
        killed, ranges_seen = 0, 0
        for trial in range(1, 11):
            remaining = len(BIG) - on_disk(model)
            at = rng.randint(1, max(remaining // 4, 1))
            process = start_cli("apply", manifest)
            hub.kill.arm(process.pid, at_bytes=at)
            try:
                code = process.wait(timeout=60)
            finally:
                hub.kill.disarm()
                process.communicate()
            killed += code == -signal.SIGKILL
            print(f"  trial {trial:2}: kill after {at} of {remaining} bytes left: exit {code}")
            assert_final_paths_hold_only_good_bytes(model, FILES)
            for part in part_dir.glob("*.part"):  # the record beside a partial is always whole and ours
                record = segments.read_record(part, len(BIG))
                assert record is not None, segments.record_path(part).read_bytes()
                ranges_seen = max(ranges_seen, len(record))
        assert killed >= 8, "too few kills interrupted a run: the trials would prove little"
        assert ranges_seen >= 4, "the download was not split: nothing here tested ranges"
        hub.faults.throttle_bps = None
        time.sleep(0.2)  # let the fake's handlers for the killed clients notice the closed sockets
        result = run_cli("apply", manifest)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_placed(tmp_path)
        # What each kill may cost again, per range in flight: the chunk being read (the record is
        # updated after every chunk written), and the stand-in's piece being written when the kill
        # fired plus the one it wrote into the dead socket before noticing (it counts both).
        step = THROTTLE // 20
        in_flight = ranges_seen * (CHUNK_SIZE + 2 * step)
        fetched_twice = hub.bytes_served - sum(map(len, FILES.values()))
        print(f"  fetched twice: {fetched_twice} bytes over {killed} kills (bound {killed * in_flight})")
        assert fetched_twice <= killed * in_flight


def test_a_kill_just_after_the_stream_is_split_resumes_the_shortened_range_and_its_tail(tmp_path: Path) -> None:
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", FILES)
        hub.faults.throttle_bps = THROTTLE
        manifest = manifest_for(tmp_path, hub.url)
        part_dir = tmp_path / "models" / "tiny" / ".cache" / "provision" / "partial"
        process = start_cli("apply", manifest)
        try:
            seen, deadline = None, time.monotonic() + 30
            while time.monotonic() < deadline and not (seen and len(seen) > 1):
                parts = list(part_dir.glob("*.part"))
                seen = segments.read_record(parts[0], len(BIG)) if parts else None
                time.sleep(0.002)
            process.send_signal(signal.SIGKILL)  # the split is in the record: the tail may not have started
        finally:
            process.communicate(timeout=30)
        assert seen is not None and len(seen) > 1, "the stream was never split"
        [part] = part_dir.glob("*.part")
        record = segments.read_record(part, len(BIG))
        assert record is not None, segments.record_path(part).read_bytes()
        # one stream from byte 0, cut at the first of four boundaries, then the three ranges of its tail
        assert [r.start for r in record] == [i * segments.MIN_RANGE for i in range(4)], record
        assert record[0].done > 0
        kept = sum(r.done - r.start for r in record)
        hub.faults.throttle_bps = None
        time.sleep(0.2)  # let the fake's handlers for the killed client notice the closed sockets
        served = hub.bytes_served
        result = run_cli("apply", manifest)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_placed(tmp_path)
        # the rerun asked for exactly what the record did not hold (and the small file, if it was not placed)
        assert len(BIG) - kept <= hub.bytes_served - served <= len(BIG) - kept + len(FILES["config.json"])


def test_a_server_that_ignores_range_gets_one_stream(tmp_path: Path) -> None:
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", FILES)
        hub.faults.ignore_range = True  # 200 with the whole body, and no Accept-Ranges
        result = run_cli("apply", manifest_for(tmp_path, hub.url))
        assert result.returncode == 0, result.stdout + result.stderr
        assert_placed(tmp_path)
        gets = big_gets(hub)
        # one probe for the first range, answered 200, then the whole file as one plain GET:
        # the other ranges were never asked for
        assert len(gets) == 2 and gets[0].startswith("bytes=0-") and gets[1] == "", gets


def test_a_range_that_fails_is_retried_alone(tmp_path: Path) -> None:
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", FILES)
        hub.faults.throttle_bps = CAPPED
        third = 2 * segments.MIN_RANGE  # where the third of four ranges starts
        hub.faults.fail_range = {"start": third, "end": third + 1, "count": 3, "status": 503}
        result = run_cli("apply", manifest_for(tmp_path, hub.url))
        assert result.returncode == 0, result.stdout + result.stderr
        assert_placed(tmp_path)
        gets = big_gets(hub)
        starts = [int(g.removeprefix("bytes=").split("-")[0]) for g in gets]
        assert starts.count(third) == 4, gets  # three failures, then the range came
        # every other range was asked once (the first went on as the probe); a connection left
        # idle may take half of a range's rest (its start is no boundary), never a range again
        boundaries = [r.start for r in segments.plan(len(BIG), segments.RANGES_PER_FILE)]
        assert [starts.count(b) for b in boundaries if b != third] == [1, 1, 1], gets


def test_an_idle_connection_takes_half_of_a_slow_ranges_rest(tmp_path: Path) -> None:
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", FILES)
        hub.faults.throttle_bps = CAPPED
        third = 2 * segments.MIN_RANGE  # where the third of four ranges starts
        hub.faults.slow_range = {"start": third, "bps": CAPPED // 8}  # 8 s alone; the others take 1 s
        result = run_cli("apply", manifest_for(tmp_path, hub.url))
        assert result.returncode == 0, result.stdout + result.stderr
        assert_placed(tmp_path)
        spans = [tuple(int(v) for v in g.removeprefix("bytes=").split("-")) for g in big_gets(hub)]
        end = third + segments.MIN_RANGE - 1  # the slow range's last byte
        # once done, another connection asked for the second half of what the slow one had left
        assert any(third < start <= end and last == end for start, last in spans), spans


def test_a_range_that_keeps_failing_fails_the_model_and_the_rerun_fetches_only_the_rest(tmp_path: Path) -> None:
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", FILES)
        hub.faults.throttle_bps = CAPPED
        third = 2 * segments.MIN_RANGE
        hub.faults.fail_range = {"start": third, "end": third + 1, "count": 100, "status": 503}
        manifest = manifest_for(tmp_path, hub.url)
        result = run_cli("apply", manifest)
        assert result.returncode != 0
        assert f"bytes {third}-" in result.stdout + result.stderr  # the error names the range
        [part] = (tmp_path / "models" / "tiny" / ".cache" / "provision" / "partial").glob("*.part")
        record = segments.read_record(part, len(BIG))
        assert record is not None
        kept = sum(r.done - r.start for r in record)
        assert kept > 0
        hub.faults.reset()
        served = hub.bytes_served
        result = run_cli("apply", manifest)
        assert result.returncode == 0, result.stdout + result.stderr
        assert_placed(tmp_path)
        # the rerun asked only for what the record did not hold (plus what was in flight at the stop)
        assert hub.bytes_served - served <= len(BIG) - kept + len(record) * CHUNK_SIZE


def test_a_429_storm_backs_off_the_whole_host(tmp_path: Path) -> None:
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", {"model.safetensors": BIG})
        # After the probe (the first range), the next three requests get 429 with Retry-After: 1.
        # Two connections, and the probe holds one for 2.7 s, so the storm's requests go one at a
        # time on the other: each was sent after the client had heard the 429 before it, whichever
        # range it was for. Without the host-wide pause, the next range would ask at once.
        hub.faults.retry_after = {"count": 3, "seconds": 1, "after": 1}
        hub.faults.throttle_bps = 3 << 20
        result = run_cli("apply", manifest_for(tmp_path, hub.url, "  max_connections_per_host: 2\n"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert (tmp_path / "models" / "tiny" / "model.safetensors").read_bytes() == BIG
        gets = [r for r in hub.requests if r.method == "GET" and r.path.endswith("/model.safetensors")]
        refused = [r for r in gets if r.status == 429]
        assert len(refused) == 3
        assert len({r.headers["range"] for r in refused}) > 1, "the storm hit one range only"
        for told in refused:
            early = [(r.headers["range"], round(r.at - told.at, 3)) for r in gets if told.at < r.at < told.at + 1.0]
            assert not early, f"asked within Retry-After: 1 of a 429 to {told.headers['range']}: {early}"


def test_connections_per_host_are_capped(tmp_path: Path) -> None:
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", {**FILES, "model-2.safetensors": payload(len(BIG), 12)})
        hub.faults.throttle_bps = 8 << 20  # bodies overlap long enough to count them
        result = run_cli("apply", manifest_for(tmp_path, hub.url, "  max_connections_per_host: 3\n"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert_placed(tmp_path)
        assert hub.bodies_peak == 3, hub.bodies_peak  # eight ranges wanted, three at a time


def test_no_range_gives_work_away_while_another_waits_for_a_connection(tmp_path: Path) -> None:
    # Eight ranges over two connections come in four waves. A connection freed while ranges
    # still wait goes to one of them; only in the last wave may an idle one take part of a range
    # (when the waves' start times drift apart by over STEAL_AFTER_SECONDS, which a busy machine
    # can cause). So every range that gave work away was cut after the last planned range was asked for.
    files = {"config.json": FILES["config.json"], "model.safetensors": payload(8 * segments.MIN_RANGE, 13)}
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", files)
        hub.faults.throttle_bps = CAPPED  # uniform: no range is slow
        result = run_cli("apply", manifest_for(tmp_path, hub.url, "  max_connections_per_host: 2\n"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert (tmp_path / "models" / "tiny" / "model.safetensors").read_bytes() == files["model.safetensors"]
    asked = [(r, *asked_span(r)) for r in hub.requests if r.method == "GET" and r.path.endswith("/model.safetensors")]
    planned = [(r, first) for r, first, _ in asked if first % segments.MIN_RANGE == 0]  # the plan's boundaries
    assert sorted(first for _, first in planned) == [i * segments.MIN_RANGE for i in range(8)], asked  # each once
    last_planned = max(r.at for r, _ in planned)
    for _, first, _ in asked:
        if first % segments.MIN_RANGE:  # given away: cut from the range that held its start
            victim = next(r for r, a, b in asked if a < first < b)
            assert victim.ended is not None and victim.ended > last_planned, (first, asked)


def asked_span(request: Recorded) -> tuple[int, int]:
    """The bytes a GET's ``Range: bytes=A-B`` asked for, as [A, B + 1)."""
    first, last = request.headers["range"].removeprefix("bytes=").split("-")
    return int(first), int(last) + 1


def test_ranges_follow_the_redirect_to_a_cdn_without_the_token(tmp_path: Path) -> None:
    with FakeHFHub() as hub, FakeCDN() as cdn:
        hub.add_repo("org/tiny", FILES, gated=True)
        hub.tokens = {"hf_secret_canary"}
        hub.redirect_to(cdn)
        cdn.faults.throttle_bps = CAPPED
        result = run_cli("apply", manifest_for(tmp_path, hub.url), env={"HF_TOKEN": "hf_secret_canary"})
        assert result.returncode == 0, result.stdout + result.stderr
        assert_placed(tmp_path)
        ranges = {r.headers.get("range") for r in cdn.requests if r.method == "GET"}
        assert len(ranges) >= 4, ranges  # every range went to the CDN, each its own request
        assert cdn.authorizations() == []


def fetch_in_a_thread(file: RemoteFile, part: Path, *, wait: float) -> tuple[bool, BaseException | None]:
    """Fetch ``file`` into ``part`` in-process, for at most ``wait`` seconds: whether it hung, and
    what it raised (None: it finished)."""
    downloader = Downloader()
    outcome: list[BaseException | None] = []

    def fetch() -> None:
        try:
            segmented.fetch_ranges(downloader, file, part, resource="tiny", on_progress=lambda n: None)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test reports what it was
            outcome.append(exc)

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(wait)
    downloader.close()
    return worker.is_alive(), (outcome or [None])[0]


def test_no_thread_for_a_range_fails_the_file_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker whose next range got no thread (RuntimeError: can't start new thread) left the
    # count of active ranges one too high, and the job waited for that range forever.
    class ThreadLimit(ThreadPoolExecutor):
        started = 0

        def submit(self, *args: Any, **kwargs: Any) -> Any:
            ThreadLimit.started += 1
            if ThreadLimit.started > 2:  # the probe and one more, then the process limit
                raise RuntimeError("can't start new thread")
            return super().submit(*args, **kwargs)

    monkeypatch.setattr(segmented, "ThreadPoolExecutor", ThreadLimit)
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", {"model.safetensors": BIG})
        hub.faults.throttle_bps = CAPPED  # slow enough to be split into more ranges than threads
        url = f"{hub.url}/org/tiny/resolve/main/model.safetensors"
        file = RemoteFile("model.safetensors", len(BIG), sha256=hashlib.sha256(BIG).hexdigest(), url=url)
        part = tmp_path / "big.part"
        hung, outcome = fetch_in_a_thread(file, part, wait=60)
    assert not hung, "the download hung when no thread could start for a range"
    assert isinstance(outcome, DownloadError) and "no thread for another range" in str(outcome), outcome
    assert ThreadLimit.started > 2  # the limit was reached, not just set
    record = segments.read_record(part, len(BIG))
    assert record is not None and sum(r.done - r.start for r in record) > 0  # the progress is kept


def test_a_read_error_in_the_hasher_fails_the_file_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hasher reads a resumed prefix back from the partial; an error there (EIO) killed its
    # thread, and the stream at the prefix's end waited for a hash buffer forever.
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", {"model.safetensors": BIG})
        url = f"{hub.url}/org/tiny/resolve/main/model.safetensors"
        file = RemoteFile("model.safetensors", len(BIG), sha256=hashlib.sha256(BIG).hexdigest(), url=url)
        part = tmp_path / "big.part"
        part.write_bytes(BIG[: segments.MIN_RANGE])  # a single stream's prefix, hashed by reading it back

        def failing_read(fd: int, buffers: list[memoryview], offset: int) -> int:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        monkeypatch.setattr(os, "preadv", failing_read)
        hung, outcome = fetch_in_a_thread(file, part, wait=30)
        assert not hung, "the download hung after the hasher failed"
        assert isinstance(outcome, OSError) and outcome.errno == errno.EIO, outcome
        record = segments.read_record(part, len(BIG))
        assert record is not None and record[0].done >= segments.MIN_RANGE  # the progress is kept


def test_a_resumed_record_full_of_ranges_is_not_split_past_what_its_slot_holds(tmp_path: Path) -> None:
    # Idle connections taking over ranges' ends fill a record up to MAX_RANGES rows. Resumed (with
    # more connections per host than the run that wrote it, a range spans several of the plan's
    # pieces), the ramp split the one unfinished range beyond that: a record with more rows than
    # MAX_RANGES is refused, and the next resume started the file over.
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", {"model.safetensors": BIG})
        hub.faults.throttle_bps = CAPPED  # slow enough for the ramp to split what is left
        url = f"{hub.url}/org/tiny/resolve/main/model.safetensors"
        file = RemoteFile("model.safetensors", len(BIG), sha256=hashlib.sha256(BIG).hexdigest(), url=url)
        part = tmp_path / "big.part"
        first = segments.MIN_RANGE  # finished, in MAX_RANGES - 1 pieces; the rest in one range
        bounds = [first * i // (segments.MAX_RANGES - 1) for i in range(segments.MAX_RANGES)]
        ranges = [Range(a, b, b) for a, b in itertools.pairwise(bounds)] + [Range(first, len(BIG), first)]
        part.write_bytes(BIG[:first])
        written = segments.RangeRecord(part, len(BIG))
        written.save(ranges)
        written.close()
        downloader = Downloader()
        try:
            hashes = segmented.fetch_ranges(downloader, file, part, resource="tiny", on_progress=lambda n: None)
        finally:
            downloader.close()
        assert hashes is not None and hashes.sha256.hexdigest() == file.sha256
        record = segments.read_record(part, len(BIG))  # what a kill at the end would have found
        assert record is not None, segments.record_path(part).read_bytes()
