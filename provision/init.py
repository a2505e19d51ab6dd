"""``provision init [MODEL_REF ...]``: a commented starter manifest, one deployment per model.

Deciding (names, engines, the text) is pure: :func:`starter_manifest`. Writing never
overwrites (:func:`write_new` opens with ``O_EXCL``). The result is a manifest that
``validate`` accepts and ``plan`` can plan as is:

- ``hf://`` / ``ms://`` / ``file://`` models get an in-process ``transformers`` deployment
  (it needs no Docker, GPU or server), with the ``vllm`` alternative in a comment;
- ``ollama://`` models get an ``ollama`` deployment (the Ollama server pulls and serves it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .sources import HUB_SCHEMES, parse_source

EXAMPLE_REF = "hf://Qwen/Qwen3-0.6B"
_UNSAFE = re.compile(r"[^a-z0-9._-]+")
_MAX_NAME = 56  # NAME_PATTERN allows 63; room for a "-chat" / "-2" suffix


@dataclass(frozen=True)
class StarterModel:
    name: str
    source: str
    engine: str  # the deployment's engine

    @property
    def scheme(self) -> str:
        return parse_source(self.source)[0]

    @property
    def deployment(self) -> str:
        return f"{self.name}-chat"


def parse_refs(refs: Sequence[str]) -> list[StarterModel]:
    """One model per reference, named after its tail (``hf://Qwen/Qwen3-0.6B`` -> ``qwen3-0.6b``).

    Raises UsageError for a reference that is not a source a manifest accepts.
    """
    models: list[StarterModel] = []
    taken: set[str] = set()
    for ref in refs:
        try:
            scheme, location = parse_source(ref)
        except ValueError as exc:
            raise UsageError(
                f"MODEL_REF {ref!r}: {exc}", hint=f"e.g. provision init {EXAMPLE_REF} ollama://qwen3:0.6b"
            ) from None
        base = _safe_name(location) or "model"
        name = base if base not in taken else _unique(f"{base}-{scheme}", taken)
        taken.add(name)
        models.append(StarterModel(name, ref, "ollama" if scheme == "ollama" else "transformers"))
    return models


def _safe_name(location: str) -> str:
    tail = location.rstrip("/").rsplit("/", 1)[-1].lower().replace(":", "-")
    tail = tail.removesuffix("-latest")
    return _UNSAFE.sub("-", tail).lstrip("._-")[:_MAX_NAME].rstrip("._-")


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


def _quoted(text: str) -> str:
    """A YAML scalar for ``text``: JSON-quoted (valid YAML), ``$`` doubled so no ${VAR} expands."""
    return json.dumps(text.replace("$", "$$"), ensure_ascii=False)


_HEADER = """\
# A provision manifest, written by `provision init`. Check it, see what apply would do, run it:
#   provision validate {file}
#   provision plan {file}
#   provision apply {file} && provision smoke-test {file}
version: 1
settings:
  models_dir: models   # relative to this file; a model lands in models/<name>
  # Hubs and servers (else $HF_ENDPOINT / $HF_TOKEN, $MODELSCOPE_ENDPOINT, $OLLAMA_HOST):
  # huggingface: {{endpoint: https://hf-mirror.com, token: "${{HF_TOKEN:-}}"}}
  # modelscope: {{endpoint: https://www.modelscope.cn}}
  # ollama: {{host: http://127.0.0.1:11434}}

models:
"""

_SMOKE_TEST = """
# provision smoke-test streams this chat to every deployment: TTFT, tokens/s, pass/fail.
smoke_test:
  messages:
    - {role: user, content: "What is the capital of France? Answer in one word."}
  max_tokens: 32
  temperature: 0                    # greedy: the same answer every run
  timeout: 300                      # seconds without a new token; CPU loads are slow
"""


def starter_manifest(models: Sequence[StarterModel], *, file: str = "provision.yaml") -> str:
    """The manifest text: settings (commented), the models, a deployment each, the smoke test."""
    lines = [_HEADER.format(file=file)]
    for model in models:
        lines.append(f"  {model.name}:\n    source: {_quoted(model.source)}\n")
        if model.scheme in HUB_SCHEMES:
            lines.append(
                "    # revision: main                # a branch, tag or commit; the lock file pins it\n"
                '    # include: ["*.json", "*.safetensors", "tokenizer*"]\n'
            )
    lines.append("\ndeployments:\n")
    for model in models:
        lines.append(f"  {model.deployment}:\n    engine: {model.engine}\n    model: {model.name}\n")
        if model.engine == "transformers":
            lines.append(
                "    device: auto                    # CUDA when torch sees a GPU, else the CPU\n"
                "    # On a GPU with Docker, serve it with vLLM instead:\n"
                "    # engine: vllm\n"
                "    # port: 8000                    # published on 127.0.0.1\n"
            )
        lines.append('    # expect: "(?i)paris"           # a regular expression the answer must match\n')
    lines.append(_SMOKE_TEST)
    return "".join(lines)


def write_new(path: Path, text: str) -> None:
    """Create ``path`` with ``text``; an existing file (or link) is never overwritten."""
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise UsageError(
            f"{path} already exists; init never overwrites a manifest",
            hint="choose another file with -o FILE, or remove this one",
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot write {path}: {exc.strerror or exc}", hint="choose another file with -o FILE"
        ) from None
