"""Text and JSON forms of any result model, for the CLI and the demo.

Generic over the pydantic models: scalars as `key: value`, lists of models as
aligned tables, the cost last. JSON is compact (indentation doubles the tokens).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_CELL = 48  # table cells are cut here, except the last column
_BLOCKS_SHOWN = 1  # multi-line fields (tracebacks) printed under a table, for this many rows


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def format_cost(cost: Any) -> str:
    """One line: requests, reads, bytes, time."""
    c = cost.model_dump() if isinstance(cost, BaseModel) else dict(cost)
    parts = [f"{c['datastore_reads']} reads", _human_bytes(c["datastore_bytes"])]
    if c["metadata_requests"]:
        parts.append(f"{c['metadata_requests']} requests ({_human_bytes(c['metadata_bytes'])})")
    ms = c["elapsed_ms"]
    parts.append(f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms")
    return ", ".join(parts)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ("; " if any(isinstance(v, str) and " " in v for v in value) else ", ").join(_scalar(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_scalar(v)}" for k, v in value.items())
    return str(value)


def _empty(value: Any) -> bool:
    return value is None or value is False or value == "" or value == [] or value == {}


def _cut(text: str, width: int) -> str:
    text = text.replace("\n", "⏎ ")
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(rows: list[BaseModel]) -> list[str]:
    """Rows of one model as an aligned table; empty columns dropped, wide ones last and uncut."""
    data = [row.model_dump() for row in rows]
    names = [n for n in type(rows[0]).model_fields if not all(_empty(d[n]) for d in data)]
    multiline = [n for n in names if any(isinstance(d[n], str) and "\n" in d[n] for d in data)]
    columns = [n for n in names if n not in multiline]
    cells = {n: [_scalar(d[n]) if d[n] is not None else "-" for d in data] for n in columns}
    for n in columns:
        if n.startswith("sha"):  # 12 hex digits identify a value well enough on screen
            cells[n] = [c[:12] for c in cells[n]]
    # Natural order, except that columns too wide for a cell go last, where they are not cut.
    wide = [n for n in columns if max(len(c) for c in cells[n]) > _CELL]
    columns = [n for n in columns if n not in wide] + wide
    widths = {n: min(_CELL, max(len(n), *(len(c) for c in cells[n]))) for n in columns}
    out = []
    if columns:
        head = "  ".join(n.ljust(widths[n]) for n in columns[:-1]) + ("  " if len(columns) > 1 else "") + columns[-1]
        out.append(head)
        for i in range(len(data)):
            parts = [_cut(cells[n][i], widths[n]).ljust(widths[n]) for n in columns[:-1]]
            parts.append(cells[columns[-1]][i].replace("\n", "⏎ "))
            out.append("  ".join(parts).rstrip())
    label = names[0] if names else None
    for i, d in enumerate(data[:_BLOCKS_SHOWN]):
        for n in multiline:
            if d[n]:
                out.append(f"{n} of {d[label] if label else i}:")
                out += ["    " + line for line in d[n].splitlines()]
    if multiline and len(data) > _BLOCKS_SHOWN:
        out.append(f"({', '.join(multiline)} of {len(data) - _BLOCKS_SHOWN} more rows: use --json)")
    return out


def render_text(model: BaseModel) -> str:
    """A readable form of any result model: scalars as `key: value`, lists of models as tables, cost last."""
    scalars: list[tuple[str, str]] = []
    blocks: list[str] = []
    cls = type(model)
    own = getattr(cls, "__annotations__", {})
    # The model's own fields first, then the common page fields it inherits.
    for name in sorted(cls.model_fields, key=lambda n: n not in own):
        if name == "cost":
            continue
        value = getattr(model, name)
        if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            blocks.append(f"{name} ({len(value)}):")
            blocks += ["  " + line for line in render_table(value)]
        elif isinstance(value, list) and not value and name not in ("notes", "tags"):
            scalars.append((name, "none"))
        elif isinstance(value, BaseModel):
            scalars.append((name, _scalar({k: v for k, v in value.model_dump().items() if v is not None})))
        elif isinstance(value, dict) and value:
            blocks.append(f"{name}:")
            width = max(len(str(k)) for k in value)
            blocks += [f"  {str(k).ljust(width)}  {_scalar(v)}" for k, v in value.items()]
        elif isinstance(value, str) and "\n" in value:
            blocks.append(f"{name}:")
            blocks += ["  " + line for line in value.splitlines()]
        elif not _empty(value) or isinstance(value, bool):
            scalars.append((name, _scalar(value)))
    width = max((len(k) for k, _ in scalars), default=0)
    lines = [f"{k.ljust(width)}  {v}" for k, v in scalars] + blocks
    if "cost" in type(model).model_fields:
        lines.append(f"cost: {format_cost(getattr(model, 'cost'))}")
    return "\n".join(lines)


def to_json(model: BaseModel) -> str:
    """Compact JSON (indentation doubles the tokens an agent reads)."""
    return model.model_dump_json()
