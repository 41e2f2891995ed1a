"""The web dashboard: static ES modules, HTML and CSS under ``static/``, served at
``/dashboard/`` by the API process (no build step, no external asset).

The page talks to the same API as any client: it logs in with Keystone's ``POST
/v3/auth/tokens``, keeps the token in ``sessionStorage``, sends it as ``X-Auth-Token`` and
follows the project's events on ``GET /v2/fulcrum/events``. Serving it needs no auth: the
files hold no data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

STATIC_DIR: Final = Path(__file__).parent / "static"
PREFIX: Final = "/dashboard"


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _to_index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(f"{PREFIX}/")


async def _static(request: web.Request) -> web.FileResponse:
    """One file of ``static/`` by its plain name; anything else (subpaths, ``..``) is 404."""
    name = request.match_info["name"]
    if name not in _FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC_DIR / name, headers={"Cache-Control": "no-cache"})


_FILES: Final = frozenset(path.name for path in STATIC_DIR.iterdir() if path.is_file())


def register(router: web.UrlDispatcher) -> None:
    """``/dashboard/`` (the page), ``/dashboard`` (redirect there) and
    ``/dashboard/static/<file>`` (its modules and style sheet)."""
    router.add_get(PREFIX, _to_index)
    router.add_get(f"{PREFIX}/", _index)
    router.add_get(PREFIX + "/static/{name}", _static)
