"""The aiohttp application: every route Metaflow and the captures use, and a request log."""

from __future__ import annotations

from aiohttp import web

from .handlers import VERSION_HEADER, VERSIONS, DoubleState, Handler, SeenRequest
from .reads import ReadRoutes
from .writes import WriteRoutes


def build_app(state: DoubleState) -> web.Application:
    """Routes bound to ``state``; each request is appended to ``state.requests_seen``."""

    @web.middleware
    async def log_requests(request: web.Request, handler: Handler) -> web.Response:
        state.requests_seen.append(SeenRequest(request.method, request.path, dict(request.query)))
        response = await handler(request)
        if VERSION_HEADER in response.headers:  # the version the mode's generation reports
            response.headers[VERSION_HEADER] = VERSIONS[state.mode]
        return response

    r, w = ReadRoutes(state), WriteRoutes(state)
    run = "/flows/{flow_id}/runs/{run_number}"
    step = run + "/steps/{step_name}"
    task = step + "/tasks/{task_id}"
    routes = [
        ("GET", "/ping", r.ping),
        ("GET", "/version", r.version),
        ("GET", "/flows", r.get_flows),
        ("GET", "/flows/{flow_id}", r.get_flow),
        ("POST", "/flows/{flow_id}", w.create_flow),
        ("GET", "/flows/{flow_id}/runs", r.get_runs),
        ("POST", "/flows/{flow_id}/run", w.create_run),
        ("GET", run, r.get_run),
        ("POST", run + "/heartbeat", w.run_heartbeat),
        ("PATCH", run + "/tag/mutate", w.mutate_tags),
        ("GET", run + "/metadata", r.get_run_metadata),
        ("GET", run + "/artifacts", r.get_run_artifacts),
        ("GET", run + "/steps", r.get_steps),
        ("GET", step, r.get_step),
        ("POST", step + "/step", w.create_step),
        ("GET", step + "/artifacts", r.get_step_artifacts),
        ("GET", step + "/filtered_tasks", r.get_filtered_tasks),
        ("GET", step + "/tasks", r.get_tasks),
        ("POST", step + "/task", w.create_task),
        ("GET", task, r.get_task),
        ("POST", task + "/heartbeat", w.task_heartbeat),
        ("GET", task + "/metadata", r.get_task_metadata),
        ("POST", task + "/metadata", w.create_metadata),
        ("GET", task + "/artifacts", r.get_task_artifacts),
        ("POST", task + "/artifact", w.create_artifacts),
        ("GET", task + "/attempt/{attempt_id}/artifacts", r.get_attempt_artifacts),
        ("GET", task + "/artifacts/{artifact_name}", r.get_artifact),
        ("GET", task + "/artifacts/{artifact_name}/attempt/{attempt_id}", r.get_artifact_attempt),
    ]
    app = web.Application(middlewares=[log_requests])
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app
