"""`engine: vllm` on a real Docker engine: apply-to-ready time and the cost of a no-op re-apply.

    python benchmarks/vllm_apply.py [--repeat 5] [--deployments 5]

Uses the stand-in vLLM image (tests/fakes/docker_env.py, built once without a registry) with
FAKE_VLLM_STARTUP_DELAY=0, so "ready" measures provision + Docker, not model loading. Times:

- ``provision apply`` creating one deployment until /v1/models lists it (CLI wall time, and
  the deployment's own seconds from ``--json``), then ``destroy``;
- with N deployments running, a no-op ``provision apply`` (CLI wall time) next to
  the imports an apply needs (interpreter + import floor), and the same reconcile in-process
  with every Docker API request counted and timed.

Every container the run creates carries its manifest's label and is removed at the end.
Not a pass/fail test: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, free_port, provision_cmd

sys.path.insert(0, str(REPO_ROOT))


def write_manifest(work: Path, count: int) -> Path:
    (work / "src").mkdir(exist_ok=True)
    (work / "src" / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    deployments = "".join(
        f"  bench{i}: {{engine: vllm, model: tiny, image: 'provision-test/vllm-fake:1', port: {free_port()}, "
        "gpus: 0, env: {FAKE_VLLM_STARTUP_DELAY: '0'}}\n"
        for i in range(count)
    )
    path = work / "bench.yaml"
    path.write_text(
        "version: 1\nsettings: {models_dir: models}\nmodels:\n  tiny: {source: 'file://src'}\n"
        f"deployments:\n{deployments}"
    )
    return path


def cli(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(
        provision_cmd(*args),
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=os.environ.copy(),
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"provision {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done


def import_floor() -> float:
    """Seconds to start Python and import what `provision apply` of a vllm deployment imports."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], check=True, cwd=REPO_ROOT)
    return time.perf_counter() - started


IMPORTS = "import provision.cli, provision.reconciler, provision.report, provision.deployments.vllm, docker"


def docker_calls() -> list[tuple[str, float]]:
    """Record (method path, seconds) of every request the docker SDK sends, from now on."""
    import requests
    from docker.api.client import APIClient

    calls: list[tuple[str, float]] = []
    plain = requests.Session.send

    def timed(self: APIClient, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        started = time.perf_counter()
        try:
            return plain(self, request, **kwargs)
        finally:
            path = (request.path_url or "").split("?")[0]
            calls.append((f"{request.method} {path}", time.perf_counter() - started))

    APIClient.send = timed  # type: ignore[method-assign]
    return calls


def in_process_noop(manifest_path: Path, repeat: int) -> list[tuple[float, int, float]]:
    """(total seconds, Docker requests, seconds in them) per in-process plan + apply."""
    from provision.manifest_loader import load_manifest
    from provision.reconciler import Reconciler

    calls = docker_calls()
    rows = []
    for _ in range(repeat):
        calls.clear()
        started = time.perf_counter()
        with Reconciler(load_manifest(manifest_path)) as reconciler:
            planned = reconciler.plan()
            result = reconciler.apply(planned=planned)
        total = time.perf_counter() - started
        assert result.ok and not planned.plan.has_changes, "the re-apply was not a no-op"
        rows.append((total, len(calls), sum(s for _, s in calls)))
    print("  docker requests of the last run:", ", ".join(sorted({c for c, _ in calls})))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--deployments", type=int, default=5)
    options = parser.parse_args()

    from tests.fakes.docker_env import build_vllm_image, ensure_engine

    client = ensure_engine()
    build_vllm_image(client=client)
    with tempfile.TemporaryDirectory(prefix="vllm-bench-") as tmp:
        work = Path(tmp)
        os.environ["PROVISION_STATE_DIR"] = str(work / "state")
        manifest = write_manifest(work, options.deployments)
        try:
            print(f"apply -> ready, one deployment, stand-in image ({options.repeat} runs)")
            walls, own = [], []
            for _ in range(options.repeat):
                seconds, done = cli("apply", "--json", "--only", "bench0", str(manifest))
                walls.append(seconds)
                own += [o["seconds"] for o in json.loads(done.stdout)["outcomes"] if o["name"] == "bench0"]
                cli("destroy", "--yes", "--only", "bench0", str(manifest))
            print(f"  CLI wall: median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f})")
            print(f"  deployment step (create, start, wait ready): median {statistics.median(own):.2f} s")

            cli("apply", str(manifest))
            print(f"no-op re-apply with {options.deployments} running deployments ({options.repeat} runs)")
            floor = statistics.median(import_floor() for _ in range(options.repeat))
            noop = [cli("apply", str(manifest))[0] for _ in range(options.repeat)]
            print(f"  CLI wall: median {statistics.median(noop):.2f} s; of which imports: {floor:.2f} s")
            rows = in_process_noop(manifest, options.repeat)
            total, count, docker = (statistics.median(col) for col in zip(*rows, strict=True))
            print(
                f"  in-process plan + apply: median {total * 1000:.0f} ms, {count:.0f} Docker requests "
                f"taking {docker * 1000:.0f} ms; provision's own overhead {(total - docker) * 1000:.0f} ms"
            )
        finally:
            for container in client.containers.list(all=True, filters={"label": f"io.provision.manifest={manifest}"}):
                container.remove(force=True)


if __name__ == "__main__":
    main()
