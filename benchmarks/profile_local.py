"""Where metaflow_agent's time goes on local Metaflow: cProfile, system calls, imports.

    python -m benchmarks.profile_local [--sizes 2000,20000] [--cache DIR] [--out FILE.json]
    python -m benchmarks.profile_local --markdown A.json [B.json ...] > PROFILE.md

Per question and size (the local section's worlds, built or reused), in fresh processes:
- cProfile of one answer after a warm-up answer: total, own time of the hottest functions,
  and the share of a few named suspects (`realpath`, `read_small`, JSON, pydantic);
- system calls of one answer, counted by `strace -f` between two marker calls the child makes
  (`stat("/__bench_mark_begin__")` ... `stat("/__bench_mark_end__")`), for metaflow_agent, the
  naive code and the floor;
- the CLI: `python -X importtime` of `metaflow_agent.cli`, and the system calls of one cold
  `metaflow-agent list-runs` process from start to exit.
Prints a summary and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .local import REPO, cases_for, local_env
from .localcases import QUESTIONS
from .localworld import sysroot

SUSPECTS = {
    "os.path.realpath": ("<frozen posixpath>", "realpath"),
    "read_small": ("_datastore.py", "read_small"),
    "LocalDatastore.read": ("_datastore.py", "read"),
    "LocalDatastore.list": ("_datastore.py", "list"),
    "LocalDatastore.size": ("_datastore.py", "size"),
    "json.loads": ("__init__.py", "loads"),
    "_meta_rows": ("local.py", "_meta_rows"),
    "_run_record": ("local.py", "_run_record"),
    "scan_records": ("base.py", "scan_records"),
    "step_outcomes": ("local.py", "step_outcomes"),
    "list_steps": ("local.py", "list_steps"),
    "pydantic model_dump_json": ("main.py", "model_dump_json"),
}
MARK_BEGIN, MARK_END = "/__bench_mark_begin__", "/__bench_mark_end__"
_SYSCALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?([a-z_0-9]+)\(")


# --- the child: one contender, one question --------------------------------------------------------------
def child(mode: str, contender: str, question: str, args: dict[str, Any], ds_root: str) -> None:
    from .localcases import floor_runner, run_naive, run_ours

    if contender == "naive":
        from metaflow import namespace

        namespace(None)
    runner = {"ours": run_ours, "naive": run_naive}.get(contender) or floor_runner(ds_root)
    runner(question, args)  # warm-up: imports, the page cache, the backend
    if mode == "cprofile":
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        runner(question, args)
        prof.disable()
        st = pstats.Stats(prof, stream=io.StringIO())
        total = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
        rows = []
        for (fname, line, func), (cc, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
            rows.append({"func": f"{os.path.basename(fname)}:{line}({func})", "file": os.path.basename(fname), "name": func, "calls": nc,
                         "own_s": tt, "cum_s": ct})
        suspects = {}
        for label, (file, name) in SUSPECTS.items():
            hits = [r for r in rows if r["file"] == file and r["name"] == name]
            if hits:
                suspects[label] = {"calls": sum(r["calls"] for r in hits), "cum_s": max(r["cum_s"] for r in hits)}
        top = sorted(rows, key=lambda r: -r["own_s"])[:15]
        print(json.dumps({"total_s": total, "top_own": top, "suspects": suspects}))
    else:  # strace: markers around one answer
        try:
            os.stat(MARK_BEGIN)
        except FileNotFoundError:
            pass
        runner(question, args)
        try:
            os.stat(MARK_END)
        except FileNotFoundError:
            pass


def count_syscalls(trace: str, between_marks: bool) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    inside = not between_marks
    with open(trace) as f:
        for line in f:
            if between_marks and MARK_BEGIN in line:
                inside = True
                continue
            if between_marks and MARK_END in line:
                break
            if inside:
                m = _SYSCALL.match(line)
                if m:
                    counts[m.group(1)] += 1
    return dict(counts.most_common())


def _run_child(mode: str, contender: str, case: dict[str, Any], env: dict[str, str], ds_root: str, work: Path) -> Any:
    cmd = [sys.executable, "-m", "benchmarks.profile_local", "--child", mode, contender, case["question"], json.dumps(case["args"]), ds_root]
    if mode == "strace":
        trace = str(work / f"trace-{contender}-{case['question']}-{case['size']}.txt")
        proc = subprocess.run(["strace", "-f", "-qq", "-o", trace, *cmd], env=env, cwd=str(REPO), capture_output=True, text=True, timeout=3600)
        if proc.returncode:
            return {"error": proc.stderr[-500:]}
        counts = count_syscalls(trace, between_marks=True)
        os.unlink(trace)
        return counts
    proc = subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        return {"error": proc.stderr[-800:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cli_profile(env: dict[str, str], world: dict[str, Any], work: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import metaflow_agent.cli"], env=env, cwd=str(REPO), capture_output=True, text=True)
    imports: list[dict[str, Any]] = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            imports.append({"module": parts[2].rstrip(), "self_us": int(parts[0].split(":")[1]), "cum_us": int(parts[1])})
    top = sorted(imports, key=lambda r: -r["cum_us"])[:25]
    agent = Path(sys.executable).parent / "metaflow-agent"
    trace = str(work / "trace-cli.txt")
    subprocess.run(["strace", "-f", "-qq", "-o", trace, str(agent), "list-runs", world["flow"], "--status", "failed", "--limit", "10", "--no-namespace", "--json"],
                   env=env, cwd=str(REPO), capture_output=True, text=True, timeout=600)
    counts = count_syscalls(trace, between_marks=False)
    os.unlink(trace)
    mf = subprocess.run([sys.executable, "-c", "import metaflow_agent.cli, sys; print('metaflow' in sys.modules)"], env=env, cwd=str(REPO),
                        capture_output=True, text=True)
    return {"flow": world["flow"], "imports_top": top, "cli_syscalls": counts, "cli_imports_metaflow_at_import": mf.stdout.strip()}


def markdown(data: list[dict[str, Any]]) -> str:
    """The profile's tables, from one or more JSON outputs."""
    qs: dict[str, Any] = {}
    cli = None
    loads = []
    for d in data:
        qs.update(d["questions"])
        cli = d.get("cli") or cli
        loads.append(d.get("loadavg", [0])[0])
        loads += [x[0] for x in d.get("loadavg_strace", [])]
    out = ["# Where metaflow_agent's time goes on local Metaflow", "",
           "Measured by `python -m benchmarks.profile_local` on the local section's worlds (fresh process per row, one warm-up "
           f"answer first; 1-minute load average {min(loads):.1f}–{max(loads):.1f} on 2 shared CPUs, so the cProfile times are "
           "noisy and inflated by the profiler; the system-call counts are exact).", "",
           "## metaflow_agent under cProfile (one warm answer)", "",
           "| question @ size | total | os.path.realpath | read_small | LocalDatastore.list | json.loads | _run_record (run records) | _meta_rows |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def share(cp: dict[str, Any], name: str) -> str:
        x = cp.get("suspects", {}).get(name)
        if not x:
            return "–"
        return f"{x['cum_s'] * 1000:,.0f} ms ({x['cum_s'] / cp['total_s'] * 100:.0f} %), {x['calls']:,} calls"

    for key, row in qs.items():
        cp = row["cprofile"]
        if "error" in cp:
            out.append(f"| {key} | {cp['error'][:80]} ||||||| ")
            continue
        out.append(f"| {key} | {cp['total_s'] * 1000:,.0f} ms | {share(cp, 'os.path.realpath')} | {share(cp, 'read_small')} | "
                   f"{share(cp, 'LocalDatastore.list')} | {share(cp, 'json.loads')} | {share(cp, '_run_record')} | {share(cp, '_meta_rows')} |")
    out += ["", "## System calls of one answer (strace -f, between two marker calls)", "",
            "| question @ size | contender | stat (newfstatat) | openat | getdents64 | read | lseek | ioctl | mmap + mremap + munmap | all |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, row in qs.items():
        for c, sc in row.get("syscalls", {}).items():
            if not sc or "error" in sc:
                continue
            mm = sc.get("mmap", 0) + sc.get("mremap", 0) + sc.get("munmap", 0)
            out.append(f"| {key} | {c} | {sc.get('newfstatat', 0) + sc.get('stat', 0) + sc.get('lstat', 0):,} | {sc.get('openat', 0):,} | "
                       f"{sc.get('getdents64', 0):,} | {sc.get('read', 0):,} | {sc.get('lseek', 0):,} | {sc.get('ioctl', 0):,} | {mm:,} | {sum(sc.values()):,} |")
    if cli:
        sc = cli["cli_syscalls"]
        out += ["", "## The cold CLI", "",
                f"One `metaflow-agent list-runs {cli.get('flow', 'FLOW')} --status failed --limit 10 --no-namespace --json` process, start to exit: "
                + ", ".join(f"{k} {v:,}" for k, v in list(sc.items())[:10]) + f" ({sum(sc.values()):,} system calls in all).", "",
                "`python -X importtime -c 'import metaflow_agent.cli'`, largest cumulative imports (Metaflow itself is imported later, "
                f"on the first call; imported at CLI import: {cli['cli_imports_metaflow_at_import']}):", "",
                "| module | cumulative | self |", "|---|---:|---:|"]
        for r in cli["imports_top"][:15]:
            out.append(f"| `{r['module'].strip()}` | {r['cum_us'] / 1000:,.1f} ms | {r['self_us'] / 1000:,.1f} ms |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--markdown":
        print(markdown([json.loads(Path(p).read_text()) for p in argv[1:]]), end="")
        return 0
    if argv and argv[0] == "--child":
        child(argv[1], argv[2], argv[3], json.loads(argv[4]), argv[5])
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_local")
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--cache", default=str(Path(__file__).parent / ".work" / "local-worlds"))
    ap.add_argument("--out", default=None, help="write the numbers here as JSON")
    ap.add_argument("--skip-naive-strace", action="store_true")
    ap.add_argument("--no-strace", action="store_true", help="cProfile only")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    cache = Path(args.cache).resolve()
    root_dir = sysroot(str(cache))
    ds_root = os.path.join(root_dir, ".metaflow")
    worlds = {}
    for kind in ("tasks", "runs"):
        for n in sizes:
            with open(os.path.join(root_dir, f"{kind}-{n}.json")) as f:
                worlds[f"{kind}-{n}"] = json.load(f)
    work = Path(tempfile.mkdtemp(prefix="mfagent-profile-"))
    env = local_env(root_dir, work)
    out: dict[str, Any] = {"sizes": sizes, "questions": {}, "loadavg": os.getloadavg()}
    try:
        for case in cases_for(worlds, sizes):
            key = f"{case['question']}@{case['size']}"
            row: dict[str, Any] = {"cprofile": _run_child("cprofile", "ours", case, env, ds_root, work)}
            if shutil.which("strace") and not args.no_strace:
                row["syscalls"] = {c: _run_child("strace", c, case, env, ds_root, work)
                                   for c in ("ours", "floor", "naive") if not (c == "naive" and args.skip_naive_strace)}
            out["questions"][key] = row
            cp = row["cprofile"]
            sc = row.get("syscalls", {})
            print(f"{key:28} cProfile {cp.get('total_s', 0) * 1000:8.0f} ms  "
                  + "  ".join(f"{c}: " + ", ".join(f"{k} {v}" for k, v in list((s or {}).items())[:5]) for c, s in sc.items()), flush=True)
        if not args.no_strace:
            out["cli"] = cli_profile(env, worlds[f"runs-{sizes[0]}"], work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
