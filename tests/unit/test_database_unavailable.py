"""Which errors mean "Postgres cannot be reached right now" (503, wait it out), and which not."""

from __future__ import annotations

import asyncpg
import pytest

from libs.common.database import database_unavailable


def _raised(exc: BaseException, *, cause: BaseException | None = None) -> BaseException:
    """``exc`` as raised ``from cause`` (or, with no cause, bare)."""
    try:
        raise exc from cause
    except BaseException as raised:
        return raised


def _raised_while_handling(
    first: BaseException, then: BaseException, *, suppress: bool = False
) -> BaseException:
    """``then`` raised in an ``except`` of ``first`` (``from None`` with ``suppress``)."""
    try:
        try:
            raise first
        except BaseException:
            if suppress:
                raise then from None
            raise then  # noqa: B904 (the implicit context is the point)
    except BaseException as raised:
        return raised


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.ClientCannotConnectError("cannot reach Postgres: refused"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        # Every host of a multi-host DSN reached, none of them read-write (a failover).
        asyncpg.TargetServerAttributeNotMatched("None of the hosts match ... 'read-write'"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CrashShutdownError("terminating connection because of crash"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("cannot perform operation: connection is closed"),
        # A statement sent while asyncpg consumes the server's termination of the session.
        asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is ..."),
        # A transaction's exit over a dropped connection, caused by the drop.
        _raised_while_handling(
            asyncpg.ConnectionDoesNotExistError("closed in the middle of operation"),
            asyncpg.InterfaceError("cannot call Transaction.__aexit__(): it is rolled back"),
        ),
        _raised(RuntimeError("wrapped"), cause=asyncpg.CannotConnectNowError("shutting down")),
    ],
)
def test_outages_are_unavailable(exc: BaseException) -> None:
    assert database_unavailable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "refused"),  # not from a pool's connect: Docker, an agent
        TimeoutError(),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.InvalidPasswordError("password authentication failed"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        RuntimeError("handler bug"),
        _raised_while_handling(
            asyncpg.CannotConnectNowError("starting up"), RuntimeError("unrelated"), suppress=True
        ),
    ],
)
def test_other_errors_are_not(exc: BaseException) -> None:
    assert not database_unavailable(exc)
