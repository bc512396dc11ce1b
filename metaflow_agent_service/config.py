"""Settings: command-line flags, then environment variables, then defaults.

The database is configured like the metadata service itself (`MF_METADATA_DB_HOST`, `_PORT`,
`_USER`, `_PSWD`, `_NAME`, `_DSN`, `_SSL_MODE`, `DB_SCHEMA_NAME`), or by one DSN
(`--dsn` / `METAFLOW_AGENT_SERVICE_DSN`, which wins).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Mapping, Sequence
from urllib.parse import quote

DEFAULT_PORT = 8089


@dataclass(frozen=True)
class Settings:
    dsn: str
    schema: str = "public"
    ssl: str | None = None  # asyncpg `ssl` (e.g. "require"); None: the DSN decides
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    statement_timeout_ms: int = 10_000
    pool_min: int = 1
    pool_max: int = 5
    scan_budget: int = 10_000  # runs examined per request when a state filter narrows the page
    stats_max_runs: int = 200_000  # runs one statistics request may examine
    allow_now_override: bool = False  # tests only: honour `_now=<epoch s>`
    fixed_now_s: int | None = None  # tests only: judge every request at this instant
    log_level: str = "info"

    @property
    def safe_dsn(self) -> str:
        """The DSN without its password, for logs."""
        head, sep, tail = self.dsn.partition("@")
        if not sep or "://" not in head:
            return self.dsn if "password" not in self.dsn else "<dsn with password>"
        scheme, _, cred = head.partition("://")
        return f"{scheme}://{cred.split(':', 1)[0]}:***@{tail}"


def dsn_from_env(env: Mapping[str, str]) -> str:
    """The DSN the metadata service would use: `MF_METADATA_DB_DSN`, else its five variables."""
    if env.get("MF_METADATA_DB_DSN"):
        return env["MF_METADATA_DB_DSN"]
    host = env.get("MF_METADATA_DB_HOST", "localhost")
    port = env.get("MF_METADATA_DB_PORT", "5432")
    user = quote(env.get("MF_METADATA_DB_USER", "postgres"), safe="")
    password = quote(env.get("MF_METADATA_DB_PSWD", "postgres"), safe="")
    name = quote(env.get("MF_METADATA_DB_NAME", "postgres"), safe="")
    return f"postgresql://{user}:{password}@{host}:{port}/{name}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="metaflow-agent-service",
        description="Read-only query service over the Metaflow metadata service's PostgreSQL database.",
    )
    p.add_argument("--dsn", help="PostgreSQL DSN (default: $METAFLOW_AGENT_SERVICE_DSN, else the MF_METADATA_DB_* variables)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; $METAFLOW_AGENT_SERVICE_HOST)")
    p.add_argument("--port", type=int, help=f"port (default {DEFAULT_PORT}; $METAFLOW_AGENT_SERVICE_PORT)")
    p.add_argument("--token-file", help="file holding the bearer token clients must send (or $METAFLOW_AGENT_SERVICE_TOKEN)")
    p.add_argument("--statement-timeout-ms", type=int, help="per-statement timeout (default 10000)")
    p.add_argument("--pool-max", type=int, help="most database connections (default 5; $MF_METADATA_DB_POOL_MAX)")
    p.add_argument("--scan-budget", type=int, help="runs examined per request under a state filter (default 10000)")
    p.add_argument("--stats-max-runs", type=int, help="runs one statistics request may examine (default 200000)")
    p.add_argument("--test-allow-now", action="store_true", help="TESTS ONLY: honour the `_now` query parameter (epoch seconds)")
    p.add_argument("--test-now", type=int, help="TESTS ONLY: judge every request at this instant (epoch seconds)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def settings_from(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Flags, then environment, then defaults."""
    env = os.environ if env is None else env
    a = parser().parse_args(argv)
    token = None
    if a.token_file:
        with open(a.token_file, encoding="utf-8") as fh:
            token = fh.read().strip() or None
    token = token or env.get("METAFLOW_AGENT_SERVICE_TOKEN") or None
    ssl = env.get("MF_METADATA_DB_SSL_MODE")
    return Settings(
        dsn=a.dsn or env.get("METAFLOW_AGENT_SERVICE_DSN") or dsn_from_env(env),
        schema=env.get("DB_SCHEMA_NAME", "public"),
        ssl=None if ssl in (None, "", "disabled", "disable") else ssl,
        host=a.host or env.get("METAFLOW_AGENT_SERVICE_HOST", "127.0.0.1"),
        port=a.port or int(env.get("METAFLOW_AGENT_SERVICE_PORT", DEFAULT_PORT)),
        token=token,
        statement_timeout_ms=a.statement_timeout_ms or 10_000,
        pool_min=1,
        pool_max=a.pool_max or int(env.get("MF_METADATA_DB_POOL_MAX", 5)),
        scan_budget=a.scan_budget or 10_000,
        stats_max_runs=a.stats_max_runs or 200_000,
        allow_now_override=a.test_allow_now,
        fixed_now_s=a.test_now,
        log_level=a.log_level,
    )
