"""L7 policy and L7 rule bodies: POST, PUT and their single-create forms."""

from __future__ import annotations

from typing import Annotated, Final
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, StringConstraints

from libs.common.domain.model import L7Action, L7CompareType, L7RuleType
from services.api.http.schemas._base import Input, Name, ProjectId, Tags, Text255, Uuid
from services.api.http.schemas.pool import PoolSingleCreate

REDIRECT_CODES: Final = (301, 302, 303, 307, 308)
MAX_POSITION: Final = 2_147_483_647


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise ValueError("Value must be a valid URL string")
    return value


def _redirect_code(value: int) -> int:
    if value not in REDIRECT_CODES:
        raise ValueError("Value should be one of: " + ", ".join(map(str, REDIRECT_CODES)))
    return value


Url = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_url)]
RedirectCode = Annotated[int, AfterValidator(_redirect_code)]
Position = Annotated[int, Field(ge=1, le=MAX_POSITION)]


class L7RuleFields(Input):
    type: L7RuleType
    compare_type: L7CompareType
    key: Text255 | None = None
    value: Text255
    invert: bool = False
    admin_state_up: bool = True
    tags: Tags = None


class L7RuleSingleCreate(L7RuleFields):
    """A rule inside a policy of a single-call create."""


class L7RuleCreate(L7RuleFields):
    project_id: ProjectId | None = None


class L7RuleUpdate(Input):
    type: L7RuleType | None = None
    compare_type: L7CompareType | None = None
    key: Text255 | None = None
    value: Text255 | None = None
    invert: bool | None = None
    admin_state_up: bool | None = None
    tags: Tags = None


class L7PolicyFields(Input):
    name: Name = None
    description: Name = None
    admin_state_up: bool = True
    action: L7Action
    redirect_url: Url | None = None
    redirect_prefix: Url | None = None
    redirect_http_code: RedirectCode | None = None
    position: Position | None = None
    tags: Tags = None


class L7PolicySingleCreate(L7PolicyFields):
    redirect_pool: PoolSingleCreate | None = None
    rules: list[L7RuleSingleCreate] | None = None


class L7PolicyCreate(L7PolicyFields):
    listener_id: Uuid
    redirect_pool_id: Uuid | None = None
    project_id: ProjectId | None = None


class L7PolicyUpdate(Input):
    name: Name = None
    description: Name = None
    admin_state_up: bool | None = None
    action: L7Action | None = None
    redirect_pool_id: Uuid | None = None
    redirect_url: Url | None = None
    redirect_prefix: Url | None = None
    redirect_http_code: RedirectCode | None = None
    position: Position | None = None
    tags: Tags = None
