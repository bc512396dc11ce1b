"""Unpickling, in one place: restricted loaders for the values this library reads itself."""

from __future__ import annotations

import io
import pickle
from typing import Any, Mapping


class _Restricted(pickle.Unpickler):
    """Resolves only the (module, name) pairs it was given; builtin containers and scalars need none."""

    def __init__(self, data: bytes, allow: Mapping[tuple[str, str], Any]) -> None:
        super().__init__(io.BytesIO(data))
        self.allow = allow

    def find_class(self, module: str, name: str) -> Any:
        found = self.allow.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed here")
        return found


def loads_restricted(data: bytes, allow: Mapping[tuple[str, str], Any] | None = None) -> Any:
    """Unpickle plain data plus exactly the classes in `allow`; UnpicklingError for anything else."""
    return _Restricted(data, {} if allow is None else allow).load()


def loads_any(data: bytes) -> Any:
    """Unpickle an artifact value (any class the flow used). The only unrestricted load."""
    return pickle.load(io.BytesIO(data))
