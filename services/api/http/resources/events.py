"""``GET /v2/fulcrum/events``: the live event feed, as Server-Sent Events.

Each event is ``id: <global_position>``, ``event: <event_type>`` and ``data: <envelope>``
(the body docs/events.md documents, on one line); a ``: keepalive`` comment follows any
silence of ``feed.keepalive_seconds``. The feed resumes after ``Last-Event-ID`` (or the
``after`` query argument; the header wins) and otherwise starts with the events committed
from now on. It reads the event store in position order (``FeedCursor``), catch-up and live
alike, so it has no switch-over that could lose or repeat an event. What a caller sees is
``FeedScope``'s rule (libs/common/events/visibility.py); a project holds at most
``feed.max_per_project`` open feeds (429 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from libs.common.database import database_unavailable
from libs.common.errors import ValidationFailed
from libs.common.events.visibility import FEED_PATH, tenant_event_types
from libs.common.service import DB
from services.api.adapters.event_feed import PostgresFeedReader
from services.api.domain.event_feed import (
    FeedCursor,
    FeedScope,
    FeedSlots,
    StoredRow,
    resume_position,
)
from services.api.http.context import request_context
from services.api.http.deps import SETTINGS
from services.api.http.errors import REQUEST_ID, REQUEST_ID_HEADER
from services.api.http.routing import EVENT_STREAM, ApiRouter
from services.api.settings import EventFeedSettings

log = logging.getLogger(__name__)

KEEPALIVE: Final = b": keepalive\n\n"
_ARGUMENTS: Final = frozenset({"after", "project_id"})


@dataclass
class OpenFeeds:
    """The app's open feeds: their count per project, and the signal that ends them all
    when the app shuts down."""

    slots: FeedSlots
    closing: asyncio.Event = field(default_factory=asyncio.Event)


OPEN_FEEDS = web.AppKey("open_event_feeds", OpenFeeds)


def frame(row: StoredRow) -> bytes:
    """One SSE event for a row the scope wants."""
    return f"id: {row.position}\nevent: {row.event_type}\ndata: {row.line}\n\n".encode()


def _requested_project(request: web.Request) -> str | None:
    unknown = sorted(set(request.query) - _ARGUMENTS)
    if unknown:
        raise ValidationFailed(
            f"Invalid query argument(s): {', '.join(unknown)}. Known: after, project_id."
        )
    for name in _ARGUMENTS:
        if len(request.query.getall(name, ())) > 1:
            raise ValidationFailed(f"Query argument {name} may be given once.")
    project = request.query.get("project_id")
    if project is not None and not project.strip():
        raise ValidationFailed("Invalid input for field/attribute project_id. Value: ''.")
    return project


async def stream_events(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    scope = FeedScope.for_caller(ctx, _requested_project(request), tenant_event_types())
    start = resume_position(request.query.get("after"), request.headers.get("Last-Event-ID"))
    feeds = request.app[OPEN_FEEDS]
    holder = ctx.project_id or ""
    feeds.slots.take(holder)
    try:
        reader = PostgresFeedReader(request.app[DB], scope)
        cursor = FeedCursor(start if start is not None else await reader.newest())
        response = web.StreamResponse(
            headers={
                "Content-Type": EVENT_STREAM,
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                REQUEST_ID_HEADER: request[REQUEST_ID],
            }
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await _follow(request, response, reader, cursor, request.app[SETTINGS].feed, feeds)
        return response
    finally:
        feeds.slots.give_back(holder)


async def _follow(
    request: web.Request,
    response: web.StreamResponse,
    reader: PostgresFeedReader,
    cursor: FeedCursor,
    settings: EventFeedSettings,
    feeds: OpenFeeds,
) -> None:
    """Send events until the client goes away or the app shuts down; a store that cannot
    be read ends the feed (the client resumes with ``Last-Event-ID``)."""
    last_write = time.monotonic()
    while not feeds.closing.is_set() and not _gone(request):
        try:
            page = await reader.page(cursor.position, settings.page_size)
        except Exception as exc:
            if not database_unavailable(exc):
                log.exception("event feed: reading the store failed; ending the feed")
            else:
                log.warning("event feed: the database is unavailable; ending the feed: %r", exc)
            return
        for row in cursor.advance(page):
            if row.line is not None:
                await response.write(frame(row))
                last_write = time.monotonic()
        if time.monotonic() - last_write >= settings.keepalive_seconds:
            await response.write(KEEPALIVE)
            last_write = time.monotonic()
        if len(page.rows) < settings.page_size or cursor.at_hole:
            # At a hole the next read may already pass it: look again soon.
            poll = settings.poll_interval / 5 if cursor.at_hole else settings.poll_interval
            wait = min(poll, settings.keepalive_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feeds.closing.wait(), wait)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def end_feeds(app: web.Application) -> None:
    """``on_shutdown``: every open feed ends, so the server can close its connections."""
    app[OPEN_FEEDS].closing.set()


def register(api: ApiRouter) -> None:
    api.exact(
        "GET",
        FEED_PATH,
        stream_events,
        summary="Follow the event stream (Server-Sent Events)",
        tag="events",
    )
