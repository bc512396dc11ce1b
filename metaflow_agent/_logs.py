"""Task logs read by byte range: tail seeks from the end, head reads the start,
grep streams with a byte budget. Never the whole file unless it is small."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from . import _config, _deadline
from ._backend import get_backend
from ._blobs import resolve_attempt
from ._cost import call
from ._datastore import Datastore
from ._errors import BadInput, NotFound
from ._inputs import check_limit
from ._models import Cost, LogLine, Stream, TaskLog
from ._pathspec import Pathspec
from ._regex import LINE_CHARS, LineCutter, Pattern, compile_pattern
from ._text import cut

_MFLOG = re.compile(rb"^(?:\[!)?\[MFLOG\|\d\|([^|\]]+)\|[^|\]]*\|[^\]]*\](.*)$", re.DOTALL)
_SOURCES = ("runtime", "task")  # <attempt>.<source>_<stream>.log, merged like the Client does
_CHUNK = 16 * 1024
_GREP_CHUNK = 1 << 20


@dataclass
class _Line:
    ts: bytes
    text: str
    n: int | None = None
    stream: Literal["stdout", "stderr"] | None = None


@dataclass
class _Read:
    """What one file gave: its lines, bytes read, whether lines are missing, its line count when read whole."""

    lines: list[bytes]
    nread: int
    short: bool
    count: int | None


def _parse(raw: bytes, line_chars: int | None) -> _Line:
    """Strip the mflog prefix; cut the text to line_chars (None: keep it whole, for matching)."""
    m = _MFLOG.match(raw)
    ts, body = (m.group(1), m.group(2)) if m else (b"", raw)
    text = body.decode("utf-8", "replace").rstrip("\r")
    return _Line(ts, text if line_chars is None else cut(text, line_chars))


LogFile = tuple[str, int, Literal["stdout", "stderr"]]  # (path, size, stream)


def _log_files(store: Datastore, task: Pathspec, stream: Stream, attempt: int) -> list[LogFile]:
    """The attempt's log files of the stream(s), found in one listing of the task folder."""
    streams: tuple[Literal["stdout", "stderr"], ...] = ("stdout", "stderr") if stream == "both" else (stream,)
    sizes = {e.name: e.size for e in store.entries(str(task), with_stat=True)}
    files: list[LogFile] = []
    for s in streams:
        for source in _SOURCES:
            name = f"{attempt}.{source}_{s}.log"
            if name in sizes:
                files.append((f"{task}/{name}", sizes[name] or 0, s))
    return files


def _tail_lines(store: Datastore, rel: str, size: int, want: int, budget: int) -> _Read:
    """Last `want` lines of one file, reading backwards in growing chunks."""
    chunk = min(_CHUNK, budget)
    while True:
        data, total = store.read_tail(rel, chunk)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        whole = len(data) >= (total or size)
        if not whole:
            lines = lines[1:]  # the first piece may be a partial line
        if len(lines) >= want or whole or chunk >= budget:
            return _Read(lines[-want:], len(data), not whole and len(lines) < want, len(lines) if whole else None)
        chunk = min(chunk * 4, budget)


