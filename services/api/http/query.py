"""Query-string parsing for lists and shows: Octavia's filters, sorting, paging, fields.

Every malformed or unknown argument is a 400, as Octavia answers it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from multidict import MultiMapping

from libs.common.errors import ValidationFailed
from services.api.domain.kinds import Kind
from services.api.domain.queries import DEFAULT_SORT, ListQuery
from services.api.http.errors import FrameworkError

INVALID_ARGUMENTS: Final = "One or more arguments are either duplicate or invalid"
_PAGING: Final = frozenset({"limit", "marker", "page_reverse"})
_SORTING: Final = frozenset({"sort", "sort_key", "sort_dir"})
_TAGS: Final = ("tags", "tags-any", "not-tags", "not-tags-any")
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


def parse_bool(value: str, name: str) -> bool:
    """``True``/``true``/``1`` and friends; anything else is a 400."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValidationFailed(f"Invalid input for {name}: '{value}' is not a boolean.")


def _split(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())


def fields_of(query: MultiMapping[str]) -> tuple[str, ...]:
    """``fields=a&fields=b`` or ``fields=a,b``."""
    return _split(query.getall("fields", ()))


def _normalize(kind: Kind, attr: str, value: str) -> str:
    """The filter value as the view stores it as text (``body->>attr``)."""
    match kind.attributes[attr]:
        case "bool":
            try:
                return "true" if parse_bool(value, attr) else "false"
            except ValidationFailed:
                raise ValidationFailed(INVALID_ARGUMENTS) from None
        case "int":
            try:
                return str(int(value))
            except ValueError:
                raise ValidationFailed(INVALID_ARGUMENTS) from None
        case "float":
            try:
                return str(float(value))
            except ValueError:
                raise ValidationFailed(INVALID_ARGUMENTS) from None
    return value


def _sort_keys(kind: Kind, query: MultiMapping[str]) -> tuple[tuple[str, bool], ...]:
    pairs: list[tuple[str, str]] = []
    if "sort" in query:
        for item in _split(query.getall("sort")):
            key, _, direction = item.partition(":")
            pairs.append((key.strip(), direction.strip() or "asc"))
    else:
        keys = _split(query.getall("sort_key", ()))
        dirs = _split(query.getall("sort_dir", ()))
        pairs = [(k, dirs[i] if i < len(dirs) else "asc") for i, k in enumerate(keys)]
        for direction in dirs[len(keys) :]:
            _direction(direction)
    out: list[tuple[str, bool]] = []
    for key, direction in pairs:
        if key not in kind.attributes:
            raise ValidationFailed(f"Supplied sort key '{key}' is not valid.")
        out.append((key, _direction(direction)))
    seen = {k for k, _ in out}
    out += [(k, d) for k, d in DEFAULT_SORT if k not in seen]
    return tuple(out)


def _direction(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("asc", "desc"):
        raise FrameworkError(
            400, "Bad Request", f"Supplied sort direction '{lowered}' is not valid."
        )
    return lowered == "desc"


def _limit(raw: str | None, max_limit: int) -> int | None:
    """The page size: ``max_limit`` when absent, at most ``max_limit`` when given, None
    (unlimited, as Octavia's pagination) for ``infinite`` or an integer below 1; anything
    else is pecan's 400."""
    if raw is None:
        return max_limit
    if raw.lower() == "infinite":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise FrameworkError(
            400, "Bad Request", f"Supplied pagination limit '{raw}' is not valid."
        ) from None
    return None if value < 1 else min(value, max_limit)


def parse_list_query(kind: Kind, query: MultiMapping[str], max_limit: int) -> ListQuery:
    """The list request of ``kind`` (raises ValidationFailed, 400, on any bad argument)."""
    filters: dict[str, str] = {}
    link_params: list[tuple[str, str]] = []
    for name in query:
        if name in _PAGING or name in _TAGS or name == "fields":
            continue
        if name in _SORTING:
            link_params.append((name, query[name]))
            continue
        values = query.getall(name)
        if name not in kind.attributes or len(values) > 1 or name in filters:
            raise ValidationFailed(INVALID_ARGUMENTS)
        filters[name] = _normalize(kind, name, values[0])
        link_params.append((name, values[0]))
    for name in _TAGS:
        link_params += [(name, v) for v in query.getall(name, ())]
    link_params += [("fields", v) for v in query.getall("fields", ())]
    marker = query.get("marker")
    reverse = query.get("page_reverse")
    project_id = filters.pop("project_id", None)
    return ListQuery(
        kind=kind,
        filters=tuple(filters.items()),
        tags_all=_split(query.getall("tags", ())),
        tags_any=_split(query.getall("tags-any", ())),
        not_tags_all=_split(query.getall("not-tags", ())),
        not_tags_any=_split(query.getall("not-tags-any", ())),
        sort=_sort_keys(kind, query),
        limit=_limit(query.get("limit"), max_limit),
        marker=marker or None,
        page_reverse=parse_bool(reverse, "page_reverse") if reverse is not None else False,
        fields=fields_of(query),
        project_id=project_id,
        link_params=tuple(link_params),
    )
