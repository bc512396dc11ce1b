"""`python -m mcp_server._worker_main`: one tool-call worker process (see mcp_server.workers).

A separate module so that the package's own `mcp_server.workers` is imported once, not
re-run as __main__.
"""

import logging
import sys

from mcp_server.workers import serve

if __name__ == "__main__":
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(asctime)s worker %(name)s %(levelname)s %(message)s")
    sys.exit(serve())
