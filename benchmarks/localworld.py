"""Local Metaflow worlds of 200 / 2,000 / 20,000 tasks and runs, written fast and checked exact.

Metaflow's own writers (`synth.RunWriter`: `LocalMetadataProvider` + `TaskDataStore`) took
13 s for 200 tasks and 100 runs on the 2-CPU machine (FastWriter: 1.5 s); the 20,000 worlds
would take about half an hour through them. `FastWriter` writes the same files directly, in the same formats, in the same order of clock calls: with
the same synthetic clock it produces the same run ids, task ids, file names and timestamps as
`RunWriter`. `verify_sample()` builds one sample of every shape both ways and compares every
file (JSON parsed, tag lists as sets; logs with MFLOG stamps and line ids elided; blobs
decompressed; artifacts drawn from `os.urandom` and the exception's traceback
compared by type and size only); every build runs it first and stops on any difference.

Worlds are cached under the work folder, keyed by `WORLD_VERSION` and the size:

    <cache>/<WORLD_VERSION>/.metaflow/BenchTasks<N>Flow   one run: start -> a foreach of N tasks
    <cache>/<WORLD_VERSION>/.metaflow/BenchRuns<N>Flow    N start -> end runs
    <cache>/<WORLD_VERSION>/{tasks,runs}-<N>.json        the world's manifest (written last)

    python -m benchmarks.localworld CACHE tasks-200 runs-200 ...   # verify, then build (or reuse) worlds
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import sys
import time
from hashlib import sha1
from typing import Any, Callable

from .synth import (
    MFLOG_SOURCE,
    Attempt,
    SynthClock,
    TaskSpec,
    _graph_info,
    run_outcome,
    run_tags,
    simple_run,
    wide_run,
)

WORLD_VERSION = "v1"  # bump when a world's shape or format changes: cached worlds are rebuilt
SPACING_S = 40 * 60  # runs 40 minutes apart (the captured SynthFlow's rhythm)
WINDOW_RUNS = 39  # runs in the time window
FAILED_TASKS = 8  # failed twice under @retry(times=1), at every width: the answer stays one size
LOG_LINES = 40_000  # the start task's stdout (≈ 5 MB): the log-tail question's log
USER = "bench"
_MODE = 0o600  # Metaflow writes through mkstemp: owner-only files


def tasks_flow(n: int) -> str:
    return f"BenchTasks{n}Flow"


def runs_flow(n: int) -> str:
    return f"BenchRuns{n}Flow"


class FastWriter:
    """`synth.RunWriter`'s interface (`new_run`, `task`), writing the files directly.

    Every `clock.time()` call below stands for one `time.time()` call Metaflow makes at that
    point (provider, metadata helpers, TaskDataStore), so both writers stamp alike.
    """

    def __init__(self, flow: str, ds_root: str, clock: SynthClock, *, user: str | None = None) -> None:
        import metaflow
        from metaflow.util import get_username

        self.flow = flow
        self.root = ds_root
        self.clock = clock
        user = user or get_username() or USER  # who Metaflow's writers would name in this environment
        self.user = user
        self.script = f"{flow.lower()}.py"
        pyver = "%d.%d.%d" % sys.version_info[:3]
        self.sys_info = [("runtime", "dev"), ("python_version", pyver), ("user", user), ("metaflow_version", metaflow.__version__)]
        # The provider's sticky system tags (RunWriter passes the same four as the run's own).
        self.sys_tags = [f"user:{user}", f"metaflow_version:{metaflow.__version__}", f"python_version:{pyver}", "runtime:dev"]
        self._blobs: set[str] = set()
        self._dirs: set[str] = set()
        self._task_seq = -1
        self._graph: dict[str, Any] = {}

    # --- files -----------------------------------------------------------------
    def _mkdir(self, path: str) -> None:
        if path not in self._dirs:
            os.makedirs(path, exist_ok=True)
            self._dirs.add(path)

    @staticmethod
    def _write(path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _MODE)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def _json(self, path: str, obj: Any) -> None:
        self._write(path, json.dumps(obj).encode())

    def _now_ms(self) -> int:
        return int(round(self.clock.time() * 1000))

    # --- metadata (LocalMetadataProvider) ---------------------------------------------
    def _ensure_self(self, parts: list[str], body: Callable[[], dict[str, Any]]) -> None:
        meta = os.path.join(self.root, *parts, "_meta")
        self._mkdir(meta)
        path = os.path.join(meta, "_self.json")
        if not os.path.isfile(path):
            self._json(path, body())

    def _obj(self, tags: list[str] | None = None) -> dict[str, Any]:
        return {"flow_id": self.flow, "user_name": self.user, "tags": list(tags or []), "system_tags": list(self.sys_tags),
                "ts_epoch": self._now_ms()}

    def _register(self, run: str, step: str, task: str, rows: list[tuple[str, str, str, int]]) -> None:
        """register_metadata: rows of (field, value, type, attempt); one clock call per row, then the file stamp."""
        meta = os.path.join(self.root, self.flow, run, step, task, "_meta")
        self._mkdir(meta)
        datums = [{"flow_id": self.flow, "run_number": run, "step_name": step, "task_id": task, "field_name": f, "type": t,
                   "value": v, "tags": [f"attempt_id:{a}"], "user_name": self.user, "ts_epoch": self._now_ms()} for f, v, t, a in rows]
        ts = self._now_ms()
        for d in datums:
            self._json(os.path.join(meta, "sysmeta_%s_%d.json" % (d["field_name"], ts)), d)

    def _system_metadata(self, run: str, step: str, task: str, attempt: int) -> None:
        rows = [(k, v, k, attempt) for k, v in self.sys_info] + [("script-name", self.script, "script-name", attempt)]
        self._register(run, step, task, rows)

    def _new_task(self, run: str, step: str) -> str:
        self._task_seq += 1
        task = str(self._task_seq)
        self._ensure_self([self.flow, run, step], lambda: {"run_number": run, "step_name": step, **self._obj()})
        self._ensure_self([self.flow, run, step, task], lambda: {"run_number": run, "step_name": step, "task_id": task, **self._obj()})
        self._system_metadata(run, step, task, 0)
        return task

    # --- the datastore (TaskDataStore, ContentAddressedStore) ---------------------------
    def _blob(self, obj: Any) -> tuple[str, dict[str, Any]]:
        raw = pickle.dumps(obj, protocol=4)
        sha = sha1(raw).hexdigest()
        if sha not in self._blobs:
            folder = os.path.join(self.root, self.flow, "data", sha[:2])
            self._mkdir(folder)
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=3) as f:
                f.write(raw)
            self._write(os.path.join(folder, sha), buf.getvalue())
            self._write(os.path.join(folder, sha + "_meta"), b'{"cas_raw": false, "cas_version": 1}')
            self._blobs.add(sha)
        info = {"size": len(raw), "type": str(type(obj)), "encoding": "pickle-v4", "serializer_info": {"source": "metaflow"}}
        return sha, info

    def _attempt_begin(self, tdir: str, attempt: int) -> None:
        self._mkdir(tdir)
        self._json(os.path.join(tdir, f"{attempt}.attempt.json"), {"time": self.clock.time()})

    def _save_artifacts(self, arts: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        """save_artifacts: each value pickled into the content-addressed store; (objects, info) for data.json."""
        objects, info = {}, {}
        for name, obj in arts.items():
            objects[name], info[name] = self._blob(obj)
        return objects, info

    def _done(self, run: str, step: str, task: str, attempt: int, saved: tuple[dict[str, str], dict[str, Any]]) -> None:
        """done(): data.json, DONE.lock, attempt-done, then the artifact records."""
        objects, info = saved
        tdir = os.path.join(self.root, self.flow, run, step, task)
        self._json(os.path.join(tdir, f"{attempt}.data.json"), {"datastore": "local", "version": "1.0", "attempt": attempt,
                                                                "python_version": sys.version, "objects": objects, "info": info})
        self._json(os.path.join(tdir, f"{attempt}.DONE.lock"), "")
        self._register(run, step, task, [("attempt-done", str(attempt), "attempt-done", attempt)])
        meta = os.path.join(tdir, "_meta")
        for name, sha in objects.items():
            d = {"run_number": run, "step_name": step, "task_id": task, "attempt_id": attempt, "name": name, "content_type": "pickle-v4",
                 "type": "metaflow.artifact", "sha": sha, "ds_type": "local", "location": ":root:%s" % self.root, **self._obj()}
            self._json(os.path.join(meta, "%d_artifact_%s.json" % (attempt, name)), d)

    # --- RunWriter's interface ---------------------------------------------------------------
    def new_run(self, tags: list[str] | None = None, steps: list[str] | None = None, retry: dict[str, int] | None = None) -> str:
        self._graph = _graph_info(steps or ["start", "end"], retry)
        self._task_seq = -1
        run = "%d" % (self.clock.time() * 1e6)
        self._ensure_self([self.flow], lambda: {"flow_id": self.flow, "ts_epoch": self._now_ms()})
        self._ensure_self([self.flow, run], lambda: {"run_number": run, **self._obj(tags)})
        task = self._new_task(run, "_parameters")
        tdir = os.path.join(self.root, self.flow, run, "_parameters", task)
        self._attempt_begin(tdir, 0)
        saved = self._save_artifacts({"name": self.flow, "_task_ok": True, "_success": True, "_graph_info": self._graph,
                                      "_transition": None, "_configs_processed": True, "_foreach_stack": []})
        self._done(run, "_parameters", task, 0, saved)
        self._register(run, "_parameters", task, [("start_step", "start", "start_step", 0)])
        return run

    def task(self, run: str, spec: TaskSpec) -> str:
        from metaflow.exception import MetaflowExceptionWrapper
        from metaflow.mflog.mflog import decorate

        task = self._new_task(run, spec.step)
        tdir = os.path.join(self.root, self.flow, run, spec.step, task)
        for n, att in enumerate(spec.attempts):
            self._system_metadata(run, spec.step, task, n)  # register_task_id: the task process registers itself again
            rows = [("attempt", str(n), "attempt", n), ("origin-run-id", "None", "origin-run-id", n), ("ds-type", "local", "ds-type", n),
                    ("ds-root", self.root, "ds-root", n)]
            if spec.foreach_index is not None:
                rows += [("foreach-stack", "{items=%d}" % spec.foreach_index, "foreach-stack", n),
                         ("foreach-execution-path", "%s:%d" % (spec.step, spec.foreach_index), "foreach-execution-path", n)]
            self._register(run, spec.step, task, rows)
            self._attempt_begin(tdir, n)
            self._json(os.path.join(tdir, f"{n}.task_begin"), {"code_package_metadata": "", "code_package_sha": None, "code_package_ds": None,
                                                                "code_package_url": None, "retry_count": n})
            lines = [f"working on item {spec.foreach_index} attempt {n} line {i}" for i in range(att.stdout_lines)]
            exc = None
            if att.ok is False:
                try:
                    raise ValueError(f"{att.message} item={spec.foreach_index}")
                except ValueError as e:
                    exc = MetaflowExceptionWrapper(e)
                lines.append("Task failed.")
            self._write(os.path.join(tdir, f"{n}.{MFLOG_SOURCE}_stdout.log"), b"".join(decorate(MFLOG_SOURCE, ln) + b"\n" for ln in lines))
            self._write(os.path.join(tdir, f"{n}.{MFLOG_SOURCE}_stderr.log"), b"")
            if att.ok is None:
                continue  # killed: nothing else is written
            arts = {
                "name": self.flow, "_task_ok": att.ok, "_success": att.ok, "_exception": exc, "_current_step": spec.step,
                "_graph_info": self._graph, "_transition": None if att.ok is False else ([spec.step], None, None),
                "_configs_processed": True,
                "_foreach_stack": [] if spec.foreach_index is None else [(spec.foreach_index, 0, None)],
                "_foreach_num_splits": None, "_foreach_var": None, "_foreach_values": None, "_iteration_stack": [],
                **spec.artifacts,
            }
            saved = self._save_artifacts(arts)
            self._register(run, spec.step, task, [("attempt_ok", str(bool(att.ok)), "internal_attempt_status", n)])
            self._json(os.path.join(tdir, f"{n}.task_end"), {})
            self._done(run, spec.step, task, n, saved)
            self._json(os.path.join(tdir, f"{n}.runtime"), {"return_code": 0 if att.ok else 1, "killed": False, "success": bool(att.ok)})
        return task


# --- shapes --------------------------------------------------------------------------------
def tasks_shape(width: int) -> tuple[set[int], set[int]]:
    """(failed twice, failed then ok): the last FAILED_TASKS items, and item 1."""
    k = min(FAILED_TASKS, max(1, width // 25))
    return set(range(width - k, width)), {1}


def build_tasks(w: Any, width: int, log_lines: int = LOG_LINES) -> dict[str, Any]:
    """start (a long stdout) -> a foreach `work` of `width` tasks, no join: as `synth.wide_run`."""
    failed, retried = tasks_shape(width)
    run = w.new_run(steps=["start", "work", "join", "end"], retry={"work": 1})
    start = w.task(run, TaskSpec("start", [Attempt(True, log_lines)], {"items": list(range(width))}))
    for i in range(width):
        if i in failed:
            atts = [Attempt(False), Attempt(False)]
        elif i in retried:
            atts = [Attempt(False), Attempt(True)]
        else:
            atts = [Attempt(True)]
        w.task(run, TaskSpec("work", atts, {"value": i * 2, "input": i}, foreach_index=i))
    flow = w.flow
    return {"flow": flow, "run": f"{flow}/{run}", "width": width, "failed": len(failed), "retried_ok": len(retried),
            "log_task": f"{flow}/{run}/start/{start}", "log_lines": log_lines}


def build_runs(w: Any, clock: SynthClock, n: int) -> dict[str, Any]:
    """n start -> end runs SPACING_S apart, the captured mix (≈7 % end failed, ≈4 % killed)."""
    starts = []
    for i in range(n):
        starts.append(int(clock.now * 1000))
        simple_run(w, run_outcome(i), run_tags(i))
        clock.advance(SPACING_S)
    k = n // 2
    window = min(WINDOW_RUNS, n - k - 1)
    return {"flow": w.flow, "runs": n, "since_ms": starts[k], "until_ms": starts[k + window] - 1, "window_runs": window,
            "failed_runs": sum(run_outcome(i) != "ok" for i in range(n))}


# --- verification against Metaflow's own writers ------------------------------------------------
_SKIP_VALUE = {"model", "_exception"}  # random bytes, a traceback: compared by type and size


def _norm_json(obj: Any, root: str) -> Any:
    if isinstance(obj, dict):
        return {k: (sorted(v) if k in ("tags", "system_tags") and isinstance(v, list) else _norm_json(v, root)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_norm_json(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(root, "<root>")
    return obj


def _norm_log(data: bytes) -> list[bytes]:
    out = []
    for line in data.split(b"\n"):
        if line.startswith(b"[MFLOG|"):
            head, _, body = line.partition(b"]")
            parts = head.split(b"|")
            line = b"|".join(parts[:2] + [b"<ts>", parts[3], b"<id>"]) + b"]" + body
        out.append(line)
    return out


def _tree(root: str) -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            full = os.path.join(folder, f)
            out[os.path.relpath(full, root)] = full
    return out


def compare_trees(a_root: str, b_root: str) -> list[str]:
    """Differences between two datastore roots written for the same shapes (empty: the same)."""
    a, b = _tree(a_root), _tree(b_root)
    diffs = [f"only in Metaflow's: {p}" for p in sorted(set(a) - set(b))] + [f"only in FastWriter's: {p}" for p in sorted(set(b) - set(a))]
    blob_names: dict[str, str] = {}
    for rel in sorted(set(a) & set(b)):
        pa, pb = a[rel], b[rel]
        if "/data/" not in "/" + rel and rel.endswith(".data.json"):
            ja, jb = json.load(open(pa)), json.load(open(pb))
            for name, sha in ja.get("objects", {}).items():
                blob_names[sha] = name
            for name in _SKIP_VALUE & set(ja.get("objects", {})):
                for j in (ja, jb):
                    j["objects"][name] = "<sha>"
                    if name == "_exception":  # the pickled traceback's length varies
                        j["info"][name].pop("size", None)
            if ja != jb:
                diffs.append(f"{rel}: {ja} != {jb}")
            continue
        if os.stat(pa).st_mode != os.stat(pb).st_mode:
            diffs.append(f"{rel}: mode {oct(os.stat(pa).st_mode)} != {oct(os.stat(pb).st_mode)}")
        da, db = open(pa, "rb").read(), open(pb, "rb").read()
        if rel.endswith(".log"):
            if _norm_log(da) != _norm_log(db):
                diffs.append(f"{rel}: log lines differ")
        elif "/data/" in "/" + rel and not rel.endswith("_meta"):
            ua, ub = gzip.decompress(da), gzip.decompress(db)
            if ua != ub:
                diffs.append(f"{rel}: blob content differs")
        elif rel.endswith(".json") or rel.endswith((".attempt.json", ".task_begin", ".task_end", ".runtime", ".DONE.lock", "_meta")):
            try:
                ja, jb = _norm_json(json.loads(da), a_root), _norm_json(json.loads(db), b_root)
            except ValueError:
                ja, jb = da, db
            if ja != jb:
                if "_artifact_" in rel and isinstance(ja, dict) and ja.get("name") in _SKIP_VALUE:
                    ja["sha"] = jb["sha"] = "<sha>"
                if ja != jb:
                    diffs.append(f"{rel}: {ja} != {jb}")
        elif da != db:
            diffs.append(f"{rel}: bytes differ")
    return diffs


def verify_sample(work: str) -> list[str]:
    """Write one sample of every shape with Metaflow's writers and with FastWriter; their differences."""
    from .synth import RunWriter, clock_patched

    start = 1_700_000_000.0
    roots = {k: os.path.join(work, k, ".metaflow") for k in ("metaflow", "fast")}
    for r in roots.values():
        shutil.rmtree(os.path.dirname(r), ignore_errors=True)
        os.makedirs(r)

    def shapes(make: Callable[[str], Any], clock: SynthClock) -> None:
        build_tasks(make("VerifyTasksFlow"), 6, log_lines=25)
        clock.advance(SPACING_S)
        build_runs(make("VerifyRunsFlow"), clock, 3)
        w = make("VerifyMixFlow")  # every outcome of simple_run, and the wide shape of synth
        for outcome in ("ok", "end_failed", "killed"):
            simple_run(w, outcome, ["team:a"])
            clock.advance(SPACING_S)
        wide_run(w, 4, {3}, {1})

    clock = SynthClock(start)
    with clock_patched(clock):
        shapes(lambda flow: RunWriter(flow, roots["metaflow"]), clock)
    clock = SynthClock(start)
    shapes(lambda flow: FastWriter(flow, roots["fast"], clock), clock)
    diffs = compare_trees(roots["metaflow"], roots["fast"])
    # Blobs of random bytes and tracebacks have a different sha on each side by design (data.json
    # compares every other sha): accept them when they pair up one for one.
    only = [d for d in diffs if d.startswith("only in") and "/data/" in d]
    mine = sum(d.startswith("only in FastWriter") for d in only)
    if mine * 2 == len(only):
        diffs = [d for d in diffs if d not in only]
    return diffs


