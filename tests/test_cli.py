"""The CLI on real local runs: each subcommand's --json equals the library's answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import metaflow_agent as mfa
from metaflow_agent.cli import build_parser, command_name, main, render_text


def task_of(root: str, run: str, step: str) -> str:
    """The first task pathspec of a step, from the datastore folders."""
    ids = sorted((d for d in os.listdir(Path(root) / ".metaflow" / run / step) if d != "_meta"), key=lambda t: (len(t), t))
    return f"{run}/{step}/{ids[0]}"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def without_cost(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data.pop("cost", None)
    return data


def cases(runs: Any) -> list[tuple[list[str], Any]]:
    """(CLI argv, equivalent library call) for every function, options included."""
    log_task = task_of(runs.root, runs.log, "noisy")
    art_task = task_of(runs.root, runs.art_a, "start")
    return [
        (["list-runs", "HelloFlow"], lambda: mfa.list_runs("HelloFlow")),
        (["list-runs", "HelloFlow", "--status", "failed", "--no-namespace"], lambda: mfa.list_runs("HelloFlow", status="failed", namespace=None)),
        (["list-runs", "HelloFlow", "--tags-any", "team:a", "--tags-any", "batch:1", "--limit", "2"],
         lambda: mfa.list_runs("HelloFlow", tags_any=["team:a", "batch:1"], limit=2)),
        (["run-summary", runs.wide], lambda: mfa.run_summary(runs.wide)),
        (["failed-tasks", runs.wide, "--limit", "2"], lambda: mfa.failed_tasks(runs.wide, limit=2)),
        (["failed-tasks", runs.retry, "--no-include-retried"], lambda: mfa.failed_tasks(runs.retry, include_retried=False)),
        (["failed_tasks", runs.crash], lambda: mfa.failed_tasks(runs.crash)),  # the function's own name works too
        (["task-logs", log_task, "--tail", "5"], lambda: mfa.task_logs(log_task, tail=5)),
        (["task-logs", log_task, "--grep", "ERROR", "--context", "0"], lambda: mfa.task_logs(log_task, grep="ERROR", context=0)),
        (["task-logs", log_task, "--stream", "stderr", "--head", "3"], lambda: mfa.task_logs(log_task, stream="stderr", head=3)),
        (["list-artifacts", art_task, "--include-private"], lambda: mfa.list_artifacts(art_task, include_private=True)),
        (["artifact-preview", art_task, "config"], lambda: mfa.artifact_preview(art_task, "config")),
        (["search-artifacts", "ArtifactFlow", "--name", "bl*", "--min-size", "1000"],
         lambda: mfa.search_artifacts("ArtifactFlow", name="bl*", min_size=1000)),
        (["compare-runs", runs.art_a, runs.art_b], lambda: mfa.compare_runs(runs.art_a, runs.art_b)),
        (["capabilities"], lambda: mfa.capabilities()),
        (["list-flows", "--no-namespace"], lambda: mfa.list_flows(namespace=None)),
        (["run-stats", "HelloFlow", "--last", "3", "--per-step"], lambda: mfa.run_stats("HelloFlow", last=3, per_step=True)),
        (["diagnose-run", runs.hello_failed, "--lines", "4"], lambda: mfa.diagnose_run(runs.hello_failed, lines=4)),
        (["list-tasks", runs.retry, "--step", "work"], lambda: mfa.list_tasks(runs.retry, step="work")),
        (["artifact-values", "ArtifactFlow", "score", "--order", "oldest", "--no-namespace"],
         lambda: mfa.artifact_values("ArtifactFlow", "score", order="oldest", namespace=None)),
    ]


def test_every_function_has_a_subcommand() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {command_name(f) for f in mfa.FUNCTIONS} | {"demo"} <= set(sub.choices)


def test_json_equals_the_library(local_runs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    covered = set()
    for argv, library in cases(local_runs):
        code, out, err = run_cli(capsys, *argv, "--json")
        assert code == 0, (argv, err)
        assert out.count("\n") == 1 and not out.startswith("{\n"), "compact JSON on one line"
        got = json.loads(out)
        if argv[0] != "capabilities":  # every answer counts what it read
            assert got["cost"]["datastore_reads"] + got["cost"]["metadata_requests"] > 0, argv
        assert without_cost(got) == without_cost(library().model_dump(mode="json")), argv
        covered.add(argv[0].replace("_", "-"))
    assert covered == {command_name(f) for f in mfa.FUNCTIONS}


def test_json_flag_before_the_subcommand(local_runs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--json", "run-summary", local_runs.retry)
    assert code == 0
    assert json.loads(out)["pathspec"] == local_runs.retry


def test_table_output_is_readable(local_runs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "failed-tasks", local_runs.wide)
    assert code == 0
    lines = out.splitlines()
    assert any(ln.startswith("total_failed") and ln.split()[-1] == "4" for ln in lines)
    header = next(ln for ln in lines if "pathspec" in ln and "exception_type" in ln)
    assert "traceback" not in header  # multi-line fields are printed under the table, not in it
    rows = [ln for ln in lines if ln.startswith(f"  {local_runs.wide}/work/")]
    assert len(rows) == 4 and all("WIDE_BOOM" in ln and "ValueError" in ln and "failed" in ln for ln in rows)
    assert "Traceback (most recent call last)" in out
    assert lines[-1].startswith("cost: ") and " reads, " in lines[-1] and lines[-1].endswith(" ms")
    assert not out.lstrip().startswith("{")


def test_table_output_of_each_shape(local_runs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    log_task = task_of(local_runs.root, local_runs.log, "noisy")
    art_task = task_of(local_runs.root, local_runs.art_a, "start")
    _, out, _ = run_cli(capsys, "task-logs", log_task, "--tail", "3")
    assert out.splitlines()[-2] == "  LAST LINE OF STDOUT"  # log lines uncut, last before the cost
    _, out, _ = run_cli(capsys, "list-runs", "HelloFlow")
    assert "status" in out and "completed" in out and "failed" in out and local_runs.hello_failed in out
    _, out, _ = run_cli(capsys, "run-summary", local_runs.retry)
    assert "retried_ok" in out and "work" in out and "completed" in out
    _, out, _ = run_cli(capsys, "artifact-preview", art_task, "config")
    assert "model-a" in out and "keys" in out
    _, out, _ = run_cli(capsys, "compare-runs", local_runs.art_a, local_runs.art_b)
    assert "0.5" in out and "0.7" in out and "changed" in out
    _, out, _ = run_cli(capsys, "capabilities")
    assert "backend" in out and "local" in out and "runs_cap" in out


def test_render_text_is_generic(local_runs: Any) -> None:
    for fn in (lambda: mfa.run_summary(local_runs.crash), lambda: mfa.list_runs("HelloFlow", limit=1)):
        text = render_text(fn())
        assert "cost: " in text.splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["failed-tasks", "HelloFlow"], "MyFlow/12"),  # a flow where a run is expected
        (["run-summary", "HelloFlow/999999"], ""),  # NotFound
        (["list-runs", "HelloFlow", "--limit", "0"], "between"),  # BadLimit
        (["task-logs", "LogFlow/1/noisy/2", "--tail", "3", "--grep", "x"], "only one"),
        (["list-runs", "HelloFlow", "--status", "weird"], "'running', 'completed', 'failed', 'crashed', 'unknown'"),
        (["demo", "--width", "2"], "--width between"),
    ],
)
def test_bad_input_exits_2_with_hint(local_runs: Any, capsys: pytest.CaptureFixture[str], argv: list[str], hint: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")
    assert hint in err
    assert "Traceback" not in err
    if hint and argv[0] != "demo":
        assert "\nhint: " in err


def test_error_as_json_with_json_flag(local_runs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "run-summary", "not a pathspec", "--json")
    assert code == 2 and out == ""
    data = json.loads(err)
    assert data["error"] == "bad_pathspec" and data["hint"]


def test_usage_errors_exit_2_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["compare-runs", "A/1"], ["search-artifacts", "ArtifactFlow"], ["nope"], ["list-runs", "F", "--limit", "x"]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, argv
        assert "usage:" in err and "Traceback" not in err


def test_fixed_vocabularies_are_choices(capsys: pytest.CaptureFixture[str]) -> None:
    """status and stream are Literal in the signatures, so argparse offers and checks them."""
    code, _, err = run_cli(capsys, "list-runs", "HelloFlow", "--status", "weird")
    assert code == 2 and "choose from 'running', 'completed', 'failed', 'crashed', 'unknown'" in err
    code, _, err = run_cli(capsys, "task-logs", "F/1/s/2", "--stream", "stdlog")
    assert code == 2 and "choose from 'stdout', 'stderr', 'both'" in err


@pytest.mark.parametrize("fn", mfa.FUNCTIONS, ids=lambda f: f.__name__)
def test_help_describes_every_parameter_from_the_docstring(fn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, command_name(fn), "--help")
    assert code == 0
    doc = mfa.function_doc(fn)
    flat = " ".join(out.split())
    assert " ".join(doc.description.split()) in flat
    assert "Args:" not in out
    for name, text in doc.params.items():
        assert " ".join(text.split()) in flat, name


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], *[[command_name(f), "--help"] for f in mfa.FUNCTIONS], ["demo", "--help"]):
        code, out, _ = run_cli(capsys, *argv)
        assert code == 0 and "usage:" in out
    _, out, _ = run_cli(capsys, "search-artifacts", "--help")
    assert "--name" in out and "--min-size" in out and "--no-namespace" in out and "glob" in out


def test_unexpected_errors_are_reported_without_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def boom() -> None:
        raise RuntimeError("kaboom")

    from metaflow_agent import cli

    monkeypatch.setattr(cli, "call", lambda fn, ns: boom())
    code, _, err = run_cli(capsys, "capabilities")
    assert code == 1 and "kaboom" in err and "METAFLOW_AGENT_DEBUG" in err and "Traceback" not in err


def test_python_dash_m_is_the_cli(local_runs: Any) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "metaflow_agent", "list-runs", "HelloFlow", "--status", "completed", "--json"],
        check=False, capture_output=True, text=True, timeout=120, env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert sorted(r["pathspec"] for r in data["runs"]) == sorted(local_runs.hello_ok)
    bad = subprocess.run([sys.executable, "-m", "metaflow_agent", "run-summary", "Nope/1/2"],
                         check=False, capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert bad.returncode == 2 and "hint: " in bad.stderr and "Traceback" not in bad.stderr


def test_a_reader_that_leaves_early_is_not_an_error(local_runs: Any) -> None:
    """`metaflow-agent ... | head -c 0`: exit 0, nothing on stderr (it used to report a 'bug')."""
    proc = subprocess.Popen([sys.executable, "-m", "metaflow_agent", "failed-tasks", local_runs.wide, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader leaves before the answer is written (the CLI takes ~0.5 s to start)
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 0 and err == ""


def test_mcp_subcommand_is_the_server(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["mcp", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "metaflow-agent-mcp" in out and "--transport" in out
