"""User patterns in linear time: RE2 regexes, globs, and log lines cut to a cap.

Python's `re` backtracks: `(a+)+$` on a long line never ends, and the work
holds the GIL. RE2 (google-re2) matches in time linear in the text, so a
pattern from a caller cannot freeze anything. What RE2 does not support
(backreferences, lookaround, atomic groups) is refused with a hint that says
what to write instead. `fnmatch` translates globs to a backtracking regex
too, so globs are translated to RE2 here.

Lines are matched on at most `LINE_CHARS` characters, and `LineCutter` splits
a byte stream into lines without ever holding more than the cap of one line,
so a log with no newlines costs linear time, not quadratic.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock
from typing import Any

import re2

from ._errors import BadPattern

MAX_PATTERN = 1000  # characters in a regex
MAX_GLOB = 200  # characters in a glob
LINE_CHARS = 64 * 1024  # a line is matched on at most this many characters
CACHE_SIZE = 64  # compiled patterns kept
_MAX_MEM = 8 << 20  # RE2's program memory per pattern (its own default)

_HINTS = (
    ("invalid escape sequence: \\1", "RE2 has no backreferences (\\1 ... \\9); match the line, then compare in code"),
    ("invalid escape sequence: \\", "that escape is not supported by RE2 (\\Z: use \\z or $; backreferences: none)"),
    ("(?=", "RE2 has no lookahead; match more of the line instead, e.g. 'Error: (.*)'"),
    ("(?!", "RE2 has no negative lookahead; grep for the wider pattern and filter the lines"),
    ("(?<", "RE2 has no lookbehind; include the preceding text in the pattern"),
    ("(?P=", "RE2 has no named backreferences; match the line, then compare in code"),
    ("(?>", "RE2 has no atomic groups; drop the (?>...) wrapper: RE2 never backtracks anyway"),
    ("(?#", "RE2 has no (?#...) comments; remove them"),
    ("bad repetition operator", "RE2 has no possessive quantifiers (a++, a*+); use a+ or a*: RE2 never backtracks anyway"),
    ("invalid repetition size", "RE2 allows repetition counts up to 1000, e.g. a{1,1000}"),
    ("missing )", "unbalanced parentheses: close every ( or escape it as \\("),
    ("unexpected )", "unbalanced parentheses: escape a literal ) as \\)"),
    ("missing ]", "unterminated character class: close it with ] or escape [ as \\["),
    ("pattern too large", "the pattern compiles to too large a program; use a simpler pattern"),
)


def _hint(message: str) -> str:
    for needle, hint in _HINTS:
        if needle in message:
            return hint
    return "use RE2 syntax (Python's re without backreferences or lookaround); escape literal text with \\"


@dataclass(frozen=True)
class Pattern:
    """A compiled user regex: `search(line)` looks at the first LINE_CHARS characters."""

    text: str
    regex: Any  # re2._Regexp

    def search(self, line: str) -> bool:
        return self.regex.search(line if len(line) <= LINE_CHARS else line[:LINE_CHARS]) is not None


_cache: OrderedDict[tuple[str, bool], Pattern] = OrderedDict()
_lock = Lock()


def _options(ignore_case: bool) -> Any:
    opts = re2.Options()
    opts.log_errors = False  # RE2 would print every parse error on stderr
    opts.max_mem = _MAX_MEM
    opts.case_sensitive = not ignore_case
    return opts


def compile_pattern(pattern: Any, *, what: str = "grep", ignore_case: bool = False) -> Pattern:
    """Compile a user regex with RE2; BadPattern (with what to write instead) when it cannot be."""
    if not isinstance(pattern, str) or not pattern:
        raise BadPattern(f"{what} pattern must be a non-empty string, got {type(pattern).__name__}", hint="pass a regular expression, e.g. 'Error|Traceback'")
    if len(pattern) > MAX_PATTERN:
        raise BadPattern(f"{what} pattern is {len(pattern)} characters, over the {MAX_PATTERN}-character cap", hint="use a shorter pattern")
    if "\x00" in pattern:
        raise BadPattern(f"{what} pattern contains a NUL character", hint="remove it, or write \\x00")
    key = (pattern, ignore_case)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    try:
        compiled = Pattern(pattern, re2.compile(pattern, _options(ignore_case)))
    except re2.error as exc:
        message = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        shown = pattern if len(pattern) <= 80 else pattern[:77] + "..."
        raise BadPattern(f"invalid {what} pattern {shown!r}: {message[:200]}", hint=_hint(message)) from None
    except (TypeError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
        raise BadPattern(f"invalid {what} pattern: {type(exc).__name__}", hint=_hint("")) from None
    with _lock:
        _cache[key] = compiled
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return compiled


# --------------------------------------------------------------------------- globs
def glob_to_re2(glob: str) -> str:
    """fnmatch semantics (*, ?, [seq], [!seq]) as an RE2 pattern matched in full."""
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        i += 1
        if c == "*":
            if not out or out[-1] != ".*":  # a run of stars is one star
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i
            if j < n and glob[j] == "!":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal [
                out.append("\\[")
                continue
            body = glob[i:j]
            i = j + 1
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            chars = "".join("\\" + ch if ch in "\\]^[" else ch for ch in body)
            out.append("[" + ("^" if negate else "") + chars + "]")
        else:
            out.append(re2.escape(c))
    return "".join(out)


@dataclass(frozen=True)
class Glob:
    """A compiled glob: `match(name)` is fnmatch.fnmatchcase, in linear time."""

    text: str
    regex: Any

    def match(self, name: str) -> bool:
        return self.regex.fullmatch(name) is not None


_globs: OrderedDict[str, Glob] = OrderedDict()


def compile_glob(glob: Any, *, what: str = "name") -> Glob:
    """A glob for artifact names; BadPattern when it is not text or over MAX_GLOB."""
    if not isinstance(glob, str) or not glob:
        raise BadPattern(f"{what} pattern must be a non-empty string, got {type(glob).__name__}", hint="pass a name or a glob, e.g. 'model*'")
    if len(glob) > MAX_GLOB:
        raise BadPattern(f"{what} pattern is {len(glob)} characters, over the {MAX_GLOB}-character cap", hint="artifact names are short; use a shorter glob")
    with _lock:
        hit = _globs.get(glob)
        if hit is not None:
            _globs.move_to_end(glob)
            return hit
    try:
        compiled = Glob(glob, re2.compile("(?s:" + glob_to_re2(glob) + ")", _options(False)))
    except re2.error as exc:
        raise BadPattern(f"invalid {what} glob {glob[:80]!r}: {exc}", hint="use *, ? and [abc] only") from None
    with _lock:
        _globs[glob] = compiled
        while len(_globs) > CACHE_SIZE:
            _globs.popitem(last=False)
    return compiled


# --------------------------------------------------------------------------- lines
class LineCutter:
    """Split a byte stream into lines, keeping at most `cap` bytes of each.

    The unfinished line carried between chunks never exceeds the cap, so
    a stream with no newline at all costs linear time and bounded memory.
    `cut` counts the lines that were longer than the cap.
    """

    def __init__(self, cap: int = LINE_CHARS * 4) -> None:
        self.cap = cap
        self.carry = bytearray()
        self.over = 0  # bytes of the current line beyond the cap
        self.cut = 0

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        """Complete lines in `data` as (first cap bytes, bytes dropped)."""
        out: list[tuple[bytes, int]] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            piece = data[start:] if nl < 0 else data[start:nl]
            self._take(piece)
            if nl < 0:
                return out
            out.append(self._emit())
            start = nl + 1

    def finish(self) -> list[tuple[bytes, int]]:
        """The last line when the stream does not end with a newline."""
        return [self._emit()] if self.carry or self.over else []

    def _take(self, piece: bytes) -> None:
        room = self.cap - len(self.carry)
        if room > 0:
            self.carry += piece[:room]
        self.over += max(0, len(piece) - max(room, 0))

    def _emit(self) -> tuple[bytes, int]:
        line, dropped = bytes(self.carry), self.over
        if dropped:
            self.cut += 1
        self.carry.clear()
        self.over = 0
        return line, dropped
