"""The HTTP layer: routes, bearer token, JSON errors, paging headers."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, AsyncIterator, Awaitable, Callable

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from metaflow_agent._states import RUN_STATES

from . import __version__
from . import queries as Q
from .config import Settings
from .db import KNOWN_INDEXES, LOST_CONNECTION, create_pool, present_indexes, schema_version, snapshot
from .params import BadParam, Limits, NotFoundError, Query

PREFIX = "/agent/v1"
log = logging.getLogger("metaflow_agent_service")

Handler = Callable[..., Awaitable[Q.Answer]]


def optional_indexes() -> dict[str, str]:
    """Index name -> migration file, for the optional migrations this package ships."""
    out = {}
    for entry in sorted(resources.files(__package__).joinpath("migrations").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name in re.findall(r"CREATE INDEX CONCURRENTLY IF NOT EXISTS (\w+)", entry.read_text()):
                out[name] = entry.name
    return out


# (path, handler, allowed params, what it answers) — the capability route lists these.
def _routes() -> list[tuple[str, Handler | None, tuple[str, ...], str]]:
    return [
        ("/health", None, (), "liveness of the service and its database"),
        ("/capabilities", None, (), "version, endpoints, limits, which optional indexes exist"),
        ("/flows", Q.list_flows, Q.FLOWS_PARAMS, "flows with their latest run"),
        ("/flows/{flow_id}/runs", Q.list_runs, Q.RUNS_PARAMS, "runs with state, finish and duration; filters; newest first"),
        ("/flows/{flow_id}/runs/{run}", Q.get_run, (), "one run with state, finish and duration"),
        ("/flows/{flow_id}/runs/{run}/tasks", Q.list_tasks, Q.TASKS_PARAMS, "tasks of a run by state, with attempts and timing"),
        ("/flows/{flow_id}/runs/{run}/summary", Q.run_summary, Q.SUMMARY_PARAMS, "per-step counts by state and timings, run totals"),
        ("/flows/{flow_id}/artifacts", Q.search_artifacts, Q.ARTIFACTS_PARAMS, "artifacts by name glob or prefix in the newest runs, in walk order, with what each page covered"),
        ("/stats/runs", Q.run_stats, Q.STATS_PARAMS, "counts by state, success rates, duration percentiles over runs"),
    ]


def _error(status: int, code: str, message: str, *, hint: str = "", param: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message, "hint": hint}
    if param is not None:
        body["param"] = param
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def create_app(settings: Settings) -> Starlette:
    """The ASGI app; the pool opens at startup and closes at shutdown."""
    state: dict[str, Any] = {}
    optional = optional_indexes()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        last: Exception | None = None
        for attempt in range(5):  # the database may still be starting
            try:
                state["pool"] = await create_pool(settings)
                break
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
                last = exc
                log.warning("database not reachable (%s), attempt %d/5", exc, attempt + 1)
                await asyncio.sleep(1)
        else:
            raise RuntimeError(f"cannot connect to {settings.safe_dsn}: {last}")
        log.info("serving %s read-only (statement timeout %d ms)", settings.safe_dsn, settings.statement_timeout_ms)
        try:
            yield
        finally:
            await state["pool"].close()

    def authorized(request: Request) -> bool:
        if settings.token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), settings.token.encode())

    def wrap(fn: Handler, allowed: tuple[str, ...]) -> Callable[[Request], Awaitable[Response]]:
        params = allowed + (("_now",) if settings.allow_now_override else ())

        async def handler(request: Request) -> Response:
            if not authorized(request):
                return _error(401, "unauthorized", "missing or wrong bearer token", hint="send Authorization: Bearer <token>")
            started = time.perf_counter()
            try:
                if "_now" in request.query_params and not settings.allow_now_override:
                    raise BadParam("_now", "_now is honoured only by a server started with --test-allow-now")
                q = Query(request.query_params.multi_items(), allowed=params)
                now = q.integer("_now", lo=0, hi=10**11)
                if now is None:
                    now = settings.fixed_now_s
                async with snapshot(state["pool"]) as conn:
                    answer = await fn(Q.Ctx(conn, settings, now), *request.path_params.values(), q)
            except BadParam as exc:
                return _error(400, "bad_request", exc.message, hint=exc.hint, param=exc.param)
            except NotFoundError as exc:
                return _error(404, "not_found", exc.message, hint=exc.hint)
            except asyncpg.QueryCanceledError:
                return _error(504, "query_timeout", f"the query ran past the statement timeout ({settings.statement_timeout_ms} ms)",
                              hint="narrow it: a smaller _limit, a time window, fewer runs (last=N)")
            except (*LOST_CONNECTION, asyncio.TimeoutError, asyncpg.exceptions.InsufficientResourcesError) as exc:
                log.warning("database unavailable: %s", exc)
                return _error(503, "database_unavailable", "the database did not answer", hint="retry later")
            elapsed_ms = (time.perf_counter() - started) * 1000
            headers = {"Cache-Control": "no-store", "Server-Timing": f"db;dur={elapsed_ms:.1f}"}
            if answer.limit is not None:
                headers["X-Limit"] = str(answer.limit)
            if answer.next_cursor:
                headers["X-Next-Cursor"] = answer.next_cursor
            return JSONResponse(answer.body, headers=headers)

        return handler

    async def health(request: Request) -> Response:
        async def check() -> None:
            async with snapshot(state["pool"]) as conn:
                await conn.fetchval("SELECT 1")

        try:
            await asyncio.wait_for(check(), timeout=5)
        except Exception as exc:  # noqa: BLE001 — any failure means "not healthy"
            log.warning("health check failed: %s", exc)
            return _error(503, "database_unavailable", "the database did not answer", hint="check the database and the DSN")
        return JSONResponse({"status": "ok", "database": "ok", "version": __version__}, headers={"Cache-Control": "no-store"})

    async def capabilities(ctx: Q.Ctx, q: Query) -> Q.Answer:
        names = list(KNOWN_INDEXES) + [n for n in optional if n not in KNOWN_INDEXES]
        present = await present_indexes(ctx.conn, names)
        goose = await schema_version(ctx.conn)
        server = await ctx.conn.fetchval("SHOW server_version")
        indexes = {n: {"present": present[n], "origin": KNOWN_INDEXES.get(n, "optional"), "migration": optional.get(n)} for n in names}
        body = {
            "service": "metaflow-agent-service",
            "version": __version__,
            "api": PREFIX,
            "read_only": True,
            "statement_timeout_ms": settings.statement_timeout_ms,
            "auth": "bearer" if settings.token else "none",
            "now_override": settings.allow_now_override,
            "endpoints": [{"method": "GET", "path": PREFIX + path, "params": list(allowed), "answers": what}
                          for path, _, allowed, what in _routes()],
            "limits": {
                "runs": _lim(Q.RUN_LIMITS), "tasks": _lim(Q.TASK_LIMITS), "flows": _lim(Q.FLOW_LIMITS),
                "artifacts": _lim(Q.ARTIFACT_LIMITS), "artifact_runs": _lim(Q.ARTIFACT_WINDOW),
                "state_scan_budget": settings.scan_budget, "stats_max_runs_per_flow": settings.stats_max_runs,
                "stats_max_flows": Q.MAX_FLOWS_PER_STATS, "summary_max_steps": Q.MAX_STEPS,
            },
            "states": {"run": list(RUN_STATES), "task": list(Q.TASK_FILTER_STATES)},
            "indexes": indexes,
            "database": {"server_version": server, "goose_version": goose},
        }
        return Q.Answer(body)

    routes = [Route(PREFIX + "/health", health), Route(PREFIX + "/capabilities", wrap(capabilities, ()), methods=["GET"])]
    for path, fn, allowed, _ in _routes():
        if fn is not None:
            routes.append(Route(PREFIX + path, wrap(fn, allowed), methods=["GET"]))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = "not_found" if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else "http_error"
        return _error(exc.status_code, code, str(exc.detail), hint=f"GET {PREFIX}/capabilities lists the routes")

    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return _error(500, "internal", f"internal error ({type(exc).__name__})", hint="see the service log")

    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error, Exception: internal})


def _lim(limits: Limits) -> dict[str, int]:
    return {"default": limits.default, "cap": limits.cap}
