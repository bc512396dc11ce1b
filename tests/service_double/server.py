"""``ServiceDouble``: the app served on 127.0.0.1 from a background thread with its own loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, Iterable, Mapping

from aiohttp import web

from .app import build_app
from .handlers import MODES, SeenRequest
from .seeding import load_records
from .store import Store


class ServiceDouble:
    """A faithful stand-in for Netflix's metadata service (``metaflow-service``).

    ``mode`` picks the generation GET routes imitate: ``"master"`` (filters, cursors),
    ``"release"`` (2.5.1) or ``"release-2.6.1"`` (master's behaviour, version 2.6.1); it can be
    switched at any time. ``clock`` (seconds) drives new timestamps, heartbeats and master's
    derived run status.
    """

    def __init__(
        self,
        mode: str = "master",
        records: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mode = mode
        self.store = Store(clock)
        self.requests_seen: list[SeenRequest] = []
        self._host = host
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="service-double", daemon=True)
        self._thread.start()
        try:
            self._port = asyncio.run_coroutine_threadsafe(self._start(port), self._loop).result(timeout=30)
        except BaseException:
            self.stop()
            raise
        if records:
            self.load_records(records)

    # ------------------------------------------------------------------ lifecycle
    async def _start(self, port: int) -> int:
        self._runner = web.AppRunner(build_app(self), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, port)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        """Shut the server down and end its thread (idempotent)."""
        if self._loop.is_closed():
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> "ServiceDouble":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ properties
    @property
    def url(self) -> str:
        return "http://%s:%d" % (self._host, self._port)

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError("mode must be one of %s, not %r" % (MODES, value))
        self._mode = value

    # ------------------------------------------------------------------ data
    def load_records(self, records: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, int]:
        """Add seed rows (service JSON shapes; see ``seeding``); returns counts per table."""
        return load_records(self.store, records)

    def reset(self) -> None:
        """Empty every table, restart the id sequences at 1 and forget seen requests."""
        self.store.reset()
        self.requests_seen.clear()
