"""`python -m metaflow_agent` is the `metaflow-agent` command."""

import sys

from .cli import main

sys.exit(main())
