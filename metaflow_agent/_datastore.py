"""Bounded, counted reads from the datastore: local files or S3.

Paths are relative to the datastore root ('Flow/Run/step/task/0.data.json');
nothing may leave the root. Every read records its bytes in the active meter.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from ._cost import current_meter
from ._errors import BackendError, NotFound, PathEscape, ServiceUnavailable


@dataclass(frozen=True)
class Entry:
    """One name in a folder listing: size and modification time (epoch s) when the listing gave them."""

    name: str
    is_dir: bool
    size: int | None = None
    mtime: float | None = None


class Datastore(ABC):
    """Read-only view of a Metaflow datastore root."""

    kind: str = "?"

    def __init__(self, root: str) -> None:
        self.root = root

    @staticmethod
    def _check(rel: str) -> str:
        if rel == "":
            return rel  # the root itself
        parts = rel.split("/")
        if rel.startswith("/") or any(p in ("..", ".", "") for p in parts) or "\\" in rel or "\x00" in rel:
            raise PathEscape(f"path {rel!r} leaves the datastore root", hint="use pathspecs, not file paths")
        return rel

    @abstractmethod
    def size(self, rel: str) -> int | None:
        """Size in bytes, or None when absent."""

    @abstractmethod
    def read(self, rel: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read length bytes from offset (None: to the end). NotFound when absent."""

    @abstractmethod
    def read_tail(self, rel: str, nbytes: int) -> tuple[bytes, int]:
        """The last nbytes and the total size, in one read."""

    @abstractmethod
    def entries(self, rel_dir: str, *, with_stat: bool = False) -> list[Entry]:
        """What is directly under a folder ([] when absent); sizes and times when `with_stat`
        (free on S3, one stat per entry locally)."""

    def list(self, rel_dir: str) -> list[str]:
        """Names directly under a folder ([] when absent)."""
        return [e.name for e in self.entries(rel_dir)]

    def read_small(self, rel: str, cap: int = 4 << 20) -> bytes:
        """A whole small file (data.json, records), refused over cap."""
        data = self.read(rel, 0, cap + 1)
        if len(data) > cap:
            raise BackendError(f"{rel} is over {cap} bytes", hint="this file is expected to be small")
        return data


