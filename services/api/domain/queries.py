"""A list request as data: filters, tag filters, sort keys, page and field selection.

Built by the HTTP layer from the query string, turned into SQL by the view adapter. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from services.api.domain.kinds import Kind

DEFAULT_SORT: tuple[tuple[str, bool], ...] = (("created_at", False), ("id", False))


@dataclass(frozen=True)
class ListQuery:
    """``sort`` holds (attribute, descending) pairs and always ends with created_at and id,
    so the order is total and a marker (the id of the last item seen) is unambiguous."""

    kind: Kind
    filters: tuple[tuple[str, str], ...] = ()
    tags_all: tuple[str, ...] = ()
    tags_any: tuple[str, ...] = ()
    not_tags_all: tuple[str, ...] = ()
    not_tags_any: tuple[str, ...] = ()
    sort: tuple[tuple[str, bool], ...] = DEFAULT_SORT
    limit: int | None = 1000
    """Rows of the page at most; None: every row (Octavia's ``limit=infinite`` or below 1)."""
    marker: str | None = None
    page_reverse: bool = False
    fields: tuple[str, ...] = ()
    # Restrictions the server adds: the visible project, and the parent of a nested list.
    project_id: str | None = None
    parent_id: str | None = None
    # Extra keyword arguments (``key=value``) echoed into pagination links.
    link_params: tuple[tuple[str, str], ...] = field(default=())

    def scoped(self, project_id: str | None, parent_id: str | None = None) -> ListQuery:
        return replace(self, project_id=project_id, parent_id=parent_id)


@dataclass(frozen=True)
class Page:
    """Bodies as stored JSON text, in order, and whether more may follow."""

    bodies: list[str]
    ids: list[str]
