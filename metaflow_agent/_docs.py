"""A query function's docstring, parsed: the one source of its descriptions.

Docstrings follow the Google style: a first line (<= 12 words), a body
(bounds, cost), then an ``Args:`` section with one ``name: text`` entry per
parameter. The CLI help and the MCP tool schemas both read them from here,
so a parameter is described once, next to the code.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

_SECTION = "Args:"


@dataclass(frozen=True)
class FunctionDoc:
    """A docstring split into summary, body and per-parameter text."""

    summary: str
    body: str = ""
    params: dict[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """Summary and body, without the Args section."""
        return f"{self.summary}\n\n{self.body}" if self.body else self.summary


def parse_doc(doc: str | None) -> FunctionDoc:
    """Split a Google-style docstring; entries are `name: text`, continued by deeper indent."""
    lines = inspect.cleandoc(doc or "").splitlines()
    try:
        start = lines.index(_SECTION)
    except ValueError:
        start = len(lines)
    head, section = lines[:start], lines[start + 1 :]
    summary = head[0].strip() if head else ""
    body = "\n".join(head[1:]).strip()
    params: dict[str, str] = {}
    current: str | None = None
    indent: int | None = None
    for line in section:
        if not line.strip():
            current = None
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:  # a later section (Returns:, Raises:): not ours
            break
        if depth == indent:
            name, sep, text = line.strip().partition(":")
            if not sep or not name.isidentifier():
                raise ValueError(f"malformed Args entry {line.strip()!r}: expected 'name: text'")
            current = name
            params[name] = text.strip()
        elif current is not None:
            params[current] = f"{params[current]} {line.strip()}".strip()
    return FunctionDoc(summary=summary, body=body, params=params)


def function_doc(fn: Callable[..., Any]) -> FunctionDoc:
    """fn's parsed docstring; every parameter of its signature must be described."""
    doc = parse_doc(fn.__doc__)
    names = list(inspect.signature(fn).parameters)
    missing = [n for n in names if not doc.params.get(n)]
    extra = [n for n in doc.params if n not in names]
    if missing or extra:
        raise ValueError(f"{fn.__name__}: Args section out of step with the signature (missing {missing}, unknown {extra})")
    return doc
