"""Files that hold secrets or that a reader must never see half-written: written atomically,
never with looser permissions than asked for."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

__all__ = ["kept_secret", "write_private_file"]


def write_private_file(
    path: Path, data: bytes, mode: int = 0o600, *, durable: bool = True
) -> None:
    """Write `data` atomically (temp file in the same directory, then rename) with `mode`.

    Readers see the old content or the new one, never a partial file; the file never exists
    with looser permissions than `mode`, not even briefly. ``durable``: the data reaches the
    disk before the rename (an fsync, ~3 ms on the 2-core box's disk), so the file survives a
    power loss. Pass False for a file rebuilt from the control plane's state (an amphora's
    pushed config, certificates and port), whose processes a power loss ends too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def kept_secret(path: Path) -> str:
    """The random token kept in ``path`` (0600): made at the first call, then read back."""
    if not path.exists():
        write_private_file(path, secrets.token_urlsafe(24).encode())
    return path.read_text().strip()
