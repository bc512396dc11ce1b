"""Fit any result model into an output budget (bytes of compact JSON).

Generic over the pydantic models: it reads their fields, not their names.
In order, until the answer fits:

1. cut the main list (every top-level ``list[Model]`` field, taken as one
   sequence) from the end — or from the start when ``keep_end`` (a log tail) —
   keeping as many items as fit and at least one; set ``truncated`` and
   ``next_cursor`` (from ``cursor_for``) when the model has them;
2. clip long strings in the middle, keeping both ends, to the largest length
   that fits (never ``next_cursor``);
3. halve the largest free-form list or dict (never a model), again and again;
4. give up with `Overflow` (the caller turns it into a tool error).

Whatever was cut is said in ``notes`` (when the model has it) and flagged by
``truncated``. The result still validates against the model.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from types import UnionType
from typing import Any, Callable, Union, get_args, get_origin

from pydantic import BaseModel

DEFAULT_BUDGET = 16 * 1024
MIN_BUDGET = 1024
_FLOOR = 64  # strings are first clipped no shorter than this
_LAST_FLOOR = 16
_PROTECTED = frozenset({"next_cursor"})  # clipping a cursor would break resumption


class Overflow(Exception):
    """The answer cannot be made to fit the budget."""


@dataclass
class Fit:
    """A result that fits: its JSON data, the compact text, and what was cut."""

    data: dict[str, Any]
    text: str
    kept: int | None = None  # items of the main list kept, when it was cut
    total: int | None = None  # items it had


def dumps(data: Any) -> str:
    """Compact JSON, the form every tool answer takes."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def size(data: Any) -> int:
    return len(dumps(data).encode("utf-8"))


def list_fields(model: type[BaseModel]) -> list[str]:
    """Top-level fields holding a list of models: the model's main list."""
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if get_origin(ann) is list:
            (item,) = get_args(ann) or (None,)
            if isinstance(item, type) and issubclass(item, BaseModel):
                out.append(name)
    return out


def fit(
    model: type[BaseModel],
    data: dict[str, Any],
    budget: int,
    *,
    cursor_for: Callable[[int], str | None] | None = None,
    less: Callable[[int], str] | None = None,
    keep_end: bool = False,
    allow_cut: bool = True,
    said: str | None = None,
) -> Fit:
    """Shrink `data` (a dump of `model`) until its compact JSON is at most `budget` bytes.

    cursor_for(kept) gives the cursor resuming right after the kept items, or
    None when unknown; less(kept) says how to ask for less when there is no cursor;
    `said` is a fragment of the budget note the caller already owes (it marks the
    answer truncated).
    """
    doc = _Doc(model, data, budget)
    if said:
        doc.done["said"] = said
    if doc.fits():
        return doc.result()
    if allow_cut:
        doc.cut_lists(cursor_for, less, keep_end)
        if doc.fits():
            return doc.result()
    doc.clip_strings()
    while not doc.fits() and doc.halve_largest():
        doc.clip_strings()
    if not doc.fits():
        doc.clip_strings(floor=_LAST_FLOOR)
    if not doc.fits():
        doc.terse = True  # the short note: "budget N B: cut"
    if not doc.fits():
        raise Overflow(f"answer does not fit the output budget of {budget} bytes even after shrinking")
    return doc.result()


