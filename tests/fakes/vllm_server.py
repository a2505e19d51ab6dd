"""A stand-in for vLLM's OpenAI-compatible server (`vllm serve`), standard library only.

It runs in-process for fast tests (``FakeVLLM``) and as the entrypoint of the test image
(tests/fakes/vllm_image/Dockerfile), where only a bare python3 exists:

    python3 vllm_server.py [MODEL] --model DIR --served-model-name NAME... --port 8000 ...

Command line: the subset of `vllm serve` arguments listed in ``build_parser``; anything
else is an argparse error (exit 2), as with vLLM. `--foo_bar` is read as `--foo-bar`, and
`--max-model-len` takes `4096`, `4k` or `4K`, as vLLM's FlexibleArgumentParser does.
Startup, as vLLM: the model folder must hold config.json (else the "Invalid repository
ID or local directory" error, exit 1), then the model "loads" (nothing listens), then the
server answers. Environment knobs:

    FAKE_VLLM_STARTUP_DELAY      seconds of "model loading" before the port is bound
    FAKE_VLLM_CRASH              die during loading: a traceback on stderr, exit 1
                                 ("1" for a CUDA out-of-memory error, else its value)
    FAKE_VLLM_FIRST_TOKEN_DELAY  seconds before the first streamed chunk
    FAKE_VLLM_TOKEN_DELAY        seconds between content chunks
    FAKE_VLLM_FAIL_AFTER         after this many content chunks, fail mid-stream

HTTP, as vLLM answers it:

    GET  /health              200, empty body (open even with --api-key)
    GET  /version             {"version": ...}
    GET  /v1/models           {"object": "list", "data": [{"id": name, "root": DIR, ...}]}
    POST /v1/chat/completions chat.completion, or with "stream": true an SSE stream:
        data: {chunk}  delta {"role": "assistant", "content": ""}        first
        data: {chunk}  delta {"content": "<word>"}                        one per token
        finish: "length" rides on the last content chunk; "stop" comes in its own chunk
                with content "", one token delay later (the end-of-sequence token is
                generated like any other and decodes to nothing)
        data: {chunk}  "choices": [], "usage": {...}   with stream_options.include_usage;
                completion_tokens counts the end-of-sequence token of a "stop" answer
        data: [DONE]
      A failure after the stream began is one event, then [DONE] (vLLM's
      create_streaming_error_response):
        data: {"error": {"message", "type": "InternalServerError", "param": null, "code": 500}}
    Errors: max_tokens beyond --max-model-len 400 {"error": {"message": "max_tokens=N cannot
      be greater than max_model_len=M. Please request fewer output tokens. (parameter=max_tokens,
      value=N)", "type": "BadRequestError", "param": "max_tokens", "code": 400}} (a prompt plus
      max_tokens beyond the context is no error: the answer stops at the context's end);
      unknown model 404 {"error": {"message": "The model `x` does not exist. Valid aliases:
      NAME.", "type": "NotFoundError", "param": "model", "code": 404}}; with --api-key, /v1/* without
      "Authorization: Bearer KEY" is 401 {"error": "Unauthorized"}.
    With --runner pooling (``embedding_dimension``): POST /v1/embeddings {"model", "input": str
      or [str], "encoding_format": "float"} -> {"object": "list", "data": [{"index", "object":
      "embedding", "embedding": [...]}], "usage": {"prompt_tokens", "total_tokens"}}, vectors
      from ``text_vector``; an empty input list is 400; chat is then 404 {"detail": "Not Found"},
      as is /v1/embeddings on a generate model (the route serves only a pooling runner).
    Each chat request is logged on stdout ("Received request: messages: [...]"), as vLLM's
    request logger logs prompts, so a test can read what a container was sent.

The reply echoes the last user message: its words (its characters, for text without
spaces), one per token, so a test knows the text and the token count in advance.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

try:
    from tests.fakes._server import FakeServer, Recorded, Request, text_vector
except ImportError:  # run as a plain file inside the image, _server.py beside it
    from _server import FakeServer, Recorded, Request, text_vector  # type: ignore[no-redef,import-not-found]

VLLM_VERSION = "0.10.1"
DEFAULT_MAX_MODEL_LEN = 2048  # when neither --max-model-len nor config.json says
_SIZE_SUFFIXES = {"k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2, "g": 1000**3, "G": 1024**3}
_CUDA_OOM = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
    "capacity of 7.63 GiB of which 1.12 GiB is free. Process 1 has 6.50 GiB memory in use."
)


# -- command line ------------------------------------------------------------------
def _human_int(text: str) -> int:
    """vLLM's human_readable_int: 4096, 4k (4000) or 4K (4096)."""
    if text and text[-1] in _SIZE_SUFFIXES:
        return int(float(text[:-1]) * _SIZE_SUFFIXES[text[-1]])
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm serve", description="Start the vLLM OpenAI Compatible API server.")
    parser.add_argument("model_tag", nargs="?", help="The model tag to serve (optional if specified in config)")
    parser.add_argument("--model", default="Qwen/Qwen3-0.6B")
    parser.add_argument("--served-model-name", nargs="+")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key")
    parser.add_argument("--dtype", default="auto", choices=["auto", "half", "float16", "bfloat16", "float", "float32"])
    parser.add_argument("--max-model-len", type=_human_int)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    parser.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    parser.add_argument("--max-num-seqs", type=int)
    parser.add_argument("--max-num-batched-tokens", type=_human_int)
    parser.add_argument("--generation-config", default="auto")
    parser.add_argument("--quantization", "-q")
    parser.add_argument("--kv-cache-dtype", default="auto")
    parser.add_argument("--tokenizer")
    parser.add_argument("--revision")
    parser.add_argument("--download-dir")
    parser.add_argument("--load-format", default="auto")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--swap-space", type=float, default=4)
    parser.add_argument("--chat-template")
    parser.add_argument("--tool-call-parser")
    parser.add_argument("--reasoning-parser")
    parser.add_argument("--uvicorn-log-level", default="info")
    parser.add_argument("--runner", default="auto", choices=["auto", "generate", "pooling", "draft"])
    for flag in (
        "--trust-remote-code",
        "--enforce-eager",
        "--enable-prefix-caching",
        "--enable-auto-tool-choice",
        "--enable-log-requests",
        "--disable-log-stats",
    ):
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--disable-log-requests", action="store_true")  # deprecated, still accepted
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse like `vllm serve`: `--a_b` means `--a-b`; a positional model wins over --model."""
    raw = sys.argv[1:] if argv is None else argv
    normalised = [_dashes(arg) for arg in raw]
    args = build_parser().parse_args(normalised)
    if args.model_tag is not None:
        args.model = args.model_tag
    return args


def _dashes(arg: str) -> str:
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg.partition("=")
    return name.replace("_", "-") + sep + value


def check_model(model: str) -> str | None:
    """vLLM's config error for a folder without config.json, or None when it is fine."""
    if (Path(model) / "config.json").is_file():
        return None
    return (
        f"ValueError: Invalid repository ID or local directory specified: '{model}'.\n"
        "Please verify the following requirements:\n"
        "1. Provide a valid Hugging Face repository ID.\n"
        "2. Specify a local directory that contains a recognized configuration file.\n"
        "   - For Hugging Face models: ensure the presence of a 'config.json'.\n"
        "   - For Mistral models: ensure the presence of a 'params.json'.\n"
    )


