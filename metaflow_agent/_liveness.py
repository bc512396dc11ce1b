"""Is a local run or task alive? Proof from this host's process table.

Local Metaflow has no heartbeat. What it does have, on the machine that runs the flow:
- a task process per running attempt, whose command line reads
  `<script> ... --datastore-root <root> step <step> --run-id <run> --task-id <task> ...`;
- the runtime process (`python <script> run|resume ...`), alive from before the run is
  created until it ends, also while no task runs (between steps, waiting to retry).

A runtime owns the first run of its flow created after the process started, whose
`script-name` is its script. So: a live task process, or a live runtime owning the run,
proves the run alive; a readable process table on a local file system without either
proves it dead. On a network file system (the flow may run on another host), or when
`METAFLOW_AGENT_LOCAL_LIVENESS=activity`, the process table proves only life; death is
then judged by age: no activity for `DEAD_AFTER_S` (the metadata service's own cutoff).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

from ._cost import one_time


TABLE_TTL_S = 1.0  # one process scan serves every question asked within a second
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smbfs", "smb2", "smb3", "afpfs", "ncpfs", "ceph", "glusterfs", "lustre",
    "gpfs", "beegfs", "ocfs2", "gfs2", "9p", "virtiofs", "davfs", "webdav", "afs", "panfs", "wekafs",
})
_RUNTIME_COMMANDS = frozenset({"run", "resume"})


@dataclass(frozen=True)
class Runtime:
    """A flow runtime process: its script's file name, start time and datastore root (when known)."""

    script: str
    started_s: float
    root: str | None


@dataclass
class ProcessTable:
    """The Metaflow processes of this host at one instant."""

    readable: bool
    tasks: dict[str, set[tuple[str, str]]] = field(default_factory=dict)  # run id -> {(step, task id)}
    task_roots: dict[str, set[str]] = field(default_factory=dict)  # run id -> datastore roots seen
    runtimes: list[Runtime] = field(default_factory=list)


_lock = threading.Lock()
_cached: tuple[float, ProcessTable] | None = None


def process_table() -> ProcessTable:
    """This host's Metaflow processes (scanned at most once a second)."""
    global _cached
    with _lock:
        if _cached is not None and time.monotonic() - _cached[0] < TABLE_TTL_S:
            return _cached[1]
        table = _scan()
        _cached = (time.monotonic(), table)
        return table


def forget() -> None:
    """Drop the cached process table (tests)."""
    global _cached
    with _lock:
        _cached = None


def _scan() -> ProcessTable:
    try:
        with one_time():  # the first scan of a process imports psutil: not the call's work
            import psutil
    except ImportError:
        return ProcessTable(readable=False)
    table = ProcessTable(readable=True)
    scripts = _proc_scripts()
    if scripts is None:  # no /proc: psutil reads every process
        try:
            procs = list(psutil.process_iter(["pid", "cmdline", "create_time", "cwd"]))
        except (psutil.Error, OSError):
            return ProcessTable(readable=False)
        for proc in procs:
            info = proc.info
            argv = info.get("cmdline") or []
            if argv and _is_script(argv):
                _add(table, proc, argv, info.get("create_time"), info.get("cwd"))
        return table
    for pid, argv in scripts:  # only Python scripts' processes are looked at closer
        try:
            proc = psutil.Process(pid)
            started: float | None = proc.create_time()
        except (psutil.Error, OSError):
            continue  # gone since the listing
        try:
            cwd: str | None = proc.cwd()
        except (psutil.Error, OSError):  # another user's process
            cwd = None
        _add(table, proc, argv, started, cwd)
    return table


def _is_script(argv: list[str]) -> bool:
    return any(a.endswith(".py") for a in argv[:3])


def _proc_scripts() -> list[tuple[int, list[str]]] | None:
    """(pid, argv) of this host's Python-script processes from /proc's command lines (one small
    read per process, far cheaper than psutil's full look); None without a readable /proc."""
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return None
    if not pids:
        return None
    out = []
    for pid in pids:
        try:
            fd = os.open(f"/proc/{pid}/cmdline", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            raw = os.read(fd, 1 << 16)
        except OSError:
            continue
        finally:
            os.close(fd)
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0")]
        if argv and argv[-1] == "":
            argv.pop()
        if argv and _is_script(argv):
            out.append((pid, argv))
    return out


def _add(table: ProcessTable, proc: object, argv: list[str], started: float | None, cwd: str | None) -> None:
    """Note one script process: a task of a run, or a flow runtime."""
    task = _task_of(argv)
    if task is not None:
        run, step, task_id, root = task
        table.tasks.setdefault(run, set()).add((step, task_id))
        if root:
            table.task_roots.setdefault(run, set()).add(os.path.realpath(root))
        return
    runtime = _runtime_of(proc, argv, started, cwd)
    if runtime is not None:
        table.runtimes.append(runtime)


def _after(argv: list[str], flag: str) -> str | None:
    try:
        return argv[argv.index(flag) + 1]
    except (ValueError, IndexError):
        return None


def _task_of(argv: list[str]) -> tuple[str, str, str, str | None] | None:
    """(run, step, task, root) of a task process's command line, else None."""
    if "step" not in argv or "--run-id" not in argv or "--task-id" not in argv:
        return None
    step, run, task = _after(argv, "step"), _after(argv, "--run-id"), _after(argv, "--task-id")
    if not (step and run and task):
        return None
    return run, step, task, _after(argv, "--datastore-root")


def _runtime_of(proc: object, argv: list[str], started: float | None, cwd: str | None) -> Runtime | None:
    """A runtime process (`<script> ... run|resume`), with the datastore root it writes to when readable."""
    script = next((a for a in argv[:3] if a.endswith(".py")), None)
    if script is None or started is None or not _RUNTIME_COMMANDS.intersection(argv[argv.index(script) + 1:]):
        return None
    root = None
    try:
        sysroot = proc.environ().get("METAFLOW_DATASTORE_SYSROOT_LOCAL")  # type: ignore[attr-defined]  # a psutil.Process
    except Exception:  # another user's process: its environment is private
        sysroot, cwd = None, None
    if sysroot:
        root = os.path.realpath(os.path.join(sysroot, ".metaflow"))
    elif cwd:
        root = _found_root(cwd)
    return Runtime(os.path.basename(script), float(started), root)


def _found_root(cwd: str) -> str:
    """Where Metaflow looks for `.metaflow` from `cwd`: the nearest one above, else cwd's own."""
    here = os.path.realpath(cwd)
    while True:
        candidate = os.path.join(here, ".metaflow")
        if os.path.isdir(candidate):
            return candidate
        parent = os.path.dirname(here)
        if parent == here:
            return os.path.join(os.path.realpath(cwd), ".metaflow")
        here = parent


_fs_cache: dict[str, bool] = {}


def on_local_fs(path: str) -> bool:
    """Whether `path` is on a file system only this host writes to (not NFS, SMB, FUSE, ...)."""
    real = os.path.realpath(path)
    if real in _fs_cache:
        return _fs_cache[real]
    local = False
    try:
        import psutil

        parts = psutil.disk_partitions(all=True)
        best = max((p for p in parts if real == p.mountpoint or real.startswith(p.mountpoint.rstrip("/") + "/")),
                   key=lambda p: len(p.mountpoint), default=None)
        fstype = (best.fstype if best is not None else "").lower()
        local = bool(fstype) and fstype not in NETWORK_FS and not fstype.startswith("fuse")
    except Exception:
        local = False
    _fs_cache[real] = local
    return local
