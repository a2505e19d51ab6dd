"""The manifest (version 1) as typed models, and the checks on it that need no network.

Every model is strict: unknown keys and wrong types are errors, and a cross-reference error
(a dangling model, a port clash, an unsafe name) carries the path of its field
(:class:`FieldError`) so that :mod:`provision.manifest_loader`, which reads the YAML, can name
the file and the line. Secrets (``token``, ``api_key``) are ``SecretStr`` so they never show
up in a repr, a dump or an error message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import ManifestError
from .gpus import GpuRequest, parse_gpu_request
from .hosts import DEFAULT_CONNECTIONS_PER_HOST
from .manifest_checks import port_conflicts
from .sources import parse_source

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_NAME_RE = re.compile(NAME_PATTERN)
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FieldPath = tuple[str | int, ...]  # e.g. ("deployments", "chat", "port"); list items are ints


class _Strict(BaseModel):
    # allow_inf_nan: `.inf` is a YAML float; no timeout, rate or limit means it, and integer maths on it overflow
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name) or name in {".", ".."}:  # fullmatch: `$` would let "x\n" through
        raise ValueError(
            f"{name!r} is not a safe name: use letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, at most 63 characters"
        )
    return name


# -- settings ------------------------------------------------------------------------------


class HuggingFaceSettings(_Strict):
    endpoint: str | None = None  # else $HF_ENDPOINT, else https://huggingface.co
    token: SecretStr | None = None  # else $HF_TOKEN


class ModelScopeSettings(_Strict):
    endpoint: str | None = None  # else $MODELSCOPE_ENDPOINT, else https://www.modelscope.cn
    token: SecretStr | None = None  # else $MODELSCOPE_API_TOKEN


class OllamaSettings(_Strict):
    host: str | None = None  # else $OLLAMA_HOST, else http://127.0.0.1:11434


class Settings(_Strict):
    models_dir: str = "models"  # relative to the manifest's folder
    max_parallel_downloads: int = Field(default=8, ge=1, le=64)
    # connections open at once to one hub host, ranges of large files included (provision/hosts.py)
    max_connections_per_host: int = Field(default=DEFAULT_CONNECTIONS_PER_HOST, ge=1, le=64)
    huggingface: HuggingFaceSettings = HuggingFaceSettings()
    modelscope: ModelScopeSettings = ModelScopeSettings()
    ollama: OllamaSettings = OllamaSettings()


# -- models --------------------------------------------------------------------------------


class ModelSpec(_Strict):
    source: str
    revision: str | None = None  # default per source: main (hf), master (ms)
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    adopt: bool = False  # place files into a folder provision did not create (each file is hashed first)
    follow_symlinks: bool = False  # file:// only: copy what links leading out of the source point to

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        parse_source(value)
        return value

    @property
    def scheme(self) -> str:
        return parse_source(self.source)[0]

    @property
    def location(self) -> str:
        """What follows ``scheme://``: a repo id, an Ollama name or a path."""
        return parse_source(self.source)[1]


# -- smoke test ----------------------------------------------------------------------------


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class EmbedProbe(_Strict):
    """The embedding proof: ``positive`` paraphrases ``query``; ``negative`` is unrelated."""

    query: str = Field(min_length=1)
    positive: str = Field(min_length=1)
    negative: str = Field(min_length=1)


class SmokeTestSettings(_Strict):
    embed: EmbedProbe | None = None  # None: the built-in English and Chinese probes
    messages: tuple[ChatMessage, ...] = (
        ChatMessage(role="user", content="What is the capital of France? Answer in one word."),
    )
    max_tokens: int = Field(default=64, gt=0)
    temperature: float = Field(default=0.7, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0)
    timeout: float = Field(default=120, gt=0)


class SmokeOverrides(_Strict):
    """Per-deployment overrides of the manifest's ``smoke_test`` settings."""

    embed: EmbedProbe | None = None
    messages: tuple[ChatMessage, ...] | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    repetition_penalty: float | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)


