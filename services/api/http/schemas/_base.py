"""The base of every request schema, shared field types, and pydantic-error wording.

Bodies are validated straight from JSON bytes in strict mode (no "80" for 80, no "true" for
true), unknown attributes are refused, and the first error becomes Octavia's 400 wording:
``Invalid input for field/attribute X. Value: 'v'. <reason>``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import uuid
from typing import Annotated, Any, Final, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
)

from libs.common.errors import ValidationFailed

MAX_TIMEOUT: Final = 2_073_600_000


class Input(BaseModel):
    """Request bodies: frozen, strict, and no attribute the API does not know."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def given(self) -> dict[str, Any]:
        """The attributes the client sent (explicit nulls included), JSON-ready."""
        return self.model_dump(mode="json", include=self.model_fields_set)


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError("Invalid UUID") from None


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("Invalid IP address") from None


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
# Subnet ids are operator configuration: any id up to 255 characters, resolved later.
SubnetRef = Text255
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
_TYPE_NAMES: Final = {
    "int_type": "int",
    "int_from_float": "int",
    "bool_type": "bool",
    "string_type": "str",
    "float_type": "float",
    "list_type": "list",
    "dict_type": "dict",
    "model_type": "dict",
    "model_attributes_type": "dict",
}


@functools.cache
def _envelope_model(model: type[BaseModel], envelope: str) -> type[BaseModel]:
    root: type[BaseModel] = create_model(
        f"{model.__name__}Envelope",
        __config__=ConfigDict(extra="forbid", strict=True, frozen=True),
        **{envelope: (model, ...)},  # type: ignore[call-overload]
    )
    return root


def parse_body(model: type[M], envelope: str, raw: bytes) -> M:
    """Validate ``{"<envelope>": {...}}``; raises ValidationFailed (400) naming field and rule."""
    if not raw.strip():
        raise ValidationFailed(
            f"Invalid input for field/attribute {envelope}. Value: 'None'. Mandatory field missing."
        )
    root = _envelope_model(model, envelope)
    try:
        parsed = root.model_validate_json(raw)
    except ValidationError as exc:
        raise ValidationFailed(describe(exc, envelope)) from None
    value: M = getattr(parsed, envelope)
    return value


def parse_document(model: type[M], argument: str, raw: bytes) -> M:
    """Validate a body that is ``model`` itself (``{"members": [...]}``); 400 like parse_body."""
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise ValidationFailed(describe(exc, argument)) from None


def describe(exc: ValidationError, envelope: str) -> str:
    """Octavia's wording of the first validation error."""
    error = exc.errors(include_url=False)[0]
    kind = error["type"]
    if kind == "json_invalid":
        return "Invalid JSON body: the request body could not be decoded."
    loc = [str(p) for p in error["loc"]]
    if loc and loc[0] == envelope and len(loc) > 1:
        loc = loc[1:]
    field = ".".join(loc) or envelope
    if kind == "extra_forbidden":
        return f"Unknown attribute for argument {envelope}: {loc[-1] if loc else field}"
    value = error.get("input")
    shown = "None" if kind == "missing" else str(value)
    return f"Invalid input for field/attribute {field}. Value: '{shown}'. {_reason(error)}"


def _reason(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _TYPE_NAMES:
        return f"Wrong type. Expected '{_TYPE_NAMES[kind]}', got '{type(error['input']).__name__}'"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    template = _REASONS.get(kind)
    if template is None:
        return str(error["msg"])
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return str(error["msg"])
