"""Configuration, read in one place and at call time.

Order for Metaflow settings: the environment (`METAFLOW_<NAME>`), then Metaflow's config
files (local, then global), then the default, as Metaflow's `from_conf` reads them; read
without importing Metaflow unless it is imported already or an extension configures it.
Our own knobs are `METAFLOW_AGENT_<NAME>`. Read at call time, not import time, so tests and
long-lived servers follow the environment.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

# --- Metaflow's settings ---------------------------------------------------------------
SERVICE_TYPES = ("service", "agent")
_DATASTORE_DIR = ".metaflow"  # metaflow_config.DATASTORE_LOCAL_DIR
_files_cache: dict[tuple[str, str, str], dict[str, Any]] = {}
_extension_config: bool | None = None


def metaflow_setting(name: str) -> Any:
    """METAFLOW_<name> as Metaflow's `from_conf` finds it: the environment, then the local config
    (`.metaflow/config.json` up from the working directory), then the global one
    (`$METAFLOW_HOME/config[_<profile>].json`); None when unset.

    Read without importing Metaflow (a query on local files should not pay for it), unless
    Metaflow is already imported or an installed extension configures it: then from
    `metaflow.metaflow_config` itself."""
    key = f"METAFLOW_{name}"
    value = os.environ.get(key)
    if value:
        return value
    if "metaflow.metaflow_config" in sys.modules or _extensions_configure():
        from metaflow import metaflow_config

        return getattr(metaflow_config, name, None)
    return _config_files().get(key)


def _config_files() -> dict[str, Any]:
    """The global config overlaid with the local one, read once per home, profile and directory
    (Metaflow too reads them once per process)."""
    home = os.environ.get("METAFLOW_HOME", "~/.metaflowconfig")
    profile = os.environ.get("METAFLOW_PROFILE", "")
    cwd = os.getcwd()
    cached = _files_cache.get((home, profile, cwd))
    if cached is None:
        path = os.path.expanduser(os.path.join(home, f"config_{profile}.json" if profile else "config.json"))
        merged = dict(_json_file(path))
        local_dir = _find_up(cwd, _DATASTORE_DIR)
        if local_dir is not None:
            merged.update(_json_file(os.path.join(local_dir, "config.json")))
        cached = _files_cache[(home, profile, cwd)] = merged
    return cached


def _json_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _find_up(start: str, name: str) -> str | None:
    """The nearest `name` folder in `start` or above it (Metaflow's search for `.metaflow`)."""
    current = start
    check = os.path.realpath(os.path.join(current, name))
    while not os.path.isdir(check):
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
        check = os.path.join(current, name)
    return check


def _extensions_configure() -> bool:
    """Whether an installed Metaflow extension has a `config` module (once per process): then
    only Metaflow itself knows the settings."""
    global _extension_config
    if _extension_config is None:
        import importlib.util

        places: list[str] = []
        try:
            spec = importlib.util.find_spec("metaflow_extensions")
            places += list(spec.submodule_search_locations or []) if spec is not None else []
        except (ImportError, ValueError):
            pass
        extra = os.environ.get("METAFLOW_EXTENSIONS_SEARCH_DIRS", "")
        places += [os.path.join(d, "metaflow_extensions") for d in extra.split(os.pathsep) if d]
        found = False
        for place in places:
            try:
                orgs = os.listdir(place)
            except OSError:
                continue
            found = found or any(os.path.isdir(os.path.join(place, org, "config")) for org in orgs)
        _extension_config = found
    return _extension_config


def metadata_type() -> str:
    return str(metaflow_setting("DEFAULT_METADATA") or "local")


def datastore_type() -> str:
    return str(metaflow_setting("DEFAULT_DATASTORE") or "local")


def service_url() -> str:
    return str(metaflow_setting("SERVICE_URL") or "").rstrip("/")


def service_headers() -> dict[str, str]:
    """Headers for the metadata service (auth key and METAFLOW_SERVICE_HEADERS), as Metaflow sends them."""
    from metaflow import metaflow_config

    return dict(getattr(metaflow_config, "SERVICE_HEADERS", None) or {})


def query_service_url() -> str:
    """METAFLOW_AGENT_QUERY_SERVICE_URL: the query service's API root ('' to look beside the
    metadata service, 'off' to never use one)."""
    return os.environ.get("METAFLOW_AGENT_QUERY_SERVICE_URL", "").strip().rstrip("/")


def query_service_token() -> str | None:
    """METAFLOW_AGENT_QUERY_SERVICE_TOKEN: the bearer token the query service expects, if any."""
    return os.environ.get("METAFLOW_AGENT_QUERY_SERVICE_TOKEN") or None


def root_map() -> dict[str, str]:
    """METAFLOW_AGENT_DATASTORE_ROOT_MAP: recorded datastore roots read elsewhere, as a JSON object
    {"<recorded root>": "<root to read>"} (a root copied or mounted at another place)."""
    text = os.environ.get("METAFLOW_AGENT_DATASTORE_ROOT_MAP", "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()):
        from ._errors import BadInput

        raise BadInput("METAFLOW_AGENT_DATASTORE_ROOT_MAP is not a JSON object of root strings",
                       hint='set it like {"/recorded/.metaflow": "/copy/.metaflow", "s3://old/x": "s3://new/x"}, or unset it')
    return value


def s3_root() -> str | None:
    return metaflow_setting("DATASTORE_SYSROOT_S3")


def s3_endpoint() -> str | None:
    return metaflow_setting("S3_ENDPOINT_URL")


def local_root() -> str | None:
    """The local datastore root (`.../.metaflow`) Metaflow would use, without creating it."""
    sysroot = metaflow_setting("DATASTORE_SYSROOT_LOCAL")
    if sysroot:
        path = os.path.join(str(sysroot), _DATASTORE_DIR)
        return path if os.path.isdir(path) else None
    return _find_up(os.getcwd(), _DATASTORE_DIR)


def username() -> str | None:
    """The user Metaflow would record for a run started here (metaflow.util.get_username)."""
    for user in (metaflow_setting("USER"), os.environ.get("SUDO_USER"), os.environ.get("USERNAME"), os.environ.get("USER")):
        if user and user != "root":
            return str(user)
    return None


def backend_key() -> tuple[str | None, ...]:
    """Everything that decides which backend answers (backends are cached under it)."""
    return (
        metadata_type(),
        service_url(),
        datastore_type(),
        os.environ.get("METAFLOW_DATASTORE_SYSROOT_LOCAL"),
        s3_root(),
        os.getcwd(),
    )


def local_liveness_mode() -> str:
    """METAFLOW_AGENT_LOCAL_LIVENESS: 'process' (default: this host's process table is proof of
    life and death) or 'activity' (only the age of the run's files; for flows run elsewhere)."""
    value = os.environ.get("METAFLOW_AGENT_LOCAL_LIVENESS", "process").strip().lower()
    return value if value in ("process", "activity") else "process"


def debug() -> bool:
    """METAFLOW_AGENT_DEBUG: show tracebacks of unexpected errors."""
    return bool(os.environ.get("METAFLOW_AGENT_DEBUG"))


# --- time ------------------------------------------------------------------------------
def now_s() -> float:
    """The clock every state decision uses (one place, so tests can pin it)."""
    return time.time()


# --- limits: default and hard cap; METAFLOW_AGENT_<NAME> overrides a default -----------
LIMITS: dict[str, tuple[int, int]] = {
    "runs": (20, 500),
    "run_status_budget": (300, 5000),
    "fresh_run_checks": (5, 50),
    "failed_tasks": (50, 1000),
    "tail_lines": (50, 5000),
    "head_lines": (50, 5000),
    "grep_matches": (20, 500),
    "grep_context": (2, 20),
    "log_max_bytes": (128 * 1024, 256 * 1024 * 1024),
    "grep_max_bytes": (16 * 1024 * 1024, 256 * 1024 * 1024),
    "line_chars": (500, 5000),
    "artifacts": (200, 5000),
    "preview_max_bytes": (8 * 1024 * 1024, 256 * 1024 * 1024),
    "repr_chars": (1000, 10000),
    "search_hits": (50, 1000),
    "search_runs": (10, 200),
    "search_tasks_budget": (2000, 50000),
    "compare_diffs": (100, 1000),
    "stats_runs": (1000, 100_000),
    "stats_step_runs": (20, 100),
    "flows": (50, 500),
    "flow_budget": (200, 5000),
    "tasks": (100, 5000),
    "value_runs": (3, 50),
    "service_body_bytes": (32 * 1024 * 1024, 1024 * 1024 * 1024),  # one metadata-service answer
}


def default(name: str) -> int:
    """The default for a limit, honouring METAFLOW_AGENT_<NAME> (never above the cap)."""
    base, cap_ = LIMITS[name]
    env = os.environ.get(f"METAFLOW_AGENT_{name.upper()}")
    if env and env.isdigit():
        return min(int(env), cap_)
    return base


def cap(name: str) -> int:
    """The hard cap of a limit."""
    return LIMITS[name][1]
