"""A pre-imported agent that forks new amphora agents: a boot in milliseconds, not 0.6 s.

``python -m services.amphora.zygote SOCKET [PID_FILE]`` imports everything the agent needs,
reads HAProxy's version (children skip their own ``haproxy -v``) and lives one throwaway
agent's life up to its first configuration checked (services/amphora/rehearsal.py: what every
agent builds lazily on that way is then built once, not in every agent), then, unless
another zygote holds ``SOCKET.lock`` (it then exits: two started in a race never both stay),
writes its pid to PID_FILE and serves spawn requests on a unix socket, one JSON line each:
``{"env": {...}, "log": path}``. It forks; the child starts a new session, takes the
environment and runs the agent exactly as ``python -m services.amphora`` would; the zygote
answers ``{"pid": N}``. The child keeps the connection: an agent writes ``{"port": N}`` on it
once it accepts connections, then closes it (so the asker waits for no port file); a child
that ends first closes it unanswered. No event loop or thread runs in the zygote once the
rehearsal has ended, so forking is safe. Children are reaped automatically (SIGCHLD
ignored); they outlive the zygote and whoever started it.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import logging
import os
import signal
import socket
import sys
from collections import ChainMap
from pathlib import Path
from typing import Final

import services.amphora.__main__ as agent_main  # the heavy imports happen here, once
from libs.common.agent_contract import AGENT_HOST_DIRECTORY_ENV
from libs.common.telemetry import import_sdk
from services.amphora.adapters.haproxy import remember_version
from services.amphora.adapters.tls import prepare_verifying_context
from services.amphora.rehearsal import rehearse
from services.amphora.settings import SERVICE_NAME, default_haproxy_binary

log = logging.getLogger(__name__)

# The agent setting naming its CA (services/amphora/settings.py: ca_cert).
_CA_CERT_ENV: Final = "FULCRUM_AMPHORA_CA_CERT"
# The serving lock's fd (see ``_serving_lock``); closed in every forked agent.
_LOCK_FD: int | None = None


def _child(env: dict[str, str], log_path: str, asker: socket.socket) -> None:
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.environ.update(env)
    if AGENT_HOST_DIRECTORY_ENV in env:
        asker.close()  # an agent host answers on its control socket instead

    def listening(port: int) -> None:
        with contextlib.suppress(OSError):  # the asker went away: it finds the port file
            asker.sendall(json.dumps({"port": port}).encode() + b"\n")
        asker.close()

    code = 0
    try:
        agent_main.main(listening)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 (report anything, then exit the child)
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _prewarm() -> None:
    """Work every agent would repeat, done once here: HAProxy's version (the binary the
    zygote's environment or the default names; an agent given another one reads its own),
    the tracing SDK's imports, and one throwaway agent's life (``rehearse``: what an agent
    builds on its way to its first installed configuration). A rehearsal that fails costs
    the agents that work, not their start: it is logged and the zygote serves."""
    configured = os.environ.get("FULCRUM_AMPHORA_HAPROXY_BIN")
    remember_version(Path(configured) if configured else default_haproxy_binary())
    import_sdk()
    try:
        rehearse()
    except Exception:
        log.exception("the zygote's rehearsal of an agent failed; agents start without it")


def _serving_lock(path: str) -> int | None:
    """An exclusive lock on ``<socket>.lock`` held for the zygote's life (the fd), or None
    when another zygote holds it. Probing the socket instead would let two zygotes started
    together both bind it, one of them then serving an unlinked socket forever."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def serve(path: str, pid_file: str | None = None) -> None:
    _prewarm()  # before SIGCHLD is ignored: subprocess.run waits for its child
    # Every object imported so far leaves the collector's generations: a child's collections
    # never write to them, so their pages stay shared with the zygote instead of being copied.
    gc.collect()
    gc.freeze()
    lock = _serving_lock(path)
    if lock is None:
        return  # another zygote serves this socket
    global _LOCK_FD
    _LOCK_FD = lock
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    if pid_file is not None:  # before it answers: whoever reached it can stop it by this
        Path(pid_file).write_text(str(os.getpid()))
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(64)
    while True:
        conn, _ = server.accept()
        try:
            _answer(server, conn)
        except OSError:
            pass  # the asker went away (or only probed that we listen)
        finally:
            conn.close()


def _answer(server: socket.socket, conn: socket.socket) -> None:
    with conn.makefile("rw") as stream:
        line = stream.readline()
        if not line:
            return
        try:
            request = json.loads(line)
            env, log_path = dict(request["env"]), str(request["log"])
        except (ValueError, KeyError, TypeError) as exc:
            stream.write(json.dumps({"error": f"bad request: {exc}"}) + "\n")
            return
        environ = ChainMap(env, os.environ)
        import_sdk(environ, SERVICE_NAME)  # the exporter and resource of this child's tracing
        if _CA_CERT_ENV in environ:  # the TLS context's part every agent of this CA shares
            prepare_verifying_context(Path(environ[_CA_CERT_ENV]))
        pid = os.fork()
        if pid == 0:
            server.close()
            if _LOCK_FD is not None:
                os.close(_LOCK_FD)  # the lock is the zygote's alone, not its agents'
            stream.close()  # the child answers on the socket itself
            _child(env, log_path, conn)
        stream.write(json.dumps({"pid": pid}) + "\n")


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
