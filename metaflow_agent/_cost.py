"""Request and byte accounting shared by every backend.

A `CostMeter` is opened per query (`with metered() as meter:`); the transports
(HTTP to the metadata service, datastore reads) record into whichever meter is
active in the current context, so concurrent queries on threads never mix.
"""

from __future__ import annotations

import contextvars
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ._deadline import deadline
from ._errors import Damaged

DAMAGE_NAMED = 10  # damaged items named in an answer's notes (all are counted)
_DAMAGE_KEPT = 1000  # damaged items remembered per call
_REASON_CHARS = 160


@dataclass
class RequestRecord:
    """One metadata request as seen by the transport."""

    method: str
    url: str
    status: int
    bytes: int


@dataclass
class CostMeter:
    """Counts what one query spent."""

    metadata_requests: int = 0
    metadata_bytes: int = 0
    datastore_reads: int = 0
    datastore_bytes: int = 0
    started: float = field(default_factory=time.perf_counter)
    requests: list[RequestRecord] = field(default_factory=list)
    reads: list[tuple[str, int]] = field(default_factory=list)
    keep_log: bool = True
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict)  # per-query cache (identical GETs, lookups made)
    # Damaged datastore items met by this call: path -> (reason, skipped); answers name them in notes.
    damage: dict[str, tuple[str, bool]] = field(default_factory=dict)
    damage_count: int = 0
    skipped_count: int = 0

    def add_request(self, method: str, url: str, status: int, nbytes: int) -> None:
        self.metadata_requests += 1
        self.metadata_bytes += nbytes
        if self.keep_log and len(self.requests) < 10_000:
            self.requests.append(RequestRecord(method, url, status, nbytes))
        for hook in tuple(_hooks):  # hooks may be added/removed on other threads
            hook("request", method, url, nbytes)

    def add_read(self, path: str, nbytes: int) -> None:
        self.datastore_reads += 1
        self.datastore_bytes += nbytes
        if self.keep_log and len(self.reads) < 10_000:
            self.reads.append((path, nbytes))
        for hook in tuple(_hooks):
            hook("read", "GET", path, nbytes)

    def damaged(self, item: str, reason: str, *, skipped: bool) -> None:
        """Record a damaged item: skipped (left out of the answer) or shown without its damaged part."""
        if item in self.damage:
            if skipped and not self.damage[item][1]:
                self.damage[item] = (reason, True)
                self.skipped_count += 1
            return
        self.damage_count += 1
        self.skipped_count += skipped
        if len(self.damage) < _DAMAGE_KEPT:
            # The reason names a path under the item's: say it once.
            reason = reason[len(item) + 1:] if reason.startswith(item + "/") else reason[len(item) + 1:] if reason.startswith(item + " ") else reason
            self.damage[item] = (reason[:_REASON_CHARS], skipped)

    def damage_notes(self) -> list[str]:
        """The answer's notes on damaged items: how many, and the first few by name and reason."""
        notes = []
        for skipped, label in ((True, "skipped"), (False, "shown without their damaged part")):
            count = self.skipped_count if skipped else self.damage_count - self.skipped_count
            if not count:
                continue
            named = [f"{item} ({reason})" for item, (reason, s) in self.damage.items() if s == skipped][:DAMAGE_NAMED]
            more = f" and {count - len(named)} more" if count > len(named) else ""
            notes.append(f"{count} damaged item(s) {label}: " + "; ".join(named) + more)
        return notes

    @property
    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 1)


_current: contextvars.ContextVar[CostMeter | None] = contextvars.ContextVar(
    "metaflow_agent_cost", default=None
)
# Process-wide observers (benchmarks, audit traces, progress notifications).
_hooks: list[Callable[[str, str, str, int], None]] = []


def current_meter() -> CostMeter:
    """The active meter, or a throwaway one when no query is open."""
    meter = _current.get()
    return meter if meter is not None else CostMeter(keep_log=False)


@contextmanager
def metered() -> Iterator[CostMeter]:
    """Count what a block of code costs: metadata requests and datastore reads, with bytes.

    Nested blocks share the outer meter. The library opens one per query; scripts can
    wrap their own code (the counting transport can also be mounted on Metaflow's session)."""
    outer = _current.get()
    if outer is not None:
        yield outer
        return
    meter = CostMeter()
    token = _current.set(meter)
    try:
        yield meter
    finally:
        _current.reset(token)


@contextmanager
def call() -> Iterator[CostMeter]:
    """One public query: its meter (shared with an outer block) and its deadline (METAFLOW_AGENT_DEADLINE_S)."""
    with deadline(), metered() as meter:
        yield meter


@contextmanager
def one_time() -> Iterator[None]:
    """Around one-time work inside a call (a module's first import): the call's elapsed_ms leaves it out."""
    meter = _current.get()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if meter is not None:
            meter.started += time.perf_counter() - t0


@contextmanager
def skip_damaged(item: str | Callable[[], str]) -> Iterator[None]:
    """Around one item's work in a loop: a Damaged error skips the item (the block ends there)
    and is recorded on the call's meter, so the answer names it; other errors pass through."""
    try:
        yield
    except Damaged as exc:
        current_meter().damaged(item() if callable(item) else item, exc.message, skipped=True)


@contextmanager
def shown_without(item: str) -> Iterator[None]:
    """Around an optional part of one item: a Damaged error leaves the part out (the block ends
    there) and is recorded on the call's meter; the item itself is still shown."""
    try:
        yield
    except Damaged as exc:
        current_meter().damaged(item, exc.message, skipped=False)


def add_cost_hook(hook: Callable[[str, str, str, int], None]) -> None:
    """Observe every metadata request and datastore read, process-wide: hook(kind, method, url, nbytes).

    kind is "request" or "read"; hooks run on the thread that made the call (use a
    contextvar to tell concurrent calls apart)."""
    _hooks.append(hook)


def remove_cost_hook(hook: Callable[[str, str, str, int], None]) -> None:
    """Stop observing (a hook never added is ignored)."""
    if hook in _hooks:
        _hooks.remove(hook)
