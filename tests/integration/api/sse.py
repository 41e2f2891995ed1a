"""A Server-Sent-Events reader for tests of ``GET /v2/fulcrum/events``: every wait bounded."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

FEED = "/v2/fulcrum/events"


@dataclass(frozen=True)
class SseEvent:
    id: str
    event: str
    data: dict[str, Any]


class Feed:
    """One open feed: ``next_event`` skips comments (counted in ``comments``)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []

    async def _line(self, timeout: float) -> str:
        raw = await asyncio.wait_for(self.response.content.readline(), timeout)
        if not raw:
            raise EOFError("the feed ended")
        return raw.decode().rstrip("\n")

    async def next_event(self, timeout: float = 10.0) -> SseEvent:
        fields: dict[str, str] = {}
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            line = await self._line(max(left, 0.01))
            if line.startswith(":"):
                self.comments.append(line)
                continue
            if not line:
                if fields:
                    return SseEvent(fields["id"], fields["event"], json.loads(fields["data"]))
                continue
            name, _, value = line.partition(": ")
            assert name not in fields, f"field {name} twice in one event"
            fields[name] = value

    async def events(self, count: int, timeout: float = 10.0) -> list[SseEvent]:
        return [await self.next_event(timeout) for _ in range(count)]

    async def until_silent(self, seconds: float, at_most: int = 1000) -> list[SseEvent]:
        """Every event until none arrives for ``seconds``."""
        seen: list[SseEvent] = []
        while len(seen) < at_most:
            try:
                seen.append(await self.next_event(seconds))
            except TimeoutError:
                return seen
        raise AssertionError(f"more than {at_most} events")

    async def silent_for(self, seconds: float) -> bool:
        """True when no event arrives within ``seconds`` (comments are fine)."""
        try:
            event = await self.next_event(seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected event {event}")

    def close(self) -> None:
        self.response.close()


class open_feed:  # noqa: N801 - used as ``async with open_feed(...)``
    """``async with open_feed(session, base, headers=...) as feed``: asserts a 200
    ``text/event-stream`` answer and closes the connection on exit."""

    def __init__(
        self, session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
    ) -> None:
        self._session = session
        self._url = url
        self._headers = headers or {}
        self._feed: Feed | None = None

    async def __aenter__(self) -> Feed:
        response = await self._session.get(
            self._url, headers=self._headers, timeout=aiohttp.ClientTimeout(total=None)
        )
        body = "" if response.status == 200 else await response.text()
        assert response.status == 200, (response.status, body)
        assert response.headers["Content-Type"] == "text/event-stream"
        self._feed = Feed(response)
        return self._feed

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._feed is not None
        self._feed.close()
