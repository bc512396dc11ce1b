"""One exception tree for everything metaflow_agent raises.

    AgentError                      base: every error carries a `hint` (the next step)
    ├── BadInput                    the caller's argument is wrong
    │   ├── BadPathspec             malformed "Flow/Run/Step/Task"
    │   ├── BadPattern              a regex that does not compile
    │   ├── BadLimit                limit / max_bytes / context out of range
    │   ├── BadCursor               a cursor this query did not issue
    │   ├── BadTime                 a since/until that is not a time
    │   └── PathEscape              a path that leaves the datastore root
    ├── NotFound                    flow / run / step / task / artifact / log absent
    ├── TooLarge                    an artifact over the preview cap, or work over a size cap
    ├── NotAllowed                  reading it would need a type outside the safe allow-list
    ├── DeadlineExceeded            the call ran past its deadline and was stopped
    └── BackendError                the metadata service or datastore failed
        ├── ServiceUnavailable      down, refused, timed out, 5xx after retries
        ├── ServiceProtocolError    malformed answer or unsupported service
        └── Damaged                 one datastore object is damaged: unparseable JSON, a FIFO,
                                    device or folder where a file belongs, a link out of the root
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every metaflow_agent error; `hint` says what to do next."""

    code = "error"

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, str]:
        """A small JSON-friendly form for tools and the CLI."""
        return {"error": self.code, "message": self.message, "hint": self.hint}


class BadInput(AgentError):
    code = "bad_input"


class BadPathspec(BadInput):
    code = "bad_pathspec"


class BadPattern(BadInput):
    code = "bad_pattern"


class BadLimit(BadInput):
    code = "bad_limit"


class BadCursor(BadInput):
    code = "bad_cursor"


class BadTime(BadInput):
    code = "bad_time"


class PathEscape(BadInput):
    code = "path_escape"


class NotFound(AgentError):
    code = "not_found"


class TooLarge(AgentError):
    code = "too_large"


class NotAllowed(AgentError):
    """A value needs a class (or a call) outside the unpickling allow-list."""

    code = "not_allowed"

    def __init__(self, message: str, *, hint: str = "", name: str = "") -> None:
        super().__init__(message, hint=hint)
        self.name = name  # "module.qualname" of the refused class, when one is to blame


class DeadlineExceeded(AgentError):
    """The call used up its time (wall clock or CPU) and was stopped.

    Not a BackendError: the time may have gone to local work (a regex, an
    unpickle) as well as to a slow service.
    """

    code = "deadline_exceeded"


class BackendError(AgentError):
    code = "backend_error"


class ServiceUnavailable(BackendError):
    code = "service_unavailable"


class ServiceProtocolError(BackendError):
    code = "service_protocol_error"


class Damaged(BackendError):
    """One object in the datastore cannot be read as what it should be.

    Questions over many items skip a damaged one and name it in `notes`; a
    question about that one item raises this. `item` is its path under the root.
    """

    code = "damaged"

    def __init__(self, message: str, *, hint: str = "", item: str = "") -> None:
        super().__init__(message, hint=hint)
        self.item = item
