"""A fake Ollama server that the real ``ollama`` Python client (0.6.x) accepts.

Standard library only, so it also runs as a plain file in a bare container::

    python3 ollama_server.py --host 0.0.0.0 --port 11434 --registry qwen3:0.6b

(``_server.py`` must sit next to it). It prints its URL on stdout, then serves
until SIGTERM or Ctrl-C.

Protocol served (NDJSON streams; errors are ``{"error": "..."}`` with the HTTP
status when no line was sent yet, else HTTP 200 and a last error line, which
the client raises as ``ResponseError(status_code=-1)``):

- ``POST /api/pull {"model","insecure","stream"}``: ``pulling manifest``, then per
  layer (the config blob last) ``{"status":"pulling <12 hex>","digest","total",
  "completed"}`` lines, ``verifying sha256 digest``, ``writing manifest``,
  ``success``. Unknown model: the error after the first line. Bad name: 400.
- ``GET /api/tags``, ``POST /api/show``, ``DELETE /api/delete``, ``GET /api/ps``,
  ``GET /api/version``.
- ``HEAD|POST /api/blobs/sha256:<hex>`` (201 created, 200 already there, 400 on
  a digest mismatch) and ``POST /api/create {"model","files":{name: digest},
  "template","system","parameters","stream"}`` (GGUF blobs only).
- ``POST /api/chat``: echoes the words of the last user message, one word per
  line, honouring ``options.num_predict``; the last line carries the metrics.
- ``POST /api/embed {"model","input": str|[str],"truncate"}`` (one JSON answer):
  ``{"model","embeddings": [[...]],"total_duration","load_duration","prompt_eval_count"}``
  for a model in ``embedding_models`` (vectors from ``text_vector``); an empty input
  list is 200 with no embeddings; a chat model is 400 ``"<model>" does not support
  embeddings``; with ``truncate: false`` an input over ``embed_context`` words is 400
  ``input exceeds maximum context length``; an unknown model 404.

State lives in memory: ``registry`` (what a pull can fetch), ``local`` (what
``/api/tags`` lists), ``blobs`` (complete local blobs) and ``partial`` (bytes of
interrupted layer downloads, from which the next pull resumes). Model names
follow Ollama: ``qwen3`` and ``qwen3:latest`` are the same model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

try:
    from tests.fakes._server import FakeServer, Recorded, Request, text_vector
except ImportError:  # run as a plain file; `python3 -I` leaves its folder off sys.path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _server import FakeServer, Recorded, Request, text_vector  # type: ignore[no-redef,import-not-found]

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
MODEL_MEDIA = "application/vnd.ollama.image.model"
LICENSE_MEDIA = "application/vnd.ollama.image.license"
TEMPLATE_MEDIA = "application/vnd.ollama.image.template"
SYSTEM_MEDIA = "application/vnd.ollama.image.system"
PARAMS_MEDIA = "application/vnd.ollama.image.params"
CONFIG_MEDIA = "application/vnd.docker.container.image.v1+json"
MANIFEST_MEDIA = "application/vnd.docker.distribution.manifest.v2+json"

_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,349}")
_BLOB_PATH = re.compile(r"/api/blobs/(sha256[:-][0-9a-fA-F]{64})")


def canonical_name(raw: str) -> str | None:
    """Ollama's shortest display form (``qwen3`` → ``qwen3:latest``), or None if invalid."""
    path, _, tag = raw.rpartition(":") if ":" in raw.rsplit("/", 1)[-1] else (raw, "", "latest")
    parts = path.split("/")
    if not 1 <= len(parts) <= 3 or not _PART.fullmatch(tag):
        return None
    host, namespace, model = [DEFAULT_HOST, DEFAULT_NAMESPACE][: 3 - len(parts)] + parts
    if not (_HOST.fullmatch(host) and _PART.fullmatch(namespace) and _PART.fullmatch(model)):
        return None
    if host != DEFAULT_HOST:
        return f"{host}/{namespace}/{model}:{tag}"
    if namespace != DEFAULT_NAMESPACE:
        return f"{namespace}/{model}:{tag}"
    return f"{model}:{tag}"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _details(name: str, family: str | None = None) -> dict[str, Any]:
    model, _, tag = name.rpartition("/")[2].partition(":")
    family = family or model
    size = tag.upper() if re.fullmatch(r"[0-9.]+[bBmM]", tag) else ""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": size,
        "quantization_level": "Q4_K_M",
    }


