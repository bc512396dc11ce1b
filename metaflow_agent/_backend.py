"""Which backend answers: the one the user's Metaflow config names.

Read at call time (not import time) so tests and long-lived servers follow
the environment. Backends are cached per configuration.
"""

from __future__ import annotations

import os
import threading

from .backends.base import Backend

SERVICE_TYPES = ("service", "agent")
_cache: dict[tuple[str | None, ...], Backend] = {}
_lock = threading.Lock()


def _conf(name: str) -> str | None:
    from metaflow import metaflow_config

    return os.environ.get(f"METAFLOW_{name}") or getattr(metaflow_config, name, None)


def config_key() -> tuple[str | None, ...]:
    return (
        _conf("DEFAULT_METADATA"),
        _conf("SERVICE_URL"),
        _conf("DEFAULT_DATASTORE"),
        _conf("DATASTORE_SYSROOT_LOCAL"),
        _conf("DATASTORE_SYSROOT_S3"),
        os.getcwd(),
    )


def get_backend() -> Backend:
    """The backend for the current Metaflow configuration (cached)."""
    key = config_key()
    with _lock:
        backend = _cache.get(key)
        if backend is None:
            backend = _make(key)
            _cache[key] = backend
        return backend


def _make(key: tuple[str | None, ...]) -> Backend:
    metadata, url, datastore = key[0], key[1], key[2]
    if metadata in SERVICE_TYPES:
        from .backends.service import ServiceBackend

        return ServiceBackend(url or "", datastore or "local")
    from .backends.local import LocalBackend

    return LocalBackend()


def reset_backends() -> None:
    """Forget cached backends and service capabilities (tests, config changes)."""
    from .service.capabilities import forget

    with _lock:
        _cache.clear()
    forget()
