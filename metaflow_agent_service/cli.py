"""`metaflow-agent-service`: serve the read-only query API with uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import sys
from typing import Sequence

from .config import settings_from


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and environment, then serve until interrupted."""
    import uvicorn

    from .app import create_app

    settings = settings_from(argv)
    logging.basicConfig(stream=sys.stderr, level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback and settings.token is None:
        logging.getLogger("metaflow_agent_service").warning(
            "listening on %s without a bearer token: anyone who reaches the port can read run metadata", settings.host)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                access_log=settings.log_level == "debug", lifespan="on")
    return 0
