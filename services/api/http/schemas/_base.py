"""The base of every request schema, shared field types, and pydantic-error wording.

Bodies are validated straight from JSON bytes; integers and booleans are converted as WSME
converts JSON ("80" and 80.5 are 80, "yes" is true), everything else is strict. Unknown
attributes are refused, and the error WSME would meet first becomes its 400 wording:
``Invalid input for field/attribute X. Value: 'v'. <reason>``, ``Unknown attribute for
argument <path>: <name>`` or ``Missing argument: "<arg>"``.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import types
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Final, TypeVar, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from libs.common.errors import ValidationFailed

MAX_TIMEOUT: Final = 2_073_600_000


class Input(BaseModel):
    """Request bodies: frozen, no attribute the API does not know, values converted as
    WSME converts JSON (strict otherwise), ``tenant_id`` an alias of ``project_id``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _wsme_conversions(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        conversions = _conversions(cls)
        out = {k: conversions[k](v) if k in conversions else v for k, v in data.items()}
        if "tenant_id" in out and "project_id" in cls.model_fields:
            tenant = out.pop("tenant_id")
            out.setdefault("project_id", tenant)
        return out

    def given(self) -> dict[str, Any]:
        """The attributes the client sent (explicit nulls included), JSON-ready."""
        return self.model_dump(mode="json", include=self.model_fields_set)


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError("Value should be UUID format") from None


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("Value should be IPv4 or IPv6 format") from None


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("Invalid CIDR") from None


_PROJECT_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,36}$")


def _project(value: str) -> str:
    if not _PROJECT_RE.match(value):
        raise ValueError("Invalid project id")
    return value


Uuid = Annotated[str, AfterValidator(_uuid)]
IpAddress = Annotated[str, AfterValidator(_ip)]
Cidr = Annotated[str, AfterValidator(_cidr)]
ProjectId = Annotated[str, AfterValidator(_project)]
Text255 = Annotated[str, StringConstraints(max_length=255)]
Name = Text255 | None
Tags = list[Text255] | None
# Subnet ids are UUIDs, type-checked before any lookup (as Octavia's UuidType).
SubnetRef = Uuid
ContainerRef = Text255
Port = Annotated[int, Field(ge=1, le=65535)]
Timeout = Annotated[int, Field(ge=0, le=MAX_TIMEOUT)]
ConnectionLimit = Annotated[int, Field(ge=-1)]
Weight = Annotated[int, Field(ge=0, le=256)]
Ciphers = Annotated[str, StringConstraints(max_length=2048)]

M = TypeVar("M", bound=BaseModel)

# pydantic error type -> Octavia-like reason (ctx values are formatted in).
_REASONS: Final = {
    "greater_than_equal": "Value should be greater or equal to {ge}",
    "greater_than": "Value should be greater than {gt}",
    "less_than_equal": "Value should be lower or equal to {le}",
    "less_than": "Value should be lower than {lt}",
    "string_too_long": "Value should have a maximum character requirement of {max_length}",
    "too_long": "Value should have at most {max_length} items",
    "enum": "Value should be one of: {expected}",
    "literal_error": "Value should be one of: {expected}",
    "missing": "Mandatory field missing.",
}


@functools.cache
def _envelope_model(model: type[BaseModel], envelope: str) -> type[BaseModel]:
    root: type[BaseModel] = create_model(
        f"{model.__name__}Envelope",
        __config__=ConfigDict(extra="forbid", strict=True, frozen=True),
        **{envelope: (model, ...)},  # type: ignore[call-overload]
    )
    return root


def parse_body(model: type[M], envelope: str, raw: bytes, argument: str | None = None) -> M:
    """Validate ``{"<envelope>": {...}}``; raises ValidationFailed (400) in WSME's wording.

    ``argument`` is the name of Octavia's controller argument (``load_balancer``,
    ``listener_``, ...), which WSME's messages name."""
    argument = argument or envelope
    if not raw.strip():
        raise ValidationFailed(f'Missing argument: "{argument}"')
    root = _envelope_model(model, envelope)
    try:
        parsed = root.model_validate_json(raw)
    except ValidationError as exc:
        raise ValidationFailed(describe(exc, argument, raw, root)) from None
    value: M = getattr(parsed, envelope)
    return value


def parse_document(model: type[M], argument: str, raw: bytes) -> M:
    """Validate a body that is ``model`` itself (``{"members": [...]}``); 400 like parse_body."""
    if not raw.strip():
        raise ValidationFailed(f'Missing argument: "{argument}"')
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise ValidationFailed(describe(exc, argument, raw, model)) from None


INVALID_JSON: Final = "Request is not in valid JSON format"
_CONVERSION: Final = "wsme_conversion"


