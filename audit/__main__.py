"""`python -m audit`: trace every question and function, write audit/traces.json, regenerate the README's tables.

Only the parts of audit/README.md between `<!-- BEGIN GENERATED: x -->` and
`<!-- END GENERATED: x -->` are rewritten; the prose around them is kept.

    python -m audit                      # with the query service (needs PostgreSQL binaries)
    python -m audit --no-query-service   # without: keeps the recorded query-service traces
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from audit.functions import CASES  # noqa: E402
from audit.trace import MODE_NAMES, MODES, PLAN, QUESTIONS  # noqa: E402

DIM_LABEL = {"runs": "runs in the flow", "tasks": "tasks in the foreach", "steps": "steps (2 tasks each)",
             "attempts": "attempts of the failed task", "log_lines": "lines in the log", "artifact_bytes": "bytes of the large artifact",
             "run_seconds": "seconds each run lasted", "flows": "flows in the deployment", "once": "nothing (first call in a process)"}
Trace = dict[str, Any]
Combo = tuple[bool | None, str]  # (query service used, mode); None: not applicable (the naive Client)


def _fmt(n: int) -> str:
    return f"{n:,}"


def _bytes(n: int) -> str:
    for unit, div in (("MB", 1e6), ("KB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _gens(modes: Iterable[str]) -> str:
    modes = set(modes)
    return "all" if modes == set(MODES) else ", ".join(MODE_NAMES[m] for m in MODES if m in modes)


def _labels(combos: list[Combo]) -> tuple[str, str]:
    """(service generations, query service) cells for a group of (qs, mode) combinations."""
    no = [m for qs, m in combos if qs is False]
    yes = [m for qs, m in combos if qs is True]
    na = [m for qs, m in combos if qs is None]
    if na:
        return _gens(na), "–"
    if no and yes and set(no) == set(yes):
        return _gens(no), "either"
    if not yes:
        return _gens(no), "no"
    if not no:
        return _gens(yes), "yes"
    return f"{_gens(no)} (without); {_gens(yes)} (with)", "mixed"


def _signature(by_size: dict[int, Trace]) -> Any:
    return [(sorted((k, v[0]) for k, v in t["requests_by_route"].items()), sorted((k, v[0]) for k, v in t["reads_by_file"].items()))
            for _, t in sorted(by_size.items())]


def grouped(traces: list[Trace], qs_key: bool = True) -> list[tuple[list[Combo], dict[int, Trace]]]:
    """Traces by (qs, mode), combinations with identical counts at every size merged (first one kept)."""
    combos: dict[Combo, dict[int, Trace]] = {}
    for qs in (None, False, True):
        for mode in MODES:
            rows = {t["size"]: t for t in traces if t["mode"] == mode and (t.get("qs") if qs_key else None) is qs}
            if rows:
                combos[(qs, mode)] = rows
    groups: list[tuple[list[Combo], dict[int, Trace]]] = []
    for combo, rows in combos.items():
        for members, first in groups:
            if _signature(first) == _signature(rows):
                members.append(combo)
                break
        else:
            groups.append(([combo], rows))
    return groups


def route_table(sizes: list[int], sections: list[tuple[str, list[Trace], bool]], *, who: bool) -> str:
    """One row per route and file kind, one column per size; `sections`: (who, traces, traces have a qs field)."""
    head = ("| who " if who else "") + "| service | query service | request / datastore read | " + " | ".join(_fmt(s) for s in sizes) + " |"
    lines = [head, ("|---" if who else "") + "|---|---|---|" + "---:|" * len(sizes)]
    for name, traces, qs_key in sections:
        for combos, src in grouped(traces, qs_key):
            service, qs = _labels(combos)
            pre = (f"| {name} " if who else "") + f"| {service} | {qs} |"

            def cells(get: Any) -> str:
                return " | ".join(get(src[s]) if s in src else "–" for s in sizes)

            for r in sorted({r for t in src.values() for r in t["requests_by_route"]}):
                lines.append(f"{pre} `{r}` | " + cells(lambda t: _fmt(t["requests_by_route"].get(r, [0])[0])) + " |")
            lines.append(f"{pre} **requests** | " + cells(lambda t: f"**{_fmt(t['requests'])}**") + " |")
            if "response_bytes" in next(iter(src.values())):
                lines.append(f"{pre} response bytes | " + cells(lambda t: _bytes(t["response_bytes"])) + " |")
            for f in sorted({f for t in src.values() for f in t["reads_by_file"]}):
                lines.append(f"{pre} datastore `{f}` | " + cells(lambda t: _fmt(t["reads_by_file"].get(f, [0])[0])) + " |")
            lines.append(f"{pre} **datastore bytes** | " + cells(lambda t: _bytes(t["bytes_read"])) + " |")
    return "\n".join(lines)


def series(traces: list[Trace], key: str = "requests", *, qs: bool | None = None) -> str:
    """'master, 2.6.1: 1 → 1; 2.5.1: 21 → 81' (generations with equal series merged)."""
    rows = [t for t in traces if qs is None or t.get("qs") is qs]
    sizes = sorted({t["size"] for t in rows})
    by_mode: dict[str, str] = {}
    for mode in MODES:
        vals = {t["size"]: t[key] for t in rows if t["mode"] == mode}
        if vals:
            by_mode[mode] = " → ".join((_fmt(vals[s]) if key != "bytes_read" and key != "response_bytes" else _bytes(vals[s])) if s in vals else "–"
                                       for s in sizes)
    if not by_mode:
        return "–"
    texts: dict[str, list[str]] = {}
    for mode, text in by_mode.items():
        texts.setdefault(text, []).append(mode)
    if len(texts) == 1:
        return next(iter(texts))
    return "; ".join(f"{_gens(modes)}: {text}" for text, modes in texts.items())


# --- the blocks ---------------------------------------------------------------------------------
def questions_summary(questions: list[Trace], functions: list[Trace]) -> str:
    lines = ["| question | grows with | sizes | naive Client requests | metaflow_agent requests | with the query service "
             "| naive datastore bytes | metaflow_agent datastore bytes |", "|---|---|---|---|---|---|---|---|"]
    for usecase, dim, call in QUESTIONS:
        naive = [t for t in questions if t["usecase"] == usecase and t["dimension"] == dim]
        ours = [t for t in functions if t["call"] == call and t["dimension"] == dim]
        sizes = sorted({t["size"] for t in naive})
        lines.append(f"| `{usecase}` | {DIM_LABEL[dim]} | {' → '.join(_fmt(s) for s in sizes)} | {series(naive)} | "
                     f"{series(ours, qs=False)} | {series(ours, qs=True)} | {series(naive, 'bytes_read')} | {series(ours, 'bytes_read', qs=False)} |")
    return "\n".join(lines)


def question_table(questions: list[Trace], functions: list[Trace], usecase: str, dim: str) -> str:
    call = next(c for u, d, c in QUESTIONS if (u, d) == (usecase, dim))
    naive = [t for t in questions if t["usecase"] == usecase and t["dimension"] == dim]
    ours = [t for t in functions if t["call"] == call and t["dimension"] == dim]
    sizes = sorted({t["size"] for t in naive})
    return route_table(sizes, [("naive Client", naive, False), ("metaflow_agent", ours, True)], who=True)


def functions_summary(functions: list[Trace], disagreements: list[dict[str, Any]]) -> str:
    differ = {(d["call"], d["dimension"]) for d in disagreements}
    lines = ["| function call | grows with | sizes | requests without the query service | with it | datastore reads | same answer everywhere |",
             "|---|---|---|---|---|---|---|"]
    for case in CASES:
        rows = [t for t in functions if t["call"] == case.call and t["dimension"] == case.dimension]
        sizes = sorted({t["size"] for t in rows})
        same = "–" if case.answer is None else ("**no**" if (case.call, case.dimension) in differ else "yes")
        lines.append(f"| `{case.call}` | {DIM_LABEL[case.dimension]} | {' → '.join(_fmt(s) for s in sizes)} | {series(rows, qs=False)} | "
                     f"{series(rows, qs=True) if case.query_service else '–'} | {series(rows, 'reads', qs=False)} | {same} |")
    return "\n".join(lines)


def function_block(functions: list[Trace], name: str) -> str:
    out = []
    for case in [c for c in CASES if c.function == name]:
        rows = [t for t in functions if t["call"] == case.call and t["dimension"] == case.dimension]
        sizes = sorted({t["size"] for t in rows})
        what = "the first call in a process" if case.dimension == "once" else f"growing the {DIM_LABEL[case.dimension]}"
        out.append(f"`{case.call}`, {what}:\n\n" + route_table(sizes, [("", rows, True)], who=False))
    return "\n\n".join(out)


def gaps_table(functions: list[Trace], endpoints: list[Trace]) -> str:
    from audit.gaps import GAPS

    lines = ["| # | gap | query-service endpoint that closes it | measured on | sizes | requests without → with the query service "
             "| response bytes without → with, at the largest size |", "|---:|---|---|---|---|---|---|"]
    for i, gap in enumerate(GAPS, 1):
        endpoint = gap.endpoint or "none"
        if not gap.measured:
            lines.append(f"| {i} | {gap.title} | {endpoint} | – | – | – | {gap.note} |")
            continue
        for j, (call, dim) in enumerate(gap.measured):
            rows = [t for t in functions if t["call"] == call and t["dimension"] == dim]
            sizes = sorted({t["size"] for t in rows})
            top = max(sizes)
            saving = _saving([t for t in rows if t["size"] == top])
            if gap.title.startswith("Artifact search"):
                direct = [e for e in endpoints if e["dimension"] == dim]
                if direct:
                    ds = sorted(direct, key=lambda e: e["size"])
                    saving += (f"; the endpoint alone: {' → '.join(_fmt(e['requests']) for e in ds)} request(s), "
                               f"{_bytes(ds[-1]['response_bytes'])}, {ds[-1]['rows']} rows")
            cells = f"`{call}` by {DIM_LABEL[dim]} | {' → '.join(_fmt(s) for s in sizes)} | without: {series(rows, qs=False)}<br>with: {series(rows, qs=True)} | {saving}"
            if j == 0:
                lines.append(f"| {i} | {gap.title} | {endpoint} | {cells} |")
            else:
                lines.append(f"| | | | {cells} |")
        if gap.note:
            lines[-1] = lines[-1][:-2] + f"<br>({gap.note}) |"
    return "\n".join(lines)


def _saving(rows: list[Trace]) -> str:
    """'2.5.1: 97 → 1 requests, 28.7 KB → 0.5 KB' per generation group, at one size."""
    parts: dict[str, list[str]] = {}
    for mode in MODES:
        no = next((t for t in rows if t["mode"] == mode and not t["qs"]), None)
        yes = next((t for t in rows if t["mode"] == mode and t["qs"]), None)
        if no is None or yes is None:
            continue
        text = f"{_fmt(no['requests'])} → {_fmt(yes['requests'])} requests, {_bytes(no['response_bytes'])} → {_bytes(yes['response_bytes'])}"
        parts.setdefault(text, []).append(mode)
    return "; ".join(f"{_gens(modes)}: {text}" for text, modes in parts.items())


def disagreement_block(disagreements: list[dict[str, Any]]) -> str:
    if not disagreements:
        return ("Every call above gave the same answer (states, counts, names, values: not durations or notes) on every "
                "generation, with and without the query service.")
    lines = ["| call | size | answers |", "|---|---:|---|"]
    for d in disagreements:
        parts = "<br>".join(f"{', '.join(v['where'])}: `{str(v['answer'])[:300]}`" for v in d["answers"].values())
        lines.append(f"| `{d['call']}` by {DIM_LABEL[d['dimension']]} | {_fmt(d['size'])} | {parts} |")
    return "\n".join(lines)


def code_block(usecase: str) -> str:
    from benchmarks import usecases

    fn = getattr(usecases, f"naive_{usecase}")
    return "```python\n" + inspect.getsource(fn).rstrip() + "\n```"


def regenerate(readme: Path, record: dict[str, Any]) -> None:
    q, f, e, dis = record["questions"], record["functions"], record.get("endpoints", []), record.get("disagreements", [])
    blocks: dict[str, str] = {"summary": questions_summary(q, f), "functions": functions_summary(f, dis), "gaps": gaps_table(f, e),
                              "answers": disagreement_block(dis)}
    for usecase, dim in PLAN:
        blocks[f"trace:{usecase}:{dim}"] = question_table(q, f, usecase, dim)
        blocks[f"code:{usecase}"] = code_block(usecase)
    for case in CASES:
        blocks[f"fn:{case.function}"] = function_block(f, case.function)
    text = readme.read_text()
    missing = [name for name in blocks if f"<!-- BEGIN GENERATED: {name} -->" not in text]
    if missing:
        print(f"audit: README has no place for {', '.join(missing)}", file=sys.stderr)

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in blocks:
            return m.group(0)
        return f"<!-- BEGIN GENERATED: {name} -->\n{blocks[name]}\n<!-- END GENERATED: {name} -->"

    readme.write_text(re.sub(r"<!-- BEGIN GENERATED: (\S+) -->.*?<!-- END GENERATED: \1 -->", sub, text, flags=re.S))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audit", description=__doc__.splitlines()[0])
    parser.add_argument("--no-query-service", action="store_true", help="trace without PostgreSQL; keep the recorded query-service traces")
    parser.add_argument("--readme-only", action="store_true", help="regenerate the README from traces.json, trace nothing")
    args = parser.parse_args(argv)
    os.environ.setdefault("USER", "bench")
    os.environ.setdefault("METAFLOW_USER", os.environ["USER"])
    path = HERE / "traces.json"
    if args.readme_only:
        regenerate(HERE / "README.md", json.loads(path.read_text()))
        return 0
    from audit.trace import disagreements, strip, trace_endpoints, trace_functions, trace_questions
    from audit.world import SIZES, service_world

    t0 = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"{msg} [{time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)

    progress("audit: registering the data set on a service double on 127.0.0.1 ...")
    with service_world(with_query_service=not args.no_query_service, progress=progress) as world:
        questions = trace_questions(world, progress=progress)
        endpoints = trace_endpoints(world, progress=progress)
        functions = trace_functions(world, progress=progress)
    disagree = disagreements(functions)
    functions = strip(functions)
    if args.no_query_service and path.exists():
        old = json.loads(path.read_text())
        functions += [t for t in old.get("functions", []) if t.get("qs")]
        endpoints = old.get("endpoints", [])
    order = {c.key: i for i, c in enumerate(CASES)}
    functions.sort(key=lambda t: (order[f"{t['call']} by {t['dimension']}"], t["qs"], MODES.index(t["mode"]), t["size"]))
    import metaflow

    record = {"generated_by": "python -m audit", "metaflow": metaflow.__version__, "modes": list(MODES), "sizes": SIZES,
              "questions": questions, "functions": functions, "endpoints": endpoints, "disagreements": disagree}
    path.write_text(json.dumps(record, indent=1, default=str))
    regenerate(HERE / "README.md", record)
    for d in disagree:
        print(f"audit: answers differ for {d['call']} by {d['dimension']}={d['size']}: "
              + " | ".join(", ".join(v["where"]) for v in d["answers"].values()), file=sys.stderr)
    progress(f"audit: {len(questions)} naive traces, {len(functions)} function traces, {len(endpoints)} endpoint traces: "
             "audit/traces.json, audit/README.md tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
