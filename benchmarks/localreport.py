"""The local section of REPORT.md: per-question tables, the targets, the cold CLI."""

from __future__ import annotations

from typing import Any

from .localcases import QUESTIONS

LABEL = {"naive": "naive Client API", "ours": "metaflow_agent", "peer": "peer 0.5.0", "floor": "floor"}
ORDER = ("naive", "ours", "peer", "floor")
TITLE = {q: t for q, _, t in QUESTIONS}
KIND = {q: k for q, k, _ in QUESTIONS}
RUN_QUESTIONS = tuple(q for q, k, _ in QUESTIONS if k == "runs")
TARGET_SPEEDUP, TARGET_FLOOR, TARGET_CLI_MS = 5.0, 2.0, 500.0


def ms(x: float | None) -> str:
    """'0.42 ms', '215 ms', '3.1 s'."""
    if x is None:
        return "–"
    if x >= 1000:
        return f"{x / 1000:.1f} s"
    if x >= 10:
        return f"{x:,.0f} ms"
    return f"{x:.2g} ms" if x < 1 else f"{x:.1f} ms"


def nbytes(x: float | None) -> str:
    if x is None:
        return "–"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if x >= div:
            return f"{x / div:.1f} {unit}"
    return f"{int(x)} B"


def times(a: float | None, b: float | None) -> str:
    """a / b as '12×' / '1.4×' / '0.31×'."""
    if a is None or not b:
        return "–"
    r = a / b
    return f"{r:,.0f}×" if r >= 10 else (f"{r:.1f}×" if r >= 1 else f"{r:.2f}×")


def faster(naive_ms: float, ms_: float) -> str:
    """'12× faster' / '1.4× slower', for metaflow_agent against the naive code."""
    r = naive_ms / ms_
    return f"{times(naive_ms, ms_)} faster" if r >= 1 else f"{times(ms_, naive_ms)} slower"


def index(local: dict[str, Any]) -> dict[tuple[str, int, str], dict[str, Any]]:
    return {(r["question"], r["size"], r["contender"]): r for r in local["rows"]}


def size_label(q: str, n: int) -> str:
    return f"{n:,} {KIND[q]}"


def files(r: dict[str, Any] | None) -> int | None:
    if not r or "opens" not in r:
        return None
    return int(r["opens"]) + int(r["listings"])


def same(r: dict[str, Any], naive: dict[str, Any] | None) -> str:
    if r.get("error"):
        return "⚠ " + str(r["error"])[:60]
    if naive is None or "found" not in naive or "found" not in r:
        return "–"
    return "yes" if r["found"] == naive["found"] else f"no ({len(r['found'])} vs {len(naive['found'])})"


