"""SIGINT and SIGTERM during a throttled download: a prompt stop that keeps the partial, exit
130/143, the cursor shown again, a JSON document with ``--json``, a second signal that exits at
once, and a rerun that resumes (asks for a ``Range``) instead of starting over.

The stop latency (signal sent -> process gone) is printed (``-s``); the pass/fail bound is a
generous 5 s because machines are noisy. The target is 1 s: :data:`provision.signals.GRACE_SECONDS`
bounds it by construction, and ``benchmarks/bench_interrupt.py`` measures it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.apply_support import hub_manifest, partial_sizes, payload
from tests.cli_runner import REPO_ROOT, run_cli, start_cli
from tests.fakes.hf_hub import FakeHFHub
from tests.manifest_files import write_manifest

BIG = payload(6 << 20, 11)
FILES = {"config.json": b'{"hidden_size": 64}', "model.safetensors": BIG}
THROTTLE = 1 << 20  # 1 MiB/s: the big file takes 6 s, so a signal lands mid-file
LATENCY_BOUND = 5.0  # seconds; generous on purpose (the target, 1 s, is printed)


def wait_for_partial(partial_dir: Path, process: subprocess.Popen[str], timeout: float = 30) -> int:
    """Block until a partial file holds some bytes; return how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sizes = partial_sizes(partial_dir)
        if sizes and max(sizes.values()) > 64 << 10:
            return max(sizes.values())
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"no partial file under {partial_dir} within {timeout} s")


def interrupt(process: subprocess.Popen[str] | subprocess.Popen[bytes], signum: int) -> float:
    """Send ``signum``; return the seconds until the process exited."""
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"still running 30 s after {signal.Signals(signum).name}") from None
    return time.monotonic() - sent


@pytest.fixture()
def hub():  # type: ignore[no-untyped-def]
    with FakeHFHub() as server:
        server.add_repo("org/tiny", FILES)
        server.faults.throttle_bps = THROTTLE
        yield server


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_download_keeps_the_partial_and_the_rerun_resumes(
    tmp_path: Path, hub: FakeHFHub, signum: int, code: int
) -> None:
    manifest = hub_manifest(tmp_path, hub.url, tiny="org/tiny")
    model_dir = tmp_path / "models" / "tiny"
    partial_dir = model_dir / ".cache" / "provision" / "partial"
    process = start_cli("apply", manifest)
    wait_for_partial(partial_dir, process)
    latency = interrupt(process, signum)
    out, err = process.communicate()
    print(f"\n{signal.Signals(signum).name} stop latency: {latency:.3f} s (target 1 s, bound {LATENCY_BOUND} s)")
    assert process.returncode == code, out + err
    assert "interrupted" in err and "Traceback" not in err, err
    assert latency < LATENCY_BOUND
    kept = partial_sizes(partial_dir)
    assert kept and max(kept.values()) > 0, "the partial file was not kept"
    assert not (model_dir / "model.safetensors").exists()
    # The workers stopped: nothing more is written once the process is gone.
    time.sleep(0.3)
    assert partial_sizes(partial_dir) == kept

    hub.faults.throttle_bps = None
    before = len(hub.requests)
    rerun = run_cli("apply", manifest)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert (model_dir / "model.safetensors").read_bytes() == BIG
    ranges = [r.headers.get("range") for r in hub.requests[before:] if r.path.endswith("model.safetensors")]
    assert f"bytes={max(kept.values())}-" in ranges, f"the rerun did not resume: {ranges}"


def test_json_output_says_interrupted(tmp_path: Path, hub: FakeHFHub) -> None:
    manifest = hub_manifest(tmp_path, hub.url, tiny="org/tiny")
    process = start_cli("apply", manifest, "--json")
    wait_for_partial(tmp_path / "models" / "tiny" / ".cache" / "provision" / "partial", process)
    interrupt(process, signal.SIGINT)
    out, err = process.communicate()
    assert process.returncode == 130, out + err
    document = json.loads(out)
    assert document["interrupted"] is True and document["signal"] == "SIGINT" and document["ok"] is False
    assert document["exit_code"] == 130


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_the_cursor_is_shown_again_at_a_terminal(tmp_path: Path, hub: FakeHFHub, signum: int, code: int) -> None:
    manifest = hub_manifest(tmp_path, hub.url, tiny="org/tiny")
    partial_dir = tmp_path / "models" / "tiny" / ".cache" / "provision" / "partial"
    leader, follower = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "provision", "apply", str(manifest)],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "COLUMNS": "120"},
    )
    os.close(follower)
    os.set_blocking(leader, False)
    seen = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            seen.extend(chunk)

    deadline = time.monotonic() + 30
    while not partial_sizes(partial_dir) and time.monotonic() < deadline:
        drain()
        time.sleep(0.02)
    assert b"\x1b[?25l" in seen, "the progress display never hid the cursor: the test proves nothing"
    interrupt(process, signum)
    drain()
    os.close(leader)
    assert process.returncode == code, seen.decode(errors="replace")
    assert seen.rfind(b"\x1b[?25h") > seen.rfind(b"\x1b[?25l"), "the cursor was left hidden"


# A command whose clean-up hangs after the first signal (as a worker stuck in a silent read
# would): the second signal must end it at once; the watchdog, alone, after GRACE_SECONDS.
HANGING_COMMAND = textwrap.dedent("""
    import sys, time
    from provision import signals
    signals.GRACE_SECONDS = float(sys.argv[1])
    with signals.handling(lambda signum: print("reported", signum, flush=True)):
        try:
            print("ready", flush=True)
            time.sleep(120)
        except signals.Interrupted:
            time.sleep(120)  # a clean-up that never ends
""")


def start_hanging(grace: float) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HANGING_COMMAND, str(grace)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


def test_a_second_signal_exits_at_once() -> None:
    process = start_hanging(grace=100)  # the watchdog cannot be what ends it
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    latency = interrupt(process, signal.SIGINT)
    out, err = process.communicate()
    print(f"\nsecond-signal exit latency: {latency:.3f} s")
    assert process.returncode == 130, out + err
    assert out.count("reported") == 1, out


def test_a_hung_clean_up_is_cut_short_by_the_watchdog() -> None:
    process = start_hanging(grace=0.5)
    latency = interrupt(process, signal.SIGTERM)
    out, err = process.communicate()
    print(f"\nwatchdog exit latency: {latency:.3f} s (grace 0.5 s)")
    assert process.returncode == 143, out + err
    assert out.count("reported") == 1, out
    assert latency < LATENCY_BOUND


def test_ctrl_c_at_the_destroy_prompt_is_an_interrupt_and_removes_nothing(tmp_path: Path) -> None:
    from tests.pty_session import Terminal

    source = tmp_path / "src"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"w" * 1024)
    manifest = write_manifest(
        tmp_path, "version: 1\nsettings: {models_dir: models}\nmodels:\n  m: {source: 'file://src'}\n"
    )
    assert run_cli("apply", manifest).returncode == 0
    session = Terminal("destroy", str(manifest))
    try:
        session.expect("?", timeout=60)  # the confirmation prompt
        session.send("\x03")
        code = session.close()
    finally:
        session.close()
    assert code == 130, session.text
    assert (tmp_path / "models" / "m" / "weights.bin").exists()