def describe(
    exc: ValidationError,
    argument: str,
    raw: bytes | None = None,
    model: type[BaseModel] | None = None,
) -> str:
    """WSME's wording of the error it would meet first.

    Unknown attributes of an object come before any error inside it; conversion errors
    (int, bool, list, dict) name the argument and show the whole request body; attribute
    errors name the leaf attribute and its value."""
    errors = exc.errors(include_url=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return INVALID_JSON
    error = _first(errors)
    loc = list(error["loc"])
    if error["type"] == "extra_forbidden":
        parent = loc[:-1]
        names = [
            str(e["loc"][-1])
            for e in errors
            if e["type"] == "extra_forbidden" and list(e["loc"][:-1]) == parent
        ]
        path = ".".join([argument, *(str(p) for p in parent if not isinstance(p, int))])
        plural = "s" if len(names) > 1 else ""
        return f"Unknown attribute{plural} for argument {path}: {', '.join(names)}"
    document = _document(raw)
    if error["type"] == _CONVERSION or error["type"] in _CONTAINER_TYPES:
        reason = _container_reason(error)
        return f"Invalid input for field/attribute {argument}. Value: '{document}'. {reason}"
    depth = _attribute_depth(model, loc)
    loc = loc[:depth]
    names = [str(p) for p in loc if not isinstance(p, int)]
    field = names[-1] if names else argument
    if error["type"] == "missing":
        shown: Any = None
    elif len(loc) < len(error["loc"]):
        shown = _at(document, loc)
    else:
        shown = error.get("input")
    return f"Invalid input for field/attribute {field}. Value: '{shown}'. {_reason(error)}"


_CONTAINER_TYPES: Final = frozenset(
    {"list_type", "dict_type", "model_type", "model_attributes_type"}
)


def _attribute_depth(model: type[BaseModel] | None, loc: list[Any]) -> int:
    """How much of ``loc`` names attributes: list indexes and dict keys after the last
    attribute belong to its value."""
    if model is None:
        while loc and isinstance(loc[-1], int):
            loc = loc[:-1]
        return len(loc)
    depth = 0
    current: Any = model
    for index, part in enumerate(loc):
        if isinstance(part, str) and _is_model(current) and part in current.model_fields:
            depth = index + 1
            current = _inner_model(current.model_fields[part].annotation)
    return depth


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _inner_model(annotation: Any) -> Any:
    """The model a field holds, itself or inside lists, dicts and ``| None``."""
    if _is_model(annotation):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _first(errors: list[Any]) -> Any:
    """Unknown attributes of an object before the errors of its attributes."""
    first = errors[0]
    for error in errors:
        if error["type"] != "extra_forbidden":
            continue
        parent = tuple(error["loc"][:-1])
        if tuple(first["loc"][: len(parent)]) == parent:
            if first["type"] != "extra_forbidden" or len(parent) < len(first["loc"]) - 1:
                first = error
    return first


def _document(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _at(document: Any, loc: list[Any]) -> Any:
    value = document
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _container_reason(error: Any) -> str:
    kind = error["type"]
    if kind == _CONVERSION:
        return str((error.get("ctx") or {}).get("reason", error["msg"]))
    noun = "list" if kind == "list_type" else "dict"
    return f"Value not a valid {noun}: {error.get('input')}"


_QUOTED: Final = re.compile(r"'((?:[^'\\]|\\.)*)'")


def _reason(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _TYPE_REASONS:
        return _TYPE_REASONS[kind]
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("enum", "literal_error"):
        return "Value should be one of: " + ", ".join(_QUOTED.findall(str(ctx.get("expected"))))
    template = _REASONS.get(kind)
    if template is None:
        return str(error["msg"])
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return str(error["msg"])


_TYPE_REASONS: Final = {
    "string_type": "Value should be string",
    "int_type": "Value should be integer",
    "float_type": "Value should be float",
    "bool_type": "Value should be boolean",
}


# -- WSME's JSON-to-type conversions --------------------------------------------------------

_TRUE_STRINGS: Final = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE_STRINGS: Final = frozenset({"false", "f", "no", "n", "off", "0"})


def _conversion_error(reason: str) -> PydanticCustomError:
    return PydanticCustomError(_CONVERSION, "{reason}", {"reason": reason})


def wsme_int(value: Any) -> Any:
    """WSME's ``int(value)``: "80", 80.5 and true are integers; other values fail with
    Python's own message."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _conversion_error(str(exc)) from None


def wsme_bool(value: Any) -> Any:
    """WSME's booleans: JSON booleans, numbers, and the (case-sensitive) strings
    true/t/yes/y/on/1 and false/f/no/n/off/0."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value in _TRUE_STRINGS:
            return True
        if value in _FALSE_STRINGS:
            return False
        raise _conversion_error(f"Value not an unambiguous boolean: {value}")
    if isinstance(value, int | float):
        return bool(value)
    raise _conversion_error(f"Value not an unambiguous boolean: {value}")


def _scalar(annotation: Any) -> Any:
    """The scalar type behind ``Annotated[...]`` and ``X | None``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return None
            annotation = args[0]
        else:
            return annotation


@functools.cache
def _conversions(model: type[BaseModel]) -> dict[str, Callable[[Any], Any]]:
    out: dict[str, Callable[[Any], Any]] = {}
    for name, info in model.model_fields.items():
        scalar = _scalar(info.annotation)
        for meta in info.metadata:
            if isinstance(meta, type):
                scalar = meta
        if scalar is bool:
            out[name] = wsme_bool
        elif scalar is int:
            out[name] = wsme_int
    return out
