"""results.json, REPORT.md and the figures from the measured results; the README's tables.

    python -m benchmarks.report [FOLDER]           # re-render REPORT.md and the figures from FOLDER/results.json
    python -m benchmarks.report --readme [FOLDER]  # print the README's headline tables from results.json
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .usecases import USE_CASES

CONTENDERS = ("naive", "ours", "peer")
LABEL = {"naive": "naive Client API", "ours": "metaflow_agent", "peer": "peer 0.5.0"}
BACKEND_LABEL = {"local": "local", "master": "service master", "release": "service 2.5.1"}
TITLES = dict(USE_CASES)


def _n(x: float | int | None) -> str:
    if x is None:
        return "–"
    return f"{int(x):,}"


def _b(x: float | int | None) -> str:
    if x is None:
        return "–"
    x = float(x)
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if x >= div:
            return f"{x / div:.1f} {unit}"
    return f"{int(x)} B"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return "–"
    r = a / b
    if r < 0.1:
        return f"{r:.2g}×"
    return f"{r:.2f}×" if r < 10 else f"{r:.0f}×"


def _cost_key(r: dict[str, Any]) -> int | None:
    """The count that matters on this backend: requests on a service, files read on local."""
    if r.get("error") and "requests" not in r:
        return None
    return r["files_read"] if r["backend"] == "local" else r["requests"]


def _data(r: dict[str, Any]) -> int | None:
    if "requests" not in r:
        return None
    return r["response_bytes"] + r["bytes_read"]


def index(results: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    return {(r["backend"], r["usecase"], r["size"], r["contender"]): r for r in results}


def _headline_sizes(results: list[dict[str, Any]]) -> dict[str, str]:
    """The largest size measured for each question (the headline shows that one)."""
    best: dict[str, tuple[int, str]] = {}
    for r in results:
        if r["axis"] == "real":
            continue
        if r["usecase"] not in best or r["x"] > best[r["usecase"]][0]:
            best[r["usecase"]] = (r["x"], r["size"])
    return {k: v[1] for k, v in best.items()}


def _err(r: dict[str, Any] | None) -> str:
    return " ⚠" if r and r.get("error") else ""


def headline(results: list[dict[str, Any]]) -> str:
    ix = index(results)
    sizes = _headline_sizes(results)
    have_peer = any(r["contender"] == "peer" for r in results)
    cs = CONTENDERS if have_peer else CONTENDERS[:2]
    head = ("| question (size) | backend | requests (local: files read)<br>" + " / ".join(LABEL[c].split()[0] for c in cs)
            + " | data read<br>" + " / ".join(LABEL[c].split()[0] for c in cs)
            + " | time: naive ms<br>then " + " / ".join(LABEL[c].split()[0] for c in cs[1:]) + " vs naive"
            + " | answer size<br>" + " / ".join(LABEL[c].split()[0] for c in cs) + " |")
    lines = [head, "|---|---|---:|---:|---:|---:|"]
    for uc, _ in USE_CASES:
        if uc not in sizes:
            continue
        for backend in ("local", "master", "release"):
            rs = {c: ix.get((backend, uc, sizes[uc], c)) for c in cs}
            if not any(rs.values()):
                continue
            naive = rs["naive"]
            req = " / ".join(_n(_cost_key(rs[c])) + _err(rs[c]) if rs[c] else "–" for c in cs)
            data = " / ".join(_b(_data(rs[c])) if rs[c] else "–" for c in cs)
            ratio = (f"{naive['wall_ms']:,.0f} ms · " if naive and naive.get("wall_ms") is not None else "– · ") + " / ".join(_ratio(rs[c].get("wall_ms"), naive.get("wall_ms") if naive else None) if rs[c] else "–" for c in cs[1:])
            out = " / ".join(_b(rs[c].get("output_bytes")) if rs[c] and "output_bytes" in rs[c] else "–" for c in cs)
            lines.append(f"| {TITLES[uc]} ({sizes[uc]}) | {BACKEND_LABEL[backend]} | {req} | {data} | {ratio} | {out} |")
    return "\n".join(lines)


def scaling_tables(results: list[dict[str, Any]]) -> str:
    ix = index(results)
    parts = []
    have = [c for c in CONTENDERS if any(r["contender"] == c for r in results)]
    for uc, title in USE_CASES:
        rows = [r for r in results if r["usecase"] == uc and r["contender"] == "naive"]
        if not rows:
            continue
        sizes = sorted({(r["axis"] == "real", r["x"], r["size"]) for r in rows})
        parts.append(f"### {title}\n")
        parts.append("| size | backend | contender | requests | response | files read | bytes read | wall ms | vs naive | answer | found |")
        parts.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for _, _, size in sizes:
            for backend in ("local", "master", "release"):
                naive = ix.get((backend, uc, size, "naive"))
                for c in have:
                    r = ix.get((backend, uc, size, c))
                    if r is None:
                        continue
                    if "requests" not in r:
                        parts.append(f"| {size} | {BACKEND_LABEL[backend]} | {LABEL[c]} | {r.get('error')} |||||||| ")
                        continue
                    found = len(r.get("found") or [])
                    err = f" ⚠ {r['error']}" if r.get("error") else ""
                    parts.append(
                        f"| {size} | {BACKEND_LABEL[backend]} | {LABEL[c]}{err} | {_n(r['requests'])} | {_b(r['response_bytes'])} | "
                        f"{_n(r['files_read'])} | {_b(r['bytes_read'])} | {r['wall_ms']:,.0f} | "
                        f"{_ratio(r['wall_ms'], naive.get('wall_ms') if naive else None)} | {_b(r['output_bytes'])} | {found} |"
                    )
        parts.append("")
    return "\n".join(parts)


def agreement(results: list[dict[str, Any]]) -> list[str]:
    """Where a contender's answer differs from the naive code's."""
    ix = index(results)
    notes = []
    for r in results:
        if r["contender"] == "naive" or "found" not in r:
            continue
        naive = ix.get((r["backend"], r["usecase"], r["size"], "naive"))
        if not naive or "found" not in naive:
            continue
        a, b = naive["found"], r["found"]
        if r["usecase"] in ("latest_failed_runs",):
            same = a == b
        else:
            same = sorted(a) == sorted(b)
        if not same:
            notes.append(f"{LABEL[r['contender']]}, {BACKEND_LABEL[r['backend']]}, {r['usecase']} ({r['size']}): "
                         f"found {len(b)} vs naive {len(a)}" + (f" (e.g. {sorted(set(map(str, b)) ^ set(map(str, a)))[:3]})" if len(b) + len(a) else ""))
    return notes


def targets(results: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    """The brief's targets, checked against what was measured (service backends)."""
    ix = index(results)
    out = []
    sizes = _headline_sizes(results)

    def get(backend: str, uc: str) -> dict[str, Any] | None:
        return ix.get((backend, uc, sizes.get(uc, ""), "ours"))

    for backend in ("master", "release"):
        r = get(backend, "failed_tasks")
        if r and "requests" in r:
            steps = 2  # start, work (the _parameters pseudo-step is not a step)
            ok = r["requests"] <= steps + 2
            out.append(f"failed tasks, {sizes['failed_tasks']}, {BACKEND_LABEL[backend]}: {r['requests']} requests "
                       f"(target ≤ steps + 2 = {steps + 2}): {'met' if ok else 'NOT met'}")
        r = get(backend, "latest_failed_runs")
        if r and "requests" in r:
            want = "1–2" if backend == "master" else "bounded"
            ok = r["requests"] <= 2 if backend == "master" else r["requests"] <= 1 + 300 * 2
            out.append(f"10 latest failed of {sizes['latest_failed_runs']}, {BACKEND_LABEL[backend]}: {r['requests']} requests "
                       f"(target {want}): {'met' if ok else 'NOT met'}")
    for backend in ("local", "master", "release"):
        r = get(backend, "log_tail")
        if r and "requests" in r:
            ok = r["bytes_read"] <= 128 * 1024
            out.append(f"last 50 lines of a {sizes['log_tail'].split('=')[1]} log, {BACKEND_LABEL[backend]}: {_b(r['bytes_read'])} read "
                       f"(target ≤ 128 KB): {'met' if ok else 'NOT met'}")
        r = get(backend, "artifact_metadata")
        if r and "requests" in r:
            reads = r.get("reads_by_file", {})
            dj = reads.get("{task}/{attempt}.data.json", [0, 0])
            ok_req = r["requests"] <= 1 if backend != "local" else True
            out.append(f"artifact names/sizes/types ({sizes['artifact_metadata']}), {BACKEND_LABEL[backend]}: {r['requests']} metadata requests, "
                       f"{r['files_read']} datastore operations (a listing of the task folder and {dj[0]} data.json read of {_b(dj[1])}), "
                       f"{_b(r['bytes_read'])} read in all (target 1 request + one ≈3 KB read): {'met' if ok_req and r['bytes_read'] <= 8192 else 'NOT met'}")
    worst = max((r for r in results if r["contender"] == "ours" and "output_bytes" in r), key=lambda r: r["output_bytes"], default=None)
    if worst:
        out.append(f"largest metaflow_agent answer: {_b(worst['output_bytes'])} ({worst['usecase']}, {worst['size']}, "
                   f"{BACKEND_LABEL[worst['backend']]}) (target ≤ 16 KB): {'met' if worst['output_bytes'] <= 16384 else 'NOT met'}")
    return out


