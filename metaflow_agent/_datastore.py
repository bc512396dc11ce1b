"""Bounded, counted reads from the datastore: local files or S3.

Paths are relative to the datastore root ('Flow/Run/step/task/0.data.json');
nothing may leave the root. Every read records its bytes in the active meter.

Local reads check the path once per folder, not per file: the root is resolved
once per datastore object; within a call, each folder is checked once (a folder
seen as a real directory in its parent's listing needs no look; any other is
`lstat`ed, and a symbolic link must resolve inside the root); files are opened
with O_NOFOLLOW|O_NONBLOCK and must be regular files (`fstat`), so a FIFO, a
device or a folder where a file belongs is refused at once, never waited on.
A folder's listing and a small file's bytes are read once per call.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import stat
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ._cost import CostMeter, current_meter
from ._errors import BackendError, Damaged, NotFound, PathEscape, ServiceUnavailable

SMALL_CAP = 4 << 20  # the largest "small" file (records, data.json, metadata rows)


@dataclass(frozen=True)
class Entry:
    """One name in a folder listing: size and modification time (epoch s) when the listing gave them."""

    name: str
    is_dir: bool
    size: int | None = None
    mtime: float | None = None


def _not_found(rel: str) -> NotFound:
    return NotFound(f"{rel} is not in the datastore", hint="check the pathspec and attempt")


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
        if "" in parts or "." in parts or ".." in parts or "\\" in rel or "\x00" in rel:  # '' covers a leading '/'
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

    def read_small(self, rel: str, cap: int = SMALL_CAP) -> bytes:
        """A whole small file (data.json, records); Damaged over cap (such files are small)."""
        data = self.read(rel, 0, cap + 1)
        if len(data) > cap:
            raise _too_big(rel, cap)
        return data

    def read_json(self, rel: str, cap: int = SMALL_CAP) -> Any:
        """A small JSON file, parsed; Damaged when it is not JSON (truncated, corrupt)."""
        return parse_json(self.read_small(rel, cap), rel)


def parse_json(data: bytes, rel: str) -> Any:
    """JSON from a datastore file's bytes; Damaged when they are not JSON."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Damaged(f"{rel} is not valid JSON ({type(exc).__name__}: {str(exc)[:80]})",
                      hint="the file is truncated or corrupt: repair or remove it (questions over many items skip it and name it in notes)", item=rel) from None


def _too_big(rel: str, cap: int) -> Damaged:
    return Damaged(f"{rel} is over {cap} bytes, where a small file belongs", hint="the datastore object may be corrupt", item=rel)


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
_BAD_NAMES = frozenset({"", ".", ".."})
_SYMLINK_ERRNOS = frozenset({errno.ELOOP, errno.EMLINK})  # what O_NOFOLLOW gives on a symbolic link (Linux, BSD)
_LIST_MEMO_NAMES = 200_000  # names kept from listings per call (oldest listings dropped first)
_READ_MEMO_BYTES = 4 << 20  # small-file bytes kept per call
_READ_MEMO_FILE = 64 << 10  # files up to this size are kept


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


class _Seen:
    """What one call has checked and read under one local root."""

    __slots__ = ("dirs", "children", "lists", "list_names", "reads", "read_bytes")

    def __init__(self) -> None:
        self.dirs: set[str] = {""}  # folders checked (the root is resolved once per datastore)
        self.children: dict[str, set[str]] = {}  # folder -> names of its real subfolders (from its listing)
        self.lists: OrderedDict[tuple[str, bool], Any] = OrderedDict()  # (folder, with_stat) -> names or entries, oldest first
        self.list_names = 0
        self.reads: OrderedDict[str, bytes] = OrderedDict()
        self.read_bytes = 0


