"""The benchmark's figures: every question, requests (or files) and wall time, every contender.

    benchmark.png / .svg       one row of panels per backend: service (master, then 2.5.1) and local
    local_scaling.png / .svg   local Metaflow: wall time against 200 / 2,000 / 20,000 tasks or runs
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import localreport as lr
from .localcases import QUESTIONS as LOCAL_QUESTIONS
from .usecases import USE_CASES

PEER_NOTE = ("peer = metaflow-mcp-server 0.5.0 (PyPI), a community MCP server that answers agents through the Metaflow Client API; "
             "floor = the least file-system work that gives the same answer (plain Python, no Metaflow)")
COLOR = {"naive": "#d62728", "ours": "#2ca02c", "peer": "#1f77b4", "floor": "#7f7f7f"}
LABEL = {"naive": "naive Client API code", "ours": "metaflow_agent", "peer": "peer: metaflow-mcp-server 0.5.0", "floor": "floor (file system)"}
SHORT = {
    "failed_tasks": "failed tasks of a run",
    "run_summary": "run summary",
    "latest_failed_runs": "10 latest failed runs",
    "runs_in_range": "runs in a time window",
    "artifact_search": "artifact search, 10 latest runs",
    "log_tail": "last 50 lines of a log",
    "artifact_metadata": "artifact names, sizes, types",
}
FLOOR_VALUE = 0.5  # where a zero is drawn on a log axis (labelled "0")


def _fmt_count(v: float) -> str:
    return f"{int(v):,}"


def _bars(ax: Any, groups: list[tuple[str, dict[str, float | None], dict[str, str]]], contenders: list[str], fmt: Any, xlabel: str,
          show_labels: bool) -> None:
    """Horizontal grouped bars on a log axis, each labelled with its value (and a mark when its answer differs)."""
    import matplotlib.ticker as mt

    h = 0.8 / len(contenders)
    vmax = max((v for _, vals, _ in groups for v in vals.values() if v), default=1.0)
    vmin = min((v for _, vals, _ in groups for v in vals.values() if v), default=1.0)
    for gi, (_, vals, marks) in enumerate(groups):
        for ci, c in enumerate(contenders):
            y = gi + (ci - (len(contenders) - 1) / 2) * h
            v = vals.get(c)
            if v is None:
                ax.text(max(vmin / 2, FLOOR_VALUE), y, "not measured", va="center", fontsize=7, color="#999999")
                continue
            shown = v if v > 0 else FLOOR_VALUE
            ax.barh(y, shown, height=h * 0.9, color=COLOR[c], left=None)
            ax.text(shown * 1.12, y, (fmt(v) if v > 0 else "0") + marks.get(c, ""), va="center", fontsize=7.5, color="#222222")
    ax.set_xscale("log")
    left = min(FLOOR_VALUE, vmin / 2) if any(v == 0 for _, vals, _ in groups for v in vals.values() if v is not None) else vmin / 2
    ax.set_xlim(left, vmax * 60)  # room for the value labels
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels([g[0] for g in groups] if show_labels else [""] * len(groups), fontsize=8.5)
    ax.set_xlabel(xlabel, fontsize=8.5)
    ax.xaxis.set_major_locator(mt.LogLocator(base=10, numticks=12))
    ax.xaxis.set_minor_locator(mt.NullLocator())
    ax.xaxis.set_major_formatter(mt.FuncFormatter(lambda v, _: _tick(v, fmt is _ms)))
    ax.tick_params(axis="x", labelsize=7.5)
    ax.grid(True, axis="x", which="major", alpha=0.25)
    for y in range(len(groups) - 1):
        ax.axhline(y + 0.5, color="#dddddd", linewidth=0.6)


def _service_groups(results: list[dict[str, Any]], backend: str, key: str) -> tuple[list[tuple[str, dict, dict]], list[str]]:
    from .report import _headline_sizes, index

    ix = index(results)
    sizes = _headline_sizes(results)
    contenders = [c for c in ("naive", "ours", "peer") if any(r["contender"] == c and r["backend"] == backend for r in results)]
    groups = []
    for uc, _ in USE_CASES:
        if uc not in sizes:
            continue
        rows = {c: ix.get((backend, uc, sizes[uc], c)) for c in contenders}
        naive = rows.get("naive")
        vals: dict[str, float | None] = {}
        marks: dict[str, str] = {}
        for c, r in rows.items():
            if r is None or "requests" not in r:
                vals[c] = None
                continue
            vals[c] = float(r["requests"] if key == "requests" else r["wall_ms"])
            if c != "naive" and naive and "found" in naive and sorted(map(str, r.get("found") or [])) != sorted(map(str, naive.get("found") or [])):
                marks[c] = "  ≠"
        groups.append((f"{SHORT.get(uc, uc)}\n({_size_text(sizes[uc])})", vals, marks))
    return groups, contenders


def _size_text(size: str) -> str:
    """'width=1000' → 'a foreach of 1,000 tasks'; 'runs=2000' → '2,000 runs'; 'log=35.5 MB' → '35.5 MB log'."""
    kind, _, value = size.partition("=")
    if kind == "width":
        return f"a foreach of {int(value):,} tasks"
    if kind == "runs":
        return f"{int(value):,} runs"
    return f"{value} {kind}" if kind in ("log", "artifact") else size


def _local_groups(local: dict[str, Any], key: str) -> tuple[list[tuple[str, dict, dict]], list[str], int]:
    ix = lr.index(local)
    n = max(local["sizes"])
    contenders = [c for c in ("naive", "ours", "peer", "floor") if any(r["contender"] == c for r in local["rows"])]
    groups = []
    for q, kind, _ in LOCAL_QUESTIONS:
        naive = ix.get((q, n, "naive"))
        vals: dict[str, float | None] = {}
        marks: dict[str, str] = {}
        for c in contenders:
            r = ix.get((q, n, c))
            if r is None or r.get("wall_ms") is None:
                vals[c] = None
                continue
            vals[c] = float(lr.files(r) or 0) if key == "files" else float(r["wall_ms"])
            if c != "naive" and naive and r.get("found") != naive.get("found"):
                marks[c] = "  ≠"
        label = f"{SHORT[q]}\n({n:,} {kind}" + (", 4.7 MB log)" if q == "log_tail" else ")")
        groups.append((label, vals, marks))
    return groups, contenders, n


def _ms(v: float) -> str:
    return lr.ms(v)


def _tick(v: float, is_time: bool) -> str:
    """Axis ticks a newcomer reads: 1 · 10 · 1,000 · 100k, or 1 ms · 100 ms · 10 s."""
    if is_time:
        return f"{v / 1000:g} s" if v >= 1000 else f"{v:g} ms"
    if v >= 1_000_000:
        return f"{v / 1_000_000:g}M"
    return f"{v / 1000:g}k" if v >= 10_000 else f"{v:,.0f}" if v >= 1 else f"{v:g}"


def _header(fig: Any, handles: list[Any], height_in: float) -> float:
    """Legend and the peer's description above the panels; the panels' top as a figure fraction."""
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=9, frameon=False, bbox_to_anchor=(0.5, 1 - 0.05 / height_in))
    fig.text(0.5, 1 - 0.5 / height_in, PEER_NOTE, ha="center", va="center", fontsize=8, color="#444444")
    return 1 - 0.8 / height_in


def overview(out: Path, results: list[dict[str, Any]], local: dict[str, Any] | None) -> list[str]:
    """benchmark.png/.svg: requests (files) and wall time for every question and contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = []
    if any(r["backend"] == "master" for r in results):
        rows.append("service")
    if local and local.get("rows"):
        rows.append("local")
    if not rows:
        return []
    heights = []
    for kind in rows:
        nq = len(USE_CASES) if kind == "service" else len(LOCAL_QUESTIONS)
        heights.append(0.62 * nq + 0.9)
    fig, axes = plt.subplots(len(rows), 3, figsize=(17, sum(heights) + 1.4), squeeze=False,
                             gridspec_kw={"height_ratios": heights, "width_ratios": [1, 1, 1]})
    used: set[str] = set()
    for ri, kind in enumerate(rows):
        if kind == "service":
            panels = [("requests", "master", "metadata requests (service, master)", _fmt_count),
                      ("requests", "release", "metadata requests (service, released 2.5.1)", _fmt_count),
                      ("wall", "master", "wall time (service, master; local datastore)", _ms)]
            for pi, (key, backend, xlabel, fmt) in enumerate(panels):
                groups, cs = _service_groups(results, backend, key)
                used.update(cs)
                _bars(axes[ri][pi], groups, cs, fmt, xlabel, show_labels=pi == 0)
            axes[ri][0].set_title("Metadata service (test double on 127.0.0.1), largest size measured", loc="left", fontsize=10, fontweight="bold")
        else:
            assert local is not None
            lx = lr.index(local)
            groups_f, cs, n = _local_groups(local, "files")
            groups_t, _, _ = _local_groups(local, "wall")
            used.update(cs)
            _bars(axes[ri][0], groups_f, cs, _fmt_count, "files opened + folders listed (local)", show_labels=True)
            _bars(axes[ri][1], groups_t, cs, _ms, "wall time, warm page cache (local)", show_labels=False)
            cold = [(g, {c: (lx.get((q, n, c)) or {}).get("cold_wall_ms") for c in cs}, m)
                    for (g, _, m), (q, _, _) in zip(groups_t, LOCAL_QUESTIONS)]
            _bars(axes[ri][2], cold, cs, _ms, "wall time, file data evicted from the page cache (local)", show_labels=False)
            axes[ri][0].set_title(f"Local Metaflow (local metadata + datastore), {n:,} tasks or runs", loc="left", fontsize=10, fontweight="bold")
    handles = [Patch(color=COLOR[c], label=LABEL[c]) for c in ("naive", "ours", "peer", "floor") if c in used]
    height = fig.get_size_inches()[1]
    top = _header(fig, handles, height)
    fig.text(0.5, 0.12 / height, "Log scales; each bar is labelled with its value. ≠ marks an answer that differs from the naive code's "
             "(the peer's failure tests never match a task or run that raised).", ha="center", va="center", fontsize=8, color="#444444")
    fig.tight_layout(rect=(0, 0.3 / height, 1, top))
    fig.savefig(out / "benchmark.png", dpi=110)
    fig.savefig(out / "benchmark.svg")
    plt.close(fig)
    return ["benchmark.png", "benchmark.svg"]


