"""Artifacts: listing and search from data.json (no unpickling); guarded previews."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from . import _config, _deadline
from ._backend import Backend, get_backend
from ._blobs import data_index, latest_attempt, load_blob, resolve_attempt
from ._cost import CostMeter, call, skip_damaged
from ._cursor import cursor_kind, cursor_offset, cursor_position, make_cursor, open_cursor, query_key
from ._datastore import Datastore
from ._errors import AgentError, BackendError, BadCursor, BadInput, Damaged, NotAllowed, NotFound, ServiceUnavailable, TooLarge
from ._inputs import DEFAULT_NAMESPACE, check_limit, iso, parse_time, resolve_namespace
from ._models import (
    ArtifactHit,
    ArtifactInfo,
    ArtifactList,
    ArtifactPreview,
    ArtifactSearch,
    ArtifactValue,
    ArtifactValues,
    Cost,
)
from ._outcomes import settle_run
from ._pathspec import Pathspec
from ._records import NameHitPage, RunQuery, RunRecord
from ._regex import Glob, compile_glob
from ._repr import bounded_repr
from ._roots import is_root_problem
from ._repr import summary as summarize
from ._sandbox import load_in_sandbox, require_opt_in
from ._unpickle import loads, refused_classes
from ._values import IndexItem, artifact_infos, clean_type, index_items, plain_value, task_artifacts


def list_artifacts(
    task: str,
    *,
    attempt: int | None = None,
    include_private: bool = False,
    limit: int = 200,
    cursor: str | None = None,
) -> ArtifactList:
    """A task's artifact names, sizes, types and sha, without loading any.

    Reads one small index file (data.json) of the attempt.

    Args:
        task: Task pathspec 'Flow/RunId/step/TaskId'.
        attempt: Attempt number; default the latest that saved data.
        include_private: Also list Metaflow's own artifacts (names starting with _).
        limit: Most artifacts to return.
        cursor: next_cursor of the previous page.
    """
    with call() as meter:
        ps = Pathspec.parse(task, "task")
        limit = check_limit("limit", limit, low=1, high=_config.cap("artifacts"))
        key = query_key(str(ps), attempt, include_private)
        start = cursor_offset(open_cursor(cursor, "list_artifacts", key), "list_artifacts")
        if attempt is not None:
            attempt = check_limit("attempt", attempt, low=0, high=99)
        backend = get_backend()
        store = backend.store_for(ps)
        att = resolve_attempt(store, backend.meta, ps, attempt, with_data=True)
        infos = [a for a in artifact_infos(data_index(store, ps, att)) if include_private or not a.name.startswith("_")]
        page = infos[start : start + limit]
        more = start + limit < len(infos)
        result = ArtifactList(
            task=str(ps),
            attempt=att,
            artifacts=page,
            truncated=more,
            next_cursor=make_cursor("list_artifacts", key, i=start + limit) if more else None,
            scanned=len(infos),
            notes=meter.damage_notes(),
            cost=Cost.of(meter),
        )
        return result.resumable(lambda kept: make_cursor("list_artifacts", key, i=start + kept))


def artifact_preview(task: str, name: str, *, attempt: int | None = None, max_bytes: int | None = None,
                     max_chars: int | None = None, unsafe: bool = False) -> ArtifactPreview:
    """A short, type-aware, size-guarded look at one artifact's value.

    Reads only types on an allow-list (builtins, dates, numpy, pandas, ...)
    without running code; refuses (TooLarge) one stored over max_bytes.

    Args:
        task: Task pathspec 'Flow/RunId/step/TaskId'.
        name: Artifact name (list_artifacts shows them).
        attempt: Attempt number; default the latest that saved data.
        max_bytes: Refuse an artifact stored larger than this.
        max_chars: Cut the repr to this many characters.
        unsafe: Load other types in a sandboxed process (also needs METAFLOW_AGENT_UNSAFE_UNPICKLE=1).
    """
    with call() as meter:
        ps = Pathspec.parse(task, "task")
        if not isinstance(name, str) or not name:
            raise BadInput("artifact name is required", hint="list_artifacts(task) shows the names")
        cap = check_limit("max_bytes", max_bytes if max_bytes is not None else _config.default("preview_max_bytes"), low=1, high=_config.cap("preview_max_bytes"))
        chars = check_limit("max_chars", max_chars if max_chars is not None else _config.default("repr_chars"), low=20, high=_config.cap("repr_chars"))
        if attempt is not None:
            attempt = check_limit("attempt", attempt, low=0, high=99)
        if not isinstance(unsafe, bool):
            raise BadInput(f"unsafe={unsafe!r} must be true or false", hint="leave it out to read allow-listed types only")
        if unsafe:
            require_opt_in()
        backend = get_backend()
        store = backend.store_for(ps)
        att = resolve_attempt(store, backend.meta, ps, attempt, with_data=True)
        index = data_index(store, ps, att)
        sha = index.get("objects", {}).get(name)
        if sha is None:
            names = sorted(n for n in index.get("objects", {}) if not n.startswith("_"))
            raise NotFound(f"task {ps} has no artifact {name!r}", hint=f"available: {', '.join(names[:20]) or 'none'}")
        info = index.get("info", {}).get(name, {})
        size = info.get("size")
        if size is not None and size > cap:
            raise TooLarge(f"artifact {name!r} is {size} bytes, over max_bytes={cap}", hint=f"raise max_bytes above {size} to load it, or use list_artifacts for its type and size")
        raw = load_blob(store, ps.flow, sha, max_bytes=cap)
        encoding = info.get("encoding", "pickle-v4")
        if not str(encoding).startswith("pickle"):
            raise BadInput(f"artifact {name!r} has encoding {encoding!r}, which this preview cannot decode", hint="load it with the Metaflow Client API")
        notes: list[str] = []
        try:
            value = loads(raw)
            text, cut = bounded_repr(value, max_chars=chars)
            summary = summarize(value)
        except NotAllowed as exc:
            if not unsafe:
                refused = ", ".join(refused_classes(raw)[:5]) or exc.name or "?"
                raise NotAllowed(
                    f"artifact {name!r} needs {refused}, outside the types read without running code",
                    hint="list_artifacts shows its size and type; unsafe=True with METAFLOW_AGENT_UNSAFE_UNPICKLE=1 "
                    "loads it in a sandboxed process, running the code it names",
                    name=exc.name,
                ) from None
            boxed = load_in_sandbox(raw, max_chars=chars)
            text, cut, summary = boxed["repr"], boxed["truncated"], boxed["summary"]
            notes.append("loaded with plain pickle in a sandboxed process (unsafe=True)")
        return ArtifactPreview(
            task=str(ps),
            name=name,
            type=clean_type(info.get("type")),
            size=size,
            summary=summary,
            repr=text,
            truncated=cut,
            notes=notes + meter.damage_notes(),
            cost=Cost.of(meter),
        )


def search_artifacts(
    flow: str,
    *,
    name: str,
    min_size: int | None = None,
    max_size: int | None = None,
    type: str | None = None,
    runs: int = 10,
    since: str | None = None,
    until: str | None = None,
    namespace: str | None = DEFAULT_NAMESPACE,
    include_private: bool = False,
    limit: int = 50,
    cursor: str | None = None,
) -> ArtifactSearch:
    """Find artifacts by name glob, size and type across recent runs.

    Scans the newest `runs` runs (or those in since/until): newest run first,
    then steps, tasks, names; nothing unpickled. Sizes and types come from
    data.json, within a task budget per page; with the query service, only
    tasks with a matching name are read.

    Args:
        flow: Flow name.
        name: Artifact name or glob, e.g. 'model*'.
        min_size: Smallest stored size in bytes.
        max_size: Largest stored size in bytes.
        type: Substring of the Python type, e.g. 'DataFrame'.
        runs: How many recent runs to scan.
        since: Runs created at or after: ISO-8601 or relative ('24h', '7d').
        until: Runs created before: ISO-8601 or relative.
        namespace: e.g. 'user:alice'; 'default' is yours (user:<you>); null: all users.
        include_private: Also match Metaflow's own artifacts (names starting with _).
        limit: Most hits to return.
        cursor: next_cursor of the previous page.
    """
    with call() as meter:
        fl = Pathspec.parse(flow, "flow").flow
        if not isinstance(name, str) or not name:
            raise BadInput("name is required", hint="pass an artifact name or glob, e.g. name='model*'")
        glob = compile_glob(name)
        runs = check_limit("runs", runs, low=1, high=_config.cap("search_runs"))
        for label, size in (("min_size", min_size), ("max_size", max_size)):
            if size is not None:
                check_limit(label, size, low=0, high=1 << 50)
        if type is not None and (not isinstance(type, str) or not type):
            raise BadInput(f"type={type!r} must be a non-empty string", hint="e.g. type='ndarray' or type='pandas.DataFrame'")
        limit = check_limit("limit", limit, low=1, high=_config.cap("search_hits"))
        budget = _config.default("search_tasks_budget")
        key = query_key(fl, name, min_size, max_size, type, runs, since, until, namespace, include_private)
        kind = cursor_kind(cursor, SEARCH_KINDS) if cursor is not None else None
        state = open_cursor(cursor, kind, key) if kind is not None else None
        ns = resolve_namespace(namespace)
        query = RunQuery(since_ms=parse_time(since, "since"), until_ms=parse_time(until, "until"), tags_all=(ns,) if ns else ())
        backend = get_backend()
        ask = _Ask(fl, name, glob, min_size, max_size, type, runs, query, ns, include_private, limit, budget, key)
        if kind != "search_artifacts":  # a cursor of the plans below keeps its pages on them
            served = _search_served(backend, ask, state, meter)
            if served is not None:
                return served
            if kind is not None:
                raise BadCursor("this cursor was issued through the query service, which does not answer now",
                                hint="omit cursor to start the search over")
        resume = cursor_position(state, (-1, -1, -1, -1))
        # Without filters on what run records hold, the newest runs come from the listing alone.
        chosen = backend.meta.newest_runs(fl, runs) if not ns and query.since_ms is None and query.until_ms is None else None
        if chosen is None:
            chosen = backend.meta.scan_runs(fl, query, limit=runs, after=None, budget=runs).runs
        hits: list[ArtifactHit] = []
        positions: list[tuple[int, ...]] = []
        searched: list[str] = []
        tasks_read = 0
        more, complete, last = False, True, resume
        lost: dict[tuple[int, ...], tuple[str, str]] = {}  # task position -> (why, root)
        no_data: dict[tuple[str, str], int] = {}
        for pos, task_ps, info in _walk(backend, fl, chosen, resume, searched, lost):
            if info is None:  # a task boundary: count it against the budget
                if tasks_read >= budget:
                    complete = False
                    break
                tasks_read += 1
                if task_ps is None:
                    reason = lost.get(pos, ("no artifact data", "?"))
                    no_data[reason] = no_data.get(reason, 0) + 1
                continue
            if task_ps is None or (info.name.startswith("_") and not include_private) or not _match(info, glob, min_size, max_size, type):
                continue
            if len(hits) == limit:
                more = True
                break
            hits.append(ArtifactHit(task=task_ps, name=info.name, size=info.size, type=info.type, sha=info.sha))
            positions.append(pos)
            last = pos
        notes = [f"scanned {tasks_read} tasks' data.json in {len(searched)} runs; nothing unpickled"]
        if ns:
            notes.append(f"runs in namespace {ns!r}; for all users pass namespace=None (CLI: --no-namespace)")
        if not complete:
            notes.append(f"task budget {budget} reached: narrow runs/since/until")
        for (why, where), count in sorted(no_data.items()):
            complete = False
            if why == "no artifact data":
                notes.append(f"{count} task(s) have no artifact data at {where}: still running, or ended before saving any")
            else:
                notes.append(f"{count} task(s) could not be read at {where}")
        notes += backend.root_notes() + meter.damage_notes()
        complete = complete and not meter.skipped_count
        result = ArtifactSearch(
            flow=fl,
            hits=hits,
            runs_searched=searched,
            truncated=more,
            next_cursor=make_cursor("search_artifacts", key, pos=list(last)) if more else None,
            complete=complete,
            scanned=tasks_read,
            notes=notes,
            cost=Cost.of(meter),
        )
        return result.resumable(lambda kept: make_cursor("search_artifacts", key, pos=list(positions[kept - 1])))


SEARCH_KINDS = ("search_artifacts", "search_artifacts_qs")
SERVED_PAGES = 20  # query-service requests per call
SERVICE_PAGE_CAP = 1000  # the query service's most hits per request


@dataclass(frozen=True)
class _Ask:
    """One search's checked arguments."""

    flow: str
    name: str
    glob: Glob
    min_size: int | None
    max_size: int | None
    type: str | None
    runs: int
    query: RunQuery
    namespace: str | None
    include_private: bool
    limit: int
    budget: int  # data.json reads
    key: str

    @property
    def filtered(self) -> bool:
        return self.min_size is not None or self.max_size is not None or self.type is not None


