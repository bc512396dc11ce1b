"""Where a task's files are: the datastore root it recorded, followed like the Client API.

Every task records `ds-type` and `ds-root` metadata, and its artifact records carry `ds_type`
and a `:root:<root>` location; the Client reads a task's logs and artifacts from there, not
from the reader's configured root. Runs written under another root (several buckets, a moved
root, another team's configuration) are read where they are.

A `TaskStore` is one task's view: its run's recorded root (one look per run, see
`MetadataBackend.run_root`), and, only when the task's folder is missing there, the root the
task itself recorded (`MetadataBackend.task_root`). Where a run's tasks agree, no task costs a
look of its own. Stores for recorded roots are opened once per process (a bounded cache).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, TypeVar

from . import _config
from ._cost import current_meter
from ._datastore import Datastore, Entry, LocalDatastore, S3Datastore
from ._errors import AgentError, BackendError, Damaged, NotFound
from ._pathspec import Pathspec

T = TypeVar("T")
READABLE = ("local", "s3")
MAX_OPEN = 16  # stores for recorded roots kept open per process (each S3 one holds a client)


@dataclass(frozen=True)
class DataRoot:
    """A datastore as a task recorded it: its type ('local', 's3', ...) and root."""

    kind: str
    root: str

    @classmethod
    def of(cls, kind: object, root: object) -> DataRoot | None:
        """From recorded values (normalised); None when either is missing."""
        if not isinstance(kind, str) or not isinstance(root, str) or not kind or not root:
            return None
        root = root.strip()
        if kind == "s3":
            root = root.rstrip("/") or root
        elif kind == "local":
            root = os.path.normpath(root)
        return cls(kind, root)

    @classmethod
    def of_location(cls, kind: object, location: object, flow: str) -> DataRoot | None:
        """From an artifact record: `:root:<root>`, or (older records) the blob's own path."""
        if not isinstance(location, str):
            return None
        if location.startswith(":root:"):
            return cls.of(kind, location[6:])
        head, sep, _ = location.partition(f"/{flow}/data/")
        return cls.of(kind, head) if sep else None


def mapped(root: DataRoot) -> DataRoot:
    """Where a recorded root is read: itself, or its place in METAFLOW_AGENT_DATASTORE_ROOT_MAP."""
    for recorded, here in _config.root_map().items():
        key = DataRoot.of(root.kind, recorded)
        if key == root:
            return DataRoot.of(root.kind, here) or root
    return root


def root_of(store: Datastore) -> DataRoot | None:
    """The root an open store reads, in the recorded form."""
    return DataRoot.of(store.kind, store.root)


_open: OrderedDict[DataRoot, Datastore] = OrderedDict()
_open_lock = threading.Lock()


def open_root(root: DataRoot) -> Datastore:
    """A store reading a recorded root (cached per process); BackendError when this library
    cannot read that kind of datastore or the root is malformed."""
    with _open_lock:
        known = _open.get(root)
        if known is not None:
            _open.move_to_end(root)
            return known
    if root.kind not in READABLE:
        raise BackendError(
            f"data recorded in a {root.kind!r} datastore ({root.root}), which this library cannot read (only {', '.join(READABLE)})",
            hint="read it with the Metaflow Client API, which has that datastore's plugin",
        )
    if "\x00" in root.root or not (os.path.isabs(root.root) if root.kind == "local" else root.root.startswith("s3://")):
        raise BackendError(f"recorded {root.kind} datastore root {root.root!r} is malformed (an absolute path or s3:// URL is expected)",
                           hint="the task's ds-root metadata (or its artifacts' location) is malformed; read it with the Metaflow Client API")
    store: Datastore = LocalDatastore(root.root) if root.kind == "local" else S3Datastore(root.root)
    with _open_lock:
        store = _open.setdefault(root, store)
        while len(_open) > MAX_OPEN:
            _open.popitem(last=False)
    return store


def forget_roots() -> None:
    """Close nothing, forget every store opened for a recorded root (configuration changed)."""
    with _open_lock:
        _open.clear()


def note_problem(root: str, message: str, raised: str | None = None) -> None:
    """Remember, for this call's notes, that a recorded root could not be opened or read
    (`raised`: the message of the error raised for it, when it differs)."""
    memo = current_meter().memo
    problems: dict[str, str] = memo.setdefault(("root-problems",), {})
    problems.setdefault(root, message)
    memo.setdefault(("root-errors",), set()).add(raised or message)


def is_root_problem(exc: AgentError) -> bool:
    """Whether an error came from opening or reading a datastore root (noted for this call),
    not from the metadata service."""
    return exc.message in current_meter().memo.get(("root-errors",), set())


