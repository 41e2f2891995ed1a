"""What every heartbeat reads from HAProxy, at a cost per beat that stays small.

- ``StatsSession``: one interactive session (`prompt` mode) kept open on HAProxy's stats
  socket, so a beat is one command and its answer, not a connection HAProxy accepts, serves
  and tears down. A session HAProxy closed (its `stats timeout`, a restart) is noticed by the
  next command and replaced at once; a HAProxy that is gone fails that same command's new
  connection, as a one-off exchange would. A session opened before a reload still reaches the
  retired worker (and keeps it alive): the data plane closes it after every load, and
  ``HaproxyDataPlane.show_stat`` asks again on a new one when an answer shows a stopped
  frontend (only a retiring process has those: admin-down listeners are not rendered).
- ``ProcessCpu``: the CPU time of the serving HAProxy process from ``/proc``, its files
  opened once and again only when its children change (a reading is a few ``pread`` calls).
"""

from __future__ import annotations

import asyncio
import os
import socket
from contextlib import suppress
from pathlib import Path
from typing import Final

_PROMPT: Final = b"\n> "
_READ_SIZE: Final = 65536


class StatsSession:
    """A kept-open `prompt` session on one HAProxy CLI socket, used by one caller at a time
    (a concurrent caller gets a one-off connection of its own). Its socket stays registered
    with the event loop for the session's life: an exchange is a send and the answer's reads,
    not a reader added and removed (two ``epoll_ctl``) and a failed ``recv`` every time."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the one reading ``_sock``
        self._received = bytearray()
        self._answer: asyncio.Future[str] | None = None  # the exchange under way
        self._busy = False
        self._ended = False  # close() or HAProxy's EOF came while a command was in flight
        self.reused = False
        """Whether the last answer came through a session opened before that command."""

    async def ask(self, command: str) -> str:
        """HAProxy's answer to ``command`` (without the prompt). Raises OSError when no new
        session can be opened (HAProxy is not answering on the socket)."""
        if self._busy:
            return await self._once(command)
        self._busy, self._ended = True, False
        try:
            if self._sock is not None and self._loop is asyncio.get_running_loop():
                try:
                    answer = await self._exchange(command)
                    self.reused = True
                    return answer
                except OSError:
                    pass  # closed by HAProxy: its timeout, a restart, a stop
            self._drop()
            await self._open()
            self.reused = False
            return await self._exchange(command)
        except BaseException:
            self._drop()
            raise
        finally:
            self._busy = False
            if self._ended:
                self._drop()

    def close(self) -> None:
        """End the session (the next ``ask`` opens a new one); idempotent. While a command is
        in flight the session ends once that answer is in (the caller still gets it)."""
        if self._busy:
            self._ended = True
        else:
            self._drop()

    def _drop(self) -> None:
        """Unregister and close the socket (in that order: a closed fd's number may be reused
        at once, and the loop would watch someone else's file)."""
        sock, loop, self._sock, self._loop = self._sock, self._loop, None, None
        self._received.clear()
        if sock is None:
            return
        if loop is not None:
            loop.remove_reader(sock.fileno())
        sock.close()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, str(self._path))
        except BaseException:
            sock.close()
            raise
        self._sock, self._loop = sock, loop
        loop.add_reader(sock.fileno(), self._readable)
        await self._exchange("prompt")

    async def _exchange(self, command: str) -> str:
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            raise ConnectionResetError(f"the session ended before {command!r} was sent")
        answer: asyncio.Future[str] = loop.create_future()
        self._answer = answer
        try:
            await loop.sock_sendall(sock, command.encode() + b"\n")
            return await answer
        finally:
            self._answer = None

    def _readable(self) -> None:
        """The loop's reader of the session: completes the exchange under way with its answer,
        or with the error that ended the session (EOF: HAProxy closed it)."""
        sock, answer = self._sock, self._answer
        if sock is None:
            return
        try:
            data = sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(exc)
            return
        if not data:
            self._end(ConnectionResetError("the session ended before an answer"))
            return
        if answer is None or answer.done():
            self._received.clear()  # no command asked for it: no later answer begins with it
            return
        self._received += data
        if self._received.endswith(_PROMPT) or self._received == _PROMPT[1:]:
            text = self._received[: -len(_PROMPT) + 1].decode(errors="replace")
            self._received.clear()
            answer.set_result(text)

    def _end(self, error: OSError) -> None:
        """The session is over: fail the exchange under way (its ``ask`` drops the session);
        between exchanges drop it now, or once the ``ask`` that has its answer returns."""
        if self._loop is not None and self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())  # EOF would be reported again and again
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_exception(error)
        elif self._busy:
            self._ended = True
        else:
            self._drop()

    async def _once(self, command: str) -> str:
        return await unix_exchange(self._path, command)


def _tasks(pid: int | str) -> list[str]:
    try:
        return [f"/proc/{pid}/task/{tid}" for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _opened(paths: list[str]) -> list[int]:
    fds: list[int] = []
    try:
        for path in paths:
            fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        _close(fds)
        raise
    return fds


def _close(fds: list[int]) -> None:
    for fd in fds:
        with suppress(OSError):
            os.close(fd)


class ProcessCpu:
    """CPU seconds one process and its live children have run, every thread counted
    (``/proc/<pid>/task/*/schedstat``: nanoseconds, where ``stat``'s clock ticks are too coarse
    for a capped process between two heartbeats). A child that exited takes its time with it:
    the sum can go down. The files stay open between readings (a few per process, re-read
    from their start): ``close`` them when done."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._children_files: list[int] = []  # each task's `children`
        self._children: bytes | None = None  # what they said at the last reading
        self._schedstats: list[int] = []  # the schedstat of every task counted

    def seconds(self) -> float | None:
        """The sum now; None when the process is gone."""
        for _ in range(2):  # a second pass after a thread or child went away meanwhile
            try:
                if not self._children_files:
                    own = _tasks(self.pid)
                    if not own:
                        return None
                    self._children_files = _opened([f"{task}/children" for task in own])
                children = b" ".join(os.pread(fd, 4096, 0) for fd in self._children_files)
                if children != self._children:
                    _close(self._schedstats)
                    self._schedstats, self._children = [], None
                    own = _tasks(self.pid)
                    kids = [t for child in children.split() for t in _tasks(child.decode())]
                    self._schedstats = _opened([f"{task}/schedstat" for task in own + kids])
                    self._children = children
                return sum(int(os.pread(fd, 256, 0).split()[0]) for fd in self._schedstats) / 1e9
            except (OSError, ValueError, IndexError):
                self.close()
        return None

    def close(self) -> None:
        """Close the files kept open; the next reading opens them again."""
        _close(self._children_files + self._schedstats)
        self._children_files, self._schedstats, self._children = [], [], None


def process_cpu_seconds(pid: int) -> float | None:
    """One ``ProcessCpu`` reading, nothing kept open."""
    reader = ProcessCpu(pid)
    try:
        return reader.seconds()
    finally:
        reader.close()


async def unix_exchange(path: Path, command: str) -> str:
    """Send one command to an HAProxy CLI socket, half-close, read the answer to EOF.

    The half-close marks the end of the command for a non-interactive session.
    """
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(command.encode() + b"\n")
        await writer.drain()
        writer.write_eof()
        return (await reader.read()).decode(errors="replace")
    finally:
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()
