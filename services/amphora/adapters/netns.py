"""Entering a named network namespace from inside the agent, as ``ip netns exec`` does.

The netns driver starts agents either forked from the pre-imported zygote (which runs in the
host's namespaces) or as a new Python; in both cases the agent moves itself into
``/run/netns/<name>`` before it opens any socket or starts HAProxy or keepalived, which then
inherit it. A private mount namespace with a fresh ``/sys`` follows (best effort), so that
``/sys/class/net`` shows the namespace's own devices. Must run while the process has one
thread (``setns`` moves only the calling thread; ``unshare(CLONE_NEWNS)`` needs a single one).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from typing import Final

logger = logging.getLogger(__name__)

NETNS_DIR: Final = "/run/netns"
_CLONE_NEWNET: Final = 0x40000000
_CLONE_NEWNS: Final = 0x00020000
_MS_REC: Final = 0x4000
_MS_SLAVE: Final = 1 << 19
_MNT_DETACH: Final = 2


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: object, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def enter_network_namespace(name: str) -> None:
    """Move this process into network namespace ``name``; raises OSError when it cannot."""
    libc = _libc()
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(libc.setns(fd, _CLONE_NEWNET), f"setns({name})")
    finally:
        os.close(fd)
    try:
        _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_SLAVE, None), "mount --make-rslave /")
        libc.umount2(b"/sys", _MNT_DETACH)
        _check(libc.mount(name.encode(), b"/sys", b"sysfs", 0, None), "mount sysfs")
    except OSError as exc:
        logger.warning("in network namespace %s, but /sys still shows the host's: %s", name, exc)
