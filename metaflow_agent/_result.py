"""Small helpers shared by the query functions."""

from __future__ import annotations

from ._cost import CostMeter
from ._models import Cost


def cost_of(meter: CostMeter) -> Cost:
    """Freeze a meter into the result's cost field."""
    return Cost(
        metadata_requests=meter.metadata_requests,
        metadata_bytes=meter.metadata_bytes,
        datastore_reads=meter.datastore_reads,
        datastore_bytes=meter.datastore_bytes,
        elapsed_ms=meter.elapsed_ms,
    )


def clip(text: str | None, limit: int) -> str | None:
    """Cut text to limit characters, marking the cut."""
    if text is None or len(text) <= limit:
        return text
    keep = max(0, limit - 10 - len(str(len(text))))  # room for the marker, however many digits
    return text[:keep] + f"…[+{len(text) - keep} chars]"
