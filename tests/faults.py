"""A fault-injecting HTTP proxy on 127.0.0.1, in front of the metadata service double.

    with ServiceDouble() as double, FaultProxy(double.url) as proxy:
        proxy.add(r"/filtered_tasks$", "null")           # 200 with body `null`
        proxy.add(r"/runs$", "delay", seconds=5, times=1)  # only the first matching request
        ... point METAFLOW_SERVICE_URL at proxy.url ...

Each fault applies to GET requests whose path matches a regex (Python `re`, test
patterns only), in the order added; the first match wins. Kinds:

- ``delay``: wait `seconds`, then forward;
- ``drip``: forward, but send the body one byte every `seconds`;
- ``truncate``: send the headers of the real body and only its first `size` bytes;
- ``empty`` / ``null``: 200 with an empty body / with ``null``;
- ``body``: answer `status` with exactly `body` (bytes, or JSON-encoded otherwise);
- ``shape``: 200 with ``{"unexpected": "shape"}`` where the service sends a list (and
  ``[]`` where it sends an object);
- ``garbage_rows``: the real list with each row replaced by `garbage` (default: ints,
  null, a list, a string, a dict of the wrong fields, in turn);
- ``not_found_json``: 404 with a JSON body (`body`, default ``{}``);
- ``huge``: 200 with a valid JSON list of `size` bytes of rows;
- ``reset``: close the connection without answering;
- ``status``: answer `status` (e.g. 503) with a small JSON body.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import ClientSession, ClientTimeout, web

Kind = Literal["delay", "drip", "truncate", "empty", "null", "body", "shape", "garbage_rows", "not_found_json", "huge", "reset", "status"]
_GARBAGE: tuple[Any, ...] = (7, None, [1, 2], "not-a-row", {"wrong": "fields"})


@dataclass
class Fault:
    """One fault rule: which paths, what happens, how many times (None: always)."""

    route: str
    kind: Kind
    seconds: float = 0.0
    size: int = 0
    status: int = 200
    body: Any = None
    garbage: tuple[Any, ...] = _GARBAGE
    times: int | None = None
    hits: int = 0
    pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.pattern = re.compile(self.route)


@dataclass
class Seen:
    """A request the proxy handled, and the fault it applied (None: forwarded as is)."""

    path: str
    query: str
    fault: Kind | None


class FaultProxy:
    """Forward GETs to `upstream`, injecting the faults added; serves on 127.0.0.1 from a thread."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self.port: int = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    # ------------------------------------------------------------------ control
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, route: str, kind: Kind, **options: Any) -> Fault:
        """Add a fault for paths matching `route` (a regex searched in the path)."""
        fault = Fault(route, kind, **options)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.seen.clear()

    def _pick(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.pattern.search(path) and (fault.times is None or fault.hits < fault.times):
                    fault.hits += 1
                    return fault
        return None

    # ------------------------------------------------------------------ lifecycle
    async def _start(self) -> int:
        self._session = ClientSession(timeout=ClientTimeout(total=120), auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)  # drips end at stop()
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def stop(self) -> None:
        """Close every connection (a dripping answer ends too) and the thread."""
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the proxy
    async def _forward(self, request: web.Request) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        async with self._session.request(request.method, self.upstream + request.rel_url.raw_path_qs, headers={"Accept": "*/*"}, data=await request.read()) as resp:
            headers = {k: v for k, v in resp.headers.items() if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
            return resp.status, headers, await resp.read()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._pick(request.path) if request.method == "GET" else None
        with self._lock:
            self.seen.append(Seen(request.path, request.query_string, fault.kind if fault else None))
        if fault is None:
            status, headers, body = await self._forward(request)
            return web.Response(status=status, headers=headers, body=body)
        return await getattr(self, "_" + fault.kind)(request, fault)

    async def _delay(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        await asyncio.sleep(fault.seconds)
        status, headers, body = await self._forward(request)
        return web.Response(status=status, headers=headers, body=body)

    async def _drip(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        status, headers, body = await self._forward(request)
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        try:
            for i in range(len(body)):
                await resp.write(body[i : i + 1])
                await asyncio.sleep(fault.seconds)
            await resp.write_eof()
        except ConnectionError:  # the client gave up: that is what a drip is for
            pass
        return resp

    async def _truncate(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        status, headers, body = await self._forward(request)
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = len(body)  # promise the whole body, send part of it
        await resp.prepare(request)
        await resp.write(body[: fault.size])
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return resp

    async def _empty(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        return web.Response(status=200, body=b"", content_type="text/plain")

    async def _null(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        return web.Response(status=200, body=b"null", content_type="text/plain")

    async def _body(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        body = fault.body if isinstance(fault.body, bytes) else json.dumps(fault.body).encode()
        return web.Response(status=fault.status, body=body, content_type="text/plain")

    async def _shape(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        status, headers, body = await self._forward(request)
        try:
            real = json.loads(body)
        except ValueError:
            real = None
        wrong: Any = {"unexpected": "shape"} if isinstance(real, list) else []
        return web.Response(status=status, headers=headers, body=json.dumps(wrong).encode())

    async def _garbage_rows(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        status, headers, body = await self._forward(request)
        try:
            rows = json.loads(body)
        except ValueError:
            rows = []
        if not isinstance(rows, list):
            rows = [rows]
        junk = itertools.cycle(fault.garbage)
        garbage = [next(junk) for _ in rows] or list(fault.garbage)
        return web.Response(status=status, headers=headers, body=json.dumps(garbage).encode())

    async def _not_found_json(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        body = json.dumps({} if fault.body is None else fault.body).encode()
        return web.Response(status=404, body=body, content_type="text/plain")

    async def _huge(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        row = json.dumps({"flow_id": "X", "padding": "x" * 1000}).encode()
        n = max(1, fault.size // (len(row) + 1))
        body = b"[" + b",".join([row] * n) + b"]"
        return web.Response(status=200, body=body, content_type="text/plain")

    async def _reset(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        raise ConnectionResetError("fault: reset")

    async def _status(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        body = json.dumps({"detail": "fault injected"} if fault.body is None else fault.body).encode()
        return web.Response(status=fault.status if fault.status != 200 else 503, body=body, content_type="text/plain")