class LocalDatastore(Datastore):
    kind = "local"

    def _path(self, rel: str) -> str:
        path = os.path.realpath(os.path.join(self.root, self._check(rel)))
        root = os.path.realpath(self.root)
        if path != root and not path.startswith(root + os.sep):
            raise PathEscape(f"path {rel!r} leaves the datastore root", hint="use pathspecs, not file paths")
        return path

    def size(self, rel: str) -> int | None:
        try:
            return os.stat(self._path(rel)).st_size
        except FileNotFoundError:
            return None

    def mtime(self, rel: str) -> float | None:
        try:
            return os.stat(self._path(rel)).st_mtime
        except FileNotFoundError:
            return None

    def read(self, rel: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(rel), "rb") as f:
                f.seek(offset)
                data = f.read() if length is None else f.read(length)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{rel} is not in the datastore", hint="check the pathspec and attempt") from None
        current_meter().add_read(rel, len(data))
        return data

    def read_tail(self, rel: str, nbytes: int) -> tuple[bytes, int]:
        try:
            with open(self._path(rel), "rb") as f:
                total = os.fstat(f.fileno()).st_size
                f.seek(max(0, total - nbytes))
                data = f.read(nbytes)
        except FileNotFoundError:
            raise NotFound(f"{rel} is not in the datastore", hint="check the pathspec and attempt") from None
        current_meter().add_read(rel, len(data))
        return data, total

    def entries(self, rel_dir: str, *, with_stat: bool = False) -> list[Entry]:
        out = []
        try:
            with os.scandir(self._path(rel_dir)) as it:
                for e in it:
                    if with_stat:
                        try:
                            st = e.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        out.append(Entry(e.name, e.is_dir(follow_symlinks=False), st.st_size, st.st_mtime))
                    else:
                        out.append(Entry(e.name, e.is_dir(follow_symlinks=False)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        current_meter().add_read(rel_dir + "/", 0)
        return out


_client_lock = threading.Lock()
_MAX_LIST_PAGES = 20


class S3Datastore(Datastore):
    """S3 (or an S3-compatible server) through boto3, with ranged GETs."""

    kind = "s3"

    def __init__(self, root: str, client: Any = None) -> None:
        super().__init__(root.rstrip("/"))
        if not root.startswith("s3://"):
            raise BackendError(f"S3 root {root!r} must start with s3://", hint="set METAFLOW_DATASTORE_SYSROOT_S3")
        bucket, _, prefix = root[5:].partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._client = client

    @property
    def client(self) -> Any:
        with _client_lock:  # boto3's default session is not safe to share across threads
            if self._client is None:
                try:
                    import boto3
                except ImportError:
                    raise BackendError("boto3 is needed for an S3 datastore", hint="pip install 'metaflow-agent[s3]'") from None
                from ._config import s3_endpoint

                endpoint = s3_endpoint()
                self._client = boto3.session.Session().client("s3", endpoint_url=endpoint or None)
            return self._client

    @staticmethod
    def _unavailable(action: str, rel: str, exc: Exception) -> ServiceUnavailable:
        return ServiceUnavailable(f"S3 {action} of {rel} failed: {type(exc).__name__}: {exc}", hint="check S3 credentials, the bucket and METAFLOW_S3_ENDPOINT_URL")

    def _key(self, rel: str) -> str:
        rel = self._check(rel)
        return f"{self.prefix}/{rel}" if self.prefix and rel else (self.prefix or rel)

    def _get(self, rel: str, rng: str | None) -> tuple[bytes, int]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(rel)}
        if rng:
            kwargs["Range"] = rng
        try:
            resp = self.client.get_object(**kwargs)
        except Exception as exc:  # botocore errors: map, don't leak
            code = _s3_code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"{rel} is not in the datastore", hint="check the pathspec and attempt") from None
            if code == "InvalidRange":
                return b"", 0
            raise self._unavailable("read", rel, exc) from None
        try:
            data = resp["Body"].read()
        except Exception as exc:
            raise self._unavailable("read", rel, exc) from None
        total = int(resp.get("ContentRange", "/0").rsplit("/", 1)[-1] or 0) if rng else len(data)
        current_meter().add_read(rel, len(data))
        return data, total

    def size(self, rel: str) -> int | None:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._key(rel))
        except Exception as exc:
            current_meter().add_read(rel, 0)
            if _s3_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._unavailable("HEAD", rel, exc) from None
        current_meter().add_read(rel, 0)
        return int(resp["ContentLength"])

    def read(self, rel: str, offset: int = 0, length: int | None = None) -> bytes:
        if offset == 0 and length is None:
            return self._get(rel, None)[0]
        end = "" if length is None else str(offset + length - 1)
        if length == 0:
            return b""
        return self._get(rel, f"bytes={offset}-{end}")[0]

    def read_tail(self, rel: str, nbytes: int) -> tuple[bytes, int]:
        data, total = self._get(rel, f"bytes=-{nbytes}")
        if total == 0 and data:
            total = len(data)
        return data, total

    def entries(self, rel_dir: str, *, with_stat: bool = False) -> list[Entry]:
        key = self._key(rel_dir)
        prefix = key + "/" if key else ""
        out: list[Entry] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "Delimiter": "/"}
        for _ in range(_MAX_LIST_PAGES):  # a task folder holds a few dozen keys; bounded anyway
            try:
                resp = self.client.list_objects_v2(**kwargs)
            except Exception as exc:
                raise self._unavailable("list", rel_dir, exc) from None
            current_meter().add_read(rel_dir + "/", 0)
            for o in resp.get("Contents", []):
                modified = o.get("LastModified")
                out.append(Entry(o["Key"][len(prefix):], False, o.get("Size"), modified.timestamp() if modified else None))
            out += [Entry(p["Prefix"][len(prefix):].rstrip("/"), True) for p in resp.get("CommonPrefixes", [])]
            if not resp.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]
        return out


def _s3_code(exc: Exception) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def open_datastore(kind: str) -> Datastore:
    """The datastore Metaflow is configured with: local (its `.metaflow` root) or S3."""
    from . import _config

    if kind == "s3":
        root = _config.s3_root()
        if not root:
            raise BackendError("the S3 datastore has no root", hint="set METAFLOW_DATASTORE_SYSROOT_S3")
        return S3Datastore(root)
    local = _config.local_root()
    if local is None:
        raise BackendError(
            "no local datastore (.metaflow) found from this directory",
            hint="run a flow first, cd to its folder, or set METAFLOW_DATASTORE_SYSROOT_LOCAL",
        )
    return LocalDatastore(local)
