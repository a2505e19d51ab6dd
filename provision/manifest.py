"""The manifest (version 1): typed models, ``${ENV}`` references, the checks that need no network.

Loading is strict: duplicate keys, unknown keys, wrong types, malformed or unset ``${VAR}``
references, unsafe names and dangling references are :class:`~provision.errors.ManifestError`
naming the file, the line and the field. Reading and YAML are bounded (:mod:`.yaml_loader`),
references parsed by :mod:`.references`. Secrets (``token``, ``api_key``) are ``SecretStr`` so
they never show up in a repr, a dump or an error message; a referenced one is resolved when
it is used (:class:`SecretReference`), so an unused deployment's key is never demanded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

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
from .hosts import DEFAULT_CONNECTIONS_PER_HOST
from .manifest_checks import models_dir_problem, ollama_name_problem, port_conflicts
from .references import (
    ReferenceSyntaxError,
    Template,
    UnsetVariable,
    has_references,
    parse_template,
    render,
    variables,
)
from .yaml_loader import load_yaml, read_manifest_text

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_NAME_RE = re.compile(NAME_PATTERN)
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
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in SOURCE_SCHEMES or not rest:
            raise ValueError(
                f"unknown source {value!r}: expected one of " + ", ".join(f"{s}://..." for s in SOURCE_SCHEMES)
            )
        if scheme in ("hf", "ms") and not re.match(r"^[\w.-]+/[\w.-]+$", rest):
            raise ValueError(f"{value!r}: expected {scheme}://owner/name")
        if scheme in ("hf", "ms") and ".." in rest.split("/"):
            raise ValueError(f"{value!r}: '..' is not a repository name")
        if scheme == "ollama" and (problem := ollama_name_problem(rest)):
            raise ValueError(problem)
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
    "vllm": VllmDeployment,
    "transformers": TransformersDeployment,
    "ollama": OllamaDeployment,
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
    _lines: dict[tuple, int] = PrivateAttr(default_factory=dict)  # field path -> line, for later errors
    _file: str = PrivateAttr(default="<manifest>")

    @field_validator("models", "deployments", mode="before")
    @classmethod
    def _string_names(cls, value: Any, info: ValidationInfo) -> Any:
        for name in value if isinstance(value, dict) else ():
            if not isinstance(name, str):
                kind = {bool: "a boolean", type(None): "null"}.get(type(name), f"a {type(name).__name__}")
                written = "null" if name is None else str(name).lower() if isinstance(name, bool) else str(name)
                raise _RefError(
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
        clash = port_conflicts(
            (name, dep.bind, dep.port) for name, dep in self.deployments.items() if isinstance(dep, VllmDeployment)
        )
        if clash:
            raise _RefError(
                ("deployments", clash[0], "port"),
                clash[1],
                hint="give each deployment its own `port:` (or distinct `bind:` addresses)",
            )
        return self

    def error(self, field: tuple, message: str, *, hint: str) -> ManifestError:
        """A ManifestError at ``field`` (a path such as ``("settings", "models_dir")``), with its line."""
        return ManifestError(
            message, file=self._file, line=_nearest_line(self._lines, field), field=_dotted(field), hint=hint
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


class _RefError(ValueError):
    """A cross-reference error with the path of the offending field."""

    def __init__(self, loc: tuple[str, ...], message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.loc = loc
        self.hint = hint


# -- ${ENV} references ----------------------------------------------------------------------


def _is_secret(path: tuple) -> bool:
    """settings.<hub>.token and deployments.<name>.api_key."""
    return len(path) == 3 and (path[0], path[2]) in {("settings", "token"), ("deployments", "api_key")}


class SecretReference(SecretStr):
    """A secret (``token``, ``api_key``) kept as its ``${VAR}`` template and resolved on use.

    So a manifest loads, validates and plans without the secrets of deployments that are not
    used (the hosted API's key is needed by its smoke test, not by ``plan``). A missing
    variable is reported then, as a ManifestError naming the file, line and field.
    """

    def __init__(
        self, template: Template, *, env: Mapping[str, str] | None, file: str, line: int | None, field: str
    ) -> None:
        super().__init__("")
        self._template = template
        self._env = env  # None: os.environ at the time of use
        self._where = (file, line, field)

    @property
    def variables(self) -> tuple[str, ...]:
        return variables(self._template)

    def get_secret_value(self) -> str:
        try:
            return render(self._template, os.environ if self._env is None else self._env)
        except UnsetVariable as exc:
            file, line, field = self._where
            raise _unset(exc, file=file, line=line, field=field) from None

    def _display(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:  # by template: comparing must not need the value
        return isinstance(other, SecretReference) and other._template == self._template

    def __hash__(self) -> int:
        return hash(self._template)

    def __len__(self) -> int:
        return len(self.get_secret_value())


def _unset(exc: UnsetVariable, *, file: str, line: int | None, field: str) -> ManifestError:
    state = "is empty" if exc.empty else "is not set"
    return ManifestError(
        f"environment variable {exc.name} {state}",
        file=file,
        line=line,
        field=field,
        hint=f"export {exc.name}=... before running, or write ${{{exc.name}:-default}} for an optional value",
    )


def _expand(value: Any, path: tuple, env: Mapping[str, str] | None, lines: dict[tuple, int], file: str) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string (see provision.references);
    secrets become :class:`SecretReference` s, resolved when used."""
    if isinstance(value, dict):
        return {k: _expand(v, path + (k,), env, lines, file) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, path + (i,), env, lines, file) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value
    line, field = _nearest_line(lines, path), _dotted(path)
    try:
        template = parse_template(value)
    except ReferenceSyntaxError as exc:
        raise ManifestError(
            str(exc), file=file, line=line, field=field, hint="write ${VAR} or ${VAR:-default}; $$ is a literal $"
        ) from None
    if _is_secret(path) and has_references(template):
        return SecretReference(template, env=env, file=file, line=line, field=field)
    try:
        return render(template, os.environ if env is None else env)
    except UnsetVariable as exc:
        raise _unset(exc, file=file, line=line, field=field) from None


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


def parse_manifest(text: str, *, file: str = "<manifest>", env: Mapping[str, str] | None = None) -> Manifest:
    """Parse manifest text. ``file`` is used in error messages only; ``env`` (default: the
    process environment, read when a reference is resolved) fills ``${VAR}`` references."""
    data, lines = load_yaml(text, file=file)
    if data is None:
        raise ManifestError("the manifest is empty", file=file, line=1, hint="start with `version: 1`")
    if not isinstance(data, dict):
        raise ManifestError(
            "the manifest must be a mapping", file=file, line=lines.get((), 1), hint="start with `version: 1`"
        )
    data = _expand(data, (), env, lines, file)
    try:
        manifest = Manifest.model_validate(data)
        manifest._lines, manifest._file = lines, file
        return manifest
    except ValidationError as exc:
        first = exc.errors()[0]
        hint = "see the manifest reference in README.md"
        if isinstance(first.get("ctx", {}).get("error"), _RefError):
            ref: _RefError = first["ctx"]["error"]
            loc, message, hint = ref.loc, str(ref), ref.hint or hint
        else:
            loc, message = _clean_loc(first["loc"]), _pydantic_message(first)
            if first["type"] == "union_tag_invalid":
                loc += ("engine",)  # point at the bad value, not at the deployment
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
        if first["type"] == "extra_forbidden":
            hint = _unknown_field_hint(first["loc"]) or hint
        raise ManifestError(
            message + suffix,
            file=file,
            line=_nearest_line(lines, loc),
            field=_dotted(loc),
            hint=hint,
        ) from None


def load_manifest(path: str | os.PathLike[str] | None = None) -> Manifest:
    """Load and validate a manifest file (default: ./provision.yaml)."""
    file = Path(path if path is not None else DEFAULT_MANIFEST)
    manifest = parse_manifest(read_manifest_text(file), file=str(file))
    manifest._path = file.resolve()
    if problem := models_dir_problem(manifest.models_dir):
        raise manifest.error(
            ("settings", "models_dir"),
            problem,
            hint="point settings.models_dir at a folder of its own, e.g. `models_dir: models`",
        )
    from .sources.local import containment_problem  # needs the manifest's folder, known only now

    for name, spec in manifest.models.items():
        if problem := containment_problem(manifest, spec):
            raise ManifestError(
                problem,
                file=str(file),
                field=f"models.{name}.source",
                hint="point `source:` at the model's own folder, or move models_dir out of it",
            )
    return manifest