def _slim(r: dict[str, Any]) -> dict[str, Any]:
    r = dict(r)
    if isinstance(r.get("found"), list) and len(r["found"]) > 50:
        r["found"] = r["found"][:50] + [f"... {len(r['found']) - 50} more"]
    return r


def write_all(out: Path, meta: dict[str, Any], results: list[dict[str, Any]], local: dict[str, Any] | None = None) -> None:
    meta = {"generated": datetime.now(timezone.utc).isoformat(timespec="seconds"), **meta}
    data: dict[str, Any] = {"meta": meta, "results": [_slim(r) for r in results]}
    if local:
        data["local"] = {**local, "rows": [_slim(r) for r in local["rows"]]}
    (out / "results.json").write_text(json.dumps(data, indent=1, default=str))
    from .figure import local_scaling, overview

    overview(out, results, local)
    local_scaling(out, local)
    (out / "REPORT.md").write_text(render(meta, results, local))


def render(meta: dict[str, Any], results: list[dict[str, Any]], local: dict[str, Any] | None = None) -> str:
    lines = ["# Benchmark: what answering an agent's question costs", "", "![every question, every contender](benchmark.png)", ""]
    if results:
        lines += render_service(meta, results)
    if local:
        from .localreport import section

        lines += [section(local), ""]
    return "\n".join(lines)