def note_missing(root: str, task: str) -> None:
    """Remember, for this call's notes, a task whose folder is not in its recorded root."""
    missing: dict[str, set[str]] = current_meter().memo.setdefault(("root-missing",), {})
    missing.setdefault(root, set()).add(task)


def root_notes() -> list[str]:
    """This call's notes on recorded roots that could not be opened or read, or lacked tasks' files."""
    memo = current_meter().memo
    problems: dict[str, str] = memo.get(("root-problems",), {})
    missing: dict[str, set[str]] = memo.get(("root-missing",), {})
    notes = [f"datastore root {root} could not be read: {msg}; what its tasks saved is missing here" for root, msg in problems.items()]
    for root, tasks in missing.items():
        if root not in problems:
            notes.append(f"no files at {root} for {len(tasks)} task(s) (e.g. {min(tasks)}): not started yet, "
                         "deleted, or that root is not reachable from here")
    return notes


class TaskStore(Datastore):
    """One task's files: in its run's recorded root; where the task itself recorded them
    when its folder is missing there (looked up only then, see `Backend._missed`).

    `first()` gives the run's store (None: unknown), `own()` the task's recorded one (None:
    it recorded none), `recheck(current)` the task's own store after a miss when it is
    another one. Each raises BackendError for a root that cannot be opened."""

    def __init__(self, task: Pathspec, first: Callable[[], Datastore | None], own: Callable[[], Datastore | None],
                 recheck: Callable[[Datastore], Datastore | None]) -> None:
        self.task = task
        self._prefix = str(task)
        self._first, self._own, self._recheck = first, own, recheck
        self._cur: Datastore | None = None
        self._checked = False

    # The root and kind of whichever store is read now (resolved on first use); a view
    # follows its task, so setting them is ignored.
    @property
    def root(self) -> str:
        return self._store().root

    @root.setter
    def root(self, _: str) -> None:
        pass

    @property
    def kind(self) -> str:
        return self._store().kind

    @kind.setter
    def kind(self, _: str) -> None:
        pass

    def _store(self) -> Datastore:
        if self._cur is None:
            first = self._first()
            if first is None:
                self._checked = True
                first = self._own()
            if first is None:
                raise BackendError(f"no datastore root is known for task {self.task}: it recorded none and none is configured",
                                   hint="set METAFLOW_DEFAULT_DATASTORE and its root, or read the task with the Metaflow Client API")
            self._cur = first
        return self._cur

    def _switched(self, rel: str) -> bool:
        """After a miss under the task's folder: move to the root the task recorded, once."""
        if self._checked or not (rel == self._prefix or rel.startswith(self._prefix + "/")):
            return False
        self._checked = True
        other = self._recheck(self._store())
        if other is None or other is self._cur:
            return False
        self._cur = other
        return True

    def _run(self, op: Callable[[Datastore], T]) -> T:
        """One read on the current store; a failure other than absence is noted for the answer."""
        store = self._store()
        try:
            return op(store)
        except (NotFound, Damaged):  # absent, or one damaged object: not the root's fault
            raise
        except BackendError as exc:  # the same error, naming the root (an S3 error names only the key)
            named = exc if store.root in exc.message else type(exc)(f"{exc.message} (datastore root {store.root})", hint=exc.hint)
            note_problem(store.root, exc.message, named.message)
            if named is exc:
                raise
            raise named from None
        except AgentError as exc:
            note_problem(store.root, exc.message)
            raise

    def _read(self, rel: str, op: Callable[[Datastore], T], empty: Callable[[T], bool]) -> T:
        """`op` on the task's store; again on the task's own recorded root after a miss."""
        try:
            got = self._run(op)
        except NotFound:
            if not self._switched(rel):
                raise
            return self._run(op)
        if empty(got) and self._switched(rel):
            return self._run(op)
        return got

    def size(self, rel: str) -> int | None:
        return self._read(rel, lambda s: s.size(rel), lambda got: got is None)

    def read(self, rel: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._read(rel, lambda s: s.read(rel, offset, length), _never)

    def read_small(self, rel: str, cap: int = 4 << 20) -> bytes:
        return self._read(rel, lambda s: s.read_small(rel, cap), _never)

    def read_tail(self, rel: str, nbytes: int) -> tuple[bytes, int]:
        return self._read(rel, lambda s: s.read_tail(rel, nbytes), _never)

    def entries(self, rel_dir: str, *, with_stat: bool = False) -> list[Entry]:
        got = self._read(rel_dir, lambda s: s.entries(rel_dir, with_stat=with_stat), lambda got: not got)
        if not got and rel_dir == self._prefix:
            note_missing(self._store().root, self._prefix)
        return got

    def list(self, rel_dir: str) -> list[str]:
        return [e.name for e in self.entries(rel_dir)]


def _never(_: object) -> bool:
    return False
