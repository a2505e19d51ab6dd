"""Stop latency of ``provision apply`` on SIGINT and SIGTERM (issue 12: target under 1 s).

A throttled download from the Hugging Face fake (tests/fakes/hf_hub.py, in this process) is
started; once its partial file holds 64 KiB, the signal is sent and the time until the
process has exited is measured (its exit code must be 130 / 143). Median (min-max) over
``--repeat`` runs per signal. The throttle sets how long a worker waits for its current
256 KiB chunk, which is most of the latency; ``provision.signals.GRACE_SECONDS`` caps it.

    python benchmarks/bench_interrupt.py --repeat 5 [--throttle-kib 1024]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, provision_cmd

sys.path.insert(0, str(REPO_ROOT))  # the fakes are imported as tests.fakes.*

from tests.apply_support import hub_manifest, partial_sizes, payload
from tests.fakes.hf_hub import FakeHFHub


def once(hub: FakeHFHub, work: Path, signum: int) -> float:
    manifest = hub_manifest(work, hub.url, tiny="org/tiny")
    env = {
        **os.environ,
        "PROVISION_STATE_DIR": str(work / "state"),
        "NO_PROXY": "127.0.0.1",
        "PYTHONPATH": str(REPO_ROOT),
    }
    process = subprocess.Popen(
        provision_cmd("apply", str(manifest)),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = work / "models" / "tiny" / ".cache" / "provision" / "partial"
    deadline = time.monotonic() + 60
    while max(partial_sizes(partial).values(), default=0) < 64 << 10:
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit("the download never started")
        time.sleep(0.01)
    sent = time.monotonic()
    process.send_signal(signum)
    code = process.wait(timeout=60)
    latency = time.monotonic() - sent
    if code != 128 + signum:
        raise SystemExit(f"exit {code} after {signal.Signals(signum).name}, expected {128 + signum}")
    return latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--throttle-kib", type=int, default=1024, help="hub rate per response, KiB/s")
    args = parser.parse_args()
    with FakeHFHub() as hub:
        hub.add_repo("org/tiny", {"config.json": b"{}", "model.safetensors": payload(32 << 20, 1)})
        hub.faults.throttle_bps = args.throttle_kib << 10
        for signum in (signal.SIGINT, signal.SIGTERM):
            runs = []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory() as work:
                    runs.append(once(hub, Path(work), signum))
            print(
                f"{signal.Signals(signum).name}: stop latency median {statistics.median(runs):.3f} s "
                f"(min {min(runs):.3f}, max {max(runs):.3f}) over {len(runs)} runs, "
                f"hub throttled to {args.throttle_kib} KiB/s; target < 1 s"
            )


if __name__ == "__main__":
    main()
