"""Loading a manifest: bounded YAML, ``${ENV}`` references, and errors that name file:line and field.

Loading is strict: duplicate keys, unknown keys, wrong types, malformed or unset ``${VAR}``
references, unsafe names and dangling references are :class:`~provision.errors.ManifestError`
naming the file, the line and the field. Reading and YAML are bounded (:mod:`.yaml_loader`),
references parsed by :mod:`.references`, the schema is :mod:`.manifest`. A referenced secret
is resolved when it is used (:class:`SecretReference`), so an unused deployment's key is never
demanded. With no path given, the manifest is :func:`default_manifest_path`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, SecretStr, ValidationError

from .errors import ManifestError, ProvisionError
from .manifest import DEPLOYMENT_BY_ENGINE, ENGINES, FieldError, FieldPath, Manifest, dotted, nearest_line
from .manifest_checks import models_dir_problem
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

DEFAULT_MANIFEST = "provision.yaml"
MANIFEST_ENV = "PROVISION_MANIFEST"


def default_manifest_path() -> Path:
    """The manifest meant when none is given: ``$PROVISION_MANIFEST``, else ./provision.yaml."""
    return Path(os.environ.get(MANIFEST_ENV) or DEFAULT_MANIFEST)


def manifest_or_last_applied() -> Path:
    """:func:`default_manifest_path` when it is set or exists, else the manifest applied last on
    this machine (``smoke-test`` and ``chat`` from any folder, and :func:`provision.client.connect`)."""
    if os.environ.get(MANIFEST_ENV) or Path(DEFAULT_MANIFEST).exists():
        return default_manifest_path()
    from .state import State

    last = State().last_applied
    if last is None:
        raise ProvisionError(
            "no manifest given and nothing applied on this machine yet",
            hint="run `provision apply MANIFEST` first, or pass the manifest",
        )
    return Path(last)


# -- ${ENV} references ----------------------------------------------------------------------


def _is_secret(path: FieldPath) -> bool:
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


def _expand(value: Any, path: FieldPath, env: Mapping[str, str] | None, lines: dict[FieldPath, int], file: str) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string (see provision.references);
    secrets become :class:`SecretReference` s, resolved when used."""
    if isinstance(value, dict):
        return {k: _expand(v, (*path, k), env, lines, file) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, (*path, i), env, lines, file) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value
    line, field = nearest_line(lines, path), dotted(path)
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


def _unknown_field_hint(loc: FieldPath) -> str | None:
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
            model = DEPLOYMENT_BY_ENGINE[key]
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


def _clean_loc(loc: FieldPath) -> FieldPath:
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
        if isinstance(first.get("ctx", {}).get("error"), FieldError):
            ref: FieldError = first["ctx"]["error"]
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
            line=nearest_line(lines, loc),
            field=dotted(loc),
            hint=hint,
        ) from None


def load_manifest(path: str | os.PathLike[str] | None = None) -> Manifest:
    """Load and validate a manifest file (default: :func:`default_manifest_path`)."""
    file = Path(path) if path is not None else default_manifest_path()
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