def _search_served(backend: Backend, ask: _Ask, state: dict[str, Any] | None, meter: CostMeter) -> ArtifactSearch | None:
    """The search with names matched by the backend (the query service); None where it cannot.

    The same hits, order, pages, runs_searched and scanned as the walk in `search_artifacts`:
    the service walks the same runs, steps and tasks in the same order and says, per hit, how
    many tasks of its page came before it. Only tasks with a name match have their data.json
    read (sizes, types, sha), at most `budget` of them; without size or type filters, the first
    match after a full page is taken on the database's word (its data.json is not read)."""
    srv: str | None = state.get("srv") if state else None
    skip: int = state["skip"] if state else 0
    query = ask.query
    if state is not None:  # the window as the first page resolved it ('24h' would move)
        query = RunQuery(since_ms=state.get("since"), until_ms=state.get("until"), tags_all=query.tags_all)
    # Without size/type filters every name match is a hit: ask for the page itself, so the service's
    # next cursor is ours. With them, ask for as many as it gives: a wide task has ~20 names.
    step = SERVICE_PAGE_CAP if ask.filtered else ask.limit

    def fetch(cursor: str | None, want: int) -> NameHitPage | None:
        return backend.meta.artifact_name_hits(ask.flow, ask.name, include_private=ask.include_private, runs=ask.runs,
                                               query=query, limit=min(want, SERVICE_PAGE_CAP), cursor=cursor)

    page = fetch(srv, skip + step)
    if page is None:
        return None
    pages = {srv: page}
    hits: list[ArtifactHit] = []
    positions: list[tuple[str | None, int]] = []  # per hit: (its page's cursor, its index there)
    infos: dict[tuple[str, str, str], dict[str, IndexItem] | None] = {}
    lost: dict[tuple[str, str], int] = {}  # tasks without data by (why, root)
    runs_seen: list[str] = []
    g_off = e_off = 0  # tasks (and empty ones) before the current page's first task, counted from the first page's
    skip = min(skip, len(page.hits))
    first = page.hits[skip - 1] if skip else None
    start = (first.tasks_before, first.empty_before, first.run_id) if first else (0, 0, page.runs[0] if page.runs else "")
    stop: tuple[int, int, str] = start
    more, stopped_by, requests = False, "", 1
    while True:
        # A page's runs reach its stop (the next page's first hit); the next page starts back at
        # its last hit's run: keep each run once, in walk order.
        runs_seen += [r for r in page.runs if r not in runs_seen]
        cut = False
        for i in range(skip, len(page.hits)):
            _deadline.check("search_artifacts")
            h = page.hits[i]
            at = (g_off + h.tasks_before, e_off + h.empty_before, h.run_id)
            if len(hits) == ask.limit and not ask.filtered:  # a name match is a hit: its data.json is not needed
                more, stop, cut = True, (at[0] + 1, at[1], at[2]), True
                break
            task = (h.run_id, h.step, h.task)
            if task not in infos:
                if len(infos) >= ask.budget:
                    stopped_by, stop, cut = "budget", at, True
                    break
                infos[task] = _task_infos(backend, Pathspec(ask.flow, h.run_id, h.step, h.task), h.attempt, lost)
            info = (infos[task] or {}).get(h.name)
            if info is None or (info.name.startswith("_") and not ask.include_private) or not _match(info, ask.glob, ask.min_size, ask.max_size, ask.type):
                continue
            if len(hits) == ask.limit:
                more, stop, cut = True, (at[0] + 1, at[1], at[2]), True
                break
            hits.append(ArtifactHit(task=f"{ask.flow}/{h.run_id}/{h.step}/{h.task}", name=info.name, size=info.size, type=info.type, sha=info.sha))
            positions.append((srv, i))
        if cut:
            break
        end = (g_off + page.tasks, e_off + page.empty, page.runs[-1] if page.runs else start[2])
        if page.next_cursor is None:
            stop = end
            break
        if len(hits) == ask.limit and not ask.filtered:  # the service's page ends where the next hit is
            more, stop = True, end
            break
        last = page.hits[-1]
        if requests >= SERVED_PAGES:
            stopped_by, stop = "pages", (g_off + last.tasks_before + 1, e_off + last.empty_before, last.run_id)
            break
        g_off, e_off = g_off + last.tasks_before, e_off + last.empty_before
        srv, skip = page.next_cursor, 0
        nxt = fetch(srv, step)
        requests += 1
        if nxt is None:  # the service went away mid-answer
            raise ServiceUnavailable("the query service stopped answering during the search", hint="retry; the search starts over")
        page = pages[srv] = nxt

    lo = runs_seen.index(start[2]) if start[2] in runs_seen else 0
    hi = runs_seen.index(stop[2], lo) + 1 if stop[2] in runs_seen[lo:] else len(runs_seen)
    searched = runs_seen[lo:hi]
    scanned, empty = stop[0] - start[0], stop[1] - start[1]
    missing = sum(1 for v in infos.values() if v is None)
    reads = len(infos)
    notes = [f"{page.source}: names matched in its database ({requests} request(s), {scanned} tasks in {len(searched)} runs); "
             f"read data.json of the {reads} task(s) with a match; nothing unpickled"]
    if ask.namespace:
        notes.append(f"runs in namespace {ask.namespace!r}; for all users pass namespace=None (CLI: --no-namespace)")
    if stopped_by == "budget":
        notes.append(f"data.json budget of {ask.budget} tasks reached: narrow runs/since/until")
    elif stopped_by == "pages":
        notes.append(f"stopped after {SERVED_PAGES} query-service pages: narrow runs/since/until, or the name")
    if empty:
        notes.append(f"{empty} task(s) have no artifact data (no artifact rows in the metadata database): still running, or killed before saving")
    for (why, where), count in sorted(lost.items()):
        if why == "no data.json":
            notes.append(f"{count} task(s) with artifact rows have no data.json at {where}")
        else:
            notes.append(f"{count} task(s) could not be read at {where}")
    notes += backend.root_notes() + meter.damage_notes()

    def cursor_after(kept: int) -> str:
        page_cursor, i = positions[kept - 1]
        held = pages[page_cursor]
        if i + 1 == len(held.hits) and held.next_cursor:  # the service's own next page starts right there
            page_cursor, i = held.next_cursor, -1
        return make_cursor("search_artifacts_qs", ask.key, srv=page_cursor, skip=i + 1, since=query.since_ms, until=query.until_ms)

    result = ArtifactSearch(
        flow=ask.flow,
        hits=hits,
        runs_searched=searched,
        truncated=more,
        next_cursor=cursor_after(len(hits)) if more else None,
        complete=not (stopped_by or empty or missing or meter.skipped_count),
        scanned=scanned,
        notes=notes,
        cost=Cost.of(meter),
    )
    return result.resumable(cursor_after)


