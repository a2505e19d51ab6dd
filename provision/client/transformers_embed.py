"""Client of ``engine: transformers`` with ``task: embed``: an encoder loaded with ``AutoModel``.

Pooling is what the model says. A sentence-transformers folder describes it::

    <model_dir>/modules.json                  [{"type": "sentence_transformers.models.Pooling",
                                                "path": "1_Pooling"}, {"type": "...Normalize"}, ...]
    <model_dir>/1_Pooling/config.json         pooling_mode_cls_token / _mean_tokens / _max_tokens /
                                              _lasttoken: which one
    <model_dir>/sentence_bert_config.json     max_seq_length: the length inputs are cut to

A deployment's ``pooling:`` and ``normalize:`` (what the model card says) win over those files.
A ``1_Pooling/config.json`` without ``modules.json`` (sentence-transformers would ignore it)
still sets the mode, not normalized. Without any of those files, the default is what
sentence-transformers applies to a plain transformers model: mean pooling over the non-padding
tokens, not normalized; for decoder-only architectures (``*ForCausalLM`` configs with a pooling
module are embedders such as Qwen3-Embedding) the last token. Inputs longer than the maximum
length (sentence_bert_config, else the tokenizer's ``model_max_length``, else the config's
``max_position_embeddings``) are cut to it, and :class:`~provision.client.base.Embeddings` lists which were.

Texts go through the model longest first, in passes of at most ``BATCH`` x the maximum length
tokens (padding included), as sentence-transformers sorts them: the peak memory of a pass is
that of ``BATCH`` texts at the maximum length, and a batch of short texts is one pass, not one
per 32 texts (on 2 CPU cores eight passes of 32 short texts took twice as long as one of 256).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DeploymentError
from ..manifest import SmokeTestSettings
from .base import ChatEvent, Embeddings
from .transformers import _DTYPES, _LOAD_LOCK, _first_line, _offline, resolve_device

POOLING_MODES = ("cls", "mean", "max", "lasttoken")
# 1_Pooling/config.json keys (sentence_transformers.models.Pooling) -> our mode; None: not supported here
_POOLING_KEYS: dict[str, str | None] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_mean_sqrt_len_tokens": None,
    "pooling_mode_weightedmean_tokens": None,
}
BATCH = 32  # texts per forward pass at the maximum length; shorter texts fill a pass with more
_LAST_TOKEN_TYPES = ("qwen2", "qwen3", "mistral", "llama")  # decoder-only: the last token sees the whole text
_MAX_SANE_LENGTH = 1 << 20  # tokenizers without a limit say 1e30


@dataclass(frozen=True)
class Pooling:
    mode: str  # one of POOLING_MODES
    normalize: bool
    max_length: int | None  # from sentence_bert_config.json
    source: str  # "manifest", "sentence-transformers", "1_Pooling" (its config without modules.json) or "default"


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DeploymentError(
            f"cannot read {what} {path}: {_first_line(exc)}", hint="the model folder is damaged: run `provision verify`"
        ) from None


def read_pooling(
    model_dir: Path, config: dict[str, Any], *, mode: str | None = None, normalize: bool | None = None
) -> Pooling:
    """How to pool this model's token vectors: the manifest's ``pooling``/``normalize`` where set, else
    the folder's sentence-transformers files, else the default."""
    if mode is not None and not (model_dir / "modules.json").is_file():
        # The manifest says it all: a folder without its pooling files (or a causal model with a
        # pooling the card names) needs nothing else from the folder.
        return Pooling(mode, normalize=bool(normalize), max_length=None, source="manifest")
    found = _folder_pooling(model_dir, config, mode=mode)
    if mode is None and normalize is None:
        return found
    return Pooling(
        found.mode,
        normalize=found.normalize if normalize is None else normalize,
        max_length=found.max_length,
        source="manifest",
    )


def _folder_pooling(model_dir: Path, config: dict[str, Any], *, mode: str | None = None) -> Pooling:
    """The folder's pooling; ``mode`` (the manifest's) replaces its pooling config, which is then not read."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file() and (model_dir / "1_Pooling" / "config.json").is_file():
        # A pooling config without modules.json (an include pattern that missed it): the model's
        # own word on pooling beats the generic default, which would mean-pool a CLS model.
        return Pooling(_pooling_mode(model_dir / "1_Pooling"), normalize=False, max_length=None, source="1_Pooling")
    if not modules_file.is_file():
        causal = any(str(a).endswith("ForCausalLM") for a in config.get("architectures") or ())
        if causal:
            raise DeploymentError(
                f"{model_dir} is a causal language model ({', '.join(config['architectures'])}) without a pooling "
                "module: it is not an embedding model",
                hint="use task: chat, or an embedding model",
            )
        mode = "lasttoken" if config.get("model_type") in _LAST_TOKEN_TYPES else "mean"
        return Pooling(mode, normalize=False, max_length=None, source="default")
    modules = _read_json(modules_file, "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise DeploymentError(f"{modules_file} is not a list of modules", hint="the model folder is damaged")
    types = [str(m.get("type", "")) for m in modules]
    pooling_entry = next((m for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
    if mode is None:
        mode = "mean" if pooling_entry is None else _pooling_mode(_inside(model_dir, pooling_entry, modules_file))
    max_length = None
    bert_config = model_dir / "sentence_bert_config.json"
    if bert_config.is_file():
        value = _read_json(bert_config, "sentence_bert_config.json")
        length = value.get("max_seq_length") if isinstance(value, dict) else None
        if isinstance(length, int) and not isinstance(length, bool) and length > 0:
            max_length = length
    return Pooling(
        mode,
        normalize=any(t.endswith(".Normalize") for t in types),
        max_length=max_length,
        source="sentence-transformers",
    )


def passes(lengths: Sequence[int], max_length: int, budget: int) -> list[list[int]]:
    """Indexes of the texts of each forward pass (pure): longest first, each pass at most ``budget``
    tokens once padded to its longest text (cut to ``max_length``), at least one text per pass."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    for index in order:
        if out and (len(out[-1]) + 1) * min(lengths[out[-1][0]], max_length) <= budget:
            out[-1].append(index)
        else:
            out.append([index])
    return out


