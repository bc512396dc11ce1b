"""What agents pick up by themselves: the skill, the plugin manifests, .mcp.json, server.json.

Each file must parse, carry what its format requires, and point at commands
and files that exist. The skill's references are generated from the
docstrings and result models; after an intended change regenerate them:

    UPDATE_SNAPSHOTS=1 python -m pytest tests/test_agent_surfaces.py -k reference
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import metaflow_agent
from metaflow_agent import FUNCTIONS, function_doc
from metaflow_agent.cli import build_parser, command_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
SCRIPTS = PYPROJECT["project"]["scripts"]
SKILL = ROOT / "skills" / "metaflow"
KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def load(rel: str) -> Any:
    return json.loads((ROOT / rel).read_text())


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def frontmatter(text: str) -> tuple[dict[str, str], str]:
    """The flat `key: value` YAML header of a SKILL.md, and its body."""
    assert text.startswith("---\n"), "SKILL.md must start with a --- frontmatter block"
    head, _, body = text[4:].partition("\n---\n")
    fields = {}
    for line in head.splitlines():
        key, sep, value = line.partition(":")
        assert sep and key.strip() == key and not key.startswith(" "), f"not a flat 'key: value' line: {line!r}"
        fields[key] = value.strip()
    return fields, body


# --- the skill (agentskills.io specification) ---------------------------------------
def test_skill_frontmatter_follows_the_spec() -> None:
    fields, body = frontmatter((SKILL / "SKILL.md").read_text())
    assert set(fields) <= {"name", "description", "license", "compatibility", "metadata", "allowed-tools"}
    assert fields["name"] == SKILL.name and KEBAB.match(fields["name"]) and len(fields["name"]) <= 64
    assert 0 < len(fields["description"]) <= 1024
    assert len(fields.get("compatibility", "")) <= 500
    assert fields["license"] == PYPROJECT["project"]["license"]
    assert len(body.splitlines()) < 500  # the spec's advice: details go to references/


def test_skill_links_point_at_files() -> None:
    body = (SKILL / "SKILL.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", body)
    assert links
    for link in links:
        assert (SKILL / link).is_file(), link


def test_skill_commands_and_flags_exist() -> None:
    """Every `command --flag` the skill shows is a real subcommand with that flag."""
    commands = subcommands()
    body = (SKILL / "SKILL.md").read_text()
    seen = 0
    for code in re.findall(r"`([^`]+)`", body):
        words = code.removeprefix("metaflow-agent ").split()
        if not words or words[0] not in commands or words[0] in ("mcp",):
            continue
        seen += 1
        flags = {s for a in commands[words[0]]._actions for s in a.option_strings}
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", code):
            assert flag in flags, f"{words[0]} has no {flag} (in `{code}`)"
    assert seen >= len(FUNCTIONS)  # the table names every command at least once
    for fn in FUNCTIONS:
        assert command_name(fn) in body, fn.__name__


def test_skill_names_only_real_error_codes_and_fields() -> None:
    body = (SKILL / "SKILL.md").read_text()
    exported = (getattr(metaflow_agent, name) for name in metaflow_agent.__all__)  # names load lazily
    codes = {cls.code for cls in exported if isinstance(cls, type) and issubclass(cls, metaflow_agent.AgentError)}
    for word in re.findall(r"`([a-z]+(?:_[a-z]+)+)`", body):
        params = {p for f in FUNCTIONS for p in inspect.signature(f).parameters}
        known = word in codes or word in params or any(word in m.model_fields for m in _models()) or word in {f.__name__ for f in FUNCTIONS}
        assert known, f"`{word}` is neither an error code, a parameter, an answer field nor a function"


# --- generated references -------------------------------------------------------------
def _flag_text(action: argparse.Action) -> str:
    if not action.option_strings:
        return str(action.metavar or action.dest.upper())
    flag = action.option_strings[0]
    if action.choices:
        return f"{flag} {{{','.join(map(str, action.choices))}}}"
    if action.nargs == 0:
        return flag
    return f"{flag} {action.metavar or action.dest.upper()}"


def commands_reference() -> str:
    parsers = subcommands()
    out = [
        "# metaflow-agent commands",
        "",
        "Generated from the functions' docstrings by `tests/test_agent_surfaces.py`; do not edit.",
        "The CLI subcommand, the MCP tool and the Python function of each entry take the same",
        "arguments (CLI `--no-X` passes null; add `--json` for the answer as compact JSON).",
    ]
    for fn in FUNCTIONS:
        doc = function_doc(fn)
        params = inspect.signature(fn).parameters.values()
        positional = [p.name.upper() for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        pyargs = ", ".join([p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
                           + (["*"] if any(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params) else [])
                           + [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY])
        usage = " ".join(["metaflow-agent", command_name(fn), *positional, "[options]"])
        out += ["", f"## {command_name(fn)}", "", f"`{usage}` · MCP tool `{fn.__name__}` · Python `{fn.__name__}({pyargs})`", ""]
        out += [doc.description, "", "| argument | meaning |", "|---|---|"]
        for action in parsers[command_name(fn)]._actions:
            if action.dest in ("help", "json"):
                continue
            text = (action.help or "").replace("|", "\\|")
            out.append(f"| `{_flag_text(action)}` | {text} |")
    return "\n".join(out) + "\n"


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_text(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_text(a) for a in typing.get_args(tp))}]"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _models() -> list[type[BaseModel]]:
    """Every answer model and the models inside them, in reading order."""
    seen: list[type[BaseModel]] = []

    def visit(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.append(model)
        for field in model.model_fields.values():
            for arg in [field.annotation, *typing.get_args(field.annotation)]:
                for inner in [arg, *typing.get_args(arg)]:
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        visit(inner)

    for fn in FUNCTIONS:
        visit(typing.get_type_hints(fn)["return"])
    return seen


def answers_reference() -> str:
    answers = {typing.get_type_hints(fn)["return"]: fn.__name__ for fn in FUNCTIONS}
    out = [
        "# What the answers hold",
        "",
        "Generated from the result models by `tests/test_agent_surfaces.py`; do not edit. The CLI's",
        "`--json`, the MCP tools' JSON and the Python models have exactly these fields.",
    ]
    for model in _models():
        title = f"{model.__name__} (answer of `{answers[model]}`)" if model in answers else model.__name__
        out += ["", f"## {title}", "", "| field | type | meaning |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            out.append(f"| `{name}` | {_type_text(field.annotation)} | {(field.description or '').replace('|', '/')} |")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize(("name", "render"), [("commands.md", commands_reference), ("answers.md", answers_reference)])
def test_reference_is_generated_from_the_code(name: str, render: Any) -> None:
    path = SKILL / "references" / name
    text = render()
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{path} is stale: UPDATE_SNAPSHOTS=1 python -m pytest tests/test_agent_surfaces.py -k reference"


def test_license_is_an_spdx_string_with_its_file() -> None:
    """setuptools >= 77 form: no deprecation warning at build time."""
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert all((ROOT / f).is_file() for f in PYPROJECT["project"]["license-files"])
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]


# --- .mcp.json and the plugin manifests -----------------------------------------------
def test_bundled_mcp_config_starts_our_server() -> None:
    servers = load(".mcp.json")["mcpServers"]
    assert list(servers) == ["metaflow"]
    command = servers["metaflow"]["command"]
    assert command in SCRIPTS and SCRIPTS[command] == "mcp_server.server:main"
    assert isinstance(servers["metaflow"].get("args", []), list)
    exe = shutil.which(command) or pytest.fail(f"{command} is not installed on PATH")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and "--transport" in out.stdout


def _common_manifest(manifest: dict[str, Any]) -> None:
    assert KEBAB.match(manifest["name"]) and manifest["name"] == SKILL.name
    assert manifest["version"] == VERSION
    assert manifest["description"] and manifest["license"] == PYPROJECT["project"]["license"]
    assert manifest["author"]["name"]


def _points_at_bundle(manifest: dict[str, Any]) -> None:
    assert (ROOT / manifest["skills"] / SKILL.name / "SKILL.md").is_file()
    assert manifest["mcpServers"] == "./.mcp.json" and (ROOT / manifest["mcpServers"]).is_file()


def test_claude_code_plugin_and_marketplace() -> None:
    manifest = load(".claude-plugin/plugin.json")
    _common_manifest(manifest)
    # Claude Code finds skills/ and .mcp.json at the plugin root by itself.
    assert not {"skills", "mcpServers"} & set(manifest)
    assert (ROOT / "skills" / SKILL.name / "SKILL.md").is_file() and (ROOT / ".mcp.json").is_file()
    market = load(".claude-plugin/marketplace.json")
    assert KEBAB.match(market["name"]) and market["owner"]["name"]
    (entry,) = market["plugins"]
    assert entry["name"] == manifest["name"] and entry["description"]
    assert (ROOT / entry["source"] / ".claude-plugin" / "plugin.json").is_file()


def test_codex_plugin() -> None:
    manifest = load(".codex-plugin/plugin.json")
    _common_manifest(manifest)
    _points_at_bundle(manifest)
    ui = manifest["interface"]
    assert ui["displayName"] and ui["shortDescription"] and ui["longDescription"] and ui["capabilities"] == ["Read"]
    assert os.listdir(ROOT / ".codex-plugin") == ["plugin.json"]  # the only file Codex allows there


def test_cursor_plugin() -> None:
    manifest = load(".cursor-plugin/plugin.json")
    _common_manifest(manifest)
    _points_at_bundle(manifest)
    allowed = {"name", "displayName", "description", "version", "author", "publisher", "homepage", "repository", "license",
               "logo", "keywords", "category", "tags", "commands", "agents", "skills", "rules", "hooks", "variables", "mcpServers"}
    assert set(manifest) <= allowed  # Cursor's schema allows no other keys
    assert set(manifest["author"]) <= {"name", "email"}
    assert re.match(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$", manifest["name"])


# --- server.json for the MCP registry --------------------------------------------------
def test_server_json_for_the_registry() -> None:
    server = load("server.json")
    assert server["$schema"] == "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
    assert re.match(r"^[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+$", server["name"]) and server["name"].count("/") == 1
    assert 0 < len(server["description"]) <= 100 and server["version"] == VERSION
    (package,) = server["packages"]
    assert package["registryType"] == "pypi" and package["identifier"] == PYPROJECT["project"]["name"]
    assert package["version"] == VERSION and package["transport"] == {"type": "stdio"}
    assert "registryBaseUrl" not in package  # VS Code passes it to uvx as --index-url, which pypi.org is not
    # Clients launch `uvx --with <mcp extra> metaflow-agent==<version> mcp`: the extra and the command must exist.
    (with_mcp,) = package["runtimeArguments"]
    assert package["runtimeHint"] == "uvx" and with_mcp["name"] == "--with"
    assert [with_mcp["value"]] == PYPROJECT["project"]["optional-dependencies"]["mcp"]
    assert [a["value"] for a in package["packageArguments"]] == ["mcp"]
    assert PYPROJECT["project"]["name"] in SCRIPTS
    out = subprocess.run([sys.executable, "-m", "metaflow_agent", "mcp", "--help"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0 and "metaflow-agent-mcp" in out.stdout and "--transport" in out.stdout
    for var in package["environmentVariables"]:
        assert re.match(r"^[A-Z_]+$", var["name"]) and var["description"]
    # PyPI ownership: the registry looks for this marker in the package's README.
    assert f"mcp-name: {server['name']}" in (ROOT / "README.md").read_text()


def test_readme_setup_snippets_parse_and_start_our_server() -> None:
    """The per-client configs in the README's MCP section are valid and name the console script."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## MCP server"):readme.index("## Cost model")]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    commands = []
    for lang, text in blocks:
        if lang == "json":
            data = json.loads(text)
            for servers in (data.get("mcpServers"), data.get("servers")):
                for server in (servers or {}).values():
                    commands.append(server["command"])
        elif lang == "toml":
            commands.append(tomllib.loads(text)["mcp_servers"]["metaflow"]["command"])
        elif lang == "bash":
            commands += re.findall(r"-- (\S+)", text)
    assert len(commands) >= 5 and set(commands) == {"metaflow-agent-mcp"}, commands
    assert all(c in SCRIPTS for c in commands)
