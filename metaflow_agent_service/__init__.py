"""Read-only query service over the Metaflow metadata service's PostgreSQL database."""

from __future__ import annotations

__version__ = "0.1.0"