def local_scaling(out: Path, local: dict[str, Any] | None) -> list[str]:
    """local_scaling.png/.svg: warm wall time against history size, one panel per question."""
    if not local or not local.get("rows"):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker as mt
    from matplotlib.lines import Line2D

    ix = lr.index(local)
    sizes = local["sizes"]
    contenders = [c for c in ("naive", "ours", "peer", "floor") if any(r["contender"] == c for r in local["rows"])]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.2), squeeze=False)
    marker = {"naive": "o", "ours": "s", "peer": "^", "floor": "D"}
    for ax, (q, kind, title) in zip([a for row in axes for a in row], LOCAL_QUESTIONS):
        ends = []
        values: list[float] = []
        for c in contenders:
            pts = [(n, ix[(q, n, c)]["wall_ms"]) for n in sizes if (q, n, c) in ix and ix[(q, n, c)].get("wall_ms")]
            if not pts:
                continue
            values += [p[1] for p in pts]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker[c], color=COLOR[c], linewidth=1.6, markersize=5)
            ends.append((pts[-1][1], c))
        # Labels at the right end, nudged apart so none overlaps (log spacing).
        ends.sort()
        placed: list[float] = []
        for v, c in ends:
            y = v
            for p in placed:
                if y < p * 1.9:
                    y = p * 1.9
            placed.append(y)
            ax.annotate(lr.ms(v), (sizes[-1], v), xytext=(sizes[-1] * 1.6, y), fontsize=7.5, color=COLOR[c], va="center",
                        arrowprops={"arrowstyle": "-", "color": COLOR[c], "lw": 0.5} if y != v else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_locator(mt.NullLocator())
        ax.yaxis.set_minor_locator(mt.NullLocator())
        ax.yaxis.set_major_formatter(mt.FuncFormatter(lambda v, _: _tick(v, True)))
        ax.set_xlim(sizes[0] / 1.6, sizes[-1] * 9)
        lo = min(values) if values else 1
        hi = max(placed + values) if values else 10
        ax.set_ylim(lo / 3, hi * 3)
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{n:,}" for n in sizes], fontsize=8)
        ax.set_xlabel(f"{kind} in the {'run' if kind == 'tasks' else 'flow'}", fontsize=8.5)
        ax.set_ylabel("wall time (warm)", fontsize=8.5)
        ax.set_title(title, fontsize=9.5)
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(axis="y", labelsize=7.5)
    handles = [Line2D([], [], color=COLOR[c], marker=marker[c], label=LABEL[c]) for c in contenders]
    fig.tight_layout(rect=(0, 0, 1, _header(fig, handles, fig.get_size_inches()[1])))
    fig.savefig(out / "local_scaling.png", dpi=110)
    fig.savefig(out / "local_scaling.svg")
    plt.close(fig)
    return ["local_scaling.png", "local_scaling.svg"]