def _inside(model_dir: Path, entry: dict[str, Any], modules_file: Path) -> Path:
    """The pooling module's folder, refused when modules.json points it out of the model folder."""
    folder = str(entry.get("path", ""))
    if Path(folder).is_absolute() or ".." in Path(folder).parts:
        raise DeploymentError(
            f"{modules_file}: pooling path {folder!r} leaves the model folder",
            hint="the model folder is damaged or hostile",
        )
    return model_dir / folder


def _pooling_mode(folder: Path) -> str:
    """The one pooling mode ``folder/config.json`` (sentence_transformers.models.Pooling) sets."""
    settings = _read_json(folder / "config.json", "pooling config")
    chosen = [key for key in _POOLING_KEYS if isinstance(settings, dict) and settings.get(key) is True]
    if len(chosen) != 1 or _POOLING_KEYS[chosen[0]] is None:
        raise DeploymentError(
            f"{folder / 'config.json'} sets {', '.join(chosen) or 'no pooling mode'}; "
            f"provision pools with exactly one of {', '.join(POOLING_MODES)}",
            hint="fix the pooling config (one mode set to true)",
        )
    return str(_POOLING_KEYS[chosen[0]])


def pool(hidden: Any, mask: Any, mode: str) -> Any:
    """(batch, tokens, dim) token vectors -> (batch, dim), over the tokens ``mask`` keeps."""
    import torch

    if mode == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "mean":
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if mode == "max":
        return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).max(1).values
    last = mask.sum(1) - 1  # right padding: the last kept token of each row
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class TransformersEmbedder:
    """An embedding model loaded in this process (at construction)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        dtype: str = "auto",
        device: str = "auto",
        pooling: str | None = None,
        normalize: bool | None = None,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise DeploymentError(
                f"{self.model_dir} has no config.json: an embedding model is loaded from a save_pretrained folder",
                hint="point the deployment at a model folder",
            )
        config = _read_json(self.model_dir / "config.json", "config.json")
        if not isinstance(config, dict):
            raise DeploymentError(
                f"{self.model_dir / 'config.json'} is not a JSON object", hint="the folder is damaged"
            )
        self.pooling = read_pooling(self.model_dir, config, mode=pooling, normalize=normalize)
        self.device = resolve_device(device)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        torch_dtype = getattr(torch, dtype) if dtype in _DTYPES else "auto"
        with _LOAD_LOCK, _offline():
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
                self._model = AutoModel.from_pretrained(self.model_dir, dtype=torch_dtype, local_files_only=True)
            except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
                raise DeploymentError(
                    f"cannot load {self.model_dir} with transformers: {_first_line(exc)}",
                    hint="check that the folder holds a complete encoder model",
                ) from exc
        self._model.to(self.device)
        self._model.eval()
        self.dimension = int(config["hidden_size"]) if isinstance(config.get("hidden_size"), int) else None
        self.max_length = self._max_length(config)

    def _max_length(self, config: dict[str, Any]) -> int:
        candidates = [
            self.pooling.max_length,
            getattr(self._tokenizer, "model_max_length", None),
            config.get("max_position_embeddings"),
        ]
        sane = [c for c in candidates if isinstance(c, int) and 0 < c < _MAX_SANE_LENGTH]
        return sane[0] if sane else 512

    def embed(self, texts: Sequence[str]) -> Embeddings:
        import torch

        lengths = [len(ids) for ids in self._tokenizer(list(texts), truncation=False)["input_ids"]]
        truncated = tuple(i for i, n in enumerate(lengths) if n > self.max_length)
        vectors: list[list[float]] = [[] for _ in texts]
        tokens = 0
        with torch.inference_mode():
            for indexes in passes(lengths, self.max_length, BATCH * self.max_length):
                batch = self._tokenizer(
                    [texts[i] for i in indexes],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._model(**batch).last_hidden_state
                pooled = pool(hidden, batch["attention_mask"], self.pooling.mode).float()
                if self.pooling.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                for i, vector in zip(indexes, pooled.cpu().tolist(), strict=True):
                    vectors[i] = vector
                tokens += int(batch["attention_mask"].sum())
        return Embeddings(
            vectors,
            input_tokens=tokens,
            truncated=truncated,
            max_length=self.max_length,
            model_dimension=self.dimension,
        )

    def stream_chat(self, settings: SmokeTestSettings) -> Iterator[ChatEvent]:
        raise DeploymentError(
            f"{self.model_dir} is loaded as an embedding model (task: embed); it does not chat",
            hint="declare the deployment with task: chat for a chat model",
        )

    def warm(self) -> None:
        return None  # in-process: loading the model (load_s) was the first-use cost

    def count_tokens(self, text: str) -> int | None:
        return len(self._tokenizer(text)["input_ids"])

    def close(self) -> None:
        return None  # nothing runs between calls
