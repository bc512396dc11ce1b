"""How a question's cost is measured, the same way for all three contenders.

Metadata requests: `metaflow_extensions.agent.plugins.agent_metadata.transport.CountingAdapter`, an HTTP
adapter that records every request (method, URL, status, response bytes) into the
active `metaflow_agent.metered()` meter. metaflow_agent sends through it natively; for
the Client API (naive code and the peer server) it is mounted on Metaflow's own
session, `ServiceMetadataProvider._session`, so every request the Client sends is
seen by the transport: counts are observed, never computed.

Files read (local metadata and the datastore): a `sys.addaudithook` hook sees
every `open` for reading and every directory listing (`os.listdir`, `os.scandir`)
the process makes, whoever makes it. Opens and listings under the datastore root
are counted and the size of each opened file (at open time) is summed: exact for
files read whole, which is how the Client reads metadata files, data.json, blobs
and logs; an upper bound for ranged reads. metaflow_agent reads by byte range, so
its bytes come from its own meter (exact bytes returned by each read); the hook's
figure for it is kept as a cross-check (`probe_bytes`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from metaflow_agent.demo.fileprobe import FileMeasure, FileProbe  # noqa: F401  (re-exported for worker/audit)


def instrument_metaflow_client() -> None:
    """Mount the counting transport on the session the Client API sends through."""
    from metaflow.plugins.metadata_providers.service import ServiceMetadataProvider

    from metaflow_extensions.agent.plugins.agent_metadata.transport import instrument_session

    instrument_session(ServiceMetadataProvider._session)


def measure(fn: Callable[[], tuple[str, list]], probe: FileProbe, *, own_meter: bool) -> dict[str, Any]:
    """Run one question; what it sent, read, took and answered.

    own_meter: the contender is metaflow_agent, whose own meter gives exact datastore bytes.
    """
    from metaflow_agent import metered

    error = None
    text, found = "", []
    with metered() as meter, probe.measure() as files:
        started = time.perf_counter()
        try:
            text, found = fn()
        except Exception as exc:  # report, don't hide: a contender that fails is a result
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
        wall_ms = (time.perf_counter() - started) * 1000
    out = {
        "requests": meter.metadata_requests,
        "response_bytes": meter.metadata_bytes,
        "files_read": meter.datastore_reads if own_meter else files.opens + files.listings,
        "bytes_read": meter.datastore_bytes if own_meter else files.bytes,
        "probe_files": files.opens + files.listings,
        "probe_bytes": files.bytes,
        "wall_ms": round(wall_ms, 1),
        "output_bytes": len(text.encode()),
        "found": found,
        "error": error,
        "request_log": [(r.method, r.url, r.status, r.bytes) for r in meter.requests],
        "read_log": list(meter.reads) if own_meter else [(p, n) for kind, p, n in files.log],
    }
    return out


_NAMED = ("flows", "runs", "steps", "tasks", "artifacts", "attempt")
_PLACEHOLDER = {"flows": "{flow}", "runs": "{run}", "steps": "{step}", "tasks": "{task}", "artifacts": "{name}", "attempt": "{n}"}


def url_pattern(method: str, url: str) -> str:
    """'GET /flows/{flow}/runs/{run}/steps/{step}/tasks?status:eq=' — ids elided, query keys kept."""
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(url)
    segs = [s for s in parts.path.split("/") if s]
    out = []
    for i, seg in enumerate(segs):
        prev = segs[i - 1] if i else None
        out.append(_PLACEHOLDER[prev] if prev in _NAMED else seg)
    keys = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
    query = ("?" + "&".join(f"{k}=" for k in keys)) if keys else ""
    return f"{method} /{'/'.join(out)}{query}"


def read_pattern(path: str) -> str:
    """'Flow/run/step/task/0.data.json' → '{task}/<attempt>.data.json' (and blobs, _meta files)."""
    segs = path.strip("/").split("/")
    if len(segs) >= 3 and segs[1] == "data":
        return "{flow}/data/{sha}" + ("_meta" if segs[-1].endswith("_meta") else "")
    last = segs[-1] if segs else ""
    if "_meta" in segs:
        name = last
        if name.startswith("sysmeta_"):
            name = "sysmeta_{field}_{ts}.json"
        elif "_artifact_" in name:
            name = "{attempt}_artifact_{name}.json"
        depth = segs.index("_meta")
        level = {1: "{flow}", 2: "{run}", 3: "{step}", 4: "{task}"}.get(depth, "?")
        return f"{level}/_meta/{name}" if name else f"{level}/_meta/"
    level = {1: "{flow}", 2: "{run}", 3: "{step}", 4: "{task}"}
    if path.endswith("/") or "." not in last:
        return level.get(len(segs), "?") + "/ (listing)"
    if last[:1].isdigit() and "." in last:
        last = "{attempt}" + last[last.index("."):]
    return level.get(len(segs) - 1, "?") + "/" + last


def summarize(log: list, key: Callable[..., str]) -> dict[str, list[int]]:
    """pattern -> [count, bytes]"""
    out: dict[str, list[int]] = {}
    for item in log:
        pat, nbytes = key(item)
        slot = out.setdefault(pat, [0, 0])
        slot[0] += 1
        slot[1] += nbytes
    return dict(sorted(out.items(), key=lambda kv: -kv[1][0]))
