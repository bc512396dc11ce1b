"""Cutting text to a bound, marked so a reader knows how much was left out."""

from __future__ import annotations


def cut(text: str, keep: int) -> str:
    """The first `keep` characters, then a `…[+N chars]` marker when anything was cut."""
    return text if len(text) <= keep else text[:keep] + f"…[+{len(text) - keep} chars]"


def clip(text: str | None, limit: int) -> str | None:
    """Like `cut`, but the result, marker included, is at most `limit` characters."""
    if text is None or len(text) <= limit:
        return text
    keep = max(0, limit - 10 - len(str(len(text))))  # room for the marker, however many digits
    return cut(text, keep)