def _task_items(store: Datastore, task: Pathspec, attempt: int | None) -> tuple[list[IndexItem] | None, str]:
    """A task's artifacts from one attempt's data.json (the latest that saved one when `attempt` is
    None): (items, "read"), or (None, why) — "damaged" (skipped and named in the answer), "no data"
    or "unreadable" (its root cannot be opened or read). A metadata service failure propagates."""
    why = "damaged"  # until read
    with skip_damaged(str(task)):
        try:
            if attempt is None:
                attempt = latest_attempt(store, task, with_data=True)
            if attempt is None:
                return None, "no data"
            return index_items(data_index(store, task, attempt)), "read"
        except NotFound:
            why = "no data"
        except Damaged:
            raise  # skipped and named by skip_damaged
        except BackendError as exc:
            if not is_root_problem(exc):
                raise  # the metadata service failed: the whole answer does
            why = "unreadable"
    return None, why


def _task_infos(backend: Backend, task: Pathspec, attempt: int, lost: dict[tuple[str, str], int]) -> dict[str, IndexItem] | None:
    """The artifacts of one attempt by name, from its data.json at the task's recorded root;
    None when it has none there or that root cannot be read (counted in `lost` by why and root)."""
    store = backend.store_for(task)
    items, why = _task_items(store, task, attempt)
    if items is not None:
        return {a.name: a for a in items}
    if why != "damaged":
        key = ("no data.json" if why == "no data" else why, _root_or_unknown(store))
        lost[key] = lost.get(key, 0) + 1
    return None


