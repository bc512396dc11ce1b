"""`python -m audit`: trace every question, write audit/traces.json, regenerate the README's tables.

Only the parts of audit/README.md between `<!-- BEGIN GENERATED: x -->` and
`<!-- END GENERATED: x -->` are rewritten; the prose around them is kept.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODE_LABEL = {"master": "master", "release": "2.5.1"}
DIM_LABEL = {"runs": "runs in the flow", "tasks": "tasks in the foreach", "steps": "steps (2 tasks each)",
             "attempts": "attempts of the failed task", "log_lines": "lines in the log", "artifact_bytes": "bytes of the large artifact"}


def _fmt(n: int) -> str:
    return f"{n:,}"


def route_table(traces: list[dict[str, Any]], usecase: str, dimension: str) -> str:
    rows = [t for t in traces if t["usecase"] == usecase and t["dimension"] == dimension]
    sizes = sorted({t["size"] for t in rows})
    lines = ["| who | service | request / datastore read | " + " | ".join(_fmt(s) for s in sizes) + " |",
             "|---|---|---|" + "---:|" * len(sizes)]
    for contender in ("naive", "ours"):
        per_mode = {m: {t["size"]: t for t in rows if t["contender"] == contender and t["mode"] == m} for m in ("master", "release")}

        def signature(m: str) -> Any:
            return [(t["requests_by_route"] and {k: v[0] for k, v in t["requests_by_route"].items()},
                     {k: v[0] for k, v in t["reads_by_file"].items()}) for _, t in sorted(per_mode[m].items())]

        modes = ["both"] if signature("master") == signature("release") else ["master", "release"]
        for m in modes:
            src = per_mode["master" if m == "both" else m]
            label = "both" if m == "both" else MODE_LABEL[m]
            who = "naive Client" if contender == "naive" else "metaflow_agent"
            routes = sorted({r for t in src.values() for r in t["requests_by_route"]})
            for r in routes:
                cells = [_fmt(src[s]["requests_by_route"].get(r, [0])[0]) if s in src else "–" for s in sizes]
                lines.append(f"| {who} | {label} | `{r}` | " + " | ".join(cells) + " |")
            lines.append(f"| {who} | {label} | **requests** | " + " | ".join(f"**{_fmt(src[s]['requests'])}**" for s in sizes) + " |")
            files = sorted({f for t in src.values() for f in t["reads_by_file"]})
            for f in files:
                cells = [_fmt(src[s]["reads_by_file"].get(f, [0])[0]) if s in src else "–" for s in sizes]
                lines.append(f"| {who} | {label} | datastore `{f}` | " + " | ".join(cells) + " |")
            lines.append(f"| {who} | {label} | **datastore bytes** | " + " | ".join(_bytes(src[s]["bytes_read"]) for s in sizes) + " |")
    return "\n".join(lines)


def _bytes(n: int) -> str:
    for unit, div in (("MB", 1e6), ("KB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def summary_table(traces: list[dict[str, Any]]) -> str:
    from .trace import PLAN

    lines = ["| question | grows with | sizes | naive requests<br>master · 2.5.1 | metaflow_agent requests<br>master · 2.5.1 "
             "| naive datastore bytes | metaflow_agent datastore bytes |", "|---|---|---|---|---|---|---|"]
    for usecase, dim in PLAN:
        rows = [t for t in traces if t["usecase"] == usecase and t["dimension"] == dim]
        sizes = sorted({t["size"] for t in rows})

        def series(contender: str, mode: str, key: str = "requests") -> str:
            by = {t["size"]: t[key] for t in rows if t["contender"] == contender and t["mode"] == mode}
            return " → ".join(_fmt(by[s]) if key == "requests" else _bytes(by[s]) for s in sizes)

        lines.append(f"| `{usecase}` | {DIM_LABEL[dim]} | {' → '.join(_fmt(s) for s in sizes)} | {series('naive', 'master')} · "
                     f"{series('naive', 'release')} | {series('ours', 'master')} · {series('ours', 'release')} | "
                     f"{series('naive', 'master', 'bytes_read')} | {series('ours', 'master', 'bytes_read')} |")
    return "\n".join(lines)


def code_block(usecase: str) -> str:
    from benchmarks import usecases

    fn = getattr(usecases, f"naive_{usecase}")
    return "```python\n" + inspect.getsource(fn).rstrip() + "\n```"


def regenerate(readme: Path, traces: list[dict[str, Any]]) -> None:
    from .trace import PLAN

    text = readme.read_text()
    blocks: dict[str, str] = {"summary": summary_table(traces)}
    for usecase, dim in PLAN:
        blocks[f"trace:{usecase}:{dim}"] = route_table(traces, usecase, dim)
        blocks[f"code:{usecase}"] = code_block(usecase)

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in blocks:
            return m.group(0)
        return f"<!-- BEGIN GENERATED: {name} -->\n{blocks[name]}\n<!-- END GENERATED: {name} -->"

    new = re.sub(r"<!-- BEGIN GENERATED: (\S+) -->.*?<!-- END GENERATED: \1 -->", sub, text, flags=re.S)
    readme.write_text(new)


def main() -> int:
    os.environ.setdefault("USER", "bench")
    os.environ.setdefault("METAFLOW_USER", os.environ["USER"])
    sys.path.insert(0, str(REPO))
    from .trace import MODES, SIZES, service_world, trace

    t0 = time.perf_counter()
    print("audit: registering the data set on a service double on 127.0.0.1 ...", file=sys.stderr, flush=True)
    with service_world() as world:
        print(f"data set registered on the double in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        traces = trace(world)
    import metaflow

    out = {
        "generated_by": "python -m audit",
        "metaflow": metaflow.__version__,
        "modes": list(MODES),
        "sizes": SIZES,
        "traces": traces,
    }
    (HERE / "traces.json").write_text(json.dumps(out, indent=1))
    regenerate(HERE / "README.md", traces)
    print(f"{len(traces)} traces in {time.perf_counter() - t0:.0f} s: audit/traces.json, audit/README.md tables", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
