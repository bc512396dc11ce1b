"""`python -m mcp_server`: the same as `metaflow-agent-mcp`."""

import sys

from .server import main

sys.exit(main())
