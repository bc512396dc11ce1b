"""Prototype fixes for metaflow_agent on local Metaflow, applied as patches, to measure their effect.

Measurement only: nothing imports this but `localworker` when a plan names patches, and the
library's code is untouched. Each patch is a sketch of a fix issue 11 asks for, written so the
lead can port it after the restructure:

- path:   path safety checked once per directory, not per file: the root resolved once, each
          directory `lstat`ed once per query (a symlinked one must resolve inside the root),
          files opened with `O_NOFOLLOW` (a symlinked file is refused). Replaces two
          `os.path.realpath` calls (about 16 `lstat`s) per file.
- read:   small reads sized to the file (`fstat`, then one `os.read` of that size) instead of a
          4 MiB buffer, which glibc serves with mmap/munmap in a fresh process.
- names:  a task's `_meta` names filtered with `startswith` instead of parsing every name.
- runs:   run questions ordered by the flow folder's listing (local run ids are creation times
          in microseconds): records read only for runs that can be in the answer; a time window
          bounded by the ids before any record is read.
- conf:   the backend chosen from METAFLOW_* variables without importing Metaflow when they name
          a local deployment (Metaflow's config module is imported only to fall back on it).

    python -m benchmarks.prototype_local [--sizes 2000,20000] [--reps 5]   # baseline vs each patch vs all
    python -m benchmarks.prototype_local --cli [--sizes 2000]             # the cold CLI, with and without
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

PATCHES = ("path", "read", "names", "runs", "conf")
SINCE_SLACK_MS = 60_000  # a local run's record is written right after its id is taken


def _patch_path() -> None:
    from metaflow_agent import _datastore as ds
    from metaflow_agent._cost import current_meter
    from metaflow_agent._errors import NotFound, PathEscape

    def real_root(self: Any) -> str:
        root = self.__dict__.get("_real_root")
        if root is None:
            root = self._real_root = os.path.realpath(self.root)
        return root

    def verify_dir(self: Any, d: str) -> None:
        """Each directory once per query: lstat it; a symlink must resolve inside the root."""
        seen = current_meter().memo.setdefault(("verified_dirs", self.root), set())
        if not d or d in seen:
            return
        parent = d.rpartition("/")[0]
        if parent:
            verify_dir(self, parent)
        full = real_root(self) + "/" + d
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            return  # absent: the open or listing below reports it
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(full)
            if not real.startswith(real_root(self) + os.sep):
                raise PathEscape(f"path {d!r} leaves the datastore root", hint="use pathspecs, not file paths")
        seen.add(d)

    def _path(self: Any, rel: str) -> str:
        rel = self._check(rel)
        verify_dir(self, rel.rpartition("/")[0])
        return real_root(self) + "/" + rel

    def _opener(path: str, flags: int) -> int:
        return os.open(path, flags | os.O_NOFOLLOW)

    def read(self: Any, rel: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(rel), "rb", opener=_opener) as f:
                f.seek(offset)
                data = f.read() if length is None else f.read(length)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{rel} is not in the datastore", hint="check the pathspec and attempt") from None
        current_meter().add_read(rel, len(data))
        return data

    def lst(self: Any, rel_dir: str) -> list[str]:
        verify_dir(self, self._check(rel_dir))
        try:
            names = os.listdir(real_root(self) + "/" + rel_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        current_meter().add_read(rel_dir + "/", 0)
        return names

    ds.LocalDatastore._path = _path  # type: ignore[method-assign]
    ds.LocalDatastore.read = read  # type: ignore[method-assign]
    ds.LocalDatastore.list = lst  # type: ignore[method-assign]


def _patch_read() -> None:
    from metaflow_agent import _datastore as ds
    from metaflow_agent._cost import current_meter
    from metaflow_agent._errors import BackendError, NotFound

    def read_small(self: Any, rel: str, cap: int = 4 << 20) -> bytes:
        try:
            fd = os.open(self._path(rel), os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{rel} is not in the datastore", hint="check the pathspec and attempt") from None
        try:
            size = os.fstat(fd).st_size
            if size > cap:
                raise BackendError(f"{rel} is over {cap} bytes", hint="this file is expected to be small")
            data = os.read(fd, size + 1)  # one read of the file's size (+1: it may have grown)
        finally:
            os.close(fd)
        if len(data) > cap:
            raise BackendError(f"{rel} is over {cap} bytes", hint="this file is expected to be small")
        current_meter().add_read(rel, len(data))
        return data

    ds.LocalDatastore.read_small = read_small  # type: ignore[method-assign]


def _patch_names() -> None:
    from metaflow_agent.backends import local
    from metaflow_agent.backends.base import StepOutcomes

    def step_outcomes(self: Any, flow: str, run_id: str, steps: list[str]) -> list[StepOutcomes]:
        out = []
        for step in steps:
            so = StepOutcomes(step, set(), set(), set())
            for task in self._dirs(f"{flow}/{run_id}/{step}"):
                task_rel = f"{flow}/{run_id}/{step}/{task}"
                names = self.store.list(task_rel + "/_meta")
                if any(n.startswith("sysmeta_attempt_") and n[16:17].isdigit() for n in names):
                    so.started.add(task)
                for n in names:
                    if n.startswith("sysmeta_attempt_ok_"):
                        r = self._json(f"{task_rel}/_meta/{n}")
                        so.newest_ms = max(so.newest_ms, int(r.get("ts_epoch") or 0))
                        (so.ok if r["value"] == "True" else so.failed).add(task)
            out.append(so)
        return out

    local.LocalBackend.step_outcomes = step_outcomes  # type: ignore[method-assign]


def _patch_runs() -> None:
    from metaflow_agent.backends import local
    from metaflow_agent.backends.base import RunQuery, RunRecord, RunScan, run_sort_key

    def newest_first(self: Any, flow: str, query: RunQuery) -> Iterator[RunRecord]:
        """Run records newest first, read one at a time: numeric ids (creation µs) by the listing,
        others (ids given by a scheduler) by their records, merged in."""
        names = [n for n in self.store.list(flow) if n not in local._NOT_RUNS and not n.startswith(".")]
        numeric = sorted((n for n in names if n.isdigit()), key=int, reverse=True)
        others = sorted((r for r in (self._run_record(flow, n) for n in names if not n.isdigit()) if r is not None),
                        key=lambda r: run_sort_key(r.ts_ms, r.run_id), reverse=True)
        j = 0
        for n in numeric:
            approx = int(n) // 1000
            while j < len(others) and others[j].ts_ms > approx:
                yield others[j]
                j += 1
            if query.until_ms is not None and approx > query.until_ms:
                continue  # its record is written after its id is taken: later still
            if query.since_ms is not None and approx < query.since_ms - SINCE_SLACK_MS:
                break
            rec = self._run_record(flow, n)
            if rec is not None:
                yield rec
        yield from others[j:]

    def scan_runs(self: Any, flow: str, query: RunQuery, limit: int, after: tuple[int, str] | None, budget: int,
                  server_cursor: str | None = None, with_status: bool = True) -> RunScan:
        self.check_flow(flow)
        status_fn = self.run_status if with_status else (lambda r: ("running", None))
        scan = RunScan(runs=[], more=False, notes=["local: runs ordered by the folder listing, records read as needed"])
        read = 0
        for rec in newest_first(self, flow, query):
            read += 1
            if after is not None and run_sort_key(rec.ts_ms, rec.run_id) >= run_sort_key(*after):
                continue
            if not query.matches_static(rec):
                continue
            if len(scan.runs) == limit:
                scan.more = True
                break
            if scan.scanned >= budget:
                scan.more, scan.complete = True, False
                scan.notes.append(f"status budget of {budget} runs reached; continue with next_cursor")
                break
            scan.scanned += 1
            rec.status, rec.finished_ms = status_fn(rec)
            scan.resume_after = (rec.ts_ms, rec.run_id)
            if query.status is None or rec.status == query.status:
                scan.runs.append(rec)
        scan.notes.append(f"local: read {read} run records")
        return scan

    local.LocalBackend.scan_runs = scan_runs  # type: ignore[method-assign]


def _patch_conf() -> None:
    from metaflow_agent import _backend

    plain = _backend._conf

    def conf(name: str) -> str | None:
        # Environment first (as Metaflow does); Metaflow's own config only when the environment is silent.
        value = os.environ.get(f"METAFLOW_{name}")
        if value or name in ("SERVICE_URL", "DATASTORE_SYSROOT_S3") and os.environ.get("METAFLOW_DEFAULT_METADATA") == "local":
            return value
        return plain(name)

    _backend._conf = conf  # type: ignore[assignment]


def apply(patches: list[str]) -> None:
    """Apply the named prototype patches to metaflow_agent in this process."""
    for name in patches:
        {"path": _patch_path, "read": _patch_read, "names": _patch_names, "runs": _patch_runs, "conf": _patch_conf}[name]()


def cli_main(patches: list[str], argv: list[str]) -> int:
    """`metaflow-agent ARGV` in this process with the patches applied (the cold-CLI prototype)."""
    apply(patches)
    from metaflow_agent.cli import main as cli

    return cli(argv)


def cli_prototype(env: dict[str, str], worlds: dict[str, Any], sizes: list[int], reps: int) -> list[dict[str, Any]]:
    """Fresh processes, wall and CPU time: the CLI as it is, with `conf`, with every patch; and their parts."""
    import resource
    import statistics
    import subprocess

    from .local import REPO

    rows = []

    def run(label: str, cmd: list[str]) -> None:
        wall, cpu = [], []
        for _ in range(reps):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=600)
            wall.append((time.perf_counter() - t0) * 1000)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append((r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime) * 1000)
            if proc.returncode:
                raise RuntimeError(f"{label}: {proc.stderr[-500:]}")
        rows.append({"what": label, "wall_ms": round(statistics.median(wall), 1), "cpu_ms": round(statistics.median(cpu), 1)})
        print(f"{label:60} {statistics.median(wall):8.0f} ms wall {statistics.median(cpu):8.0f} ms CPU (median of {reps})", file=sys.stderr, flush=True)

    py = sys.executable
    run("python -c pass", [py, "-c", "pass"])
    run("python -c 'import pydantic'", [py, "-c", "import pydantic"])
    run("python -c 'import metaflow'", [py, "-c", "import metaflow"])
    run("python -c 'import metaflow_agent'", [py, "-c", "import metaflow_agent"])
    run("python -c 'import metaflow_agent.cli'", [py, "-c", "import metaflow_agent.cli"])
    run("metaflow-agent --help", [str(Path(py).parent / "metaflow-agent"), "--help"])
    for n in sizes:
        flow = worlds[f"runs-{n}"]["flow"]
        args = ["list-runs", flow, "--status", "failed", "--limit", "10", "--no-namespace", "--json"]
        run(f"metaflow-agent list-runs ({n:,} runs)", [str(Path(py).parent / "metaflow-agent"), *args])
        for patches in (["conf"], ["conf", "runs"], ["conf", "runs", "path", "read"]):
            code = f"import sys; from benchmarks.prototype_local import cli_main; sys.exit(cli_main({patches!r}, {args!r}))"
            run(f"list-runs ({n:,} runs) + {'+'.join(patches)}", [py, "-c", code])
    return rows


def main(argv: list[str] | None = None) -> int:
    from .local import REPO, _worker, cases_for, local_env
    from .localworld import sysroot

    ap = argparse.ArgumentParser(prog="python -m benchmarks.prototype_local")
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--budget", type=float, default=20.0)
    ap.add_argument("--cache", default=str(Path(__file__).parent / ".work" / "local-worlds"))
    ap.add_argument("--variants", default="base,path,read,names,runs,all")
    ap.add_argument("--out", default=None)
    ap.add_argument("--cli", action="store_true", help="measure the cold CLI prototypes instead")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    root_dir = sysroot(str(Path(args.cache).resolve()))
    ds_root = os.path.join(root_dir, ".metaflow")
    worlds = {f"{k}-{n}": json.loads(Path(root_dir, f"{k}-{n}.json").read_text()) for k in ("tasks", "runs") for n in sizes}
    work = Path(tempfile.mkdtemp(prefix="mfagent-proto-"))
    env = local_env(root_dir, work)
    if args.cli:
        (work / "metaflow_home").mkdir()
        cli_rows = cli_prototype(env, worlds, sizes, args.reps)
        if args.out:
            Path(args.out).write_text(json.dumps(cli_rows, indent=1))
        for r in cli_rows:
            print(f"| {r['what']} | {r['wall_ms']:,.0f} | {r['cpu_ms']:,.0f} |")
        return 0
    variants = {"base": [], "all": list(PATCHES), **{p: [p] for p in PATCHES}}
    chosen = [v for v in args.variants.split(",") if v in variants]
    rows: list[dict[str, Any]] = []
    for n in sizes:
        cases = [c for c in cases_for(worlds, [n])]
        for c in cases:
            c["id"] = cases.index(c)
        for contender, patches in [("floor", None)] + [("ours", variants[v]) for v in chosen]:
            label = "floor" if patches is None else "+".join(patches) or "base"
            res = _worker(contender, cases, {**env, "BENCH_PATCHES": ",".join(patches or [])}, work, args.cache, ds_root, args.reps, 0, args.budget,
                          lambda s: print(f"{label:22} {s}", file=sys.stderr, flush=True))
            for c in cases:
                r = res.get(c["id"], {})
                rows.append({"size": n, "question": c["question"], "variant": label, "wall_ms": r.get("wall_ms"), "cpu_ms": r.get("cpu_ms"), "found": r.get("found"),
                             "opens": r.get("opens"), "listings": r.get("listings"), "error": r.get("error")})
    del REPO
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1, default=str))
    ix = {(r["size"], r["question"], r["variant"]): r for r in rows}
    labels = ["floor"] + ["+".join(variants[v]) or "base" for v in chosen]
    print("wall / CPU ms (medians); ≠: the answer differs from the unpatched code's")
    print("| size | question | " + " | ".join(labels) + " |")
    print("|---|---|" + "---:|" * len(labels))
    for n in sizes:
        for q in dict.fromkeys(r["question"] for r in rows):
            base = ix.get((n, q, "base"), {}).get("found")
            cells = []
            for lab in labels:
                r = ix.get((n, q, lab), {})
                flag = "" if lab in ("floor", "base") or r.get("found") == base else " ≠"
                cells.append(f"{r['wall_ms']:,.1f} / {r['cpu_ms']:,.1f}{flag}" if r.get("wall_ms") is not None else str(r.get("error"))[:30])
            print(f"| {n:,} | {q} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
