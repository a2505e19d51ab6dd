"""provision's smoke-test TTFT and TPOT against `vllm bench serve`, on the same real vLLM server.

    python benchmarks/vllm_cpu_metrics.py [--runs 10] [--output-len 48]

Starts provision/vllm-cpu:0.32.0 (scripts/build-vllm-cpu-image.sh builds it) serving the demo
model converted to safetensors, through `provision apply`. Then, one request at a time, half
of provision's runs, vLLM's benchmark, the other half (vLLM's benchmark takes ~15 s to import
itself, so it runs once with all its prompts):

- ``provision smoke-test --json``: one streamed chat per run, a prompt that makes the model
  talk, ``max_tokens`` = the output length, temperature 0 (so every answer is cut at exactly
  that many tokens: finish "length");
- the same smoke test from inside the container (``docker cp`` of provision/, the image's
  Python, an ``engine: openai`` manifest on 127.0.0.1:8000), alternating with the host's runs:
  the network path ``vllm bench serve`` takes, so the host row minus this one is Docker's
  published port (docker-proxy), not the client;
- ``vllm bench serve`` inside the container (the installed vLLM's own benchmark):
  ``--backend openai-chat --dataset-name random`` with ``--random-input-len`` = the smoke
  prompt's token count without the chat template's (both from the server's ``prompt_tokens``),
  ``--random-output-len`` = the output length, ``--ignore-eos``, ``--max-concurrency 1``, ``--temperature 0``.

Reported: medians (and ranges) of TTFT and TPOT over the runs, and provision's relative
differences; the target (issue 14) is within 10%. Not a pass/fail test: machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO_ROOT, provision_cmd

sys.path.insert(0, str(REPO_ROOT))

from tests.fakes._server import free_port
from tests.real_vllm import IMAGE, SERVER_ARGS, SERVER_ENV, converted_smollm2, ensure_image

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
NAME = f"bench-cpu-{os.getpid()}"


def manifest_text(model: Path, port: int, output_len: int) -> str:
    env = ", ".join(f"{k}: '{v}'" for k, v in SERVER_ENV.items())
    return (
        "version: 1\nsettings: {models_dir: models}\n"
        f"models:\n  smollm2: {{source: 'file://{model}'}}\n"
        f"deployments:\n  {NAME}:\n    engine: vllm\n    model: smollm2\n    image: {IMAGE}\n"
        f"    port: {port}\n    gpus: 0\n    startup_timeout: 900\n    env: {{{env}}}\n"
        f"    args: {json.dumps(SERVER_ARGS)}\n"
        f"smoke_test:\n  messages: [{{role: user, content: '{PROMPT}'}}]\n"
        f"  max_tokens: {output_len}\n  temperature: 0\n  timeout: 300\n"
    )


def inside_manifest(output_len: int) -> str:
    """The smoke test of the same server from inside its container, as ``vllm bench serve`` reaches it."""
    return (
        "version: 1\n"
        f"deployments:\n  {NAME}:\n    engine: openai\n    base_url: http://127.0.0.1:8000/v1\n"
        f"    served_model: {NAME}\n"
        f"smoke_test:\n  messages: [{{role: user, content: '{PROMPT}'}}]\n"
        f"  max_tokens: {output_len}\n  temperature: 0\n  timeout: 300\n"
    )


def copy_in(manifest: Path) -> None:
    """provision's package and the inside manifest into the container (the image has its deps)."""
    container = f"provision-{NAME}"
    subprocess.run(["docker", "exec", container, "mkdir", "-p", "/tmp/prov"], check=True)
    subprocess.run(["docker", "cp", str(REPO_ROOT / "provision"), f"{container}:/tmp/prov/"], check=True)
    subprocess.run(["docker", "cp", str(manifest), f"{container}:/tmp/prov/bench.yaml"], check=True)


def cli(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        provision_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO_ROOT,
    )


def prompt_tokens(port: int, content: str = PROMPT) -> int:
    """A one-message prompt's length as the server counts it (chat template included)."""
    import urllib.request

    body = json.dumps({"model": NAME, "messages": [{"role": "user", "content": content}], "max_tokens": 1}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions", body, {"Content-Type": "application/json"}
    )
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=120) as response:
        return int(json.load(response)["usage"]["prompt_tokens"])


