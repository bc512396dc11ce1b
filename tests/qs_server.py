"""The real `metaflow-agent-service` process on a free 127.0.0.1 port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pg import free_port

DUMP_NOW_S = 1796061093  # the dump's own clock (epoch s), from shared/service-db/README.md


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class ServiceProcess:
    """One server process; `get` talks HTTP to it (stdlib only)."""

    dsn: str
    args: list[str] = field(default_factory=list)
    token: str | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    _token_file: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> ServiceProcess:
        self.port = free_port()
        fd, log = tempfile.mkstemp(prefix="mfa-service-", suffix=".log")
        os.close(fd)
        self.log = Path(log)
        cmd = [sys.executable, "-m", "metaflow_agent_service", "--dsn", self.dsn, "--port", str(self.port), *self.args]
        if self.token:
            self._token_file = Path(tempfile.mkstemp(prefix="mfa-token-")[1])
            self._token_file.write_text(self.token)
            cmd += ["--token-file", str(self._token_file)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MF_METADATA_DB_", "METAFLOW_AGENT_SERVICE_"))}
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if self.get("/agent/v1/health", auth=False).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"service did not become healthy:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None
        for path in (self._token_file, self.log):
            if path is not None:
                path.unlink(missing_ok=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def get(self, path: str, params: Mapping[str, Any] | None = None, *, auth: bool = True,
            headers: Mapping[str, str] | None = None, timeout: float = 60) -> Reply:
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
        req = urllib.request.Request(self.url + path + ("?" + query if query else ""))
        if auth and self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, hdrs, raw = resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as err:
            status, hdrs, raw = err.code, dict(err.headers.items()), err.read()
        return Reply(status, {k.lower(): v for k, v in hdrs.items()}, json.loads(raw) if raw else None)