def model_max_len(model: str, requested: int | None) -> int:
    """--max-model-len, else the model's max_position_embeddings, as vLLM derives it."""
    if requested is not None:
        return requested
    try:
        config = json.loads((Path(model) / "config.json").read_text())
        return int(config.get("max_position_embeddings", DEFAULT_MAX_MODEL_LEN))
    except (OSError, ValueError):
        return DEFAULT_MAX_MODEL_LEN


# -- the server ----------------------------------------------------------------------
def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _tokens(text: str) -> list[str]:
    """Words with their leading space, as a BPE tokenizer splits them; characters of text without spaces."""
    words = text.split()
    if len(words) > 1:
        return [words[0], *(f" {word}" for word in words[1:])]
    return [ch for ch in text if not ch.isspace()]


class FakeVLLM(FakeServer):
    """An in-process vLLM server. ``chat_requests`` holds every chat request body as sent."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        served_names: list[str] | None = None,
        *,
        api_key: str | None = None,
        max_model_len: int | None = None,
        first_token_delay: float = 0.0,
        token_delay: float = 0.0,
        fail_after: int | None = None,
        embedding_dimension: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.model_path = str(model_path)
        self.served_names = served_names or [self.model_path]
        self.api_key = api_key
        self.max_model_len = model_max_len(self.model_path, max_model_len)
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay
        self.fail_after = fail_after  # content chunks sent before a mid-stream error
        self.embedding_dimension = embedding_dimension  # set: a pooling runner (task: embed)
        self.embed_requests: list[dict[str, Any]] = []
        self.fail_next_after: int | None = None  # the same, for the next streamed chat only
        # In-process only: a stream pauses after hold_after content chunks until `release` is
        # set, so a test can see which text reached the client while the answer is unfinished.
        self.hold_after: int | None = None
        self.release = threading.Event()
        self.chat_requests: list[dict[str, Any]] = []
        # In-process only, for hostile-server tests (off by default): a streamed chat sends these
        # bytes as they are after its 200 SSE headers; a chat or embeddings request gets this
        # (status, body) instead of its answer.
        self.raw_stream: Iterable[bytes] | None = None
        self.raw_answer: tuple[int, bytes] | None = None
        self.raw_models: bytes | None = None  # set: GET /v1/models answers 200 with these bytes

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as ``base_url``."""
        return f"{self.url}/v1"

    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        if request.path.startswith("/v1") and not self._authorized(request):
            self.send_json(handler, record, 401, {"error": "Unauthorized"})
            return
        route = (request.method, request.path)
        if self.raw_answer is not None and route in (("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings")):
            self.send(handler, record, self.raw_answer[0], self.raw_answer[1], {"Content-Type": "application/json"})
            return
        if self.raw_stream is not None and route == ("POST", "/v1/chat/completions"):
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.start_stream(handler, record, 200, "text/event-stream; charset=utf-8")
                for data in self.raw_stream:
                    self.write_chunk(handler, data)
                self.end_stream(handler)
            return
        if route == ("GET", "/health"):
            self.send(handler, record, 200)
        elif route == ("GET", "/version"):
            self.send_json(handler, record, 200, {"version": VLLM_VERSION})
        elif route == ("GET", "/v1/models") and self.raw_models is not None:
            self.send(handler, record, 200, self.raw_models, {"Content-Type": "application/json"})
        elif route == ("GET", "/v1/models"):
            self.send_json(handler, record, 200, self._models())
        elif route == ("POST", "/v1/chat/completions") and self.embedding_dimension is None:
            self._chat(request, handler, record)
        elif route == ("POST", "/v1/embeddings") and self.embedding_dimension is not None:
            self._embed(request, handler, record, self.embedding_dimension)
        elif request.path in ("/health", "/version", "/v1/models") or (
            request.method != "POST" and request.path in ("/v1/chat/completions", "/v1/embeddings")
        ):
            self.send_json(handler, record, 405, {"detail": "Method Not Allowed"})
        else:
            self.send_json(handler, record, 404, {"detail": "Not Found"})

    def _authorized(self, request: Request) -> bool:
        return self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}"

    def _models(self) -> dict[str, Any]:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "vllm",
                    "root": self.model_path,
                    "parent": None,
                    "max_model_len": self.max_model_len,
                    "permission": [],
                }
                for name in self.served_names
            ],
        }

    @staticmethod
    def _error(message: str, err_type: str, code: int, param: str | None = None) -> dict[str, Any]:
        return {"error": {"message": message, "type": err_type, "param": param, "code": code}}

    def _embed(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded, dimension: int) -> None:
        body = request.json()
        texts = body.get("input") if isinstance(body, dict) else None
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            self.send_json(
                handler,
                record,
                400,
                self._error("input must be a non-empty string or list of strings", "BadRequestError", 400),
            )
            return
        self.embed_requests.append(body)
        model = body.get("model") or self.served_names[0]
        if model not in self.served_names:
            self.send_json(
                handler, record, 404, self._error(f"The model `{model}` does not exist.", "NotFoundError", 404)
            )
            return
        tokens = sum(len(_tokens(t)) + 2 for t in texts)  # [CLS] ... [SEP]
        self.send_json(
            handler,
            record,
            200,
            {
                "id": f"embd-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": model,
                "data": [
                    {"index": i, "object": "embedding", "embedding": text_vector(t, dimension)}
                    for i, t in enumerate(texts)
                ],
                "usage": {
                    "prompt_tokens": tokens,
                    "total_tokens": tokens,
                    "completion_tokens": 0,
                    "prompt_tokens_details": None,
                },
            },
        )

    def _chat(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        try:
            body = request.json()
        except ValueError as exc:
            self.send_json(handler, record, 400, self._error(f"Invalid JSON: {exc}", "BadRequestError", 400))
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self.send_json(handler, record, 400, self._error("Field required: messages", "BadRequestError", 400))
            return
        self.chat_requests.append(body)
        # vLLM's request logger writes each request's prompt; this logs the messages it came from.
        _log(f"Received request: messages: {json.dumps(body['messages'], ensure_ascii=False)}")
        model = body.get("model") or self.served_names[0]
        if model not in self.served_names:
            error = self._error(
                f"The model `{model}` does not exist. Valid aliases: {', '.join(self.served_names)}.",
                "NotFoundError",
                404,
                "model",
            )
            self.send_json(handler, record, 404, error)
            return

        messages = body["messages"]
        user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        reply = _tokens(_text(user[-1].get("content")) if user else "") or ["..."]
        prompt_tokens = sum(len(_tokens(_text(m.get("content")))) for m in messages if isinstance(m, dict))
        field = "max_completion_tokens" if body.get("max_completion_tokens") else "max_tokens"
        requested = body.get(field)
        if requested is not None and requested > self.max_model_len:
            refusal = (
                f"{field}={requested} cannot be greater than max_model_len={self.max_model_len}. "
                f"Please request fewer output tokens. (parameter={field}, value={requested})"
            )
            self.send_json(handler, record, 400, self._error(refusal, "BadRequestError", 400, field))
            return
        limit = min(requested or self.max_model_len, self.max_model_len - prompt_tokens)
        words = reply[:limit]
        finish = "length" if len(reply) > limit else "stop"
        generated = len(words) + (finish == "stop")  # vLLM counts the end-of-sequence token
        usage = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + generated,
            "completion_tokens": generated,
            "prompt_tokens_details": None,
        }
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client hung up mid-stream
                self._stream(handler, record, ident, model, words, finish, usage if include_usage else None)
            return
        time.sleep(self.first_token_delay + self.token_delay * max(len(words) - 1, 0))
        message = {
            "role": "assistant",
            "content": "".join(words),
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
            "reasoning": None,
        }
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish, "stop_reason": None}
        self.send_json(
            handler,
            record,
            200,
            {
                "id": ident,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
                "usage": usage,
                "prompt_logprobs": None,
            },
        )

    def _stream(
        self,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        ident: str,
        model: str,
        words: list[str],
        finish: str,
        usage: dict[str, Any] | None,
    ) -> None:
        created = int(time.time())

        def event(payload: Any) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
            self.write_chunk(handler, f"data: {data}\n\n".encode())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            if finish_reason is not None:
                choice["stop_reason"] = None
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
            }

        self.start_stream(handler, record, 200, "text/event-stream; charset=utf-8")
        time.sleep(self.first_token_delay)  # prefill: vLLM sends the role with the first token
        event(chunk({"role": "assistant", "content": ""}))
        fail_after, self.fail_next_after = self.fail_next_after, None
        fail_after = self.fail_after if fail_after is None else fail_after
        for index, word in enumerate(words):
            if index and index == self.hold_after:
                self.release.wait(30)
            if fail_after is not None and index >= fail_after:
                event(self._error("Engine loop has died", "InternalServerError", 500))
                event("[DONE]")
                self.end_stream(handler)
                return
            if index:
                time.sleep(self.token_delay)
            last = index == len(words) - 1
            event(chunk({"content": word}, "length" if last and finish == "length" else None))
        if finish == "stop":
            time.sleep(self.token_delay)  # the end-of-sequence token takes a decode step too
            event(chunk({"content": ""}, "stop"))
        if usage is not None:
            event(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        event("[DONE]")
        self.end_stream(handler)


# -- as a process (the image's entrypoint) ----------------------------------------------
def _log(message: str) -> None:
    stamp = time.strftime("%m-%d %H:%M:%S")
    print(f"INFO {stamp} [api_server.py] {message}", flush=True)


def _env_float(name: str) -> float:
    return float(os.environ.get(name) or 0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _log(f"vLLM API server version {VLLM_VERSION}")
    defaults = vars(build_parser().parse_args([]))
    _log(f"non-default args: { ({k: v for k, v in vars(args).items() if v != defaults[k]}) }")
    error = check_model(args.model)
    if error is not None:
        print(f"Traceback (most recent call last):\n  ...\n{error}", file=sys.stderr, flush=True)
        return 1
    time.sleep(_env_float("FAKE_VLLM_STARTUP_DELAY"))  # loading weights: the port stays closed
    crash = os.environ.get("FAKE_VLLM_CRASH")
    if crash:
        message = _CUDA_OOM if crash == "1" else crash
        print(
            f"ERROR {time.strftime('%m-%d %H:%M:%S')} [core.py] EngineCore failed to start.\n"
            f"Traceback (most recent call last):\n  ...\n{message}\n"
            "RuntimeError: Engine core initialization failed. See root cause above.",
            file=sys.stderr,
            flush=True,
        )
        return 1
    fail_after = os.environ.get("FAKE_VLLM_FAIL_AFTER")
    server = FakeVLLM(
        args.model,
        args.served_model_name,
        api_key=args.api_key or os.environ.get("VLLM_API_KEY") or None,
        max_model_len=args.max_model_len,
        first_token_delay=_env_float("FAKE_VLLM_FIRST_TOKEN_DELAY"),
        token_delay=_env_float("FAKE_VLLM_TOKEN_DELAY"),
        fail_after=int(fail_after) if fail_after else None,
        embedding_dimension=32 if args.runner == "pooling" else None,
        host=args.host or "0.0.0.0",
        port=args.port,
    )
    stop = threading.Event()
    # As PID 1 in a container a signal without a handler is ignored: docker stop would
    # wait its full timeout and then SIGKILL.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    _log(f"Starting vLLM API server 0 on http://{args.host or '0.0.0.0'}:{args.port}")
    print("INFO:     Application startup complete.", flush=True)
    stop.wait()
    server.stop()
    print("INFO:     Shutting down", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
