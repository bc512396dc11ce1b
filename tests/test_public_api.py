"""The curated public surface: __all__, docstrings that double as tool
descriptions, and models that describe every field."""

from __future__ import annotations

import inspect
import typing

import pydantic
import pytest

import metaflow_agent as ma
from metaflow_agent import _errors, _models


def _public_names() -> set[str]:
    """What a user sees: names not starting with '_' that aren't submodules, plus __version__."""
    out = set()
    for name in dir(ma):  # names load lazily: dir() lists them, getattr() loads them
        if name.startswith("_") or name in ("annotations", "importlib", "TYPE_CHECKING", "Any") or inspect.ismodule(getattr(ma, name)):
            continue
        out.add(name)
    return out | {"__version__"}


def test_all_is_exactly_the_public_names():
    assert set(ma.__all__) == _public_names()
    assert len(ma.__all__) == len(set(ma.__all__))


def test_all_is_sorted_and_has_no_private():
    # isort-style (ruff RUF022): CONSTANTS, then Classes, then the rest, each in plain string order.
    assert ma.__all__ == sorted(ma.__all__, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    dunder = [n for n in ma.__all__ if n.startswith("__")]
    assert dunder == ["__version__"]
    assert not [n for n in ma.__all__ if n.startswith("_") and not n.startswith("__")]
    for name in ma.__all__:
        assert hasattr(ma, name), name


def test_functions_are_the_query_functions():
    names = [f.__name__ for f in ma.FUNCTIONS]
    assert names == [
        "list_flows", "list_runs", "run_summary", "run_stats", "diagnose_run", "failed_tasks", "list_tasks",
        "task_logs", "list_artifacts", "artifact_preview", "artifact_values", "search_artifacts", "compare_runs",
        "capabilities",
    ]
    for fn in ma.FUNCTIONS:
        assert fn.__name__ in ma.__all__
        assert getattr(ma, fn.__name__) is fn


@pytest.mark.parametrize("fn", ma.FUNCTIONS, ids=lambda f: f.__name__)
def test_docstring_first_line_is_short(fn):
    doc = inspect.getdoc(fn)
    assert doc, f"{fn.__name__} has no docstring"
    first = doc.splitlines()[0]
    assert first.strip() == first and first
    assert first.endswith(".")
    assert len(first) <= 100, f"{fn.__name__}: first line is {len(first)} characters"
    assert first.count(". ") == 0, f"{fn.__name__}: first line holds more than one sentence"


@pytest.mark.parametrize("fn", ma.FUNCTIONS, ids=lambda f: f.__name__)
def test_signature_is_json_friendly(fn):
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    kinds = [p.kind for p in params]
    # Pathspecs positional, options keyword-only after `*`.
    assert inspect.Parameter.VAR_POSITIONAL not in kinds and inspect.Parameter.VAR_KEYWORD not in kinds
    for p in params:
        if p.default is not inspect.Parameter.empty:
            assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{fn.__name__}({p.name}) should be keyword-only"
    hints = typing.get_type_hints(fn)
    ret = hints["return"]
    assert isinstance(ret, type) and issubclass(ret, pydantic.BaseModel)
    assert ret.__name__ in ma.__all__
    assert "cost" in ret.model_fields


def _models_in(module) -> list[type[pydantic.BaseModel]]:
    return [
        v for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, pydantic.BaseModel) and v.__module__ == module.__name__
    ]


@pytest.mark.parametrize("model", _models_in(_models), ids=lambda m: m.__name__)
def test_every_model_field_has_a_description(model):
    for name, field in model.model_fields.items():
        assert field.description and field.description.strip(), f"{model.__name__}.{name} has no description"
    schema = model.model_json_schema()
    for name, prop in schema.get("properties", {}).items():
        assert prop.get("description"), f"{model.__name__}.{name} lacks a description in its JSON schema"


@pytest.mark.parametrize("model", _models_in(_models), ids=lambda m: m.__name__)
def test_models_forbid_extra_fields(model):
    assert model.model_config.get("extra") == "forbid"


def test_every_error_is_exported_and_documented():
    errors = [v for v in vars(_errors).values() if isinstance(v, type) and issubclass(v, Exception) and v.__module__ == _errors.__name__]
    for cls in errors:
        assert cls.__name__ in ma.__all__, cls.__name__
        assert cls.__name__ in _errors.__doc__, f"{cls.__name__} missing from the tree in _errors' docstring"


def test_version():
    assert isinstance(ma.__version__, str) and ma.__version__.count(".") >= 1
