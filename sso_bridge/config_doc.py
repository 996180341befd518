"""Render the configuration reference from the settings model itself.

docs/configuration.md holds this output between two markers; a test compares
them, so the documentation cannot drift from the code. Regenerate with
``python -m sso_bridge.config_doc --write``.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .settings import (
    OAuth2Connection,
    OidcConnection,
    SamlConnection,
    Settings,
    TokenConnection,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN GENERATED REFERENCE -->"
END = "<!-- END GENERATED REFERENCE -->"

# Tables that repeat (a list or a dict of them), documented under a placeholder key.
CONNECTION_TYPES: list[type[BaseModel]] = [
    TokenConnection,
    SamlConnection,
    OidcConnection,
    OAuth2Connection,
]


def render() -> str:
    lines = [BEGIN, ""]
    _table(lines, Settings, "")
    for model in CONNECTION_TYPES:
        kind = model.model_fields["type"].annotation
        name = get_args(kind)[0]
        lines += [
            "",
            f'### `connections.<id>` with `type = "{name}"`',
            "",
            (model.__doc__ or "").strip(),
            "",
        ]
        _rows(lines, model, "connections.<id>.")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def _table(lines: list[str], model: type[BaseModel], prefix: str) -> None:
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        key = prefix + name
        inner = _model_of(info.annotation)
        if inner is not None and name != "connections":
            nested.append((key, inner))
            continue
        lines.append(_row(key, info))
    for key, inner in nested:
        lines += ["", f"### `{key}`", ""]
        if inner.__doc__ and not inner.__doc__.startswith("A configuration table"):
            lines += [inner.__doc__.strip(), ""]
        _rows(lines, inner, key + ("[]." if _is_list(model.model_fields, key) else "."))


def _rows(lines: list[str], model: type[BaseModel], prefix: str) -> None:
    lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        inner = _model_of(info.annotation)
        if inner is not None:
            nested.append((prefix + name, inner))
        lines.append(_row(prefix + name, info))
    for key, inner in nested:
        lines += ["", f"#### `{key}[]`", ""]
        if inner.__doc__:
            lines += [inner.__doc__.strip(), ""]
        _rows(lines, inner, key + "[].")


def _is_list(fields: dict[str, FieldInfo], key: str) -> bool:
    info = fields.get(key.rsplit(".", 1)[-1])
    return info is not None and get_origin(info.annotation) is list


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings table inside a field's type (directly, or in a list), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
    return None


def _row(key: str, info: FieldInfo) -> str:
    meaning = (info.description or "").replace("\n", " ").replace("|", "\\|")
    return f"| `{key}` | {_type(info.annotation)} | {_default(info)} | {meaning} |"


def _type(annotation: Any) -> str:
    if get_origin(annotation) is dict:
        value_type = get_args(annotation)[1]
        if value_type is str:
            return "table of strings"
        if get_origin(value_type) is list:
            return "table of lists of strings"
        return "table per id (below)"
    text = typing._type_repr(annotation) if hasattr(typing, "_type_repr") else str(annotation)
    for noise in (
        "typing.",
        "pathlib.",
        "pydantic.types.",
        "sso_bridge.settings.",
        "Annotated[",
        "pathlib._local.",
    ):
        text = text.replace(noise, "")
    if annotation is SecretStr or "SecretStr" in text:
        text = text.replace("SecretStr", "secret string")
    return text.replace("|", "\\|")


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    value = info.default
    if value is PydanticUndefined or value is None:
        return "unset"
    if isinstance(value, BaseModel):
        return "(table)"
    if isinstance(value, Path):
        return f"`{str(value)!r}`"
    return f"`{value!r}`".replace("|", "\\|")


def current_section(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end] + "\n"


def main() -> None:
    generated = render()
    if "--write" in sys.argv:
        text = DOC.read_text()
        start, end = text.index(BEGIN), text.index(END) + len(END)
        DOC.write_text(text[:start] + generated.rstrip("\n") + text[end:])
    else:
        sys.stdout.write(generated)


if __name__ == "__main__":
    main()
