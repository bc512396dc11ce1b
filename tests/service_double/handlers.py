"""Plumbing shared by the route handlers: response shapes, error mapping, the handler base.

Bodies are JSON sent as ``text/plain; charset=utf-8`` (what aiohttp gives a ``text=`` body,
as the real service does); ``METADATA_SERVICE_VERSION`` is added unless a route of the real
service leaves it off.
"""

from __future__ import annotations

import functools
import json
import traceback
from typing import Any, Awaitable, Callable, NamedTuple, Protocol

from aiohttp import web

from . import query as q
from .store import Store

SERVICE_VERSION = "2.5.1"
VERSION_HEADER = "METADATA_SERVICE_VERSION"
# "release-2.6.1": the released service that filters and paginates like master, and says so in
# its version (master itself still says 2.5.1, like the release without those features).
MODES = ("master", "release", "release-2.6.1")
FILTERING_MODES = ("master", "release-2.6.1")
VERSIONS = {"master": SERVICE_VERSION, "release": SERVICE_VERSION, "release-2.6.1": "2.6.1"}

Handler = Callable[[web.Request], Awaitable[web.Response]]
Method = Callable[[Any, web.Request], Awaitable[web.Response]]


class SeenRequest(NamedTuple):
    """One request the double received (``query`` decoded, last value per key)."""

    method: str
    path: str
    query: dict[str, str]


class DoubleState(Protocol):
    store: Store
    mode: str
    requests_seen: list[SeenRequest]


def respond(status: int, body: Any, *, version: bool = True, headers: dict[str, str] | None = None, raw: bool = False) -> web.Response:
    """A ``format_response``-style answer: JSON (or ``raw`` text) as ``text/plain``."""
    hdrs = {VERSION_HEADER: SERVICE_VERSION} if version else {}
    hdrs.update(headers or {})
    return web.Response(status=status, text=body if raw else json.dumps(body), headers=hdrs)


def http_500(detail: str) -> dict[str, Any]:
    """The service's 500 body (``http_500``), with the current traceback."""
    return {"traceback": traceback.format_exc(), "detail": detail, "status": 500, "title": "Internal Server Error", "type": "about:blank"}


def handled(version: bool = True) -> Callable[[Method], Method]:
    """``handle_exceptions``: 400 for bad queries, 500 (DB error or traceback body) otherwise."""

    def wrap(fn: Method) -> Method:
        @functools.wraps(fn)
        async def inner(self: Any, request: web.Request) -> web.Response:
            try:
                return await fn(self, request)
            except q.BadQuery as err:
                return respond(400, str(err), version=version)
            except q.DatabaseError as err:
                return respond(500, json.dumps({"err_msg": str(err)}), version=version)
            except Exception as err:  # noqa: BLE001 - mirrors the service's catch-all
                return respond(500, http_500(str(err)), version=version)

        return inner

    return wrap


def page_headers(page: q.Page) -> dict[str, str]:
    headers = {"X-Limit": str(page.limit)}
    if page.next_cursor:
        headers["X-Next-Cursor"] = page.next_cursor
    return headers


async def read_body(request: web.Request) -> Any:
    raw = await request.read()
    return json.loads(raw) if raw.strip() else {}


class HandlerBase:
    """Access to the double's state from handlers."""

    def __init__(self, state: DoubleState) -> None:
        self.state = state

    @property
    def store(self) -> Store:
        return self.state.store

    @property
    def master(self) -> bool:
        """Whether the mode filters and paginates (master, and the 2.6.1 release)."""
        return self.state.mode in FILTERING_MODES

    @staticmethod
    def m(request: web.Request, *names: str) -> list[str]:
        """Path parameters, in order."""
        return [request.match_info[n] for n in names]