def smoke_once(manifest: Path | None) -> tuple[float, float, int]:
    """One ``provision smoke-test --json``: from the host (``manifest``), or inside the container (None)."""
    if manifest is None:
        inside = ["docker", "exec", "-w", "/tmp/prov", "-e", "PYTHONPATH=/tmp/prov", f"provision-{NAME}"]
        command = [*inside, "python3", "-m", "provision", "smoke-test", "/tmp/prov/bench.yaml", "--json"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    else:
        result = cli("smoke-test", str(manifest), "--json")
    [row] = json.loads(result.stdout)["results"]
    assert row["passed"] or row["finish_reason"] == "length", row
    return row["ttft"], row["tpot"], row["output_tokens"]


def bench(input_len: int, output_len: int, prompts: int) -> list[tuple[float, float, int]]:
    command = [
        "docker",
        "exec",
        f"provision-{NAME}",
        "vllm",
        "bench",
        "serve",
        "--backend",
        "openai-chat",
        "--base-url",
        "http://127.0.0.1:8000",
        "--endpoint",
        "/v1/chat/completions",
        "--model",
        NAME,
        "--tokenizer",
        "/models/smollm2",
        "--dataset-name",
        "random",
        "--random-input-len",
        str(input_len),
        "--random-output-len",
        str(output_len),
        "--ignore-eos",
        "--num-prompts",
        str(prompts),
        "--max-concurrency",
        "1",
        "--temperature",
        "0",
        "--seed",
        "0",
        "--save-result",
        "--save-detailed",
        "--result-dir",
        "/tmp",
        "--result-filename",
        "bench.json",
        "--disable-tqdm",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"vllm bench serve failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    raw = subprocess.run(
        ["docker", "exec", f"provision-{NAME}", "cat", "/tmp/bench.json"], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(raw)  # --save-detailed keeps each request's ttft, itls and output_lens
    return [
        (ttft, (sum(itls) / (n - 1)) if n > 1 else 0.0, n)
        for ttft, itls, n in zip(result["ttfts"], result["itls"], result["output_lens"], strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--output-len", type=int, default=48)
    options = parser.parse_args()

    ensure_image()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "bench.yaml"
        port = free_port()
        manifest.write_text(manifest_text(converted_smollm2(), port, options.output_len))
        (Path(tmp) / "inside.yaml").write_text(inside_manifest(options.output_len))
        applied = cli("apply", str(manifest))
        if applied.returncode != 0:
            raise SystemExit(applied.stdout + applied.stderr)
        try:
            # vLLM's random dataset sends its tokens as one user message: the template adds the rest.
            input_len = prompt_tokens(port) - prompt_tokens(port, "")
            copy_in(Path(tmp) / "inside.yaml")
            smoke_once(manifest)  # warm-up
            rows: dict[str, list[tuple[float, float, int]]] = {"provision": [], "provision (in container)": []}

            def half(runs: int) -> None:
                for _ in range(runs):
                    rows["provision"].append(smoke_once(manifest))
                    rows["provision (in container)"].append(smoke_once(None))

            half(options.runs // 2)
            rows["vllm"] = bench(input_len, options.output_len, options.runs)
            half(options.runs - options.runs // 2)
        finally:
            cli("destroy", "--yes", str(manifest))
    print(
        f"vLLM 0.32.0 CPU, SmolLM2-135M bf16, --enforce-eager; prompt {input_len} tokens, "
        f"output {options.output_len} tokens, {options.runs} runs each, one request at a time\n"
    )
    print("| client | median TTFT (ms) | TTFT range (ms) | median TPOT (ms) | TPOT range (ms) | output tokens |")
    print("|---|---|---|---|---|---|")
    medians = {}
    for client, samples in rows.items():
        ttfts, tpots = [s[0] * 1000 for s in samples], [s[1] * 1000 for s in samples]
        medians[client] = (statistics.median(ttfts), statistics.median(tpots))
        tokens = sorted({s[2] for s in samples})
        print(
            f"| {client} | {medians[client][0]:.1f} | {min(ttfts):.0f}-{max(ttfts):.0f} | {medians[client][1]:.2f} "
            f"| {min(tpots):.1f}-{max(tpots):.1f} | {', '.join(map(str, tokens))} |"
        )
    vt, vp = medians["vllm"]
    print()
    for client in ("provision", "provision (in container)"):
        pt, pp = medians[client]
        print(
            f"{client} vs vllm bench serve: TTFT {100 * (pt - vt) / vt:+.1f}%, TPOT {100 * (pp - vp) / vp:+.1f}% "
            "(target: within 10%)"
        )


if __name__ == "__main__":
    main()
