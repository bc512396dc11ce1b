"""The write routes Metaflow's ``ServiceMetadataProvider`` uses (same in both modes).

Flow/step/task creation answers 409 on duplicates (Metaflow then GETs the object); runs and
tasks get a heartbeat pre-filled when their ``metaflow_version`` system tag is >= 2.2.12;
heartbeats answer a JSON *string* holding ``{"wait_time_in_seconds": 10}`` and 404 when the
last beat is under 10 s old; metadata/artifact posts answer counts without the version header.
"""

from __future__ import annotations

import json

from aiohttp import web

from .handlers import HandlerBase, handled, read_body, respond
from .store import Conflict, NotFound, heartbeat_capable

HEARTBEAT_BODY = json.dumps({"wait_time_in_seconds": 10})


class WriteRoutes(HandlerBase):
    @handled()
    async def create_flow(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        try:
            flow = self.store.add_flow(request.match_info["flow_id"], body.get("user_name"), body.get("tags"), body.get("system_tags"))
        except Conflict as err:
            return respond(409, json.dumps({"err_msg": str(err)}))
        return respond(200, self.store.serialize_flow(flow))

    @handled()
    async def create_run(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        run_id = body.get("run_number")
        if run_id and run_id.isnumeric():
            raise Exception("provided run_id may not be a numeric")
        try:
            run = self.store.add_run(
                request.match_info["flow_id"],
                user_name=body.get("user_name"),
                tags=body.get("tags"),
                system_tags=body.get("system_tags"),
                run_id=run_id or None,
                fill_heartbeat=heartbeat_capable(body.get("system_tags")),
            )
        except Conflict as err:
            return respond(409, json.dumps({"err_msg": str(err)}))
        except NotFound as err:
            return respond(404, json.dumps({"err_msg": str(err)}))
        return respond(200, self.store.serialize_run(run))

    @handled()
    async def create_step(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        flow_id, run_key, step_name = self.m(request, "flow_id", "run_number", "step_name")
        run = self.store.find_run(flow_id, run_key)
        if run is None:
            raise KeyError("run_number")
        try:
            step = self.store.add_step(run, step_name, body.get("user_name", ""), body.get("tags"), body.get("system_tags"))
        except Conflict as err:
            return respond(409, json.dumps({"err_msg": str(err)}))
        return respond(200, self.store.serialize_step(step))

    @handled()
    async def create_task(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        flow_id, run_key, step_name = self.m(request, "flow_id", "run_number", "step_name")
        task_name = body.get("task_id")
        if task_name and str(task_name).isnumeric():
            return respond(400, {"message": "provided task_name may not be a numeric"}, version=False)
        capable = heartbeat_capable(body.get("system_tags"))
        with self.store.lock:
            run = self.store.find_run(flow_id, run_key)
            if run is None:
                raise KeyError("run_number")
            try:
                task = self.store.add_task(
                    run, step_name, user_name=body.get("user_name"), tags=body.get("tags"),
                    system_tags=body.get("system_tags"), task_name=task_name or None, fill_heartbeat=capable,
                )
            except Conflict as err:
                return respond(409, json.dumps({"err_msg": str(err)}))
            except NotFound as err:
                return respond(404, json.dumps({"err_msg": str(err)}))
            if capable:
                self.store.heartbeat(run)
            return respond(200, self.store.serialize_task(task))

    async def create_metadata(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        task = self.store.find_task(*self.m(request, "flow_id", "run_number", "step_name", "task_id"))
        if task is None:
            return respond(400, {"message": "need to register run_id and task_id first"}, version=False)
        for datum in body:
            self.store.add_metadata(task, datum)
        return respond(200, {"metadata_created": len(body)}, version=False)

    async def create_artifacts(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        task = self.store.find_task(*self.m(request, "flow_id", "run_number", "step_name", "task_id"))
        if task is None:
            return respond(400, {"message": "need to register run_id and task_id first"}, version=False)
        created = 0
        for art in body:
            try:
                self.store.add_artifact(task, art)
                created += 1
            except Conflict:
                pass
        return respond(200, {"artifacts_created": created}, version=False)

    @handled()
    async def run_heartbeat(self, request: web.Request) -> web.Response:
        run = self.store.find_run(*self.m(request, "flow_id", "run_number"))
        ok = run is not None and self.store.heartbeat(run)
        return respond(200 if ok else 404, HEARTBEAT_BODY)

    @handled()
    async def task_heartbeat(self, request: web.Request) -> web.Response:
        task = self.store.find_task(*self.m(request, "flow_id", "run_number", "step_name", "task_id"))
        ok = task is not None and self.store.heartbeat(task)
        return respond(200 if ok else 404, HEARTBEAT_BODY)

    @handled()
    async def mutate_tags(self, request: web.Request) -> web.Response:
        body = await read_body(request)
        add, remove = body.get("tags_to_add", []), body.get("tags_to_remove", [])
        if not isinstance(add, list):
            return respond(400, "tags_to_add must be a list")
        if not isinstance(remove, list):
            return respond(400, "tags_to_remove must be a list")
        if not all(isinstance(t, str) for t in add + remove):
            return respond(400, "All tag values must be strings")
        with self.store.lock:
            run = self.store.find_run(*self.m(request, "flow_id", "run_number"))
            if run is None:
                return respond(404, {})
            existing, system = set(run["tags"] or []), set(run["system_tags"] or [])
            if set(remove) & system:
                return respond(422, "Cannot remove tags that are existing system tags %s" % str(set(remove) & system))
            nxt = (existing - set(remove)) | (set(add) - system)
            if nxt != existing:
                self.store.set_run_tags(run, list(nxt))
            return respond(200, {"tags": list(nxt)})
