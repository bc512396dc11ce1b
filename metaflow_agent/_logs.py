"""Task logs read by byte range: tail seeks from the end, head reads the start,
grep streams with a byte budget. Never the whole file unless it is small."""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import _limits
from ._backend import get_backend
from ._blobs import attempt_files
from ._cost import metered
from ._errors import BadInput, NotFound
from ._inputs import check_limit, compile_pattern, parse_pathspec
from ._models import LogLine, Stream, TaskLog
from ._result import cost_of
from .backends.base import Backend

_MFLOG = re.compile(rb"^(?:\[!)?\[MFLOG\|\d\|([^|\]]+)\|[^|\]]*\|[^\]]*\](.*)$", re.S)
_SOURCES = ("runtime", "task")  # <attempt>.<source>_<stream>.log, merged like the Client does
_CHUNK = 16 * 1024
_GREP_CHUNK = 1 << 20


@dataclass
class _Line:
    ts: bytes
    text: str
    n: int | None = None


def _parse(raw: bytes, line_chars: int | None) -> _Line:
    """Strip the mflog prefix; cut the text to line_chars (None: keep it whole, for matching)."""
    m = _MFLOG.match(raw)
    ts, body = (m.group(1), m.group(2)) if m else (b"", raw)
    text = body.decode("utf-8", "replace").rstrip("\r")
    return _Line(ts, _cut(text, line_chars))


def _cut(text: str, line_chars: int | None) -> str:
    if line_chars is not None and len(text) > line_chars:
        return text[:line_chars] + f"…[+{len(text) - line_chars} chars]"
    return text


def _log_files(backend: Backend, base: str, stream: str, attempt: int) -> list[tuple[str, int]]:
    files = []
    for source in _SOURCES:
        rel = f"{base}/{attempt}.{source}_{stream}.log"
        size = backend.store.size(rel)
        if size is not None:
            files.append((rel, size))
    return files


def _tail_lines(backend: Backend, rel: str, size: int, want: int, budget: int) -> tuple[list[bytes], int, bool]:
    """Last `want` lines of one file, reading backwards in growing chunks."""
    chunk = min(_CHUNK, budget)
    while True:
        data, total = backend.store.read_tail(rel, chunk)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        whole = len(data) >= (total or size)
        if not whole:
            lines = lines[1:]  # the first piece may be a partial line
        if len(lines) >= want or whole or chunk >= budget:
            cut = not whole and len(lines) < want
            return lines[-want:], len(data), cut
        chunk = min(chunk * 4, budget)


def _head_lines(backend: Backend, rel: str, size: int, want: int, budget: int) -> tuple[list[bytes], int, bool]:
    chunk = min(_CHUNK, budget)
    while True:
        data = backend.store.read(rel, 0, chunk)
        whole = len(data) >= size
        lines = data.split(b"\n")
        if not whole:
            lines = lines[:-1]
        elif lines and lines[-1] == b"":
            lines.pop()
        if len(lines) >= want or whole or chunk >= budget:
            return lines[:want], len(data), (not whole and len(lines) < want)
        chunk = min(chunk * 4, budget)