def _walk(backend: Backend, flow: str, runs: list[RunRecord], resume: tuple[int, ...], searched: list[str],
          lost: dict[tuple[int, ...], tuple[str, str]]) -> Iterator[tuple[tuple[int, ...], str | None, IndexItem | None]]:
    """Yield (position, task pathspec, artifact) in a stable order, after `resume`.

    A (position, pathspec, None) item marks each task whose data.json is read; (position,
    None, None) one with nothing to read, why in `lost` (a root that fails skips only its tasks).
    A damaged run or task is skipped and named in the answer."""
    for ri, rec in enumerate(runs):
        if ri < resume[0]:
            continue
        searched.append(rec.run_id)
        steps: list[str] = []
        with skip_damaged(str(rec.pathspec)):
            steps = backend.meta.step_names(rec.pathspec)
        for si, step in enumerate(steps):
            if (ri, si) < resume[:2]:
                continue
            sps = rec.pathspec.child(step)
            tasks: list[str] = []
            with skip_damaged(str(sps)):
                tasks = sorted(backend.meta.list_tasks(sps), key=lambda t: (len(t), t))
            for ti, task in enumerate(tasks):
                if (ri, si, ti) < resume[:3]:
                    continue
                _deadline.check("search_artifacts")
                tps = sps.child(task)
                store = backend.store_for(tps)
                items, state = _task_items(store, tps, None)
                if state == "damaged":
                    continue
                if state != "read":
                    lost[(ri, si, ti, -1)] = ("unreadable" if state == "unreadable" else "no artifact data", _root_or_unknown(store))
                yield (ri, si, ti, -1), (str(tps) if state == "read" else None), None
                for ai, item in enumerate(items or ()):
                    if (ri, si, ti, ai) > resume:
                        yield (ri, si, ti, ai), str(tps), item


