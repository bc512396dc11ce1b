"""The connection pool: read-only, time-limited, one snapshot per request.

Read-only twice over: each session starts with `default_transaction_read_only=on`, and every
request runs inside an explicit `READ ONLY` transaction (repeatable read, so the several
statements of one answer see one snapshot). Deploy with a role that has only SELECT on the six
tables for a third layer.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import AsyncIterator

import asyncpg

from .config import Settings

APP_NAME = "metaflow-agent-service"

# Indexes the service can use when present, by name: the five that master's migrations add and
# 2.5.1 lacks, and the optional ones this package ships (migrations/*.sql).
KNOWN_INDEXES = {
    "runs_v3_idx_flow_ts_runnum_desc": "master",
    "flows_v3_idx_ts_flow_desc": "master",
    "tasks_v3_idx_flow_run_step_ts_task_desc": "master",
    "metadata_v3_idx_flow_run_ts_id_desc": "master",
    "artifact_v3_idx_latest_attempt": "master",
}
TABLES = ("flows_v3", "runs_v3", "steps_v3", "tasks_v3", "metadata_v3", "artifact_v3")
# The connection is gone or unusable (a failover, a restart, a killed backend): answer 503 and
# drop the connection so the pool opens a fresh one.
LOST_CONNECTION: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)


async def init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """A pool whose every session is read-only, time-limited and labelled."""
    server_settings = {
        "default_transaction_read_only": "on",
        "statement_timeout": str(settings.statement_timeout_ms),
        "idle_in_transaction_session_timeout": str(max(settings.statement_timeout_ms * 3, 10_000)),
        "application_name": f"{APP_NAME}:{settings.port}",  # which instance, in pg_stat_activity
        "jit": "off",  # these are many short queries: compiling them costs more than it saves
        "search_path": settings.schema,
    }
    pool = await asyncpg.create_pool(
        dsn=settings.dsn,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        server_settings=server_settings,
        init=init_connection,
        command_timeout=settings.statement_timeout_ms / 1000 + 5,  # client-side backstop
        ssl=settings.ssl,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def snapshot(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection inside a read-only, repeatable-read transaction."""
    async with pool.acquire() as conn:
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                yield conn
        except LOST_CONNECTION:
            conn.terminate()  # never hand a broken connection to the next request
            raise


async def present_indexes(conn: asyncpg.Connection, names: list[str]) -> dict[str, bool]:
    """Which of the named indexes exist, and are valid, here."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
        "AND c.relname = ANY($1::text[]) AND i.indisvalid",
        names,
    )
    found = {r["relname"] for r in rows}
    return {n: n in found for n in names}


async def schema_version(conn: asyncpg.Connection) -> int | None:
    """The newest applied goose migration, when the service's goose table is readable."""
    if not await conn.fetchval("SELECT to_regclass('goose_db_version') IS NOT NULL"):
        return None
    value = await conn.fetchval("SELECT max(version_id) FROM goose_db_version WHERE is_applied")
    return None if value is None else int(value)
