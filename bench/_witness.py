"""A witness for latency figures: an aiohttp server in a process of its own, answering
``GET /`` with two bytes and doing nothing else. Its latency, timed beside the API's in the
same rounds, tells how the box's own round trips (scheduling, wake-ups, loopback) changed
between two measurements, apart from anything a Fulcrum process does.

Run: python -m bench._witness PORT   (listens on 127.0.0.1:PORT until terminated)
"""

from __future__ import annotations

import sys

from aiohttp import web


async def _answer(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    app = web.Application()
    app.router.add_get("/", _answer)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
