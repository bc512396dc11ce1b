"""Imports point one way, down: the layer map of the README's development section, enforced.

Every import of our own modules (module level and inside functions; `if TYPE_CHECKING:` blocks
excepted) must go to the same layer or a lower one, and the import graph must have no cycle.
Leaves (MCP server, audit, benchmarks) use public names only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROVIDER = "metaflow_extensions.agent.plugins.agent_metadata"

# Lowest first. A module may import modules of its own layer or of a lower one.
LAYERS: list[list[str]] = [
    ["metaflow_agent._errors", "metaflow_agent._text", "metaflow_agent._states", "metaflow_agent._config", "metaflow_agent._cost",
     "metaflow_agent._liveness", "metaflow_agent._docs", "metaflow_agent._deadline", "metaflow_agent._regex", "metaflow_agent._repr",
     "metaflow_agent._cursor"],
    ["metaflow_agent._pathspec", "metaflow_agent._inputs", "metaflow_agent._unpickle", "metaflow_agent._httpread",
     "metaflow_agent._sandbox", "metaflow_agent._sandbox_child"],
    ["metaflow_agent._records", "metaflow_agent._models", "metaflow_agent._datastore", "metaflow_agent._roots"],
    ["metaflow_agent.backends", "metaflow_agent.backends.base"],
    ["metaflow_agent.backends.local", f"{PROVIDER}.transport", f"{PROVIDER}.capabilities", f"{PROVIDER}.query_client",
     f"{PROVIDER}.query_service", f"{PROVIDER}.queries", f"{PROVIDER}.provider"],
    ["metaflow_agent._blobs", "metaflow_agent._backend", "metaflow_agent._values"],
    ["metaflow_agent._outcomes"],
    ["metaflow_agent._runs", "metaflow_agent._tasks", "metaflow_agent._logs", "metaflow_agent._artifacts",
     "metaflow_agent._compare", "metaflow_agent._capabilities", "metaflow_agent._flows", "metaflow_agent._diagnose"],
    ["metaflow_agent._public", "metaflow_agent.render"],
    ["metaflow_agent", "metaflow_agent.cli", "metaflow_agent.__main__"],
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}
# Public modules a leaf may import besides the package itself.
PUBLIC = {"metaflow_agent", "metaflow_agent.render", "metaflow_agent.demo.fileprobe", f"{PROVIDER}.transport", f"{PROVIDER}.provider"}
LEAVES = ("mcp_server", "audit", "benchmarks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(path: Path) -> set[str]:
    """Our modules that `path` imports at run time (TYPE_CHECKING blocks skipped)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for a in child.names:
                    full = f"{base}.{a.name}"
                    out.add(full if (REPO / (full.replace(".", "/") + ".py")).exists() else base)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in out if m.startswith(("metaflow_agent", "metaflow_extensions", "mcp_server"))}


def ours(root: str) -> list[Path]:
    # Dot-folders are not ours: caches and venvs (benchmarks/.work holds a peer's virtualenv).
    return sorted(p for p in (REPO / root).rglob("*.py") if not any(part.startswith(".") for part in p.relative_to(REPO).parts))


def library_modules() -> list[Path]:
    paths = [p for p in ours("metaflow_agent") if "/demo/" not in str(p)]
    return paths + ours("metaflow_extensions")


@pytest.mark.parametrize("path", library_modules(), ids=lambda p: module_name(p))
def test_imports_point_down(path):
    name = module_name(path)
    if name.endswith("mfextinit_agent") or name == "metaflow_extensions.agent.plugins.agent_metadata":
        return
    assert name in RANK, f"{name} is not in the layer map: add it to LAYERS and the README"
    for dep in imports_of(path):
        if dep == name or dep.split(".")[0] not in ("metaflow_agent", "metaflow_extensions") or dep.startswith("metaflow_agent.demo"):
            continue
        assert dep in RANK, f"{name} imports {dep}, which is not in the layer map"
        assert RANK[dep] <= RANK[name], f"{name} (layer {RANK[name]}) imports {dep} (layer {RANK[dep]}): upward"


def test_no_import_cycles():
    graph = {module_name(p): {d for d in imports_of(p) if d in RANK} for p in library_modules() if module_name(p) in RANK}
    graph["metaflow_agent"] = set()  # the lazy package imports nothing at run time but names
    seen: dict[str, int] = {}

    def walk(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for dep in graph.get(node, ()):
            if dep == node:
                continue
            if seen.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack + [node, dep]))
            if dep not in seen:
                walk(dep, stack + [node])
        seen[node] = 2

    for node in graph:
        if node not in seen:
            walk(node, [])


@pytest.mark.parametrize("path", [p for leaf in LEAVES for p in ours(leaf)], ids=lambda p: module_name(p))
def test_leaves_use_public_names(path):
    for dep in imports_of(path):
        if dep.split(".")[0] in ("metaflow_agent", "metaflow_extensions"):  # the query service is a package of its own
            assert dep in PUBLIC, f"{module_name(path)} imports {dep}: use a public name (add a seam if one is missing)"
