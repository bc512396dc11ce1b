"""Read an HTTP response body within the call's deadline and a size cap.

`requests` bounds each socket read, not a whole body: a service that drips a
byte a second never times out, and a 40 MB answer is read in full before
anything looks at it. `read_body` streams the body, refuses it past `cap`
bytes (the Content-Length is checked first when sent), and at the deadline
shuts the socket so the read ends at once with DeadlineExceeded.
"""

from __future__ import annotations

import socket
from typing import Any

import requests

from . import _deadline
from ._errors import ServiceUnavailable, TooLarge

CHUNK = 64 * 1024


def _cut(resp: requests.Response) -> None:
    """Shut the response's socket (from the deadline's timer thread)."""
    conn: Any = getattr(resp.raw, "connection", None) or getattr(resp.raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def read_body(resp: requests.Response, *, cap: int, what: str) -> bytes:
    """The body of a response opened with stream=True: TooLarge past cap, DeadlineExceeded past the deadline."""
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        resp.close()
        raise TooLarge(f"{what} is {declared} bytes, over the {cap}-byte cap", hint="narrow the query; the service answered more than a bounded call reads")
    chunks: list[bytes] = []
    total = 0
    with _deadline.on_expiry(lambda: _cut(resp)):
        try:
            for chunk in resp.iter_content(CHUNK):
                total += len(chunk)
                if total > cap:
                    resp.close()
                    raise TooLarge(f"{what} is over the {cap}-byte cap", hint="narrow the query; the service answered more than a bounded call reads")
                chunks.append(chunk)
                _deadline.check(f"reading {what}")
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError, OSError) as exc:
            _deadline.check(f"reading {what}")  # our own cut at the deadline
            raise ServiceUnavailable(f"{what} broke off: {type(exc).__name__}", hint="retry; check the service and any proxy in front of it") from None
    return b"".join(chunks)