def task_logs(
    task: str,
    *,
    stream: Stream = "stdout",
    tail: int | None = None,
    head: int | None = None,
    grep: str | None = None,
    context: int = 2,
    max_matches: int = 20,
    attempt: int | None = None,
    max_bytes: int | None = None,
) -> TaskLog:
    """Part of a task's log: last lines, first lines, or regex matches.

    Reads byte ranges only; says the log's size and the bytes read. One of
    tail, head, grep (default tail=50).

    Args:
        task: Task pathspec 'Flow/RunId/step/TaskId'.
        stream: Which log.
        tail: Last N lines.
        head: First N lines.
        grep: Python regex; returns matching lines with context.
        context: Lines around each grep match.
        max_matches: Stop grep after this many matches.
        attempt: Attempt number; default the latest.
        max_bytes: Most bytes read; grep says where it stopped.
    """
    with metered() as meter:
        ps = parse_pathspec(task, "task")
        if stream not in ("stdout", "stderr"):
            raise BadInput(f"stream={stream!r}", hint="use stream='stdout' or 'stderr'")
        chosen = [name for name, v in (("tail", tail), ("head", head), ("grep", grep)) if v is not None]
        if len(chosen) > 1:
            raise BadInput(f"pass only one of tail, head, grep (got {', '.join(chosen)})", hint="e.g. task_logs(task, tail=50)")
        mode = chosen[0] if chosen else "tail"
        line_chars = _limits.default("line_chars")
        backend = get_backend()
        base = f"{ps.flow}/{ps.run}/{ps.step}/{ps.task}"
        if attempt is None:
            attempt = _latest_attempt_from_listing(backend, ps, base)
        else:
            attempt = check_limit("attempt", attempt, low=0, high=99)
        files = _log_files(backend, base, stream, attempt)
        if not files:
            backend.check_task(ps.flow, ps.run, ps.step, ps.task)
            raise NotFound(f"no {stream} log for {base} attempt {attempt}", hint="try the other stream, or another attempt")
        total = sum(s for _, s in files)
        notes: list[str] = []
        truncated = False
        lines: list[LogLine] = []
        if mode == "grep":
            pattern = compile_pattern(grep)
            budget = check_limit("max_bytes", max_bytes if max_bytes is not None else _limits.default("grep_max_bytes"), low=1024, high=_limits.cap("grep_max_bytes"))
            context = check_limit("context", context, low=0, high=_limits.cap("grep_context"))
            max_matches = check_limit("max_matches", max_matches, low=1, high=_limits.cap("grep_matches"))
            lines, read, truncated, note = _grep(backend, files, pattern, context, max_matches, budget, line_chars)
            notes += note
        else:
            n = tail if mode == "tail" else head
            n = check_limit(mode, 50 if n is None else n, low=1, high=_limits.cap(f"{mode}_lines"))
            budget = check_limit("max_bytes", max_bytes if max_bytes is not None else _limits.default("log_max_bytes"), low=1024, high=_limits.cap("log_max_bytes"))
            per_file = max(1024, budget // len(files))
            merged: list[_Line] = []
            read = 0
            for rel, size in files:
                fn = _tail_lines if mode == "tail" else _head_lines
                raw, nread, cut = fn(backend, rel, size, n, per_file)
                read += nread
                truncated = truncated or cut
                parsed = [_parse(r, line_chars) for r in raw]
                for prev, ln in zip(parsed, parsed[1:]):  # an unprefixed line keeps its neighbour's place
                    ln.ts = ln.ts or prev.ts
                merged += parsed
            merged.sort(key=lambda ln: ln.ts)  # stable: keeps file order for equal stamps
            picked = merged[-n:] if mode == "tail" else merged[:n]
            lines = [LogLine(n=None if mode == "tail" else i + 1, text=ln.text) for i, ln in enumerate(picked)]
            if truncated:
                notes.append(f"max_bytes={budget} reached before {n} lines were found")
        return TaskLog(
            pathspec=base,
            stream=stream,  # type: ignore[arg-type]
            attempt=attempt,
            mode=mode,  # type: ignore[arg-type]
            log_size=total,
            bytes_read=read,
            lines=lines,
            truncated=truncated,
            notes=notes,
            cost=cost_of(meter),
        )


def _latest_attempt_from_listing(backend: Backend, ps: object, base: str) -> int:
    attempts = list(attempt_files(backend, *base.split("/")))
    if not attempts:
        backend.check_task(ps.flow, ps.run, ps.step, ps.task)  # type: ignore[attr-defined]
        return 0
    return max(attempts)


def _grep(backend: Backend, files: list[tuple[str, int]], pattern: re.Pattern[str], context: int,
          max_matches: int, budget: int, line_chars: int) -> tuple[list[LogLine], int, bool, list[str]]:
    out: list[LogLine] = []
    matches = 0
    read = 0
    truncated = False
    notes: list[str] = []
    for rel, size in files:
        offset, lineno, carry = 0, 0, b""
        before: list[_Line] = []
        after_left = 0
        while offset < size:
            if read >= budget:
                truncated = True
                notes.append(f"stopped after max_bytes={budget}; {size - offset} bytes of {rel.rsplit('/', 1)[-1]} not scanned")
                break
            data = backend.store.read(rel, offset, min(_GREP_CHUNK, budget - read))
            if not data:
                break
            offset += len(data)
            read += len(data)
            pieces = (carry + data).split(b"\n")
            carry = pieces.pop() if offset < size else b""
            if offset >= size and pieces and pieces[-1] == b"":
                pieces.pop()
            for raw in pieces:
                lineno += 1
                ln = _parse(raw, None)  # match on the whole line, return it cut
                ln.n, hit, ln.text = lineno, bool(pattern.search(ln.text)), _cut(ln.text, line_chars)
                if hit:
                    if matches >= max_matches:
                        truncated = True
                        notes.append(f"more than max_matches={max_matches} matches; raise it or narrow the pattern")
                        return out, read, truncated, notes
                    matches += 1
                    out += [LogLine(n=b.n, text=b.text) for b in before]
                    before = []
                    out.append(LogLine(n=ln.n, text=ln.text, match=True))
                    after_left = context
                elif after_left > 0:
                    out.append(LogLine(n=ln.n, text=ln.text))
                    after_left -= 1
                elif context:
                    before = (before + [ln])[-context:]
        if len(files) > 1:
            notes.append(f"{rel.rsplit('/', 1)[-1]}: line numbers are per file")
    return out, read, truncated, notes
