"""The manifest (version 1): typed models, YAML loading with line numbers, ``${ENV}`` references.

Loading is strict: duplicate keys, unknown keys, wrong types, unset ``${VAR}`` references,
unsafe names and dangling references are :class:`~provision.errors.ManifestError` naming
the file, the line and the field. Secrets (``token``, ``api_key``) are ``SecretStr`` so they
never show up in a repr, a dump or an error message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import ManifestError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_NAME_RE = re.compile(NAME_PATTERN)
_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}|\$\$")
SOURCE_SCHEMES = ("hf", "ms", "ollama", "file")
DEFAULT_MANIFEST = "provision.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name) or name in {".", ".."}:
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
    huggingface: HuggingFaceSettings = HuggingFaceSettings()
    modelscope: ModelScopeSettings = ModelScopeSettings()
    ollama: OllamaSettings = OllamaSettings()


# -- models --------------------------------------------------------------------------------


class ModelSpec(_Strict):
    source: str
    revision: str | None = None  # default per source: main (hf), master (ms)
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in SOURCE_SCHEMES or not rest:
            raise ValueError(
                f"unknown source {value!r}: expected one of "
                + ", ".join(f"{s}://..." for s in SOURCE_SCHEMES)
            )
        if scheme in ("hf", "ms") and not re.match(r"^[\w.-]+/[\w.-]+$", rest):
            raise ValueError(f"{value!r}: expected {scheme}://owner/name")
        if scheme in ("hf", "ms") and ".." in rest.split("/"):
            raise ValueError(f"{value!r}: '..' is not a repository name")
        return value

    @property
    def scheme(self) -> str:
        return self.source.partition("://")[0]

    @property
    def location(self) -> str:
        """What follows ``scheme://``: a repo id, an Ollama name or a path."""
        return self.source.partition("://")[2]


# -- smoke test ----------------------------------------------------------------------------


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class SmokeTestSettings(_Strict):
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


GpuRequest = Literal["all"] | int | tuple[int, ...]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


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
    def _gpu_request(cls, value: Any) -> Any:
        # One clear message instead of pydantic's one error per member of the union.
        if isinstance(value, str) and value.isdigit():  # e.g. from ${GPUS}
            return int(value)
        if value == "all" or _is_count(value) or (isinstance(value, (list, tuple)) and all(map(_is_count, value))):
            return value
        raise ValueError(f"expected 'all', a number of GPUs or a list of device ids, not {value!r}")


class TransformersDeployment(_DeploymentBase):
    engine: Literal["transformers"]
    model: str
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps


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
_DEPLOYMENT_BY_ENGINE: dict[str, type[BaseModel]] = {
    "vllm": VllmDeployment, "transformers": TransformersDeployment, "ollama": OllamaDeployment,
    "openai": OpenAIDeployment,
}
ENGINES = tuple(_DEPLOYMENT_BY_ENGINE)


