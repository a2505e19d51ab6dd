"""The CLI's own cost: start-up time, and the overhead of ``smoke-test`` on a measured TTFT.

- start-up: process wall time of ``provision --help`` and ``provision check-hardware`` (it
  probes GPUs, disk, RAM, Docker and Ollama), next to ``hf --help`` and a bare ``python -c pass``.
- smoke-test: the vLLM stand-in (tests/fakes/vllm_server.py, its own process) waits
  ``FIRST_TOKEN_DELAY`` before the first token. ``provision smoke-test --json`` reports its
  TTFT; a bare ``openai`` client in a small script streams the same request and times
  request-sent to first content chunk the same way. The difference is what provision adds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

from _common import (
    REPO_ROOT,
    Config,
    Section,
    Stats,
    free_port,
    provision_cmd,
    run_measured,
    verdict,
)

FIRST_TOKEN_DELAY = 0.2
PROMPT = "one two three four five six seven eight"
BARE_CLIENT = """
import sys, time, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="EMPTY", max_retries=0)
started = time.perf_counter()
stream = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": sys.argv[2]}],
                                        max_tokens=8, temperature=0.7, stream=True,
                                        stream_options={"include_usage": True})
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(time.perf_counter() - started)
        break
"""


def startup(config: Config) -> Section:
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "provision --help": provision_cmd("--help"),
        "provision check-hardware": provision_cmd("check-hardware"),
        "hf --help": ["hf", "--help"],
    }
    runs: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(3 * config.repeat):
        for name, cmd in commands.items():
            runs[name].append(run_measured(cmd, env={"NO_PROXY": "127.0.0.1"}).seconds)
    hf = Stats.of(runs["hf --help"]).median
    out = Section(
        "CLI start-up",
        f"Process wall time, {3 * config.repeat} run(s) each; median (min–max). No target in the issue; "
        "the one used here: `provision --help` no slower than `hf --help`.",
        ["command", "seconds", "vs hf --help", "verdict"],
    )
    for name, seconds in runs.items():
        stats = Stats.of(seconds)
        result = verdict(stats.median <= hf) if name == "provision --help" else "—"
        out.rows.append([f"`{name}`", stats.fmt(3), f"{stats.median / hf:.2f}x", result])
    return out


def smoke(config: Config) -> Section:
    work = config.work / "smoke"
    (work / "model").mkdir(parents=True)
    (work / "model" / "config.json").write_text("{}")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    manifest = work / "provision.yaml"
    manifest.write_text(
        "version: 1\ndeployments:\n"
        f"  fake: {{engine: openai, base_url: '{base_url}', served_model: fake}}\n"
        f"smoke_test: {{messages: [{{role: user, content: {PROMPT}}}], max_tokens: 8}}\n"
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "tests/fakes/vllm_server.py",
            "--model",
            str(work / "model"),
            "--served-model-name",
            "fake",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "FAKE_VLLM_FIRST_TOKEN_DELAY": str(FIRST_TOKEN_DELAY)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {**os.environ, "PROVISION_STATE_DIR": str(work / "state"), "NO_PROXY": "127.0.0.1"}
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health")
        ttft: dict[str, list[float]] = {"provision smoke-test": [], "bare openai client": []}
        for _ in range(3 * config.repeat):
            done = subprocess.run(
                provision_cmd("smoke-test", str(manifest), "--json"),
                env=env,
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            ttft["provision smoke-test"].append(json.loads(done.stdout)["results"][0]["ttft"])
            done = subprocess.run(
                [sys.executable, "-c", BARE_CLIENT, base_url, PROMPT],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            ttft["bare openai client"].append(float(done.stdout))
    finally:
        server.terminate()
        server.wait()
    bare = Stats.of(ttft["bare openai client"]).median
    out = Section(
        "smoke-test overhead on TTFT",
        f"The server's first-token delay is {FIRST_TOKEN_DELAY} s. {3 * config.repeat} run(s) each, "
        "alternating; TTFT in ms, median (min–max). No target in the issue; the one used here: provision "
        "adds ≤ 20 ms.",
        ["measured by", "TTFT ms", "added ms", "verdict"],
    )
    for name, seconds in ttft.items():
        stats = Stats.of([s * 1000 for s in seconds])
        added = stats.median - bare * 1000
        result = verdict(added <= 20) if name == "provision smoke-test" else "—"
        out.rows.append([name, stats.fmt(1), f"{added:+.1f}", result])
    return out


def wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def sections(config: Config) -> list[Section]:
    return [startup(config), smoke(config)]
