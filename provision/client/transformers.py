"""Client of ``engine: transformers``: the model loaded in this process, once per client.

Streaming: ``generate`` runs in a thread and feeds a ``TextIteratorStreamer``; this thread
reads it. If ``generate`` raises, the worker ends the streamer and the error is raised here
at once (otherwise the reader would wait for text that never comes). Closing the stream
early stops ``generate`` at the next token through a stopping criterion.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..deployments.transformers import find_weights
from ..errors import DeploymentError
from ..manifest import SmokeTestSettings, TransformersDeployment
from .base import ChatEvent, Embeddings

if TYPE_CHECKING:
    from ..deployments.base import DeployContext

_LOAD_LOCK = threading.Lock()  # loads touch os.environ (HF_HUB_OFFLINE) and peak in memory
_DTYPES = ("float32", "float16", "bfloat16")


def validate_sampling(settings: SmokeTestSettings) -> None:
    """Reject values transformers would reject late or, for top_p > 1, silently accept."""
    problems = []
    if settings.max_tokens <= 0:
        problems.append(f"max_tokens must be > 0, got {settings.max_tokens}")
    if settings.temperature < 0:
        problems.append(f"temperature must be >= 0, got {settings.temperature}")
    if settings.top_p is not None and not 0 < settings.top_p <= 1:
        problems.append(f"top_p must be in (0, 1], got {settings.top_p}")
    if settings.top_k is not None and settings.top_k < 0:
        problems.append(f"top_k must be >= 0, got {settings.top_k}")
    if settings.repetition_penalty is not None and settings.repetition_penalty <= 0:
        problems.append(f"repetition_penalty must be > 0, got {settings.repetition_penalty}")
    if problems:
        raise DeploymentError("invalid smoke_test settings: " + "; ".join(problems), hint="fix them in the manifest")


def generation_kwargs(settings: SmokeTestSettings) -> dict[str, Any]:
    """``generate`` arguments: sampling only when temperature > 0, and only values that are set."""
    kwargs: dict[str, Any] = {"max_new_tokens": settings.max_tokens, "do_sample": settings.temperature > 0}
    if settings.repetition_penalty is not None:  # applies to greedy decoding too
        kwargs["repetition_penalty"] = settings.repetition_penalty
    if kwargs["do_sample"]:
        kwargs["temperature"] = settings.temperature
        if settings.top_p is not None:
            kwargs["top_p"] = settings.top_p
        if settings.top_k is not None:
            kwargs["top_k"] = settings.top_k
    return kwargs


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when torch sees a GPU, else the CPU; an explicit device must exist."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeploymentError(f"device {device!r} requested but torch sees no CUDA GPU", hint="use device: auto or cpu")
    return device


class TransformersClient:
    """A model loaded in this process (at construction), streaming chats with ``generate``."""

    def __init__(self, model_dir: Path, *, dtype: str = "auto", device: str = "auto", timeout: float = 120) -> None:
        self.model_dir = Path(model_dir)
        self.timeout = timeout
        gguf_file = find_weights(self.model_dir)
        self.device = resolve_device(device)
        self._workers: dict[threading.Thread, threading.Event] = {}  # generate threads and their stop
        self._tokenizer, self._model = self._load(gguf_file, dtype)

    def _load(self, gguf_file: str | None, dtype: str) -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # provision's own report is the output; transformers' load bars and notices are noise there.
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        options: dict[str, Any] = {"local_files_only": True}
        if gguf_file is not None:
            options["gguf_file"] = gguf_file
        torch_dtype = getattr(torch, dtype) if dtype in _DTYPES else "auto"
        with _LOAD_LOCK, _offline():
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.model_dir, **options)
                model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch_dtype, **options)
            except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
                raise DeploymentError(
                    f"cannot load {self.model_dir} with transformers: {_first_line(exc)}",
                    hint="check that the folder holds a complete causal language model",
                ) from exc
        if tokenizer.chat_template is None:
            raise DeploymentError(
                f"{self.model_dir} has no chat template",
                hint="use an instruct/chat model (tokenizer_config.json chat_template)",
            )
        model.to(self.device)  # type: ignore[arg-type]  # transformers' stubs want a model
        model.eval()
        return tokenizer, model

    def stream_chat(self, settings: SmokeTestSettings) -> Iterator[ChatEvent]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        validate_sampling(settings)
        messages = [m.model_dump() for m in settings.messages]
        inputs = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        prompt_length = inputs["input_ids"].shape[1]
        # The streamer's timeout is the longest wait for one piece of text.
        streamer = TextIteratorStreamer(
            self._tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=self.timeout
        )
        produced: list[int] = []
        failure: list[BaseException] = []
        stop = threading.Event()  # one per answer: a stopped answer's generate must not resume

        def work() -> None:
            try:
                output = self._model.generate(
                    **inputs,
                    streamer=streamer,
                    pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
                    stopping_criteria=StoppingCriteriaList([_StopWhen(stop)]),
                    **generation_kwargs(settings),
                )
                produced.append(output.shape[1] - prompt_length)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the reader below
                failure.append(exc)
                streamer.end()  # wake the reader now

        worker = threading.Thread(target=work, name="transformers-generate", daemon=True)
        self._workers[worker] = stop
        worker.start()
        try:
            for text in streamer:
                if text:
                    yield ChatEvent(text=text)
        except queue.Empty:
            raise DeploymentError(
                f"no new token for {self.timeout:g} s", hint="raise smoke_test.timeout, or use a GPU / smaller model"
            ) from None
        finally:
            stop.set()  # a reader that leaves early (closed, timed out, Ctrl-C) stops generate
        worker.join()
        self._workers.pop(worker, None)
        if failure:
            raise DeploymentError(
                f"generate failed: {type(failure[0]).__name__}: {_first_line(failure[0])}",
                hint="see the model's generation settings and the smoke_test values",
            ) from failure[0]
        # generate's own count is exact; re-tokenizing the decoded text is not (a byte
        # sequence that is not valid UTF-8 decodes to U+FFFD, which re-encodes differently).
        tokens = produced[0] if produced else None
        finish = "length" if tokens is not None and tokens >= settings.max_tokens else "stop"
        yield ChatEvent(finish_reason=finish, output_tokens=tokens)

    def embed(self, texts: Sequence[str]) -> Embeddings:
        raise DeploymentError(
            f"{self.model_dir} is loaded as a chat model; it does not embed",
            hint="declare the deployment with `task: embed` for an embedding model",
        )

    def warm(self) -> None:
        return None  # in-process: loading the model (load_s) was the first-use cost

    def count_tokens(self, text: str) -> int | None:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        """Stop every generate still running and wait for it (at most a token's time, a few
        seconds): torch still computing in a thread while the interpreter exits aborts it."""
        for worker, stop in list(self._workers.items()):
            stop.set()
            worker.join(timeout=10)
        self._workers.clear()


class _StopWhen:
    """A stopping criterion that ends ``generate`` once ``event`` is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _offline:
    """Set HF_HUB_OFFLINE=1 for a load, then restore what was there."""

    def __enter__(self) -> None:
        self._saved = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"

    def __exit__(self, *exc: object) -> None:
        if self._saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = self._saved


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_client(name: str, spec: TransformersDeployment, ctx: DeployContext) -> TransformersClient | Any:
    """The chat client, or for ``task: embed`` the embedder (:mod:`.transformers_embed`)."""
    model_dir = ctx.model_dirs.get(spec.model)
    if model_dir is None:
        raise DeploymentError(
            f"no folder known for model {spec.model!r}", hint="run `provision apply` first", resource=name
        )
    if spec.task == "embed":
        from .transformers_embed import TransformersEmbedder

        return TransformersEmbedder(
            Path(model_dir), dtype=spec.dtype, device=spec.device, pooling=spec.pooling, normalize=spec.normalize
        )
    timeout = ctx.manifest.smoke_settings(name).timeout
    return TransformersClient(Path(model_dir), dtype=spec.dtype, device=spec.device, timeout=timeout)
