"""Which backend answers: the one the user's Metaflow configuration names (chosen here only).

A `Backend` pairs a metadata backend (local files, or the extended provider's service
engine) with the datastore; read at call time and cached per configuration. On a service,
each task's files are read where the task recorded them (`store_for`, see `_roots`).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Literal

from . import _config
from ._cost import current_meter, one_time
from ._datastore import Datastore, LocalDatastore, open_datastore
from ._errors import BackendError, NotFound
from ._pathspec import Pathspec
from ._roots import DataRoot, TaskStore, forget_roots, mapped, note_problem, open_root, root_notes, root_of
from .backends.base import MetadataBackend

if TYPE_CHECKING:
    from metaflow_extensions.agent.plugins.agent_metadata.provider import (
        AgentMetadataProvider,
    )


AGREEMENTS_KEPT = 4096  # runs whose tasks' agreement on a root is remembered per backend


class Backend:
    """One deployment: its metadata backend and its datastore (opened on first use)."""

    def __init__(self, meta: MetadataBackend, *, store: Datastore | None = None, store_kind: str = "local") -> None:
        self.meta = meta
        self._store = store
        self._store_kind = store_kind
        # Per run: whether a task missing from the run's root recorded that same root (True:
        # the run's tasks agree, later misses are absences) or another (False: look each time).
        self._agrees: OrderedDict[tuple[str, str, DataRoot], bool] = OrderedDict()
        self._agrees_lock = threading.Lock()

    @property
    def kind(self) -> Literal["local", "service"]:
        return self.meta.kind

    @property
    def store(self) -> Datastore:
        """The datastore, resolved on first use (metadata-only queries never need it)."""
        if self._store is None:
            self._store = open_datastore(self._store_kind)
        return self._store

    def store_for(self, task: Pathspec) -> Datastore:
        """The datastore holding a task's files. Local: the configured one (the metadata lives
        in it). Service: where the task's run recorded its data, else where the task did (one
        view per task per call, so every read of the task follows the same root)."""
        if not self.meta.records_roots:
            return self.store
        memo = current_meter().memo
        key = ("task-store", str(task))
        view = memo.get(key)
        if view is None:
            view = memo[key] = TaskStore(task, lambda: self._run_store(task.run_ps), lambda: self._own_store(task),
                                         lambda current: self._missed(task, current))
        return view

    def root_notes(self) -> list[str]:
        """This call's notes on recorded datastore roots that could not be opened or read."""
        return root_notes()

    def call_notes(self) -> list[str]:
        """This call's notes on roots (`root_notes`) and on how the metadata backend dated things."""
        return self.meta.call_notes() + root_notes()

    def _configured(self) -> Datastore | None:
        try:
            return self.store
        except BackendError:
            return None

    def _open(self, root: DataRoot) -> Datastore:
        """A store for a recorded root (or where the root map puts it): the configured one when
        it is the same root."""
        root = mapped(root)
        configured = self._configured()
        if configured is not None and root_of(configured) == root:
            return configured
        try:
            return open_root(root)
        except BackendError as exc:
            note_problem(root.root, exc.message)
            raise

    def _run_store(self, run: Pathspec) -> Datastore | None:
        """The store of the run's recorded root; the configured one when it recorded none."""
        memo = current_meter().memo
        key = ("run-root", run.flow, str(run.run))
        if key not in memo:
            memo[key] = self.meta.run_root(run)
        root: DataRoot | None = memo[key]
        return self._configured() if root is None else self._open(root)

    def _own_store(self, task: Pathspec) -> Datastore | None:
        """The store of the root the task itself recorded; None when it recorded none."""
        root = self.meta.task_root(task)
        return None if root is None else self._open(root)

    def _missed(self, task: Pathspec, current: Datastore) -> Datastore | None:
        """A task's folder is missing from its run's root: the store of the root the task itself
        recorded when that is another one. Asked for a run's first such task (remembered per
        process), then for every one only if that run's tasks were seen to disagree."""
        memo = current_meter().memo
        run_key = ("run-root", task.flow, str(task.run))
        run_root: DataRoot | None = memo.get(run_key)
        if run_root is not None and self.meta.root_guessed(task.run_ps):  # its flow's root stood in: ask the run's own
            exact = memo[run_key] = self.meta.run_root(task.run_ps, exact=True)
            if exact is not None and exact != run_root:
                return self._open(exact)
            run_root = exact
        if run_root is None:  # the run recorded no root: this task's, where its other tasks start in this call
            root = self.meta.task_root(task)
            if root is not None:
                memo[run_key] = root
            return None if root is None or mapped(root) == root_of(current) else self._open(root)
        key = (task.flow, str(task.run), run_root)
        with self._agrees_lock:
            agrees = self._agrees.get(key)
        if agrees:
            return None
        root = self.meta.task_root(task)
        if root is None:  # it recorded none (never started): nothing learned about the run
            return None
        same = root == run_root
        if agrees is None:
            with self._agrees_lock:
                self._agrees[key] = same
                while len(self._agrees) > AGREEMENTS_KEPT:
                    self._agrees.popitem(last=False)
        return None if mapped(root) == root_of(current) else self._open(root)

    def capabilities(self) -> dict[str, object]:
        facts = dict(self.meta.capabilities())
        try:
            facts.setdefault("datastore", self.store.kind)
            facts.setdefault("datastore_root", self.store.root)
        except BackendError as exc:  # metadata queries still work without a datastore
            facts.setdefault("datastore", f"{self._store_kind} (unresolved: {exc.message})")
        return facts


_PROVIDER = "metaflow_extensions.agent.plugins.agent_metadata.provider"
_cache: dict[tuple[str | None, ...], Backend] = {}
_lock = threading.Lock()


def get_backend() -> Backend:
    """The backend for the current Metaflow configuration (cached)."""
    key = _config.backend_key()
    with _lock:
        backend = _cache.get(key)
        if backend is None:
            with one_time():  # its modules' first import and the provider's set-up, once per configuration
                backend = _cache[key] = _make()
        return backend


def _provider() -> type[AgentMetadataProvider]:
    """The extended provider class. Metaflow resolves its plugins while `import metaflow`
    runs, this module among them, so Metaflow is imported first."""
    with one_time():  # a process's first service query imports Metaflow: not this call's work
        import metaflow  # noqa: F401

        from metaflow_extensions.agent.plugins.agent_metadata.provider import (
            AgentMetadataProvider,
        )

    return AgentMetadataProvider


def _make() -> Backend:
    if _config.metadata_type() in _config.SERVICE_TYPES:
        AgentMetadataProvider = _provider()
        return Backend(AgentMetadataProvider.queries(_config.service_url()), store_kind=_config.datastore_type())
    from .backends.local import LocalMetadata

    root = _config.local_root()
    if root is None:
        raise NotFound(
            "no local Metaflow datastore (.metaflow) found from this directory",
            hint="run a flow first, cd to its folder, or set METAFLOW_DATASTORE_SYSROOT_LOCAL",
        )
    files = LocalDatastore(root)
    return Backend(LocalMetadata(files), store=files)


def reset_backends() -> None:
    """Forget cached backends and service capabilities (tests, configuration changes)."""
    with _lock:
        _cache.clear()
    forget_roots()
    if _PROVIDER in sys.modules:  # service capabilities are cached only once the provider is loaded
        _provider().forget()
