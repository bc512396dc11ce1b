"""Counting what plain Metaflow code reads from a local root, for honest comparisons.

A `sys.addaudithook` hook sees every `open` for reading and every directory
listing (`os.listdir`, `os.scandir`, or a folder opened to be listed by its
descriptor) the process makes, whoever makes it. Opens
and listings under the root are counted and the size of each opened file (at
open time) is summed: exact for files read whole (how the Client reads metadata
files, data.json, blobs and logs), an upper bound for ranged reads. Used by the
demo and the benchmarks; never by the query functions.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass
class FileMeasure:
    """Files opened for reading and directories listed under the root, their bytes, the time."""

    opens: int = 0
    listings: int = 0
    bytes: int = 0
    ms: float = 0.0
    log: list[tuple[str, str, int]] = field(default_factory=list)  # (kind, path under root, bytes)

    @property
    def files(self) -> int:
        return self.opens + self.listings


class FileProbe:
    """Counts reads under a root (audit hooks cannot be removed: it idles when inactive)."""

    def __init__(self, root: str, keep_log: bool = False) -> None:
        self.root = os.path.realpath(root)
        self.prefixes = tuple({os.path.abspath(root) + os.sep, self.root + os.sep})
        self.keep_log = keep_log
        self.current: FileMeasure | None = None
        self._busy = False
        sys.addaudithook(self._hook)

    def _under_root(self, path: Any) -> str | None:
        if path is None or isinstance(path, int):
            return None
        full = os.path.abspath(os.fsdecode(path))
        return full if full.startswith(self.prefixes) else None

    def _rel(self, full: str) -> str:
        for p in self.prefixes:
            if full.startswith(p):
                return full[len(p):]
        return full

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        m = self.current
        if m is None or self._busy or event not in ("open", "os.listdir", "os.scandir"):
            return
        self._busy = True  # os.path calls below must not re-enter
        try:
            if event == "open":
                path, mode, flags = args
                reading = ("r" in mode and "+" not in mode) if isinstance(mode, str) else (flags & os.O_ACCMODE) == os.O_RDONLY
                full = self._under_root(path) if reading else None
                if full is not None and os.path.isfile(full):
                    size = os.path.getsize(full)
                    m.opens += 1
                    m.bytes += size
                    if self.keep_log:
                        m.log.append(("open", self._rel(full), size))
                elif full is not None and os.path.isdir(full):  # a folder opened to be listed by its descriptor
                    m.listings += 1
                    if self.keep_log:
                        m.log.append(("list", self._rel(full), 0))
            else:
                full = self._under_root(args[0] if args and args[0] is not None else os.getcwd())
                if full is not None:
                    m.listings += 1
                    if self.keep_log:
                        m.log.append(("list", self._rel(full), 0))
        finally:
            self._busy = False

    @contextmanager
    def measure(self) -> Iterator[FileMeasure]:
        m = FileMeasure()
        self.current = m
        started = time.perf_counter()
        try:
            yield m
        finally:
            m.ms = round((time.perf_counter() - started) * 1000, 1)
            self.current = None
