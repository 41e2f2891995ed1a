"""What "Postgres cannot be reached right now" looks like in asyncpg's errors: the one place.

Refused, shutting down, starting up, crashed, or a connection dropped mid-request. Pools made by
``database.create_pool`` connect through ``connect_or_unavailable``, so a refused connect is an
asyncpg error too, never a bare OSError that could as well have come from Docker or an agent.
"""

from __future__ import annotations

from typing import Any, Final

import asyncpg

__all__ = ["DATABASE_ERRORS", "connect_or_unavailable", "database_unavailable"]

# What a database call raises when the server, the session or the statement fails: loops that
# must outlive an outage catch these (then ``database_unavailable`` tells an outage apart).
DATABASE_ERRORS: Final = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

# Postgres ended or refused the session: shut down (57P01), crashed (57P02), starting up or
# shutting down (57P03), or any connection exception (class 08: closed in the middle of an
# operation, or not reached at all by ``connect_or_unavailable``). With a multi-host DSN
# (``target_session_attrs=read-write``), every host reached but none a primary (a failover
# under way, or Patroni holding its members read-only without its consensus store) is one too.
_SESSION_LOST: Final = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TargetServerAttributeNotMatched,
)
# asyncpg's words for a statement on, or a transaction end over, a connection seen closed.
_CLOSED_CONNECTION: Final = "connection is closed"
# asyncpg's words for a statement sent while it still consumes the server's unsolicited
# termination (a race with a shutdown; the connection is closed right after).
_PROTOCOL_OUT_OF_STEP: Final = "cannot switch to state"
_MAX_CAUSES: Final = 8


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception that caused it, means Postgres cannot be reached now.

    True for a failed connect of a ``create_pool`` pool, a server shutting down, starting up or
    crashed, and a connection lost mid-request (also when that surfaces as the transaction's
    exit failing, or as asyncpg's protocol out of step with the server that ended the session).
    False for everything else: SQL errors, failed authentication, and OSErrors that did not come
    from connecting to Postgres.
    """
    current: BaseException | None = exc
    for _ in range(_MAX_CAUSES):
        if current is None:
            return False
        if isinstance(current, _SESSION_LOST):
            return True
        if isinstance(current, asyncpg.InterfaceError) and _CLOSED_CONNECTION in str(current):
            return True
        if isinstance(current, asyncpg.InternalClientError) and str(current).startswith(
            _PROTOCOL_OUT_OF_STEP
        ):
            return True
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = None if current.__suppress_context__ else current.__context__
    return False


async def connect_or_unavailable(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """``asyncpg.connect`` (a pool's ``connect`` hook). A server that cannot be reached raises
    asyncpg's ``ClientCannotConnectError`` (SQLSTATE 08001) from the OSError or the refusal:
    every ``except asyncpg.PostgresError`` still catches it, and ``database_unavailable``
    knows it."""
    try:
        return await asyncpg.connect(*args, **kwargs)
    except (
        OSError,  # covers TimeoutError
        asyncpg.TooManyConnectionsError,
        asyncpg.TargetServerAttributeNotMatched,  # no host of a multi-host DSN is a primary
    ) as exc:
        raise asyncpg.ClientCannotConnectError(f"cannot reach Postgres: {exc}") from exc