# --- building and caching -------------------------------------------------------------------------------
def sysroot(cache: str) -> str:
    """The one METAFLOW_DATASTORE_SYSROOT_LOCAL every world's flow lives under (one flow per world)."""
    return os.path.join(cache, WORLD_VERSION)


def build_world(cache: str, kind: str, n: int, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """The world's manifest, building its flow when the cache has none."""
    folder = sysroot(os.path.abspath(cache))  # the artifact records and ds-root rows carry this path
    root = os.path.join(folder, ".metaflow")
    manifest_path = os.path.join(folder, f"{kind}-{n}.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            return json.load(f)
    flow = tasks_flow(n) if kind == "tasks" else runs_flow(n)
    shutil.rmtree(os.path.join(root, flow), ignore_errors=True)  # a build that stopped half way
    os.makedirs(root, exist_ok=True)
    t0 = time.perf_counter()
    if kind == "tasks":
        clock = SynthClock(time.time() - 7 * 86400)
        m = build_tasks(FastWriter(flow, root, clock), n)
    elif kind == "runs":
        clock = SynthClock(time.time() - n * SPACING_S - 3600)  # the newest run is an hour old
        m = build_runs(FastWriter(flow, root, clock), clock, n)
    else:
        raise ValueError(kind)
    files = sum(len(fs) for _, _, fs in os.walk(os.path.join(root, flow)))
    m.update(kind=kind, n=n, root=root, sysroot=folder, files=files, build_s=round(time.perf_counter() - t0, 1), version=WORLD_VERSION)
    with open(manifest_path, "w") as f:  # written last: a manifest means a complete world
        json.dump(m, f)
    progress(f"built {kind}-{n} ({flow}): {files:,} files in {m['build_s']:.0f} s")
    return m


def ensure_worlds(cache: str, sizes: list[int], progress: Callable[[str], None] = lambda s: None) -> dict[str, dict[str, Any]]:
    """Verify FastWriter against Metaflow's writers, then build (or reuse) every world."""
    diffs = verify_sample(os.path.join(cache, "verify"))
    if diffs:
        raise RuntimeError("FastWriter differs from Metaflow's writers:\n" + "\n".join(diffs[:20]))
    progress("FastWriter verified: one sample of every shape is file for file what Metaflow's writers produce")
    return {f"{kind}-{n}": build_world(cache, kind, n, progress) for kind in ("tasks", "runs") for n in sizes}


if __name__ == "__main__":
    cache, specs = sys.argv[1], sys.argv[2:]
    sizes = sorted({int(spec.partition("-")[2]) for spec in specs})
    worlds = ensure_worlds(cache, sizes, progress=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps({k: v for k, v in worlds.items() if k in specs}))
