"""One contender on one backend, in its own process (Metaflow reads its configuration
at import, and the peer server lives in its own virtual environment).

    python benchmarks/worker.py PLAN.json

The plan names the contender (naive / ours / peer), the repository root, the datastore
root, the Client cache folder, a warm-up case and the cases. One JSON line per case
goes to stdout as soon as it is measured. Run as a script (not `-m`) so that the peer's
interpreter does not see this repository before Metaflow has loaded its extensions.
"""

from __future__ import annotations

import json
import os
import shutil
import sys


def main(plan_path: str) -> None:
    with open(plan_path) as f:
        plan = json.load(f)
    import metaflow  # noqa: F401  (first: its extensions are loaded from the clean sys.path)
    from metaflow import namespace

    sys.path.insert(0, plan["repo"])
    from benchmarks.measure import (
        FileProbe,
        instrument_metaflow_client,
        measure,
        read_pattern,
        summarize,
        url_pattern,
    )
    from benchmarks.usecases import RUNNERS

    contender = plan["contender"]
    runner = RUNNERS[contender]
    namespace(None)  # every user's runs, as the peer server does at import
    instrument_metaflow_client()
    probe = FileProbe(plan["datastore_root"], keep_log=True)
    cache = plan["client_cache"]

    def cold() -> None:
        """Forget the Client's on-disk blob and metadata cache between questions."""
        from metaflow.client import core

        shutil.rmtree(cache, ignore_errors=True)
        os.makedirs(cache, exist_ok=True)
        core.filecache = None  # and its in-memory state: rebuilt on next use

    warm = plan.get("warmup")
    if warm:  # imports, the capability probe and connection set-up are not part of any question
        cold()
        measure(lambda: runner(warm["usecase"], warm["args"]), probe, own_meter=contender == "ours")
        if contender == "ours":
            import metaflow_agent

            metaflow_agent.capabilities()  # the once-per-process service probe (GET /flows?_limit=1)
    for case in plan["cases"]:
        cold()
        res = measure(lambda: runner(case["usecase"], case["args"]), probe, own_meter=contender == "ours")
        res["requests_by_route"] = summarize(res.pop("request_log"), lambda r: (url_pattern(r[0], r[1]), r[3]))
        res["reads_by_file"] = summarize(res.pop("read_log"), lambda r: (read_pattern(r[0]), r[1]))
        res.update({k: case[k] for k in ("id", "usecase", "size") if k in case})
        res["contender"] = contender
        res["backend"] = plan["backend"]
        print(json.dumps(res, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
