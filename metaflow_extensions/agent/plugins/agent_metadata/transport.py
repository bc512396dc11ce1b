"""HTTP to the metadata service: GET only, counted, bounded retries, typed errors.

Every GET runs within the call's deadline: socket timeouts shrink to the time
left, retries stop when it is spent, and the body is streamed with a size cap
(`read_body`), so a service that drips bytes or answers gigabytes cannot hold a
call. Counting happens in an HTTPAdapter, so the same adapter can be mounted on
Metaflow's own client session to measure what the Client API spends; our own
streamed GETs are counted once their body is read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from metaflow_agent import _config, _deadline
from metaflow_agent._cost import current_meter
from metaflow_agent._errors import BadInput, DeadlineExceeded, NotFound, ServiceProtocolError, ServiceUnavailable, TooLarge
from metaflow_agent._httpread import read_body

RETRY_STATUSES = (502, 503, 504)
BACKOFF_S = (0.2, 0.6, 1.5)  # bounded: at most len(BACKOFF_S) retries
TIMEOUT_S = (3.05, 30.0)  # connect, read (each cut to the call's time left)


class CountingAdapter(HTTPAdapter):
    """Records every request and its response bytes in the active cost meter.

    A streamed request (ours) is left to its reader to record, once the body's size is known.
    """

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]  # HTTPAdapter.send takes its options positionally too
        resp = super().send(request, **kwargs)
        if not kwargs.get("stream"):
            current_meter().add_request(request.method or "?", request.url or "", resp.status_code, len(resp.content))
        return resp


def counting_session() -> requests.Session:
    session = requests.Session()
    adapter = CountingAdapter(pool_connections=8, pool_maxsize=16, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def instrument_session(session: requests.Session) -> None:
    """Mount the counting adapter on an existing session (e.g. Metaflow's own)."""
    adapter = CountingAdapter(pool_connections=20, pool_maxsize=20, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)


def encode_query(params: dict[str, Any] | None) -> str:
    """Query string as the service expects: ':' and ',' kept, cursors escaped."""
    if not params:
        return ""
    parts = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        parts.append(f"{quote(str(key), safe=':_')}={quote(str(value), safe=':,._-')}")
    return "?" + "&".join(parts) if parts else ""


@dataclass
class Reply:
    """A decoded response: status, headers, JSON body (None when empty)."""

    status: int
    headers: dict[str, str]
    body: Any

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name."""
        lower = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lower), None)


class ServiceTransport:
    """GET-only client of one metadata service URL."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, session: requests.Session | None = None) -> None:
        if not url or not url.startswith(("http://", "https://")):
            raise ServiceUnavailable(
                f"metadata service URL {url!r} is not an http(s) URL",
                hint="set METAFLOW_SERVICE_URL, e.g. http://127.0.0.1:8080",
            )
        self.url = url.rstrip("/")
        self.headers = dict(headers or {})
        self.session = session or counting_session()

    def get(self, path: str, params: dict[str, Any] | None = None, *, ok404: bool = False, raw: bool = False) -> Reply:
        """GET path; JSON-decoded body. 404 raises NotFound unless ok404; with `raw`, every status
        comes back as it is (for a client that maps them itself)."""
        url = self.url + path + encode_query(params)
        last: Exception | None = None
        for attempt in range(len(BACKOFF_S) + 1):
            what = f"the metadata service's answer to {path}"
            try:
                read_s = _deadline.timeout(TIMEOUT_S[1], f"waiting for {path}")
                resp = self.session.get(url, headers=self.headers, timeout=(min(TIMEOUT_S[0], read_s), read_s), stream=True)
                body = b""
                try:
                    body = read_body(resp, cap=_config.default("service_body_bytes"), what=what)
                except TooLarge as exc:
                    raise TooLarge(
                        exc.message,
                        hint="an unfiltered list on an older service (about 400 bytes a run): deploy the query service, "
                        "narrow the question, or raise METAFLOW_AGENT_SERVICE_BODY_BYTES",
                    ) from None
                finally:
                    current_meter().add_request("GET", url, resp.status_code, len(body))
                    resp.close()
            except (requests.ConnectionError, requests.Timeout) as exc:
                _deadline.check(f"waiting for {path}")  # a timeout shortened by the deadline is the deadline's
                last = exc
            except ServiceUnavailable as exc:  # the body broke off
                last = exc
            except requests.RequestException as exc:
                raise ServiceProtocolError(
                    f"request to the metadata service failed: {type(exc).__name__}: {exc}",
                    hint="check METAFLOW_SERVICE_URL and any proxy in front of the service",
                ) from None
            else:
                if resp.status_code not in RETRY_STATUSES or (raw and attempt == len(BACKOFF_S)):
                    return self._reply(resp, body, path, ok404, raw)
                last = ServiceUnavailable(f"metadata service answered {resp.status_code} for {path}")
            if attempt < len(BACKOFF_S):
                left = _deadline.remaining()
                if left is not None and left <= BACKOFF_S[attempt]:
                    raise DeadlineExceeded(
                        f"no time left to retry {path} within the call's deadline (last: {type(last).__name__})",
                        hint=f"the metadata service is slow or failing; retry later or raise {_deadline.ENV}",
                    )
                time.sleep(BACKOFF_S[attempt])
        kind = "timed out" if isinstance(last, requests.Timeout) else "is not reachable" if isinstance(last, requests.ConnectionError) else "kept failing"
        raise ServiceUnavailable(
            f"metadata service at {self.url} {kind} ({type(last).__name__}) after {len(BACKOFF_S) + 1} tries",
            hint="check that the service is up and METAFLOW_SERVICE_URL is right; or unset METAFLOW_DEFAULT_METADATA to query local runs",
        )

    def _reply(self, resp: requests.Response, data: bytes, path: str, ok404: bool, raw: bool = False) -> Reply:
        headers = {k: v for k, v in resp.headers.items()}
        text = data.decode(resp.encoding or "utf-8", "replace")
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text if resp.status_code != 200 else None
            if resp.status_code == 200:
                raise ServiceProtocolError(
                    f"metadata service sent malformed JSON for {path}", hint="the service or a proxy in front of it is misbehaving"
                ) from None
        if raw:
            return Reply(resp.status_code, headers, body)
        if resp.status_code == 404:
            if ok404:
                return Reply(404, headers, body)
            raise NotFound(f"{path} not found on the metadata service", hint="check the pathspec")
        if resp.status_code == 400:
            raise BadInput(f"metadata service rejected {path}: {str(body)[:300]}", hint="check the filter values")
        if resp.status_code in (401, 403):
            raise ServiceUnavailable(
                f"metadata service refused access ({resp.status_code}) to {path}",
                hint="check METAFLOW_SERVICE_AUTH_KEY / METAFLOW_SERVICE_HEADERS credentials",
            )
        if resp.status_code >= 300:
            detail = body.get("detail") if isinstance(body, dict) else None
            raise ServiceUnavailable(
                f"metadata service error {resp.status_code} for {path}" + (f": {str(detail)[:300]}" if detail else ""),
                hint="retry later; if it persists, check the service logs",
            )
        return Reply(resp.status_code, headers, body)