class LocalDatastore(Datastore):
    kind = "local"

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self._real = os.path.realpath(root)  # resolved once: every path is built on it
        self._key = ("local-datastore", self._real)

    def _seen(self, meter: CostMeter | None = None) -> _Seen:
        memo = (meter or current_meter()).memo
        seen = memo.get(self._key)
        if seen is None:
            seen = memo[self._key] = _Seen()
        return seen

    def _abs(self, rel: str) -> str:
        return f"{self._real}/{rel}" if rel else self._real

    def _inside(self, path: str, rel: str) -> str:
        """The target of a symbolic link, which must be inside the root (Damaged otherwise)."""
        try:
            real = os.path.realpath(path, strict=True)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise FileNotFoundError(path) from None  # a dangling link: absent
            raise Damaged(f"{rel} is a symbolic link that cannot be resolved ({exc.strerror})",
                          hint="a link loop or an unreadable target in the datastore", item=rel) from None
        if real != self._real and not real.startswith(self._real + os.sep):
            raise Damaged(f"{rel} is a symbolic link that leaves the datastore root",
                          hint="links out of the datastore root are not followed: replace the link with the folder or file itself", item=rel)
        return real

    def _dir(self, seen: _Seen, rel: str) -> str:
        """The folder's absolute path, its every component checked once per call.
        FileNotFoundError / NotADirectoryError when it is not a folder; Damaged when a link leaves the root."""
        path = self._abs(rel)
        if rel in seen.dirs:
            return path
        parent, _, name = rel.rpartition("/")
        if parent not in seen.dirs:
            self._dir(seen, parent)
        kids = seen.children.get(parent)
        if kids is None or name not in kids:  # not seen as a real folder in its parent's listing: look
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                if not os.path.isdir(self._inside(path, rel)):
                    raise NotADirectoryError(path)
            elif not stat.S_ISDIR(mode):
                raise NotADirectoryError(path)
        seen.dirs.add(rel)
        return path

    def _open(self, rel: str, seen: _Seen | None = None) -> tuple[int, os.stat_result]:
        """An open descriptor of a regular file and its fstat; NotFound, or Damaged for anything else."""
        seen = seen or self._seen()
        parent, _, name = rel.rpartition("/")
        if parent not in seen.dirs or name in _BAD_NAMES or "\\" in name or "\x00" in name:  # else its folder was checked
            rel = self._check(rel)
        try:
            path = f"{self._dir(seen, parent)}/{name}"
            try:
                fd = os.open(path, _OPEN_FLAGS)
            except OSError as exc:
                if exc.errno not in _SYMLINK_ERRNOS:
                    raise
                fd = os.open(self._inside(path, rel), _OPEN_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            raise _not_found(rel) from None
        except PermissionError:
            raise Damaged(f"{rel} cannot be read (permission denied)", hint="check the datastore's file permissions", item=rel) from None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise _not_found(rel) from None
            raise BackendError(f"{rel} cannot be opened: {exc.strerror}", hint="check the local datastore") from None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise Damaged(f"{rel} is a {_kind_of(st.st_mode)} where a file belongs", hint="refused without reading it: replace it with the file Metaflow wrote (questions over many items skip it)", item=rel)
        return fd, st

    @staticmethod
    def _pread(fd: int, n: int, offset: int) -> bytes:
        """n bytes from offset (fewer at the end of the file), in as few reads as the kernel allows."""
        if n <= 0:
            return b""
        data = os.pread(fd, n, offset)
        if len(data) < n and data:  # a short read of a regular file: rare, but not an end of file
            parts, got = [data], len(data)
            while got < n:
                more = os.pread(fd, n - got, offset + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data

    def _stat(self, rel: str) -> os.stat_result | None:
        """What is at rel (a link inside the root: its target), None when absent."""
        rel = self._check(rel)
        parent, _, name = rel.rpartition("/")
        try:
            path = f"{self._dir(self._seen(), parent)}/{name}" if rel else self._real
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                st = os.stat(self._inside(path, rel))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                return None
            raise BackendError(f"{rel} cannot be examined: {exc.strerror}", hint="check the local datastore") from None
        return st

    def size(self, rel: str) -> int | None:
        st = self._stat(rel)
        return None if st is None else st.st_size

    def mtime(self, rel: str) -> float | None:
        st = self._stat(rel)
        return None if st is None else st.st_mtime

    def read(self, rel: str, offset: int = 0, length: int | None = None) -> bytes:
        fd, st = self._open(rel)
        try:
            left = max(0, st.st_size - offset)
            data = self._pread(fd, left if length is None else min(length, left), offset)
        finally:
            os.close(fd)
        current_meter().add_read(rel, len(data))
        return data

    def read_small(self, rel: str, cap: int = SMALL_CAP) -> bytes:
        """A whole small file, read once per call in one read sized to it; Damaged over cap."""
        meter = current_meter()
        seen = self._seen(meter)
        data = seen.reads.get(rel)
        if data is not None:
            return data
        fd, st = self._open(rel, seen)
        try:
            if st.st_size > cap:
                raise _too_big(rel, cap)
            data = self._pread(fd, st.st_size, 0)
        finally:
            os.close(fd)
        meter.add_read(rel, len(data))
        if len(data) <= _READ_MEMO_FILE:  # kept, the oldest dropped past the bound
            seen.reads[rel] = data
            seen.read_bytes += len(data)
            while seen.read_bytes > _READ_MEMO_BYTES:
                seen.read_bytes -= len(seen.reads.popitem(last=False)[1])
        return data

    def read_tail(self, rel: str, nbytes: int) -> tuple[bytes, int]:
        fd, st = self._open(rel)
        try:
            total = st.st_size
            start = max(0, total - nbytes)
            data = self._pread(fd, total - start, start)
        finally:
            os.close(fd)
        current_meter().add_read(rel, len(data))
        return data, total

    def _remember(self, seen: _Seen, key: tuple[str, bool], value: Any) -> None:
        seen.lists[key] = value
        seen.list_names += len(value)
        while seen.list_names > _LIST_MEMO_NAMES and len(seen.lists) > 1:
            seen.list_names -= len(seen.lists.popitem(last=False)[1])

    def _scan(self, rel_dir: str, with_stat: bool) -> list[Any]:
        """One listing of the folder (checked first): names (or entries), and its real subfolders
        noted as checked. A `_meta` folder holds only files and a flow's folder is mostly passed
        over: their names come from one os.listdir, and a subfolder looked into later is checked then.
        (A listing by descriptor, opened O_NOFOLLOW, would check the folder itself but costs four
        more system calls than the one lstat it saves.)"""
        meter = current_meter()
        seen = self._seen(meter)
        if rel_dir not in seen.dirs:
            rel_dir = self._check(rel_dir)
        parent, _, name = rel_dir.rpartition("/")
        kids: set[str] | None = None
        names: list[Any]
        named = seen.lists.get((rel_dir, False)) if with_stat else None
        if named is not None and rel_dir in seen.dirs:  # named and checked already: a stat per name, no second listing
            path = self._abs(rel_dir)
            names = []
            for n in named:
                try:
                    st = os.stat(f"{path}/{n}", follow_symlinks=False)
                except OSError:
                    continue
                names.append(Entry(n, stat.S_ISDIR(st.st_mode), st.st_size, st.st_mtime))
            self._remember(seen, (rel_dir, True), names)
            return names
        try:
            path = self._dir(seen, rel_dir)  # the folder itself checked: seen in its parent's listing, else lstat'ed
            if not with_stat and (name == "_meta" or (rel_dir and not parent)):
                names = os.listdir(path)  # a `_meta` folder, or a flow's (few of its runs are looked into)
            else:
                names, kids = [], set()
                with os.scandir(path) as it:
                    for e in it:
                        is_dir = e.is_dir(follow_symlinks=False)
                        if is_dir:
                            kids.add(e.name)
                        if with_stat:
                            try:
                                st = e.stat(follow_symlinks=False)
                            except OSError:
                                continue
                            names.append(Entry(e.name, is_dir, st.st_size, st.st_mtime))
                        else:
                            names.append(e.name)
        except (FileNotFoundError, NotADirectoryError):
            self._remember(seen, (rel_dir, with_stat), [])  # absent: looked at once per call too
            return []
        except PermissionError:
            raise Damaged(f"{rel_dir} cannot be listed (permission denied)", hint="check the datastore's file permissions", item=rel_dir) from None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                return []
            raise BackendError(f"{rel_dir} cannot be listed: {exc.strerror}", hint="check the local datastore") from None
        seen.dirs.add(rel_dir)
        if kids is not None:
            seen.children[rel_dir] = kids
        meter.add_read(rel_dir + "/", 0)
        self._remember(seen, (rel_dir, with_stat), names)
        return names

    def entries(self, rel_dir: str, *, with_stat: bool = False) -> list[Entry]:
        if not with_stat:
            return self._entries_plain(rel_dir)
        found = self._seen().lists.get((rel_dir, True))
        if found is None:
            found = self._scan(rel_dir, True)
        return list(found)

    def _entries_plain(self, rel_dir: str) -> list[Entry]:
        seen = self._seen()
        stated = seen.lists.get((rel_dir, True))
        if stated is not None:
            return [Entry(e.name, e.is_dir) for e in stated]
        names = self.list(rel_dir)
        kids = seen.children.get(rel_dir)
        if kids is None and names:  # named by os.listdir: which are folders takes a stat each
            return [Entry(e.name, e.is_dir) for e in self.entries(rel_dir, with_stat=True)]
        return [Entry(n, n in (kids or ())) for n in names]

    def list(self, rel_dir: str) -> builtins.list[str]:
        """Names directly under a folder ([] when absent), listed once per call."""
        lists = self._seen().lists
        names = lists.get((rel_dir, False))
        if names is None:
            stated = lists.get((rel_dir, True))
            if stated is not None:
                return [e.name for e in stated]
            names = self._scan(rel_dir, False)
        return list(names)


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