def _root_or_unknown(store: Datastore) -> str:
    try:
        return store.root
    except AgentError:
        return "an unknown root"


def _match(a: IndexItem | ArtifactInfo, glob: Glob, min_size: int | None, max_size: int | None, type_: str | None) -> bool:
    if not glob.match(a.name):
        return False
    if min_size is not None and (a.size is None or a.size < min_size):
        return False
    if max_size is not None and (a.size is None or a.size > max_size):
        return False
    if type_ is not None and (a.type is None or type_ not in a.type):
        return False
    return True


def _find_artifact(backend: Backend, run: Pathspec, name: str, step: str | None) -> tuple[Pathspec | None, ArtifactInfo | None]:
    """(task, info) of the artifact in the given step, else in the latest step that saved it."""
    steps = [step] if step else list(reversed(backend.meta.list_steps(run)))
    for s in steps:
        sps = run.child(s)
        for task in sorted(backend.meta.list_tasks(sps), key=lambda t: (len(t), t), reverse=True):
            arts = task_artifacts(backend.store_for(sps.child(task)), sps.child(task))
            if arts is None:
                continue
            if name in arts:
                return sps.child(task), arts[name]
            break  # every task of a step saves the same names: the step does not have it
    return None, None


def artifact_values(
    flow: str,
    name: str,
    *,
    runs: int = 3,
    order: Literal["newest", "oldest"] = "newest",
    step: str | None = None,
    since: str | None = None,
    until: str | None = None,
    namespace: str | None = DEFAULT_NAMESPACE,
) -> ArtifactValues:
    """One artifact's value across a flow's recent runs.

    Small plain values (numbers, strings, short lists and dicts) as they
    are; type and size otherwise. Cost per run: a listing, one data.json,
    one small blob.

    Args:
        flow: Flow name.
        name: Artifact name, e.g. 'accuracy'.
        runs: How many recent runs.
        order: 'newest' or 'oldest' first.
        step: Look in this step; default the latest step that saved it.
        since: Runs created at or after: ISO-8601 or relative ('24h', '7d').
        until: Runs created before: ISO-8601 or relative.
        namespace: e.g. 'user:alice'; 'default' is yours (user:<you>); null: all users.
    """
    with call() as meter:
        fl = Pathspec.parse(flow, "flow").flow
        if not isinstance(name, str) or not name:
            raise BadInput("name is required", hint="pass the artifact's name, e.g. name='accuracy'")
        runs = check_limit("runs", runs, low=1, high=_config.cap("value_runs"))
        if order not in ("newest", "oldest"):
            raise BadInput(f"order={order!r}", hint="use order='newest' or 'oldest'")
        if step is not None:
            step = Pathspec.parse(f"{fl}/1/{step}", "step").step
        ns = resolve_namespace(namespace)
        query = RunQuery(since_ms=parse_time(since, "since"), until_ms=parse_time(until, "until"), tags_all=(ns,) if ns else ())
        backend = get_backend()
        scan = backend.meta.scan_runs(fl, query, limit=runs, after=None, budget=runs, decide=lambda rec: settle_run(backend, rec))
        rows = []
        for rec in scan.runs:
            with skip_damaged(str(rec.pathspec)):  # a run whose artifacts cannot be read is skipped and named
                task, info = _find_artifact(backend, rec.pathspec, name, step)
                value, note = plain_value(backend.store_for(task), fl, info) if task is not None and info is not None else (None, "no task of this run saved it")
                rows.append(ArtifactValue(run=str(rec.pathspec), created_at=iso(rec.ts_ms) or "", status=rec.status,
                                          task=str(task) if task else None, value=value, type=info.type if info else None,
                                          size=info.size if info else None, note=note))
        if order == "oldest":
            rows.reverse()
        notes = list(scan.notes[1:]) + backend.root_notes()
        if ns:
            notes.append(f"namespace {ns!r} (namespace=None, CLI --no-namespace, for all users)")
        notes += meter.damage_notes()
        return ArtifactValues(flow=fl, name=name, values=rows, complete=scan.complete and not meter.skipped_count, notes=notes,
                              cost=Cost.of(meter))
