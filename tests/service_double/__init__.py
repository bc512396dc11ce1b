"""A faithful test double of Netflix's Metaflow metadata service (``metaflow-service``).

``ServiceDouble`` serves it on 127.0.0.1; ``captures.seed_records()`` gives the data set of the
real-service captures in ``shared/service-captures`` to load into it.
"""

from .handlers import SeenRequest
from .server import ServiceDouble

__all__ = ["ServiceDouble", "SeenRequest"]