def render_service(meta: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    peer = meta["peer"]
    w = meta["worlds"]["service"]
    lines = [
        f"Generated {meta['generated']} by `python -m benchmarks{' --quick' if meta['quick'] else ''}` on "
        f"{meta['machine']['cpus']} CPUs, Python {meta['machine']['python']}, metaflow {meta['versions']['metaflow']} "
        f"(build {meta['build_seconds']:.0f} s, measurements {meta['measure_seconds']:.0f} s, total {meta['total_seconds']:.0f} s).",
        "",
        "Each question is answered three ways on the same data: the **naive** Client API code an agent would write "
        "([`benchmarks/usecases.py`](../usecases.py)), **metaflow_agent**, and the **peer** `metaflow-mcp-server` 0.5.0's own tool "
        "function. Backends: **local** Metaflow, and the metadata service double in **master** and **released 2.5.1** modes "
        "(local datastore). Requests are counted by the counting HTTP transport mounted on Metaflow's own session; files and bytes "
        "by an audit hook on file opens under the datastore root (metaflow_agent: its own exact meter). Wall time is a ratio to "
        "the naive code measured in the same run. ⚠ marks a contender that raised.",
        "",
        "## Headline (largest size of each question)",
        "",
        "Cells read naive / metaflow_agent / peer. \"data read\" is metadata response bytes plus datastore bytes.",
        "",
        headline(results),
        "",
    ]
    if not peer["available"]:
        lines += [f"**The peer could not be measured**: `{peer['error']}`", ""]
    else:
        lines += [f"Peer: {', '.join(f'{k} {v}' for k, v in peer['versions'].items())} in its own virtual environment.", ""]
    t = targets(results, meta)
    if t:
        lines += ["## The brief's targets for metaflow_agent", ""] + [f"- {x}" for x in t] + [""]
    notes = agreement(results)
    lines += ["## Do the answers agree?", "",
              "`found` is what each answer contains (failed task pathspecs, run ids, hits...). Differences from the naive code:", ""]
    lines += [f"- {n}" for n in notes] or ["- none"]
    if peer["available"]:
        lines += ["", "Why the peer finds nothing in some rows (its 0.5.0 code): its failure tests are "
                  "`task.finished and not task.successful` and `run.finished and not run.successful`, and the Client's "
                  "`finished` is False for a task that raised, so a failed task or a run whose `end` step failed never "
                  "matches; its `search_runs` stops after scanning 200 runs, so a time window deeper than that returns "
                  "nothing (that is also why it sends only 2 requests there)."]
    lines += ["", "## Scaling", "", scaling_tables(results), ""]
    man = w["manifest"]
    lines += [
        "## The data set",
        "",
        "Built fresh in a temporary folder, once per backend world (local metadata; service double + local datastore):",
        "",
        f"- real flows: `LogFlow` ({w['real']['log_bytes'] / 1e6:.1f} MB of stdout in one task), `BigArtifactFlow` "
        f"(one {w['real']['artifact_bytes'] / 2**20:.0f} MiB incompressible artifact), `WideFlow` width 10 (the `real` rows: the same "
        "question on a run the runtime really executed, to check the registered runs behave alike);",
        f"- registered runs, written with Metaflow's own metadata provider and `TaskDataStore` ([`synth.py`](../synth.py)): "
        f"`BenchWideFlow` foreachs of {', '.join(man['wide'])} tasks (the last 0.8 % fail twice under retry, one task fails then "
        f"succeeds), and flows of {', '.join(man['many'])} runs (`start → end`, ≈7 % with a failing end step, ≈4 % killed before "
        "`end`, runs 40 min apart; the time window holds 39 runs).",
        "",
        "Each contender runs in its own process per backend, after one warm-up question (imports, the capability probe); the "
        "Client's on-disk cache is emptied before every question.",
        "",
    ]
    return lines


def readme_tables(data: dict[str, Any]) -> str:
    """The README's headline tables, regenerated from results.json (service, then local at its largest size)."""
    results, local = data.get("results", []), data.get("local")
    out = []
    if results:
        ix = index(results)
        sizes = _headline_sizes(results)
        out += ["| question | metadata requests, service master<br>naive · **metaflow_agent** · peer | same on 2.5.1 | data read (master)<br>"
                "naive · **metaflow_agent** | wall time (master)<br>naive, then **metaflow_agent** as a ratio |",
                "|---|---|---|---|---|"]
        for uc, title in USE_CASES:
            if uc not in sizes:
                continue
            cells = []
            for backend in ("master", "release"):
                rs = [ix.get((backend, uc, sizes[uc], c)) for c in CONTENDERS]
                cells.append(" · ".join(("**" + _n(r["requests"]) + "**" if c == "ours" else _n(r["requests"])) + _err(r) if r and "requests" in r else "–"
                                        for c, r in zip(CONTENDERS, rs)))
            nv, ours = ix.get(("master", uc, sizes[uc], "naive")), ix.get(("master", uc, sizes[uc], "ours"))
            data_cell = f"{_b(_data(nv)) if nv else '–'} · **{_b(_data(ours)) if ours else '–'}**"
            wall = f"{nv['wall_ms']:,.0f} ms · **{_ratio(ours['wall_ms'], nv['wall_ms'])}**" if nv and ours and "wall_ms" in nv and "wall_ms" in ours else "–"
            out.append(f"| {title} ({sizes[uc]}) | {cells[0]} | {cells[1]} | {data_cell} | {wall} |")
        diffs = [n for n in agreement(results) if n.startswith(LABEL["peer"])]
        if diffs:
            out += ["", f"The peer's answer differs from the naive code's in {len(diffs)} of {sum(1 for r in results if r['contender'] == 'peer')} "
                        "measurements (see REPORT.md, \"Do the answers agree?\")."]
    if local and local.get("rows"):
        from . import localreport as lr

        lx = lr.index(local)
        n = max(local["sizes"])
        has_peer = any(r["contender"] == "peer" for r in local["rows"])
        cs = ["naive", "ours"] + (["peer"] if has_peer else []) + ["floor"]
        out += ["", f"Local Metaflow at {n:,} tasks or runs (warm page cache; median of repeated answers):", "",
                "| question | wall time<br>" + " · ".join(("**metaflow_agent**" if c == "ours" else lr.LABEL[c].split()[0]) for c in cs)
                + " | metaflow_agent vs naive<br>(target ≥ 5× faster) | vs floor<br>(target ≤ 2×) | files opened + listed<br>naive · **metaflow_agent** · floor |",
                "|---|---|---:|---:|---|"]
        for q, _, title in lr.QUESTIONS:
            r = {c: lx.get((q, n, c)) for c in cs}
            walls = {c: (x or {}).get("wall_ms") for c, x in r.items()}
            wall = " · ".join(("**" + lr.ms(walls[c]) + "**" if c == "ours" else lr.ms(walls[c])) if walls[c] else "–" for c in cs)
            o, nv, fl = r["ours"], r["naive"], r["floor"]
            speed = lr.faster(nv["wall_ms"], o["wall_ms"]) if o and nv and o.get("wall_ms") and nv.get("wall_ms") else "–"
            over = lr.times(o['wall_ms'], fl['wall_ms']) if o and fl and o.get("wall_ms") and fl.get("wall_ms") else "–"
            fcell = " · ".join(("**" + _n(lr.files(r[c])) + "**" if c == "ours" else _n(lr.files(r[c]))) for c in ("naive", "ours", "floor"))
            out.append(f"| {title} | {wall} | {speed} | {over} | {fcell} |")
        cli = {(x["what"], x["size"]): x for x in local.get("cli", [])}
        agent = cli.get(("metaflow-agent list-runs", n))
        if agent:
            py, mf = cli.get(("python -c pass", None)), cli.get(("python -c 'import metaflow'", None))
            out += ["", f"Cold CLI (`metaflow-agent list-runs FLOW --status failed --limit 10 --json`, a fresh process, {n:,} runs): "
                        f"{lr.ms(agent['wall_ms'])} (target < 500 ms); the floor in a fresh Python process "
                        f"{lr.ms(cli.get(('floor (fresh process)', n), {}).get('wall_ms'))}; Python alone {lr.ms(py['wall_ms']) if py else '–'}, "
                        f"`import metaflow` alone {lr.ms(mf['wall_ms']) if mf else '–'}."]
    return "\n".join(out)


if __name__ == "__main__":  # re-render REPORT.md and the figures, or print the README tables, from results.json
    import sys

    argv = sys.argv[1:]
    readme = "--readme" in argv
    argv = [a for a in argv if a != "--readme"]
    folder = Path(argv[0] if argv else Path(__file__).parent / "results")
    data = json.loads((folder / "results.json").read_text())
    if readme:
        print(readme_tables(data))
    else:
        write_all(folder, data["meta"], data["results"], data.get("local"))
