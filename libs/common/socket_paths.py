"""Unix socket paths short enough to bind: AF_UNIX takes 107 bytes, HAProxy 97.

A path under a deep state dir can be longer. It is then replaced by a name in a short temp dir,
derived from the long path (the same long path always gives the same short one, so a restarted
process finds the socket its predecessor bound).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Final

from libs.common.errors import ConfigurationError

# Where a replacement may go: the temp dir ($TMPDIR), then /tmp if $TMPDIR is itself too long.
_FALLBACK_DIR: Final = Path("/tmp")


def fitting_path(path: Path, prefix: str, *, limit: int, suffix: str = "") -> Path:
    """``path`` when it is at most ``limit`` bytes, else ``<prefix>-<hash><suffix>`` in the
    temp dir, or in /tmp when the temp dir's name is too long for it. Raises
    ConfigurationError when neither fits (a ``limit`` too small for any replacement)."""
    text = str(path)
    if len(text.encode()) <= limit:
        return path
    name = f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:16]}{suffix}"
    for directory in (Path(tempfile.gettempdir()), _FALLBACK_DIR):
        candidate = directory / name
        if len(str(candidate).encode()) <= limit:
            return candidate
    raise ConfigurationError(
        f"no unix socket path of at most {limit} bytes for {text!r}: set a shorter TMPDIR"
    )
