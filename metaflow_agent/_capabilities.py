"""What the configured backend is and what it supports."""

from __future__ import annotations

from ._backend import get_backend
from ._config import LIMITS
from ._cost import call
from ._models import Capabilities, Cost


def capabilities() -> Capabilities:
    """Which backend answers (local or service) and what it supports.

    On a service, filters and cursors are detected by probing (once per
    URL), never read from the version string.
    """
    with call() as meter:
        backend = get_backend()
        facts = backend.capabilities()

        def text(name: str) -> str | None:
            value = facts.get(name)
            return None if value is None else str(value)

        def flag(name: str) -> bool | None:
            value = facts.get(name)
            return value if isinstance(value, bool) else None

        return Capabilities(
            backend=backend.meta.kind,
            metadata_url=text("metadata_url"),
            datastore=text("datastore") or "local",
            datastore_root=text("datastore_root"),
            service_version=text("service_version"),
            server_filters=flag("server_filters"),
            server_cursors=flag("server_cursors"),
            filtered_tasks=flag("filtered_tasks"),
            run_metadata_route=flag("run_metadata_route"),
            query_service=text("query_service"),
            notes=[n for n in [text("query_service_note")] if n],
            limits={f"{k}_default": v[0] for k, v in LIMITS.items()} | {f"{k}_cap": v[1] for k, v in LIMITS.items()},
            cost=Cost.of(meter),
        )