# -- deployments ---------------------------------------------------------------------------


class Requirements(_Strict):
    min_gpus: int | None = Field(default=None, ge=0)
    min_vram_gb: float | None = Field(default=None, gt=0)  # per GPU
    min_compute_capability: float | None = Field(default=None, gt=0)


class _DeploymentBase(_Strict):
    task: Literal["chat", "embed"] = "chat"
    expect_dimension: int | None = Field(default=None, gt=0)  # task: embed; else the model's config says
    smoke_test: SmokeOverrides | None = None
    expect: str | None = None  # a regular expression the answer must match
    max_ttft: float | None = Field(default=None, gt=0)  # seconds
    min_tokens_per_s: float | None = Field(default=None, gt=0)
    requires: Requirements | None = None

    @field_validator("expect")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class VllmDeployment(_DeploymentBase):
    engine: Literal["vllm"]
    model: str
    image: str = "vllm/vllm-openai:v0.10.1"
    port: int = Field(default=8000, ge=1, le=65535)
    bind: str = "127.0.0.1"
    gpus: GpuRequest = "all"
    args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    api_key: SecretStr | None = None
    served_model_name: str | None = None  # default: the deployment's name
    ipc_host: bool = True  # vLLM's docs run with --ipc=host; else shm_size applies
    shm_size: str | None = None
    startup_timeout: float = Field(default=900, gt=0)
    restart: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpu_request(cls, value: Any) -> GpuRequest:
        return parse_gpu_request(value)  # one clear message instead of pydantic's one per member of the union

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        # A name becomes a Docker `NAME=value`, a Secret key and a word of the printed
        # `kubectl create secret` command: "A=B" would set A, a quote would end the word.
        for name in value:
            if not _ENV_NAME_RE.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not an environment variable name: letters, digits and '_', not starting with a digit"
                )
        return value


class TransformersDeployment(_DeploymentBase):
    engine: Literal["transformers"]
    model: str
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # task: embed. What the model card says, when the folder's sentence-transformers files do not
    # (or are not downloaded): they win over the folder's files and the default (mean, not normalized).
    pooling: Literal["cls", "mean", "max", "lasttoken"] | None = None
    normalize: bool | None = None

    @model_validator(mode="after")
    def _pooling_is_for_embeddings(self) -> TransformersDeployment:
        if self.task != "embed" and (self.pooling is not None or self.normalize is not None):
            raise ValueError("pooling and normalize apply to task: embed only")
        return self


class OllamaDeployment(_DeploymentBase):
    engine: Literal["ollama"]
    model: str
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] | None = None


class OpenAIDeployment(_DeploymentBase):
    engine: Literal["openai"]
    base_url: str
    served_model: str
    api_key: SecretStr | None = None

    @property
    def model(self) -> None:  # no local model behind a hosted API
        return None


Deployment = Annotated[
    VllmDeployment | TransformersDeployment | OllamaDeployment | OpenAIDeployment,
    Field(discriminator="engine"),
]
DEPLOYMENT_BY_ENGINE: dict[str, type[BaseModel]] = {
    "vllm": VllmDeployment,
    "transformers": TransformersDeployment,
    "ollama": OllamaDeployment,
    "openai": OpenAIDeployment,
}
ENGINES = tuple(DEPLOYMENT_BY_ENGINE)


