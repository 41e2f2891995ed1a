"""The dashboard's files as the API serves them: the page, every module it imports and its
style sheet, with their content types; the redirect to ``/dashboard/``; nothing outside its
directory, and unknown files answer 404 in the API's error shape. And its event-stream parser,
run in chromium on messages cut at every byte."""

from __future__ import annotations

import json
import re

from services.api.dashboard import STATIC_DIR
from tests.browser import chromium
from tests.integration.api.conftest import Api

_REFERENCE = re.compile(r'(?:src|href)="(/dashboard/static/[^"]+)"|from "\./([^"]+)"')


async def test_page_and_everything_it_loads(api: Api) -> None:
    async with api.session.get(f"{api.base}/dashboard", allow_redirects=False) as resp:
        assert resp.status == 308 and resp.headers["Location"] == "/dashboard/"
    async with api.session.get(f"{api.base}/dashboard/", headers={"Accept": "text/html"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
    wanted = {ref for ref, _ in _REFERENCE.findall(page) if ref}
    assert wanted == {"/dashboard/static/app.js", "/dashboard/static/style.css"}
    seen: set[str] = set()
    while wanted - seen:
        path = sorted(wanted - seen)[0]
        seen.add(path)
        async with api.session.get(api.base + path) as resp:
            assert resp.status == 200, path
            expected = "text/css" if path.endswith(".css") else "text/javascript"
            assert resp.content_type in (expected, "application/javascript"), resp.content_type
            text = await resp.text()
        wanted |= {f"/dashboard/static/{name}" for _, name in _REFERENCE.findall(text) if name}
    on_disk = {f"/dashboard/static/{p.name}" for p in STATIC_DIR.iterdir() if p.suffix != ".html"}
    assert seen == on_disk


async def test_unknown_and_outside_files_are_refused(api: Api) -> None:
    reply = await api.get("/dashboard/static/missing.js")
    assert reply.status == 404 and reply.body["code"] == 404, reply.body
    for path in ("/dashboard/static/../__init__.py", "/dashboard/static/%2e%2e/__init__.py"):
        reply = await api.get(path)
        assert reply.status in (403, 404), (path, reply.status)
        assert reply.body["code"] == reply.status, reply.body


# Two messages (one split over two data lines, CRLF endings), a keepalive comment between them,
# and a field without a value; fed to the parser in chunks of every size from 1 byte up.
_PARSE_IN_CHUNKS = """async (text) => {
  const { parseMessages } = await import("/dashboard/static/feed.js");
  const results = [];
  for (let size = 1; size <= text.length; size++) {
    const seen = [];
    const state = { id: null, event: "", data: [] };
    let buffer = "";
    for (let at = 0; at < text.length; at += size) {
      buffer = parseMessages(buffer + text.slice(at, at + size), state, (m) => seen.push(m));
    }
    results.push(JSON.stringify(seen));
  }
  return results;
}"""
_STREAM = (
    'id: 7\r\nevent: LoadBalancerCreated\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
    ": keepalive\n\n"
    "retry\nid: 8\nevent: LoadBalancerActivated\ndata:{}\n\n"
)


async def test_event_stream_parser_in_chromium(api: Api) -> None:
    async with chromium() as browser:
        page = await browser.new_page()
        await page.goto(f"{api.base}/dashboard/")
        results = await page.evaluate(_PARSE_IN_CHUNKS, _STREAM)
    expected = [
        {"id": "7", "event": "LoadBalancerCreated", "data": '{"a":\n1}'},
        {"id": "8", "event": "LoadBalancerActivated", "data": "{}"},
    ]
    assert len(results) == len(_STREAM)
    assert set(results) == {json.dumps(expected, separators=(",", ":"))}