@dataclass
class Faults:
    """Switches tests flip to make the server misbehave."""

    drop_pull_after_lines: int | None = None  # close the connection after N pull lines...
    drop_pull_times: int = 1  # ...for this many pulls, then behave again
    first_token_delay: float = 0.0  # seconds before the first chat line
    token_delay: float = 0.0  # seconds between chat lines
    error_mid_stream_after: int | None = None  # chat: an error line after N words (0: HTTP 500)
    # hostile-server tests: a streamed chat sends these bytes as they are after its 200 NDJSON
    # headers; a chat or embed request gets this (status, body) instead of its answer
    raw_chat: Iterable[bytes] | None = None
    raw_answer: tuple[int, bytes] | None = None


@dataclass
class Manifest:
    digest: str  # sha256 hex of the manifest JSON, no prefix (as /api/tags shows it)
    layers: list[str]  # blob digests "sha256:<hex>", the config blob last
    details: dict[str, Any]


@dataclass
class LocalModel:
    name: str  # canonical, e.g. "qwen3:0.6b"
    manifest: Manifest
    size: int
    modified_at: str = field(default_factory=_now)
    template: str = "{{ .Prompt }}"
    system: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FakeOllama(FakeServer):
    """In-memory Ollama; see the module docstring for what it serves."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, version: str = "0.12.6") -> None:
        super().__init__(host, port)
        self.version = version
        self.faults = Faults()
        self.registry: dict[str, Manifest] = {}
        self.local: dict[str, LocalModel] = {}
        self.blobs: dict[str, bytes] = {}
        self.partial: dict[str, int] = {}  # digest -> bytes already fetched
        self.loaded: dict[str, str] = {}  # name -> expires_at, what /api/ps lists
        self.last_chat_request: dict[str, Any] | None = None
        # /api/embed: models that embed (name -> dimension), their context in words, the requests
        self.embedding_models: dict[str, int] = {}
        self.embed_context = 512
        self.embed_requests: list[dict[str, Any]] = []
        self._registry_blobs: dict[str, bytes] = {}

    @property
    def last_chat_options(self) -> dict[str, Any] | None:
        return None if self.last_chat_request is None else self.last_chat_request.get("options", {})

    # -- state set up by tests -------------------------------------------------
    def registry_add(self, name: str, layers: list[bytes] | None = None) -> str:
        """Make ``name`` pullable; returns its manifest digest (hex, no prefix)."""
        canonical = self._require_name(name)
        manifest, blobs = self._build(canonical, self._media(layers or _default_layers(canonical)))
        self._registry_blobs.update(blobs)
        self.registry[canonical] = manifest
        return manifest.digest

    def registry_move(self, name: str, layers: list[bytes]) -> str:
        """Publish new layers under an existing name (upstream drift); returns the new digest."""
        if self._require_name(name) not in self.registry:
            raise KeyError(name)
        return self.registry_add(name, layers)

    def preinstall(self, name: str, layers: list[bytes] | None = None) -> str:
        """A model the user already had locally; returns its manifest digest."""
        canonical = self._require_name(name)
        manifest, blobs = self._build(canonical, self._media(layers or _default_layers(canonical)))
        self.blobs.update(blobs)
        self.local[canonical] = LocalModel(canonical, manifest, sum(map(len, blobs.values())))
        return manifest.digest

    @staticmethod
    def _require_name(name: str) -> str:
        canonical = canonical_name(name)
        if canonical is None:
            raise ValueError(f"invalid model name: {name!r}")
        return canonical

    @staticmethod
    def _media(layers: list[bytes]) -> list[tuple[str, bytes]]:
        return [(MODEL_MEDIA if i == 0 else LICENSE_MEDIA, data) for i, data in enumerate(layers)]

    @staticmethod
    def _build(
        name: str, layers: list[tuple[str, bytes]], family: str | None = None
    ) -> tuple[Manifest, dict[str, bytes]]:
        """A manifest in Ollama's layout and the blobs it references (config included)."""
        details = _details(name, family)
        blobs = {_digest(data): data for _, data in layers}
        config = json.dumps(
            {
                "model_format": details["format"],
                "model_family": details["family"],
                "model_families": details["families"],
                "model_type": details["parameter_size"],
                "file_type": details["quantization_level"],
                "rootfs": {"type": "layers", "diff_ids": list(blobs)},
            }
        ).encode()
        document = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA,
            "config": {"mediaType": CONFIG_MEDIA, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": m, "digest": _digest(d), "size": len(d)} for m, d in layers],
        }
        blobs[_digest(config)] = config
        digest = hashlib.sha256(json.dumps(document).encode()).hexdigest()
        return Manifest(digest, [_digest(d) for _, d in layers] + [_digest(config)], details), blobs

    # -- dispatch --------------------------------------------------------------
    def handle(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        routes = {
            ("POST", "/api/pull"): self._pull,
            ("GET", "/api/tags"): self._tags,
            ("POST", "/api/show"): self._show,
            ("DELETE", "/api/delete"): self._delete,
            ("GET", "/api/version"): self._version,
            ("GET", "/api/ps"): self._ps,
            ("POST", "/api/create"): self._create,
            ("POST", "/api/chat"): self._chat,
            ("POST", "/api/embed"): self._embed,
        }
        route = routes.get((request.method, request.path))
        if self.faults.raw_answer is not None and request.path in ("/api/chat", "/api/embed"):
            status, body = self.faults.raw_answer
            self.send(handler, record, status, body, {"Content-Type": "application/json"})
        elif self.faults.raw_chat is not None and request.path == "/api/chat":
            try:
                self.start_stream(handler, record, 200, "application/x-ndjson")
                for data in self.faults.raw_chat:
                    self.write_chunk(handler, data)
                self.end_stream(handler)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client hung up mid-stream
        elif route is not None:
            route(request, handler, record)
        elif (match := _BLOB_PATH.fullmatch(request.path)) and request.method in ("HEAD", "POST"):
            self._blob(request, handler, record, "sha256:" + match.group(1)[7:].lower())
        elif request.path.startswith("/api/blobs/"):
            self.send_json(handler, record, 400, {"error": "invalid digest format"})
        else:
            self.send(handler, record, 404, b"404 page not found", {"Content-Type": "text/plain"})

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        lines: Iterator[dict[str, Any]],
        *,
        stream: bool,
        drop_after: int | None = None,
    ) -> None:
        """Stream ``lines`` as NDJSON, or send the last one; ``_ApiError`` becomes an error reply."""
        sent = 0
        last: dict[str, Any] = {}
        try:
            for last in lines:
                if stream:
                    if not sent:
                        self.start_stream(handler, record, 200, "application/x-ndjson")
                    self.write_chunk(handler, json.dumps(last).encode() + b"\n")
                sent += 1
                if drop_after is not None and sent >= drop_after:
                    handler.close_connection = True  # no final chunk: the client sees a cut body
                    return
        except _ApiError as err:
            if stream and sent:
                self.write_chunk(handler, json.dumps({"error": err.message}).encode() + b"\n")
                self.end_stream(handler)
            else:
                self.send_json(handler, record, err.status, {"error": err.message})
            return
        if stream:
            self.end_stream(handler)
        else:
            self.send_json(handler, record, 200, last)

    # -- pull ------------------------------------------------------------------
    def _pull(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        body = request.json() or {}
        name = canonical_name(body.get("model") or body.get("name") or "")
        if name is None:
            self.send_json(handler, record, 400, {"error": "invalid model name"})
            return
        drop_after = None
        if self.faults.drop_pull_after_lines is not None and self.faults.drop_pull_times > 0:
            self.faults.drop_pull_times -= 1
            drop_after = self.faults.drop_pull_after_lines
        self._answer(handler, record, self._pull_lines(name), stream=body.get("stream", True), drop_after=drop_after)

    def _pull_lines(self, name: str) -> Iterator[dict[str, Any]]:
        yield {"status": "pulling manifest"}
        manifest = self.registry.get(name)
        if manifest is None:
            raise _ApiError(500, "pull model manifest: file does not exist")
        for digest in manifest.layers:
            yield from self._pull_layer(digest, self._registry_blobs[digest])
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        size = sum(len(self.blobs[d]) for d in manifest.layers)
        self.local[name] = LocalModel(name, manifest, size)
        yield {"status": "success"}

    def _pull_layer(self, digest: str, data: bytes, steps: int = 4) -> Iterator[dict[str, Any]]:
        """Progress lines for one blob, starting from what an earlier pull left behind.

        State is updated before each line is yielded, so a connection cut after any
        line leaves exactly what the client last saw.
        """
        total = len(data)
        done = total if digest in self.blobs else self.partial.get(digest, 0)
        line = {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total}
        yield {**line, "completed": done}
        start = done
        for i in range(1, steps + 1):
            if done == total:
                break
            done = start + -(-(total - start) * i // steps)  # ceil: the last step reaches total
            if done == total:
                self.blobs[digest] = data
                self.partial.pop(digest, None)
            else:
                self.partial[digest] = done
            yield {**line, "completed": done}

    # -- local models ----------------------------------------------------------
    def _find(self, request: Request) -> tuple[str, LocalModel | None]:
        body = request.json() or {}
        raw = body.get("model") or body.get("name") or ""
        return raw, self.local.get(canonical_name(raw) or "")

    def _tags(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        models = sorted(self.local.values(), key=lambda m: m.modified_at, reverse=True)
        self.send_json(handler, record, 200, {"models": [self._entry(m) for m in models]})

    @staticmethod
    def _entry(model: LocalModel) -> dict[str, Any]:
        return {
            "name": model.name,
            "model": model.name,
            "modified_at": model.modified_at,
            "size": model.size,
            "digest": model.manifest.digest,
            "details": model.manifest.details,
        }

    def _show(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        raw, model = self._find(request)
        if model is None:
            self.send_json(handler, record, 404, {"error": f"model '{raw}' not found"})
            return
        parameters = "\n".join(
            f"{key} {json.dumps(v) if isinstance(v, str) else v}"
            for key, value in model.parameters.items()
            for v in (value if isinstance(value, list) else [value])
        )
        modelfile = f'# Modelfile generated by "ollama show"\nFROM {model.name}\nTEMPLATE """{model.template}"""\n'
        if model.system:
            modelfile += f'SYSTEM """{model.system}"""\n'
        modelfile += "".join(f"PARAMETER {line}\n" for line in parameters.splitlines())
        details = model.manifest.details
        self.send_json(
            handler,
            record,
            200,
            {
                "license": "",
                "modelfile": modelfile,
                "parameters": parameters,
                "template": model.template,
                "system": model.system,
                "details": details,
                "model_info": {"general.architecture": details["family"], "general.parameter_count": model.size},
                "capabilities": ["completion"],
                "modified_at": model.modified_at,
            },
        )

    def _delete(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        raw, model = self._find(request)
        if model is None:
            self.send_json(handler, record, 404, {"error": f"model '{raw}' not found"})
            return
        del self.local[model.name]
        self.loaded.pop(model.name, None)
        # Like Ollama, prune blobs no remaining model references.
        in_use = {d for m in self.local.values() for d in m.manifest.layers}
        for digest in set(model.manifest.layers) - in_use:
            self.blobs.pop(digest, None)
        self.send(handler, record, 200)

    def _version(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        self.send_json(handler, record, 200, {"version": self.version})

    def _ps(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        models = [
            {**self._entry(self.local[name]), "expires_at": expires, "size_vram": 0, "context_length": 4096}
            for name, expires in self.loaded.items()
            if name in self.local
        ]
        self.send_json(handler, record, 200, {"models": models})

    # -- blobs and create ------------------------------------------------------
    def _blob(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded, digest: str) -> None:
        if request.method == "HEAD":
            self.send(handler, record, 200 if digest in self.blobs else 404)
            return
        if digest in self.blobs:
            self.send(handler, record, 200)
            return
        data = request.body or _read_chunked(request, handler)
        if _digest(data) != digest:
            message = f"digest mismatch, expected {digest}, got {_digest(data)}"
            self.send_json(handler, record, 400, {"error": message})
            return
        self.blobs[digest] = data
        self.send(handler, record, 201)

    def _create(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        body = request.json() or {}
        name = canonical_name(body.get("model") or "")
        if name is None:
            self.send_json(handler, record, 400, {"error": "invalid model name"})
            return
        self._answer(handler, record, self._create_lines(name, body), stream=body.get("stream", True))

    def _create_lines(self, name: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        files: dict[str, str] = body.get("files") or {}
        if not files:
            raise _ApiError(400, "neither 'from' or 'files' was specified")
        for digest in files.values():
            if digest not in self.blobs:
                raise _ApiError(400, f"blob {digest} not found, upload it first")
            if not self.blobs[digest].startswith(b"GGUF"):
                raise _ApiError(400, "supplied file was not in GGUF format")
        yield {"status": "parsing GGUF"}
        layers = [(MODEL_MEDIA, self.blobs[digest]) for digest in files.values()]
        for digest in files.values():
            yield {"status": f"using existing layer {digest}"}
        parameters = body.get("parameters") or {}
        extra = [
            (media, text.encode())
            for media, text in (
                (TEMPLATE_MEDIA, body.get("template") or ""),
                (SYSTEM_MEDIA, body.get("system") or ""),
                (PARAMS_MEDIA, json.dumps(parameters) if parameters else ""),
            )
            if text
        ]
        for _, data in extra:
            yield {"status": f"creating new layer {_digest(data)}"}
        yield {"status": "writing manifest"}
        manifest, blobs = self._build(name, layers + extra, family="unknown")
        self.blobs.update(blobs)
        model = LocalModel(name, manifest, sum(map(len, blobs.values())), system=body.get("system") or "")
        model.parameters = parameters
        if body.get("template"):
            model.template = body["template"]
        self.local[name] = model
        yield {"status": "success"}

    # -- chat ------------------------------------------------------------------
    def _embed(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        """``/api/embed`` as server.go's EmbedHandler answers it (see the module docstring)."""
        body = request.json() or {}
        self.embed_requests.append(body)
        raw = body.get("model") or ""
        name = canonical_name(raw) or ""
        if name not in self.local:
            self.send_json(handler, record, 404, {"error": f"model {json.dumps(raw)} not found, try pulling it first"})
            return
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            self.send_json(handler, record, 400, {"error": "invalid input type"})
            return
        if not texts:
            self.send_json(handler, record, 200, {"model": raw, "embeddings": []})
            return
        if name not in self.embedding_models:
            self.send_json(handler, record, 400, {"error": f"{json.dumps(raw)} does not support embeddings"})
            return
        if body.get("truncate") is False and any(len(t.split()) > self.embed_context for t in texts):
            self.send_json(handler, record, 400, {"error": "input exceeds maximum context length"})
            return
        dimension = self.embedding_models[name]
        self.send_json(
            handler,
            record,
            200,
            {
                "model": raw,
                "embeddings": [text_vector(t, dimension) for t in texts],
                "total_duration": 1_000_000,
                "load_duration": 50_000,
                "prompt_eval_count": sum(min(len(t.split()), self.embed_context) for t in texts),
            },
        )

    def _chat(self, request: Request, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        body = request.json() or {}
        self.last_chat_request = body
        if not body.get("stream", True):
            try:
                lines = list(self._chat_lines(body))
            except _ApiError as err:
                self.send_json(handler, record, err.status, {"error": err.message})
                return
            content = "".join(line["message"]["content"] for line in lines)
            self.send_json(handler, record, 200, {**lines[-1], "message": {"role": "assistant", "content": content}})
            return
        self._answer(handler, record, self._chat_lines(body), stream=True)

    def _chat_lines(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        started = time.monotonic_ns()
        raw = body.get("model") or ""
        name = canonical_name(raw) or ""
        if name not in self.local:
            raise _ApiError(404, f"model {json.dumps(raw)} not found, try pulling it first")
        load_duration = 50_000 if name in self.loaded else 1_000_000
        self.loaded[name] = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()

        messages = body.get("messages") or []
        user = [m.get("content") or "" for m in messages if m.get("role") == "user"]
        words = (user[-1].split() if user else []) or ["ok"]
        limit = (body.get("options") or {}).get("num_predict")
        if limit is not None and 0 <= limit < len(words):
            words, done_reason = words[:limit], "length"
        else:
            done_reason = "stop"

        time.sleep(self.faults.first_token_delay)
        first_token = time.monotonic_ns()
        for i, word in enumerate(words):
            if self.faults.error_mid_stream_after is not None and i >= self.faults.error_mid_stream_after:
                raise _ApiError(500, "an error was encountered while running the model: unexpected EOF")
            if i:
                time.sleep(self.faults.token_delay)
            yield self._chat_line(name, word if i == 0 else " " + word, done=False)
        finished = time.monotonic_ns()
        yield {
            **self._chat_line(name, "", done=True),
            "done_reason": done_reason,
            "total_duration": finished - started + load_duration,
            "load_duration": load_duration,
            "prompt_eval_count": max(1, sum(len(str(m.get("content") or "").split()) for m in messages)),
            "prompt_eval_duration": max(1, first_token - started),
            "eval_count": len(words),
            "eval_duration": max(1, finished - first_token),
        }

    @staticmethod
    def _chat_line(name: str, content: str, *, done: bool) -> dict[str, Any]:
        return {"model": name, "created_at": _now(), "message": {"role": "assistant", "content": content}, "done": done}


def _default_layers(name: str) -> list[bytes]:
    """Small deterministic GGUF-looking weights and a license, distinct per name."""
    seed = hashlib.sha256(name.encode()).digest()
    return [b"GGUF" + seed * 256, f"License for {name}\n".encode()]


def _read_chunked(request: Request, handler: BaseHTTPRequestHandler) -> bytes:
    """Read a chunked request body, which ``_server`` leaves unread (streamed uploads send one)."""
    if request.headers.get("transfer-encoding", "").lower() != "chunked":
        return b""
    parts = []
    while size := int(handler.rfile.readline().split(b";")[0], 16):
        parts.append(handler.rfile.read(size))
        handler.rfile.readline()
    while handler.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
        pass
    return b"".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Ollama server (Python standard library only).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434, help="0 picks a free port")
    parser.add_argument("--registry", action="append", default=[], metavar="NAME", help="make NAME pullable")
    parser.add_argument("--preinstall", action="append", default=[], metavar="NAME", help="list NAME as local")
    args = parser.parse_args(argv)

    fake = FakeOllama(args.host, args.port)
    for name in args.registry:
        fake.registry_add(name)
    for name in args.preinstall:
        fake.preinstall(name)
    # As PID 1 in a container SIGTERM is ignored unless handled.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fake.start()
    print(fake.url, flush=True)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