class Manifest(_Strict):
    version: Literal[1]
    settings: Settings = Settings()
    models: dict[str, ModelSpec] = {}
    deployments: dict[str, Deployment] = {}
    smoke_test: SmokeTestSettings = SmokeTestSettings()

    _path: Path | None = PrivateAttr(default=None)
    _lines: dict[FieldPath, int] = PrivateAttr(default_factory=dict)  # field path -> line, for later errors
    _file: str = PrivateAttr(default="<manifest>")

    @field_validator("models", "deployments", mode="before")
    @classmethod
    def _string_names(cls, value: Any, info: ValidationInfo) -> Any:
        for name in value if isinstance(value, dict) else ():
            if not isinstance(name, str):
                kind = {bool: "a boolean", type(None): "null"}.get(type(name), f"a {type(name).__name__}")
                written = "null" if name is None else str(name).lower() if isinstance(name, bool) else str(name)
                raise FieldError(
                    (str(info.field_name), written),
                    f"the name {written} is {kind} in YAML, not a string",
                    hint=f'quote it, as in "{written}":, or use a name that starts with a letter',
                )
        return value

    @field_validator("models", "deployments")
    @classmethod
    def _safe_names(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        for name in value:
            try:
                _check_name(name)
            except ValueError as exc:
                raise FieldError((str(info.field_name), name), str(exc)) from None
        return value

    @model_validator(mode="after")
    def _references(self) -> Manifest:
        for name, dep in self.deployments.items():
            model = getattr(dep, "model", None)
            if model is None:  # a hosted API has no local model
                continue
            if model not in self.models:
                known = ", ".join(sorted(self.models)) or "none"
                raise FieldError(("deployments", name, "model"), f"unknown model {model!r} (models: {known})")
            if dep.engine == "ollama" and self.models[model].scheme not in ("ollama", "file"):
                raise FieldError(
                    ("deployments", name, "model"),
                    f"engine ollama needs an ollama:// model or a file:// GGUF, not {self.models[model].source}",
                )
            if dep.engine in ("vllm", "transformers") and self.models[model].scheme == "ollama":
                raise FieldError(
                    ("deployments", name, "model"),
                    f"engine {dep.engine} needs files on disk; {model!r} is an Ollama model",
                )
        clash = port_conflicts(
            (name, dep.bind, dep.port) for name, dep in self.deployments.items() if isinstance(dep, VllmDeployment)
        )
        if clash:
            raise FieldError(
                ("deployments", clash[0], "port"),
                clash[1],
                hint="give each deployment its own `port:` (or distinct `bind:` addresses)",
            )
        return self

    def error(self, field: FieldPath, message: str, *, hint: str) -> ManifestError:
        """A ManifestError at ``field`` (a path such as ``("settings", "models_dir")``), with its line."""
        return ManifestError(
            message, file=self._file, line=nearest_line(self._lines, field), field=dotted(field), hint=hint
        )

    # -- derived paths ---------------------------------------------------------------------
    @property
    def path(self) -> Path:
        if self._path is None:
            raise RuntimeError("manifest was not loaded from a file")
        return self._path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def models_dir(self) -> Path:
        return (self.base_dir / self.settings.models_dir).resolve()

    def model_dir(self, name: str) -> Path:
        return self.models_dir / _check_name(name)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name.rsplit(".", 1)[0] + ".lock.json")

    def local_source_path(self, spec: ModelSpec) -> Path:
        """A ``file://`` source as an absolute path (relative ones are from the manifest's folder)."""
        return (self.base_dir / os.path.expanduser(spec.location)).resolve()

    def smoke_settings(self, deployment: str) -> SmokeTestSettings:
        overrides = self.deployments[deployment].smoke_test
        if overrides is None:
            return self.smoke_test
        # Iterating keeps the typed values (a dump would turn messages into plain dicts).
        changed = {field: value for field, value in overrides if value is not None}
        return self.smoke_test.model_copy(update=changed)


class FieldError(ValueError):
    """A cross-reference error with the path of the offending field."""

    def __init__(self, loc: FieldPath, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.loc = loc
        self.hint = hint


def dotted(path: FieldPath) -> str:
    """How errors name a field: ``deployments.chat.args[2]``."""
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")


def nearest_line(lines: dict[FieldPath, int], path: FieldPath) -> int | None:
    """The line of ``path``, else of the nearest field around it that has one."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())
