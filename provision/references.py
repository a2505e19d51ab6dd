"""``${VAR}`` references in manifest strings: parsed strictly, rendered from an environment.

The forms are ``${VAR}``, ``${VAR:-default}`` (the default when VAR is unset or empty, as in
the shell) and ``$$`` for a literal ``$``; any other ``$`` is kept as written. Anything that
starts a reference but is not one of these forms (``${}``, an unclosed ``a${``, ``${1X}``,
``${A-b}``, a nested ``${A:-${B}}``) is a :class:`ReferenceSyntaxError`, never text that
silently passes through. Pure functions: :mod:`provision.manifest` adds file, line and field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ReferenceSyntaxError(ValueError):
    """A ``${...}`` that is not a reference provision understands."""


@dataclass(frozen=True)
class Reference:
    name: str
    default: str | None = None  # ``${VAR:-default}``


class UnsetVariable(Exception):
    """A reference without a default to a variable that is unset (``empty``: set to "")."""

    def __init__(self, name: str, *, empty: bool) -> None:
        super().__init__(name)
        self.name = name
        self.empty = empty


Template = tuple[str | Reference, ...]


def parse_template(value: str) -> Template:
    """Split ``value`` into literal text and references; raise on a malformed ``${...}``."""
    parts: list[str | Reference] = []
    text: list[str] = []
    i = 0
    while i < len(value):
        dollar = value.find("$", i)
        if dollar < 0:
            text.append(value[i:])
            break
        text.append(value[i:dollar])
        following = value[dollar + 1 : dollar + 2]
        if following == "$":
            text.append("$")
            i = dollar + 2
        elif following == "{":
            close = value.find("}", dollar + 2)
            if close < 0:
                raise ReferenceSyntaxError(
                    f"unclosed ${{ at character {dollar + 1}: write ${{VAR}}, or $$ for a literal $"
                )
            if "".join(text):
                parts.append("".join(text))
            text = []
            parts.append(_reference(value[dollar + 2 : close]))
            i = close + 1
        else:  # a lone $ (e.g. "cost $5") is kept
            text.append("$")
            i = dollar + 1
    if text and "".join(text):
        parts.append("".join(text))
    return tuple(parts)


def _reference(body: str) -> Reference:
    name, sep, default = body.partition(":-")
    if not body:
        raise ReferenceSyntaxError("empty ${}: write ${VAR} or ${VAR:-default}")
    if "${" in default or "{" in name:
        raise ReferenceSyntaxError("a nested ${...} is not supported: give a literal default, as in ${VAR:-value}")
    if not _NAME.fullmatch(name):
        raise ReferenceSyntaxError(
            f"${{{body}}} is not a reference: write ${{VAR}} or ${{VAR:-default}}, "
            "VAR being letters, digits and '_', not starting with a digit"
        )
    return Reference(name, default if sep else None)


def has_references(template: Template) -> bool:
    return any(isinstance(part, Reference) for part in template)


def variables(template: Template) -> tuple[str, ...]:
    return tuple(part.name for part in template if isinstance(part, Reference))


def render(template: Template, env: Mapping[str, str]) -> str:
    """The template with every reference replaced; raises :class:`UnsetVariable`."""
    out = []
    for part in template:
        if isinstance(part, str):
            out.append(part)
            continue
        value = env.get(part.name)
        if value:
            out.append(value)
        elif part.default is not None:
            out.append(part.default)
        else:
            raise UnsetVariable(part.name, empty=value == "")
    return "".join(out)