def _head_lines(store: Datastore, rel: str, size: int, want: int, budget: int) -> _Read:
    chunk = min(_CHUNK, budget)
    while True:
        data = store.read(rel, 0, chunk)
        whole = len(data) >= size
        lines = data.split(b"\n")
        if not whole:
            lines = lines[:-1]
        elif lines and lines[-1] == b"":
            lines.pop()
        if len(lines) >= want or whole or chunk >= budget:
            return _Read(lines[:want], len(data), not whole and len(lines) < want, len(lines) if whole else None)
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
        stream: Which log; 'both' merges them in time order, each line labelled.
        tail: Last N lines.
        head: First N lines.
        grep: Regular expression (RE2 syntax: no backreferences or lookaround); returns matching lines with context.
        context: Lines around each grep match.
        max_matches: Stop grep after this many matches.
        attempt: Attempt number; default the latest.
        max_bytes: Most bytes read; grep says where it stopped.
    """
    with call() as meter:
        ps = Pathspec.parse(task, "task")
        if stream not in ("stdout", "stderr", "both"):
            raise BadInput(f"stream={stream!r}", hint="use stream='stdout', 'stderr' or 'both'")
        chosen = [name for name, v in (("tail", tail), ("head", head), ("grep", grep)) if v is not None]
        if len(chosen) > 1:
            raise BadInput(f"pass only one of tail, head, grep (got {', '.join(chosen)})", hint="e.g. task_logs(task, tail=50)")
        mode = chosen[0] if chosen else "tail"
        if attempt is not None:
            attempt = check_limit("attempt", attempt, low=0, high=99)
        n = 0
        if mode == "grep":
            pattern = compile_pattern(grep)
            budget = check_limit("max_bytes", max_bytes if max_bytes is not None else _config.default("grep_max_bytes"), low=1024, high=_config.cap("grep_max_bytes"))
            context = check_limit("context", context, low=0, high=_config.cap("grep_context"))
            max_matches = check_limit("max_matches", max_matches, low=1, high=_config.cap("grep_matches"))
        else:
            asked = tail if mode == "tail" else head
            n = check_limit(mode, 50 if asked is None else asked, low=1, high=_config.cap(f"{mode}_lines"))
            budget = check_limit("max_bytes", max_bytes if max_bytes is not None else _config.default("log_max_bytes"), low=1024, high=_config.cap("log_max_bytes"))
        line_chars = _config.default("line_chars")
        backend = get_backend()
        store = backend.store_for(ps)
        attempt = resolve_attempt(store, backend.meta, ps, attempt, with_data=False)
        files = _log_files(store, ps, stream, attempt)
        if not files:
            backend.meta.check_task(ps)
            raise NotFound(f"no {stream} log for {ps} attempt {attempt} at {store.root}", hint="try the other stream, or another attempt")
        total = sum(size for _, size, _ in files)
        notes: list[str] = []
        truncated = False
        lines: list[LogLine] = []
        line_count: int | None = None
        both = stream == "both"
        if mode == "grep":
            lines, read, truncated, note = _grep(store, files, pattern, context, max_matches, budget, line_chars, both)
            notes += note
        else:
            per_file = max(1024, budget // len(files))
            merged: list[_Line] = []
            read, counts = 0, []
            for rel, size, label in files:
                got = (_tail_lines if mode == "tail" else _head_lines)(store, rel, size, n, per_file)
                read += got.nread
                truncated = truncated or got.short
                counts.append(got.count)
                parsed = [_parse(r, line_chars) for r in got.lines]
                for ln in parsed:
                    ln.stream = label if both else None
                for prev, ln in zip(parsed, parsed[1:]):  # an unprefixed line keeps its neighbour's place
                    ln.ts = ln.ts or prev.ts
                merged += parsed
            merged.sort(key=lambda ln: ln.ts)  # stable: keeps file order for equal stamps
            picked = merged[-n:] if mode == "tail" else merged[:n]
            lines = [LogLine(n=None if mode == "tail" or both else i + 1, text=ln.text, stream=ln.stream) for i, ln in enumerate(picked)]
            line_count = sum(c for c in counts if c is not None) if all(c is not None for c in counts) else None
            if truncated:
                notes.append(f"max_bytes={budget} reached before {n} lines were found")
        return TaskLog(
            pathspec=str(ps),
            stream=stream,
            attempt=attempt,
            mode=mode,  # type: ignore[arg-type]  # mode is one of tail/head/grep by construction
            log_size=total,
            bytes_read=read,
            line_count=line_count,
            lines=lines,
            truncated=truncated,
            notes=notes + meter.damage_notes(),
            cost=Cost.of(meter),
        )


def _grep(store: Datastore, files: list[LogFile], pattern: Pattern, context: int,
          max_matches: int, budget: int, line_chars: int, both: bool) -> tuple[list[LogLine], int, bool, list[str]]:
    """Matching lines with context, reading chunks; a line is matched on its first LINE_CHARS bytes."""
    out: list[LogLine] = []
    matches = 0
    read = 0
    truncated = False
    notes: list[str] = []
    long_lines = 0
    for rel, size, label in files:
        stream = label if both else None
        offset, lineno = 0, 0
        cutter = LineCutter(LINE_CHARS)
        before: list[_Line] = []
        after_left = 0
        while True:
            _deadline.check("task_logs grep")
            if offset < size and read >= budget:
                truncated = True
                notes.append(f"stopped after max_bytes={budget}; {size - offset} bytes of {rel.rsplit('/', 1)[-1]} not scanned")
                break
            # Always one read, even of an empty file: it refuses what is not a file (a FIFO lists as empty).
            data = store.read(rel, offset, min(_GREP_CHUNK, budget - read)) if offset < size or not offset else b""
            offset += len(data)
            read += len(data)
            done = not data
            pieces = cutter.feed(data) if data else cutter.finish()
            for raw, _dropped in pieces:
                lineno += 1
                ln = _parse(raw, None)  # match on the kept part of the line, return it cut
                ln.n, hit, ln.text = lineno, pattern.search(ln.text), cut(ln.text, line_chars)
                if hit:
                    if matches >= max_matches:
                        notes.append(f"more than max_matches={max_matches} matches; raise it or narrow the pattern")
                        return out, read, True, notes
                    matches += 1
                    out += [LogLine(n=b.n, text=b.text, stream=stream) for b in before]
                    before = []
                    out.append(LogLine(n=ln.n, text=ln.text, match=True, stream=stream))
                    after_left = context
                elif after_left > 0:
                    out.append(LogLine(n=ln.n, text=ln.text, stream=stream))
                    after_left -= 1
                elif context:
                    before = (before + [ln])[-context:]
            if done:
                break
        long_lines += cutter.cut
        if len(files) > 1:
            notes.append(f"{rel.rsplit('/', 1)[-1]}: line numbers are per file")
    if long_lines:
        notes.append(f"{long_lines} line(s) longer than {LINE_CHARS} bytes were matched on their first {LINE_CHARS} bytes only")
    return out, read, truncated, notes
