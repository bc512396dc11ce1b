"""`Pathspec`: a parsed 'Flow[/Run[/Step[/Task]]]', carried from the entry point to the file read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from ._errors import BadPathspec, NotFound, PathEscape

Kind = Literal["flow", "run", "step", "task"]
_KINDS: tuple[Kind, ...] = ("flow", "run", "step", "task")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_ID = re.compile(r"[A-Za-z0-9_\-.:]{1,255}")
_EXAMPLE = {"flow": "MyFlow", "run": "MyFlow/12", "step": "MyFlow/12/train", "task": "MyFlow/12/train/345"}


@dataclass(frozen=True)
class Pathspec:
    """A flow, run, step or task, by its parts ("" below the level it names).

    `str(ps)` is the pathspec and also the object's path under a datastore root.
    """

    flow: str
    run: str = ""
    step: str = ""
    task: str = ""

    @classmethod
    def parse(cls, value: Any, kind: Kind) -> Pathspec:
        """Parse a pathspec that must name exactly a `kind`; BadPathspec with the expected form otherwise."""
        want = _KINDS.index(kind) + 1
        hint = f"use the form '{_EXAMPLE[kind]}'"
        if not isinstance(value, str) or not value.strip():
            raise BadPathspec(f"expected a {kind} pathspec, got {_short(value)}", hint=hint)
        parts = value.strip().strip("/").split("/")
        if len(parts) != want:
            raise BadPathspec(f"{_short(value)} is not a {kind} pathspec ({len(parts)} parts, expected {want})", hint=hint)
        rules = (("flow name", _NAME), ("run id", _ID), ("step name", _NAME), ("task id", _ID))
        for part, (label, rx) in zip(parts, rules):
            if part in (".", ".."):
                raise PathEscape(f"{_short(value)} leaves the datastore root", hint="use pathspecs, not file paths")
            if not rx.fullmatch(part):
                extra = "flow names are Python class names, e.g. 'MyFlow'" if label == "flow name" else hint
                raise BadPathspec(f"{_short(part)} is not a valid {label}", hint=extra)
        return cls(*parts)

    @property
    def kind(self) -> Kind:
        return "task" if self.task else "step" if self.step else "run" if self.run else "flow"

    @property
    def flow_ps(self) -> Pathspec:
        return Pathspec(self.flow)

    @property
    def run_ps(self) -> Pathspec:
        return Pathspec(self.flow, self.run)

    @property
    def step_ps(self) -> Pathspec:
        return Pathspec(self.flow, self.run, self.step)

    def child(self, name: str) -> Pathspec:
        """The object one level down (a run of a flow, a step of a run, a task of a step)."""
        if self.step:
            return Pathspec(self.flow, self.run, self.step, name)
        if self.run:
            return Pathspec(self.flow, self.run, name)
        return Pathspec(self.flow, name)

    def __str__(self) -> str:
        if self.task:
            return f"{self.flow}/{self.run}/{self.step}/{self.task}"
        if self.step:
            return f"{self.flow}/{self.run}/{self.step}"
        return f"{self.flow}/{self.run}" if self.run else self.flow


def _short(value: Any, limit: int = 80) -> str:
    """A bounded repr of caller input for messages (input can be huge)."""
    text = repr(value) if not isinstance(value, str) else repr(value[: limit + 1])
    return text if len(text) <= limit else text[:limit] + "…"


_NEXT_STEP = {
    "flow": "check the flow name's capitalisation; list_runs needs a flow that has run",
    "run": "list_runs(flow='{flow}') shows recent runs",
    "step": "run_summary(run='{run}') lists the steps",
    "task": "failed_tasks(run='{run}') or run_summary list its tasks",
}


def not_found(ps: Pathspec, where: str = "") -> NotFound:
    """The NotFound error for a missing flow, run, step or task, with the call that lists its siblings."""
    kind = ps.kind
    name = repr(ps.flow) if kind == "flow" else str(ps)
    hint = _NEXT_STEP[kind].format(flow=ps.flow, run=ps.run_ps)
    return NotFound(f"{kind} {name} not found" + (f" {where}" if where else ""), hint=hint)
