"""JSON responses built from stored body text (no decode/encode round trip on reads)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web


def raw_json(text: str, status: int = 200) -> web.Response:
    return web.Response(body=text.encode(), status=status, content_type="application/json")


def encoded(value: Any, status: int = 200) -> web.Response:
    return raw_json(json.dumps(value), status)


def enveloped(key: str, body: str, status: int = 200) -> web.Response:
    """``{"<key>": <body>}`` where ``body`` is JSON text."""
    return raw_json(f'{{"{key}": {body}}}', status)


def select_fields(body: str, fields: Sequence[str]) -> str:
    """Octavia's field selection: only the named attributes (unknown names are ignored)."""
    if not fields:
        return body
    data = json.loads(body)
    return json.dumps({k: data[k] for k in fields if k in data})


def empty(status: int) -> web.Response:
    return web.Response(status=status)
