"""A throwaway PostgreSQL cluster for tests, on a free 127.0.0.1 port.

`initdb` and `postgres` refuse to run as root, so as root the server runs as an unprivileged
OS user (`postgres` when it exists, else `nobody`) through `runuser`; otherwise as the
current user. Clients (`psql`, asyncpg) connect over TCP as the database superuser
`postgres` with trust authentication, which only 127.0.0.1 can reach.

    cluster = PgCluster.start()            # raises PgUnavailable when the binaries are missing
    dsn = cluster.create_db("metaflow", dump=service_db_dump())
    ...
    cluster.stop()                         # stops the server and removes the folder
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postgres"
# psql learned \restrict / \unrestrict (which pg_dump >= 15.14 writes) in these minor releases.
_RESTRICT_SINCE = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}


class PgUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed here."""


def find_bin_dir() -> Path | None:
    """Where initdb/pg_ctl/postgres/psql live: $PG_BIN, `pg_config --bindir`, Debian's layout, PATH."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted((p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True)
        candidates += [p / "bin" for p in versions]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)  # type: ignore[arg-type]
    for c in candidates:
        if all((c / b).is_file() for b in ("initdb", "pg_ctl", "postgres", "psql")):
            return c
    return None


def service_db_dump() -> Path:
    """The real metadata service's dump in ``<workspace>/shared/service-db`` (or $METAFLOW_AGENT_SHARED)."""
    default = Path(__file__).resolve().parents[2] / "shared"
    shared = default if (default / "service-db").is_dir() else Path(os.environ.get("METAFLOW_AGENT_SHARED", default))
    path = shared / "service-db" / "metaflow-capture.sql"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; set METAFLOW_AGENT_SHARED to the shared folder")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _os_user() -> str | None:
    """The unprivileged account to run the server as (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PgUnavailable("running as root and neither a 'postgres' nor a 'nobody' OS user exists")


def _traversable(path: Path) -> bool:
    """Every parent of `path` can be entered by other users (o+x)."""
    for parent in path.resolve().parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
    return True


def _psql_major_minor(bin_dir: Path) -> tuple[int, int]:
    out = subprocess.run([str(bin_dir / "psql"), "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def psql_understands_restrict(bin_dir: Path) -> bool:
    major, minor = _psql_major_minor(bin_dir)
    return major > 17 or minor >= _RESTRICT_SINCE.get(major, 1 << 30)


@dataclass
class PgCluster:
    bin_dir: Path
    root: Path
    port: int
    os_user: str | None
    settings: dict[str, str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    def dsn(self, db: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{db}"

    # --- lifecycle ---------------------------------------------------------------
    @classmethod
    def start(cls, *, bin_dir: Path | None = None, base: Path | None = None, settings: dict[str, str] | None = None) -> PgCluster:
        """initdb and start on a free 127.0.0.1 port (fsync off).

        `base`: the folder to create the cluster in (default: the temp folder); `settings`:
        extra server settings (e.g. shared_buffers for benchmarks)."""
        bin_dir = bin_dir or find_bin_dir()
        if bin_dir is None:
            raise PgUnavailable("PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) not found; install postgresql-15 or set PG_BIN")
        user = _os_user()
        base = base or Path(tempfile.gettempdir())
        if user is not None and not _traversable(base / "x"):
            base = Path("/tmp")  # the server's OS user must reach its data folder
        root = Path(tempfile.mkdtemp(prefix="mfa-pg-", dir=base))
        if user is not None:
            pw = pwd.getpwnam(user)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        cluster = cls(bin_dir, root, 0, user, dict(settings or {}))
        try:
            cluster._run([str(bin_dir / "initdb"), "-D", str(cluster.data), "-U", SUPERUSER, "--auth=trust",
                          "-E", "UTF8", "--no-locale", "--no-sync"])
            last: Exception | None = None
            for _ in range(3):  # a free port can be taken between probe and bind
                cluster.port = free_port()
                try:
                    cluster._start_server()
                    return cluster
                except subprocess.CalledProcessError as exc:
                    last = exc
            raise RuntimeError(f"postgres did not start: {last}\n{cluster.log_tail()}")
        except BaseException:
            cluster.stop()
            raise

    def _start_server(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        opts += "".join(f" -c {k}={v}" for k, v in self.settings.items())
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o", opts, "start"])

    def stop(self) -> None:
        """Stop the server and remove the folder; safe to call twice."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self._as_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
                           capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        log = self.root / "log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""

    # --- databases -----------------------------------------------------------------
    def psql(self, db: str, sql: str | None = None, *, stdin: str | None = None, timeout: float = 300) -> str:
        """Run SQL (``-c``) or a script on stdin with ON_ERROR_STOP; returns stdout."""
        cmd = [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
               "-p", str(self.port), "-U", SUPERUSER, "-d", db]
        if sql is not None:
            cmd += ["-c", sql]
        out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, env=self._client_env())
        if out.returncode != 0:
            raise RuntimeError(f"psql failed ({out.returncode}): {out.stderr[-2000:]}")
        return out.stdout

    def create_db(self, name: str, *, dump: Path | None = None, template: str | None = None) -> str:
        """Create a database (from a template or a dump); returns its DSN."""
        self.psql("postgres", f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        if dump is not None:
            text = dump.read_text()
            if not psql_understands_restrict(self.bin_dir):
                text = re.sub(r"(?m)^\\(un)?restrict .*$", "", text)
            self.psql(name, stdin=text)
        return self.dsn(name)

    # --- plumbing ------------------------------------------------------------------
    def _client_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGCONNECT_TIMEOUT"] = "10"
        return env

    def _as_user(self, cmd: list[str]) -> list[str]:
        if self.os_user is None:
            return cmd
        if shutil.which("runuser"):
            return ["runuser", "-u", self.os_user, "--", *cmd]
        import shlex

        return ["su", self.os_user, "-s", "/bin/sh", "-c", " ".join(shlex.quote(c) for c in cmd)]

    def _run(self, cmd: list[str]) -> None:
        # cwd=/ : the OS user may not be allowed into our working directory.
        proc = subprocess.run(self._as_user(cmd), capture_output=True, text=True, timeout=120, cwd="/", env=self._client_env())
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
