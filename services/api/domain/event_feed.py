"""The live event feed's rules: who sees which events, where a feed resumes, how many feeds a
project may hold open, and how a reader moves through the store without a gap.

Pure. The store assigns ``global_position`` when an append's statement runs, not when its
transaction commits, so a reader may see position 12 committed while 11 is still in an open
transaction (or was rolled back and will never exist). ``FeedCursor`` moves over positions in
order and stops at such a hole until every transaction that was open when it first saw the
hole has ended (read from the snapshot each page is read in); then the hole is permanent and
is passed. So a feed never skips an event and never sends one twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from libs.common.errors import DomainError, Forbidden, ValidationFailed
from services.api.domain.policy import FORBIDDEN_MESSAGE, RequestContext, visible_project

MAX_POSITION: Final = 2**63 - 1
_DIGITS: Final = re.compile(r"[0-9]{1,19}")


class FeedLimitReached(DomainError):
    """The project holds as many open feeds as allowed (429)."""

    code = "too_many_feeds"
    http_status = 429


@dataclass(frozen=True, slots=True)
class FeedScope:
    """What one feed sends: events of ``project_id`` (None: every project) whose type is in
    ``event_types`` (None: every type)."""

    project_id: str | None
    event_types: frozenset[str] | None

    @classmethod
    def for_caller(
        cls, ctx: RequestContext, requested_project: str | None, tenant_types: frozenset[str]
    ) -> FeedScope:
        """An admin sees every event (narrowed to ``requested_project`` if given); a global
        observer the tenant events of every project (or of ``requested_project``); anyone
        else with a reader role the tenant events of its own project. Raises Forbidden for a
        caller without a project or a reader role, or asking for another project."""
        if ctx.admin:
            return cls(requested_project, None)
        if ctx.reads_globally:
            return cls(requested_project, tenant_types)
        own = visible_project(ctx, None)
        if own is None or requested_project not in (None, own):
            raise Forbidden(FORBIDDEN_MESSAGE)
        return cls(own, tenant_types)


def parse_position(value: str, name: str) -> int:
    """A resume position (``after`` or ``Last-Event-ID``): a global position, 0 or more.
    Raises ValidationFailed for anything else."""
    if not _DIGITS.fullmatch(value) or int(value) > MAX_POSITION:
        raise ValidationFailed(
            f"Invalid input for field/attribute {name}. Value: '{value}'. "
            "Value should be an event position: an integer from 0 to 9223372036854775807"
        )
    return int(value)


def resume_position(after: str | None, last_event_id: str | None) -> int | None:
    """Where a feed resumes: ``Last-Event-ID`` wins over ``after``; None (neither given)
    means live, from the newest event on. Both are checked when both are given."""
    from_query = parse_position(after, "after") if after is not None else None
    if last_event_id is not None:
        return parse_position(last_event_id.strip(), "Last-Event-ID")
    return from_query


@dataclass
class FeedSlots:
    """Open feeds per project, at most ``limit`` each."""

    limit: int
    _open: dict[str, int] = field(default_factory=dict)

    def take(self, project: str) -> None:
        """Count one more feed of ``project``; raises FeedLimitReached at the limit."""
        held = self._open.get(project, 0)
        if held >= self.limit:
            raise FeedLimitReached(
                f"Project {project} already has {held} open event feeds (the limit); "
                "close one and retry."
            )
        self._open[project] = held + 1

    def give_back(self, project: str) -> None:
        held = self._open.get(project, 0) - 1
        if held > 0:
            self._open[project] = held
        else:
            self._open.pop(project, None)

    def held(self, project: str) -> int:
        return self._open.get(project, 0)


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One event as the feed reads it: its position, its type and, when the scope wants it,
    its envelope as one line of JSON (None otherwise)."""

    position: int
    event_type: str
    line: str | None


@dataclass(frozen=True, slots=True)
class StorePage:
    """Events after a position in position order, with the snapshot they were read in:
    ``xmax`` (the first transaction id not yet started) and the transactions then open."""

    rows: Sequence[StoredRow]
    xmax: int
    in_progress: frozenset[int]

    def ended(self, transactions: frozenset[int]) -> bool:
        """Whether every one of ``transactions`` had ended when this page was read."""
        return all(t < self.xmax and t not in self.in_progress for t in transactions)


@dataclass(frozen=True, slots=True)
class _Hole:
    """Positions up to ``below`` that were not seen on page ``noted_on`` are missing for good
    once every transaction in ``open_then`` (open when that page was read) has ended."""

    below: int
    open_then: frozenset[int]
    noted_on: int


@dataclass
class FeedCursor:
    """The last position passed; ``advance`` hands out the rows after it, in order, that no
    open transaction can still precede."""

    position: int
    _pages: int = 0
    _settled_below: int = 0
    _hole: _Hole | None = None

    @property
    def at_hole(self) -> bool:
        """Whether the cursor waits at a hole (the next page may already settle it)."""
        return self._hole is not None

    def advance(self, page: StorePage) -> list[StoredRow]:
        """The rows of ``page`` (read after ``position``) that may be sent now; the cursor
        moves past them."""
        self._pages += 1
        hole = self._hole
        if hole is not None and self._pages > hole.noted_on and page.ended(hole.open_then):
            self._settled_below = max(self._settled_below, hole.below)
            self._hole = None
        passed: list[StoredRow] = []
        for row in page.rows:
            if row.position <= self.position:
                continue
            if row.position != self.position + 1 and row.position > self._settled_below:
                if self._hole is None:
                    below = page.rows[-1].position
                    self._hole = _Hole(below, page.in_progress, self._pages)
                break
            passed.append(row)
            self.position = row.position
        return passed
