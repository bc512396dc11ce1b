"""The demo's questions, each answered twice: by metaflow_agent and by the plain Client API.

Runs in a child process whose environment points Metaflow at the demo root,
because Metaflow reads its configuration when it is imported:

    python -m metaflow_agent.demo.ask ROOT

How the Client API's cost is measured. A `sys.addaudithook` hook sees every
`open` (path, mode, flags) and every directory listing (`os.listdir`,
`os.scandir`) the process makes, whoever makes it. While a question runs,
opens for reading and listings of paths under the demo root are counted, and
the size of each opened file (taken at open time) is summed. That sum is an
upper bound of the bytes read; it is exact for files read whole, which is how
the Client reads logs, metadata, data.json files and blobs. The Client's
blob cache lives under the root too, so reads from it are counted. Wall time
is `time.perf_counter` around the call. Both sides are warmed up first (imports,
backend set-up) and keep their in-process caches between questions, as a
long-lived agent process would.

metaflow_agent reports its own cost (reads and exact bytes read). The same
audit hook watches its calls as well, and the totals of both yardsticks are
printed as a cross-check.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
import textwrap
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .fileprobe import FileMeasure, FileProbe
from ..render import format_cost, render_text

ANSWER_LINES = 30  # lines of each metaflow_agent answer shown


# --- measuring ---------------------------------------------------------------------
Measure = FileMeasure


# --- the naive Client API code an agent would write (shown as it is run) -------------
def client_failed_runs(flow: str) -> Any:
    from metaflow import Flow

    return [r.pathspec for r in Flow(flow) if not r.successful]


def client_run_summary(run: str) -> Any:
    from collections import Counter

    from metaflow import Run

    r = Run(run)
    steps = {s.id: Counter("ok" if t.successful else "failed" for t in s) for s in r}
    return r.successful, r.created_at, r.finished_at, steps


def client_failed_tasks(run: str) -> Any:
    from metaflow import Run

    return [(t.pathspec, repr(t.exception)) for s in Run(run) for t in s if not t.successful]


def client_log_tail(task: str) -> Any:
    from metaflow import Task

    # The naive baseline, loading the whole log on purpose: this is what the demo measures against.
    return Task(task).stdout.splitlines()[-20:]


def client_log_grep(task: str) -> Any:
    from metaflow import Task

    # The naive baseline, loading the whole log on purpose.
    return [line for line in Task(task).stdout.splitlines() if "ERROR" in line]


def client_artifacts(task: str) -> Any:
    from metaflow import Task

    return [(a.id, a.size, type(a.data).__name__) for a in Task(task) if not a.id.startswith("_")]


def client_preview(task: str) -> Any:
    from metaflow import Task

    return repr(Task(task)["history"].data)[:1000]


def client_search(flow: str) -> Any:
    from metaflow import Flow

    runs = list(Flow(flow))[:10]
    return [(t.pathspec, a.id, a.size) for r in runs for s in r for t in s for a in t if a.size > 10_000_000]  # type: ignore[attr-defined]  # Client objects are untyped


def client_compare(run_a: str, run_b: str) -> Any:
    from metaflow import Run

    a = {x.id: x.data for x in Run(run_a).end_task if not x.id.startswith("_")}  # type: ignore[union-attr]  # end_task exists on a finished run
    b = {x.id: x.data for x in Run(run_b).end_task if not x.id.startswith("_")}  # type: ignore[union-attr]  # likewise
    return sorted(n for n in a.keys() | b.keys() if a.get(n) != b.get(n))


def client_code(fn: Callable[..., Any]) -> list[str]:
    """The body of a client_* function, without its imports: exactly what is run."""
    body = inspect.getsource(fn).split("\n", 1)[1]
    lines = [re.sub(r"\s+# type: ignore.*$", "", ln) for ln in textwrap.dedent(body).splitlines()]
    return [ln for ln in lines if ln.strip() and not ln.lstrip().startswith(("from ", "import "))]


# --- the questions -------------------------------------------------------------------
@dataclass
class Question:
    key: str
    title: str
    call: str  # the metaflow_agent call, as text
    agent: Callable[[], Any]
    client: Callable[[], Any]
    client_fn: Callable[..., Any]


@dataclass
class Outcome:
    key: str
    title: str
    agent_text: str
    agent_cost: dict[str, Any]
    agent_audit: dict[str, Any]
    client: dict[str, Any]
    client_answer: str
    client_error: str | None = None


def questions(runs: dict[str, str]) -> list[Question]:
    from metaflow import Step

    import metaflow_agent as mfa

    shards, train_a, train_b = runs["shards"], runs["train_a"], runs["train_b"]
    train_flow = train_b.split("/")[0]
    task = next(iter(Step(f"{train_b}/train"))).pathspec  # setup, not measured
    return [
        Question("failed_runs", f"Which recent runs of {train_flow} failed?", f"list_runs({train_flow!r}, status='failed')",
                 lambda: mfa.list_runs(train_flow, status="failed"), lambda: client_failed_runs(train_flow), client_failed_runs),
        Question("run_summary", "How did the shards run go, step by step?", f"run_summary({shards!r})",
                 lambda: mfa.run_summary(shards), lambda: client_run_summary(shards), client_run_summary),
        Question("failed_tasks", "Which shards failed, and why?", f"failed_tasks({shards!r})",
                 lambda: mfa.failed_tasks(shards), lambda: client_failed_tasks(shards), client_failed_tasks),
        Question("log_tail", "Last 20 lines of the training log", f"task_logs({task!r}, tail=20)",
                 lambda: mfa.task_logs(task, tail=20), lambda: client_log_tail(task), client_log_tail),
        Question("log_grep", "ERROR lines of the training log", f"task_logs({task!r}, grep='ERROR', context=0)",
                 lambda: mfa.task_logs(task, grep="ERROR", context=0), lambda: client_log_grep(task), client_log_grep),
        Question("artifacts", "Artifacts of the training task: names, sizes, types", f"list_artifacts({task!r})",
                 lambda: mfa.list_artifacts(task), lambda: client_artifacts(task), client_artifacts),
        Question("preview", "A look at the loss history", f"artifact_preview({task!r}, 'history', max_chars=300)",
                 lambda: mfa.artifact_preview(task, "history", max_chars=300), lambda: client_preview(task), client_preview),
        Question("search", "Which artifacts over 10 MB exist in recent runs?",
                 f"search_artifacts({train_flow!r}, name='*', min_size=10_000_000)",
                 lambda: mfa.search_artifacts(train_flow, name="*", min_size=10_000_000),
                 lambda: client_search(train_flow), client_search),
        Question("compare", "What differs between the two training runs?", f"compare_runs({train_a!r}, {train_b!r})",
                 lambda: mfa.compare_runs(train_a, train_b), lambda: client_compare(train_a, train_b), client_compare),
    ]


# --- output ----------------------------------------------------------------------------
def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _ms(ms: float) -> str:
    return f"{ms:.1f}" if ms < 10 else f"{ms:.0f}"


def _brief(value: Any, width: int = 150) -> str:
    text = repr(value)
    if len(text) > width:
        text = text[: width - 1] + "…"
    count = f"{len(value)} item{'' if len(value) == 1 else 's'}: " if isinstance(value, list) else ""
    return count + text


def _say(line: str = "") -> None:
    print(line, flush=True)


def ask_all(root: str, runs: dict[str, str]) -> list[Outcome]:
    from metaflow import Flow

    import metaflow_agent as mfa

    probe = FileProbe(root)
    # Warm-up, not measured: imports and one-time set-up on both sides.
    mfa.capabilities()
    list(Flow(runs["train_b"].split("/")[0]))
    outcomes = []
    qs = questions(runs)
    for i, q in enumerate(qs, 1):
        _say(f"[{i}/{len(qs)}] {q.title}")
        with probe.measure() as agent_audit:
            result = q.agent()
        text = render_text(result)
        lines = [ln for ln in text.splitlines() if not ln.startswith("cost: ")]  # cost: printed below
        shown = lines[:ANSWER_LINES] + ([f"… {len(lines) - ANSWER_LINES} more lines"] if len(lines) > ANSWER_LINES else [])
        _say(f"  metaflow_agent.{q.call}")
        for ln in shown:
            _say("  │ " + ln)
        error = None
        with probe.measure() as client:
            try:
                answer = _brief(q.client())
            except Exception as exc:  # noqa: BLE001 - the Client API's own failure is part of the answer
                answer, error = f"raised {type(exc).__name__}: {exc}", type(exc).__name__
        _say("  Client API:")
        for ln in client_code(q.client_fn):
            _say("  │ " + ln)
        _say("  │ → " + answer)
        cost = result.cost.model_dump()
        _say(f"  cost  metaflow_agent: {format_cost(result.cost)}")
        _say(f"        Client API:     {client.files} files opened or listed, {_bytes(client.bytes)}, {_ms(client.ms)} ms")
        _say()
        outcomes.append(Outcome(q.key, q.title, text, cost, asdict(agent_audit), asdict(client), answer, error))
    return outcomes


def print_table(outcomes: list[Outcome]) -> None:
    head = ("question", "files", "bytes", "ms", "reads", "bytes", "ms")
    rows = []
    for o in outcomes:
        c, a = o.client, o.agent_cost
        rows.append((o.key, str(c["opens"] + c["listings"]), _bytes(c["bytes"]), _ms(c["ms"]),
                     str(a["datastore_reads"]), _bytes(a["datastore_bytes"]), _ms(a["elapsed_ms"])))
    tot_c = [sum(o.client[k] for o in outcomes) for k in ("opens", "listings", "bytes", "ms")]
    tot_a = [sum(o.agent_cost[k] for o in outcomes) for k in ("datastore_reads", "datastore_bytes", "elapsed_ms")]
    rows.append(("total", str(tot_c[0] + tot_c[1]), _bytes(tot_c[2]), f"{tot_c[3]:.0f}", str(tot_a[0]), _bytes(tot_a[1]), f"{tot_a[2]:.0f}"))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]

    def fmt(r: tuple[str, ...]) -> str:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(r))]
        return f"{cells[0]}  │ {'  '.join(cells[1:4])}  │ {'  '.join(cells[4:])}"

    left = len("  ".join(h.rjust(w) for h, w in zip(head[1:4], widths[1:4])))
    _say("Cost of the same questions".center(len(fmt(head))))
    _say(f"{'':{widths[0]}}  │ {'Client API':^{left}}  │ metaflow_agent")
    _say(fmt(head))
    _say("─" * len(fmt(head)))
    for r in rows[:-1]:
        _say(fmt(r))
    _say("─" * len(fmt(head)))
    _say(fmt(rows[-1]))
    audit = [sum(o.agent_audit[k] for o in outcomes) for k in ("opens", "listings")]
    _say()
    _say("Client API: files opened for reading or listed under the root, and the sum of their sizes")
    _say("(an upper bound of bytes read), seen by a sys.addaudithook hook. metaflow_agent: its own")
    _say(f"cost counters (exact bytes read); the same hook saw {audit[0] + audit[1]} opens and listings")
    _say(f"during its calls ({tot_a[0]} reported).")
    if tot_a[1] and tot_c[2]:
        _say(f"Bytes: {tot_c[2] / max(tot_a[1], 1):.0f}x fewer with metaflow_agent; time: {tot_c[3] / max(tot_a[2], 1):.1f}x less.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = argv[0]
    with open(os.path.join(root, "demo_runs.json")) as f:
        runs = json.load(f)["runs"]
    outcomes = ask_all(root, runs)
    print_table(outcomes)
    with open(os.path.join(root, "demo_results.json"), "w") as f:
        json.dump([asdict(o) for o in outcomes], f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
