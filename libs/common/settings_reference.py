"""Every setting of a settings class, as its environment variable, type, default and
description: ``docs/configuration.md`` and ``fulcrum <service> --help`` are made from these.

Nested models are walked (``FULCRUM_API_POSTGRES__DSN``); lists and maps of models are one
variable holding JSON. A field read under a deployment-wide name (``validation_alias``) is
listed under that name, with the service's own name as its fallback.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

_SCALARS: Final = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
}


@dataclass(frozen=True)
class SettingDoc:
    """One environment variable: its name(s), type, default and meaning."""

    env: str
    type: str
    default: str
    description: str


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        inner = " or ".join(_type_name(a) for a in args)
        return f"{inner} (optional)" if len(args) < len(typing.get_args(annotation)) else inner
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.__name__
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


class _Described:
    """A default computed where the service runs, shown by its factory's docstring."""

    def __init__(self, text: str) -> None:
        self.text = text


def _default(info: FieldInfo, enclosing: BaseModel | None, name: str) -> Any:
    if enclosing is not None:
        return getattr(enclosing, name)
    factory = info.default_factory
    if factory is not None and factory.__doc__:
        return _Described(" ".join(factory.__doc__.split()))
    if factory is not None:
        return factory()  # type: ignore[call-arg]
    return info.default


def _shown(value: Any) -> str:
    if value is PydanticUndefined:
        return "(required)"
    if isinstance(value, _Described):
        return value.text
    if isinstance(value, BaseModel):
        return json.dumps(value.model_dump(mode="json"))
    if isinstance(value, (list, tuple)):
        return json.dumps([_plain(v) for v in value])
    return json.dumps(_plain(value))


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def setting_docs(settings: type[BaseSettings]) -> list[SettingDoc]:
    """Every variable ``settings`` reads, in field order (nested models expanded)."""
    config = settings.model_config
    prefix = str(config.get("env_prefix", ""))
    delimiter = str(config.get("env_nested_delimiter") or "__")
    return _walk(settings, prefix.upper(), delimiter, None)


def _walk(
    model: type[BaseModel], prefix: str, delimiter: str, enclosing: BaseModel | None
) -> list[SettingDoc]:
    """``enclosing``: the nested model's default value, whose fields are the defaults."""
    top = prefix.count(delimiter) == 0
    docs: list[SettingDoc] = []
    for name, info in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        nested = _nested_model(info.annotation)
        if nested is not None:
            value = _default(info, enclosing, name)
            inner = value if isinstance(value, BaseModel) else None
            docs += _walk(nested, f"{env}{delimiter}", delimiter, inner)
            continue
        if top and isinstance(info.validation_alias, str):
            env = f"{info.validation_alias} (or {env})"
        docs.append(
            SettingDoc(
                env=env,
                type=_type_name(info.annotation),
                default=_shown(_default(info, enclosing, name)),
                description=" ".join((info.description or "").split()),
            )
        )
    return docs


def render_markdown(docs: list[SettingDoc]) -> list[str]:
    """The settings as a Markdown table."""
    lines = ["| variable | type | default | description |", "|---|---|---|---|"]
    for doc in docs:
        # Outside code spans "<" would open an HTML tag; "|" would end the cell anywhere.
        text = doc.description.replace("<", "\\<")
        cells = (f"`{doc.env}`", doc.type, f"`{doc.default}`", text)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def render_text(docs: list[SettingDoc]) -> str:
    """The settings as plain text, for ``--help``."""
    out = []
    for doc in docs:
        out.append(f"  {doc.env}  ({doc.type}; default {doc.default})")
        out.append(f"      {doc.description}")
    return "\n".join(out)