class Manifest(_Strict):
    version: Literal[1]
    settings: Settings = Settings()
    models: dict[str, ModelSpec] = {}
    deployments: dict[str, Deployment] = {}
    smoke_test: SmokeTestSettings = SmokeTestSettings()

    _path: Path | None = PrivateAttr(default=None)

    @field_validator("models", "deployments")
    @classmethod
    def _safe_names(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        for name in value:
            try:
                _check_name(name)
            except ValueError as exc:
                raise _RefError((str(info.field_name), name), str(exc)) from None
        return value

    @model_validator(mode="after")
    def _references(self) -> Manifest:
        for name, dep in self.deployments.items():
            model = getattr(dep, "model", None)
            if model is None:  # a hosted API has no local model
                continue
            if model not in self.models:
                known = ", ".join(sorted(self.models)) or "none"
                raise _RefError(("deployments", name, "model"), f"unknown model {model!r} (models: {known})")
            if dep.engine == "ollama" and self.models[model].scheme not in ("ollama", "file"):
                raise _RefError(
                    ("deployments", name, "model"),
                    f"engine ollama needs an ollama:// model or a file:// GGUF, not {self.models[model].source}",
                )
            if dep.engine in ("vllm", "transformers") and self.models[model].scheme == "ollama":
                raise _RefError(
                    ("deployments", name, "model"),
                    f"engine {dep.engine} needs files on disk; {model!r} is an Ollama model",
                )
        return self

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


class _RefError(ValueError):
    """A cross-reference error with the path of the offending field."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


# -- YAML with line numbers ----------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and records each node's line by field path."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *base`; construct_mapping merges it, explicit keys override
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first defined on line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_map(
    node: yaml.Node | None, path: tuple = (), out: dict | None = None, parents: frozenset[int] = frozenset()
) -> dict[tuple, int]:
    """Field path (as pydantic reports it) -> 1-based line of that field in the file."""
    out = {} if out is None else out
    if node is None:
        return out
    if id(node) in parents:  # `a: &x [*x]` would make every later step recurse forever
        raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it", node.start_mark)
    parents = parents | {id(node)}
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # the constructor rejects it
            key_path = path + (key_node.value,)
            out[key_path] = key_node.start_mark.line + 1
            _line_map(value_node, key_path, out, parents)
            out[key_path] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, path + (index,), out, parents)
    return out


SECRET_FIELDS = ("token", "api_key")


def _expand(value: Any, path: tuple, env: dict[str, str], lines: dict[tuple, int], file: str,
            secrets_optional: bool = False) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``.

    With ``secrets_optional`` an unset variable in a secret field becomes "" (destroy needs no key)."""
    if isinstance(value, dict):
        return {k: _expand(v, path + (k,), env, lines, file, secrets_optional) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, path + (i,), env, lines, file, secrets_optional) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        if secrets_optional and path and path[-1] in SECRET_FIELDS:
            return ""
        raise ManifestError(
            f"environment variable {name} is not set",
            file=file,
            line=_nearest_line(lines, path),
            field=_dotted(path),
            hint=f"export {name}=... before running, or write ${{{name}:-default}} for an optional value",
        )

    return _REF_RE.sub(substitute, value)


def _dotted(path: tuple) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")


def _nearest_line(lines: dict[tuple, int], path: tuple) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _unknown_field_hint(loc: tuple) -> str | None:
    """'did you mean ...?' for a misspelt key, from the fields of the model it sits in.

    ``loc`` is pydantic's raw location: names of dict entries and, for deployments, the
    engine tag appear in it, which is how the right model is found.
    """
    model: Any = Manifest
    for key in loc[:-1]:
        fields = getattr(model, "model_fields", None)
        if fields is not None and key in fields:
            model = _model_in(fields[key].annotation)
        elif key in ENGINES:
            model = _DEPLOYMENT_BY_ENGINE[key]
        # else: the name of a dict entry (a model or deployment name): the model stays
    fields = getattr(model, "model_fields", None)
    if not fields:
        return None
    import difflib

    close = difflib.get_close_matches(str(loc[-1]), list(fields), n=1, cutoff=0.6)
    known = ", ".join(fields)
    return f"did you mean {close[0]!r}? (fields here: {known})" if close else f"fields here: {known}"


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X``, ``X | None``, ``dict[str, X]`` or ``tuple[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _pydantic_message(error: Any) -> str:  # a pydantic ErrorDetails
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "union_tag_invalid":
        return f"unknown engine {error['input'].get('engine')!r}: expected one of {', '.join(ENGINES)}"
    if kind == "union_tag_not_found":
        return f"missing field 'engine': one of {', '.join(ENGINES)}"
    if kind == "missing":
        return "missing required field"
    if kind in ("tuple_type", "list_type"):
        return "expected a list"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return "expected a mapping (key: value lines)"
    if kind == "literal_error" and error["loc"] == ("version",):
        return f"unsupported manifest version {error['input']!r}: this provision reads version 1"
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


def _clean_loc(loc: tuple) -> tuple:
    # pydantic inserts the discriminator tag ("vllm") and union member names into locations.
    return tuple(p for p in loc if p not in ENGINES and not str(p).startswith(("tuple[", "function-")))


def parse_manifest(text: str, *, file: str = "<manifest>", env: dict[str, str] | None = None,
                   secrets_optional: bool = False) -> Manifest:
    """Parse manifest text. ``file`` is used in error messages only."""
    env = dict(os.environ) if env is None else env
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        lines = _line_map(node)
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        if exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
            # e.g. an unclosed quote or bracket: the problem shows only at the end
            problem += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        hint = ("remove or rename one of them" if problem.startswith("duplicate key")
                else "fix the YAML at that line: check indentation, quotes and brackets")
        raise ManifestError(f"invalid YAML: {problem}", file=file, line=line, hint=hint) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        raise ManifestError(f"invalid YAML: character U+{exc.character:04X} is not allowed", file=file, line=line,
                            hint="remove control characters; save the file as UTF-8") from None
    if data is None:
        raise ManifestError("the manifest is empty", file=file, line=1, hint="start with `version: 1`")
    if not isinstance(data, dict):
        raise ManifestError("the manifest must be a mapping", file=file, line=lines.get((), 1),
                            hint="start with `version: 1`")
    data = _expand(data, (), env, lines, file, secrets_optional)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        if isinstance(first.get("ctx", {}).get("error"), _RefError):
            ref: _RefError = first["ctx"]["error"]
            loc, message = ref.loc, str(ref)
        else:
            loc, message = _clean_loc(first["loc"]), _pydantic_message(first)
            if first["type"] == "union_tag_invalid":
                loc += ("engine",)  # point at the bad value, not at the deployment
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
        hint = "see the manifest reference in README.md"
        if first["type"] == "extra_forbidden":
            hint = _unknown_field_hint(first["loc"]) or hint
        raise ManifestError(
            message + suffix,
            file=file,
            line=_nearest_line(lines, loc),
            field=_dotted(loc),
            hint=hint,
        ) from None


def load_manifest(path: str | os.PathLike[str] | None = None, *, secrets_optional: bool = False) -> Manifest:
    """Load and validate a manifest file (default: ./provision.yaml)."""
    file = Path(path if path is not None else DEFAULT_MANIFEST)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"no such manifest: {file}", hint="pass the manifest's path, e.g. "
                            "`provision apply manifests/demo.yaml`") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {file}: {exc}") from None
    manifest = parse_manifest(text, file=str(file), secrets_optional=secrets_optional)
    manifest._path = file.resolve()
    return manifest
