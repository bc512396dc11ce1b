"""What the configured backend is and what it supports."""

from __future__ import annotations

from ._backend import get_backend
from ._cost import metered
from ._limits import LIMITS
from ._models import Capabilities
from ._result import cost_of


def capabilities() -> Capabilities:
    """Which backend answers (local or service) and what it supports.

    On a service, detects filters and cursors by probing (cached per URL),
    never from the version string.
    """
    with metered() as meter:
        backend = get_backend()
        facts = backend.capabilities()
        return Capabilities(
            backend=backend.kind,  # type: ignore[arg-type]
            metadata_url=facts.get("metadata_url"),  # type: ignore[arg-type]
            datastore=str(facts.get("datastore", "local")),
            datastore_root=facts.get("datastore_root"),  # type: ignore[arg-type]
            service_version=facts.get("service_version"),  # type: ignore[arg-type]
            server_filters=bool(facts.get("server_filters", False)),
            server_cursors=bool(facts.get("server_cursors", False)),
            filtered_tasks=bool(facts.get("filtered_tasks", False)),
            run_metadata_route=bool(facts.get("run_metadata_route", False)),
            limits={f"{k}_default": v[0] for k, v in LIMITS.items()} | {f"{k}_cap": v[1] for k, v in LIMITS.items()},
            cost=cost_of(meter),
        )