def tables(local: dict[str, Any]) -> str:
    ix = index(local)
    parts = []
    for q, _, title in QUESTIONS:
        parts += [f"### {title}", "",
                  "| size | contender | warm wall (median) | warm CPU | cold wall | wall ÷ naive | wall ÷ floor | CPU ÷ naive | CPU ÷ floor | files opened | listings | bytes read | answer | same answer as naive |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for n in local["sizes"]:
            naive, floor = ix.get((q, n, "naive")), ix.get((q, n, "floor"))
            for c in ORDER:
                r = ix.get((q, n, c))
                if r is None:
                    continue
                warm = r.get("wall_ms")
                reps = len(r.get("warm_ms") or [])
                cold = r.get("cold_wall_ms")
                cpu = r.get("cpu_ms")
                parts.append(
                    f"| {size_label(q, n)} | {LABEL[c]} | {ms(warm)}{f' (n={reps})' if reps else ''} | {ms(cpu)} | {ms(cold)} | "
                    f"{times(warm, naive.get('wall_ms') if naive else None) if c != 'naive' else '1'} | "
                    f"{times(warm, floor.get('wall_ms') if floor else None) if c != 'floor' else '1'} | "
                    f"{times(cpu, naive.get('cpu_ms') if naive else None) if c != 'naive' else '1'} | "
                    f"{times(cpu, floor.get('cpu_ms') if floor else None) if c != 'floor' else '1'} | "
                    f"{r.get('opens', '–'):,} | {r.get('listings', '–'):,} | {nbytes(r.get('bytes'))} | {nbytes(r.get('output_bytes'))} | "
                    f"{same(r, naive) if c != 'naive' else '–'} |"
                )
        parts.append("")
    return "\n".join(parts)


def targets(local: dict[str, Any]) -> list[str]:
    """The issue's targets for metaflow_agent, checked against this run's numbers."""
    ix = index(local)
    out = []
    big = [n for n in local["sizes"] if n >= 2000]
    for q, _, title in QUESTIONS:
        for n in big:
            o, nv, fl = ix.get((q, n, "ours")), ix.get((q, n, "naive")), ix.get((q, n, "floor"))
            if not (o and nv and fl) or o.get("wall_ms") is None or nv.get("wall_ms") is None or fl.get("wall_ms") is None:
                continue
            speed, over = nv["wall_ms"] / o["wall_ms"], o["wall_ms"] / fl["wall_ms"]
            ok = speed >= TARGET_SPEEDUP and over <= TARGET_FLOOR
            cpu = ""
            if o.get("cpu_ms") and nv.get("cpu_ms") and fl.get("cpu_ms"):
                cpu = f" (CPU time: {faster(nv['cpu_ms'], o['cpu_ms'])}, {times(o['cpu_ms'], fl['cpu_ms'])} the floor)"
            out.append(f"{title}, {size_label(q, n)}: {faster(nv['wall_ms'], o['wall_ms'])} than naive (target ≥ {TARGET_SPEEDUP:.0f}× faster), "
                       f"{times(o['wall_ms'], fl['wall_ms'])} the floor (target ≤ {TARGET_FLOOR:.0f}×){cpu}: {'met' if ok else 'NOT met'}")
    lo, hi = min(local["sizes"]), max(local["sizes"])
    for q in RUN_QUESTIONS if hi > lo else ():
        a, b = ix.get((q, lo, "ours")), ix.get((q, hi, "ours"))
        if not (a and b) or a.get("wall_ms") is None or b.get("wall_ms") is None:
            continue
        t, f = b["wall_ms"] / a["wall_ms"], (files(b) or 0) / max(files(a) or 1, 1)
        ok = f <= 1.5 and t <= 2.0
        out.append(f"{TITLE[q]}: from {lo:,} to {hi:,} runs of history metaflow_agent's time grows {t:.1f}× and its files "
                   f"{f:.1f}× (target: flat, the answer is one size): {'met' if ok else 'NOT met'}")
    for row in local.get("cli", []):
        if row["what"] == "metaflow-agent list-runs":
            ok = row["wall_ms"] < TARGET_CLI_MS and not row["rc"]
            out.append(f"cold CLI `metaflow-agent list-runs --status failed --limit 10 --json`, {row['size']:,} runs: {ms(row['wall_ms'])} "
                       f"(target < {TARGET_CLI_MS:.0f} ms): {'met' if ok else 'NOT met'}")
    return out


def cli_table(local: dict[str, Any]) -> str:
    ix = index(local)
    lines = ["| what (a fresh process each time) | runs in the flow | wall time (median) | each run | same answer as naive |", "|---|---:|---:|---|---|"]
    naive = {r["size"]: r for r in local.get("cli", []) if r["what"].startswith("naive")}
    for r in local.get("cli", []):
        agree = "–"
        if r.get("found") is not None and r["size"] in naive and not r["what"].startswith("naive"):
            agree = "yes" if r["found"] == naive[r["size"]].get("found") else "no"
        if r.get("rc"):
            agree = f"⚠ exit {r['rc']}: {str(r.get('error'))[:80]}"
        lines.append(f"| `{r['what']}` | {r['size'] or ''} | {ms(r['wall_ms'])} | {', '.join(f'{t:,.0f}' for t in r['runs_ms'])} ms | {agree} |")
    del ix
    return "\n".join(lines)


def section(local: dict[str, Any]) -> str:
    """The local section of REPORT.md."""
    w = local["worlds"]
    loads = [r.get("load") for r in local["rows"] if r.get("load") is not None]
    sizes = ", ".join(f"{n:,}" for n in local["sizes"])
    tw = next(v for k, v in w.items() if k.startswith("tasks-"))
    lines = [
        "## Local Metaflow at scale: naive vs metaflow_agent vs the peer vs the file-system floor",
        "",
        f"Local metadata and local datastore, at {sizes} tasks (one run: `start` → a foreach of N tasks, {tw['failed']} failing twice "
        f"under `@retry`, {tw['retried_ok']} failing then succeeding; `start` printed {tw['log_lines']:,} lines) and at {sizes} runs "
        "(`start → end`, ≈7 % with a failing `end`, ≈4 % killed before `end`, 40 minutes apart; the window holds "
        f"{next(v for k, v in w.items() if k.startswith('runs-'))['window_runs']} runs). The files are written by "
        "[`localworld.FastWriter`](../localworld.py), which each run first checks file for file against Metaflow's own writers "
        "(`LocalMetadataProvider` + `TaskDataStore`, the same synthetic clock).",
        "",
        "The **floor** ([`floor.py`](../floor.py)) is the least file-system work that answers each question: plain `os.scandir`/`open` "
        "of exactly the files needed, in Python, no Metaflow import (its process is checked), same answer. **warm**: the median of "
        f"up to {local['reps']} answers after one untimed answer (page cache warm); **cold**: the median of up to {local['cold_reps']} "
        "answers each after evicting the flow's files from the page cache with `POSIX_FADV_DONTNEED` (file data cold; the kernel's "
        "dentry and inode caches stay warm: dropping them needs root). Repetitions stop after "
        f"{local['budget_s']:.0f} s (at least one). Files and bytes come from one more answer under the audit-hook probe "
        "(`metaflow_agent.demo.fileprobe`): files opened for reading and directory listings under the root; bytes are exact for "
        "metaflow_agent (its meter) and the floor (its counter), size-at-open for the naive code and the peer (they read whole files). "
        "The Client's on-disk cache is emptied before every naive and peer answer. **CPU** is the answering process's user + system "
        "time: it leaves out the waits for a CPU that the shared machine's load adds to wall time.",
        "",
        f"Machine: shared, 2 CPUs; 1-minute load average while measuring {min(loads):.1f}–{max(loads):.1f} (other sessions' work): "
        "ratios within one size were measured minutes apart, contenders taking turns; absolute times are noisy." if loads else "",
        "",
        "### Targets (metaflow_agent)",
        "",
        *[f"- {t}" for t in targets(local)],
        "",
        "### Cold CLI",
        "",
        cli_table(local),
        "",
        "![local scaling](local_scaling.png)",
        "",
        tables(local),
    ]
    return "\n".join(lines)