class _Doc:
    """The data being shrunk, plus what was done to it (rendered into notes)."""

    def __init__(self, model: type[BaseModel], data: dict[str, Any], budget: int) -> None:
        self.fields = model.model_fields
        self.data = data
        self.budget = budget
        self.lists = list_fields(model)
        self.done: dict[str, str] = {}  # phase -> note fragment
        self.keep_end = False
        self.terse = False
        self.kept: int | None = None
        self.total: int | None = None
        self.copied = False

    # -- rendering -------------------------------------------------------------
    def render(self, data: dict[str, Any] | None = None) -> dict[str, Any]:
        out = dict(self.data if data is None else data)
        if self.done:
            if "truncated" in self.fields:
                out["truncated"] = True
            if "notes" in self.fields:
                said = "cut" if self.terse else "; ".join(self.done.values())
                note = f"output budget {self.budget} B: {said}"
                out["notes"] = [*out.get("notes", []), note]
        return out

    def fits(self, data: dict[str, Any] | None = None) -> bool:
        return size(self.render(data)) <= self.budget

    def result(self) -> Fit:
        rendered = self.render()
        return Fit(rendered, dumps(rendered), self.kept, self.total)

    # -- 1. the main list ------------------------------------------------------
    def _with_items(self, k: int, cursor_for: Callable[[int], str | None] | None) -> dict[str, Any]:
        """The data keeping k items of the main list (taken across its fields in order)."""
        out = dict(self.data)
        left = k
        order = reversed(self.lists) if self.keep_end else self.lists
        for name in order:
            items = self.data.get(name) or []
            take = min(left, len(items))
            out[name] = (items[len(items) - take :] if take else []) if self.keep_end else items[:take]
            left -= take
        if "next_cursor" in self.fields:
            out["next_cursor"] = cursor_for(k) if cursor_for else None
        return out

    def cut_lists(
        self, cursor_for: Callable[[int], str | None] | None, less: Callable[[int], str] | None, keep_end: bool
    ) -> None:
        self.keep_end = keep_end
        total = sum(len(self.data.get(name) or []) for name in self.lists)
        if total == 0:
            return
        label = "/".join(self.lists)

        def note(k: int) -> str:
            text = f"kept {'the last ' if keep_end else ''}{k} of {total} {label}"
            if cursor_for and cursor_for(k):
                return text + "; next_cursor resumes after them"
            return text + ("; " + less(k) if less else "")

        def trial(k: int) -> dict[str, Any]:
            self.done["lists"] = note(k)
            return self._with_items(k, cursor_for)

        lo, hi = 1, total  # keep at least one item: an empty page would not advance a cursor
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.fits(trial(mid)):
                lo = mid
            else:
                hi = mid - 1
        if lo == total:
            # Nothing to drop (one item that is itself too large): leave the list whole.
            self.done.pop("lists", None)
            return
        self.data = trial(lo)
        self.kept, self.total = lo, total

    # -- 2. long strings -------------------------------------------------------
    def clip_strings(self, floor: int = _FLOOR) -> None:
        longest = _longest(self.data)
        if longest <= floor:
            return
        if self.fits():
            return
        lo, hi = floor, longest - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            self.done["strings"] = f"strings cut to {mid} chars"
            if self.fits(_clip(self.data, mid)):
                lo = mid
            else:
                hi = mid - 1
        self.done["strings"] = f"strings cut to {lo} chars"
        self.data = _clip(self.data, lo)

    # -- 3. nested containers --------------------------------------------------
    def halve_largest(self) -> bool:
        """Halve the largest free-form list or dict (not a model, not the main list).

        Returns False when there is nothing left to halve.
        """
        if not self.copied:
            self.data, self.copied = copy.deepcopy(self.data), True
        found: list[Any] = []
        for name, field in self.fields.items():
            if name in self.data:  # notes too: the budget note is added when rendering
                _free(self.data[name], field.annotation, found, top=name not in self.lists)
        found = [node for node in found if len(node) > 0]
        if not found:
            return False
        node = max(found, key=size)
        keep = len(node) // 2
        if isinstance(node, list):
            del node[keep:]
        else:
            for key in list(node)[keep:]:
                del node[key]
        self.done["nested"] = "nested lists shortened"
        return True


def _longest(value: Any, key: str | None = None) -> int:
    if isinstance(value, str):
        return 0 if key in _PROTECTED else len(value)
    if isinstance(value, dict):
        return max((_longest(v, k) for k, v in value.items()), default=0)
    if isinstance(value, list):
        return max((_longest(v) for v in value), default=0)
    return 0


def _clip(value: Any, cap: int, key: str | None = None) -> Any:
    """A copy of value with every string longer than cap cut and marked."""
    if isinstance(value, str):
        if key in _PROTECTED or len(value) <= cap:
            return value
        head = cap - cap // 3  # keep both ends: a traceback's point is its last line
        return value[:head] + f"…[{len(value) - cap} chars cut]…" + value[len(value) - (cap - head):]
    if isinstance(value, dict):
        return {k: _clip(v, cap, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip(v, cap) for v in value]
    return value


def _free(value: Any, ann: Any, out: list[Any], *, top: bool = True) -> None:
    """Collect the lists and dicts inside value that any length keeps valid for `ann`."""
    args = [a for a in get_args(ann) if a is not type(None)]
    if get_origin(ann) in (Union, UnionType) and len(args) == 1:
        ann = args[0]
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        if isinstance(value, dict):
            for name, field in ann.model_fields.items():
                if name in value:
                    _free(value[name], field.annotation, out)
        return
    origin = get_origin(ann)
    if isinstance(value, list) and (origin is list or ann is Any):
        if top:
            out.append(value)
        item = get_args(ann)[0] if origin is list else Any
        for v in value:
            _free(v, item, out)
    elif isinstance(value, dict) and (origin is dict or ann is Any):
        if top:
            out.append(value)
        item = get_args(ann)[1] if origin is dict else Any
        for v in value.values():
            _free(v, item, out)
