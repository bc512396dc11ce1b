"""What a metadata service can do, detected by behaviour and cached per URL.

The version string cannot tell the generations apart (master also says
2.5.1), so features are probed: `GET /flows?_limit=1` answers with an
`X-Limit` header only where the service paginates and filters. Optional
routes are learned on first use from how they 404.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .transport import ServiceTransport


@dataclass
class ServiceCaps:
    url: str
    cursors: bool = False  # X-Limit / X-Next-Cursor seen
    filters: bool = False  # run filters applied server-side
    version: str | None = None
    filtered_tasks: bool | None = None  # None: not learned yet (set by the first filtered_tasks request)
    run_metadata: bool | None = None  # None: not learned yet (set by the first run-metadata request)
    notes: list[str] = field(default_factory=list)


_cache: dict[str, ServiceCaps] = {}
_lock = threading.Lock()


def detect(transport: ServiceTransport) -> ServiceCaps:
    """Probe once per URL (one small request); later calls are free."""
    with _lock:
        caps = _cache.get(transport.url)
    if caps is not None:
        return caps
    caps = ServiceCaps(transport.url)
    reply = transport.get("/flows", {"_limit": 1})
    caps.version = reply.header("metadata_service_version")
    caps.cursors = caps.filters = reply.header("x-limit") is not None
    if caps.cursors:
        caps.notes.append("service paginates and filters (X-Limit seen on /flows?_limit=1)")
    else:
        caps.notes.append("service ignores filters and limits (no X-Limit): filtering client-side within budgets")
    with _lock:
        _cache.setdefault(transport.url, caps)
        return _cache[transport.url]


def forget(url: str | None = None) -> None:
    """Drop cached capabilities (all, or one URL)."""
    with _lock:
        if url is None:
            _cache.clear()
        else:
            _cache.pop(url.rstrip("/"), None)
