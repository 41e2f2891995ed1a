"""Health monitor bodies: POST, PUT and the single-create form nested in pools."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator, Field, StringConstraints

from libs.common.domain.model import HealthMonitorType
from services.api.http.schemas._base import Input, Name, ProjectId, Tags, Uuid

_EXPECTED_CODES: Final = re.compile(r"^(\d{3}(\s*,\s*\d{3})*|\d{3}-\d{3})$")
_DOMAIN_NAME: Final = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_URL_PATH: Final = re.compile(r"^/[^\s\x00-\x1f\x7f]*$")


class HttpMethod(StrEnum):
    GET = "GET"
    HEAD = "HEAD"
    POST = "POST"
    PUT = "PUT"
    DELETE = "DELETE"
    TRACE = "TRACE"
    OPTIONS = "OPTIONS"
    CONNECT = "CONNECT"
    PATCH = "PATCH"


def _expected_codes(value: str) -> str:
    if not _EXPECTED_CODES.match(value):
        raise ValueError("Value should be a status code, a comma list or a NNN-NNN range")
    return value


def _url_path(value: str) -> str:
    if not _URL_PATH.match(value):
        raise ValueError("Value should be a URL path starting with '/'")
    return value


def _http_version(value: float) -> float:
    if value not in (1.0, 1.1):
        raise ValueError("Value should be one of: 1.0, 1.1")
    return value


def _domain_name(value: str) -> str:
    if not _DOMAIN_NAME.match(value):
        raise ValueError("Value should be a valid domain name")
    return value


ExpectedCodes = Annotated[str, AfterValidator(_expected_codes)]
UrlPath = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_url_path)]
HttpVersion = Annotated[float, Field(strict=False), AfterValidator(_http_version)]
DomainName = Annotated[str, StringConstraints(max_length=255), AfterValidator(_domain_name)]
Retries = Annotated[int, Field(ge=1, le=10)]
Seconds = Annotated[int, Field(ge=0)]


class HealthMonitorFields(Input):
    name: Name = None
    admin_state_up: bool = True
    type: HealthMonitorType
    delay: Seconds
    timeout: Seconds
    max_retries: Retries
    max_retries_down: Retries | None = None
    http_method: HttpMethod | None = None
    url_path: UrlPath | None = None
    expected_codes: ExpectedCodes | None = None
    http_version: HttpVersion | None = None
    domain_name: DomainName | None = None
    tags: Tags = None


class HealthMonitorSingleCreate(HealthMonitorFields):
    """The monitor of a pool in a single-call create."""


class HealthMonitorCreate(HealthMonitorFields):
    pool_id: Uuid
    project_id: ProjectId | None = None


class HealthMonitorUpdate(Input):
    name: Name = None
    admin_state_up: bool | None = None
    delay: Seconds | None = None
    timeout: Seconds | None = None
    max_retries: Retries | None = None
    max_retries_down: Retries | None = None
    http_method: HttpMethod | None = None
    url_path: UrlPath | None = None
    expected_codes: ExpectedCodes | None = None
    http_version: HttpVersion | None = None
    domain_name: DomainName | None = None
    tags: Tags = None
