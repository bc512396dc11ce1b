"""Which backend answers: the one the user's Metaflow configuration names (chosen here only).

A `Backend` pairs a metadata backend (local files, or the extended provider's service
engine) with the datastore; read at call time and cached per configuration.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Literal

from . import _config
from ._cost import one_time
from ._datastore import Datastore, LocalDatastore, open_datastore
from ._errors import BackendError, NotFound
from .backends.base import MetadataBackend

if TYPE_CHECKING:
    from metaflow_extensions.agent.plugins.agent_metadata.provider import (
        AgentMetadataProvider,
    )


class Backend:
    """One deployment: its metadata backend and its datastore (opened on first use)."""

    def __init__(self, meta: MetadataBackend, *, store: Datastore | None = None, store_kind: str = "local") -> None:
        self.meta = meta
        self._store = store
        self._store_kind = store_kind

    @property
    def kind(self) -> Literal["local", "service"]:
        return self.meta.kind

    @property
    def store(self) -> Datastore:
        """The datastore, resolved on first use (metadata-only queries never need it)."""
        if self._store is None:
            self._store = open_datastore(self._store_kind)
        return self._store

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
    if _PROVIDER in sys.modules:  # service capabilities are cached only once the provider is loaded
        _provider().forget()
