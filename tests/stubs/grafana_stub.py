"""A STUB of the part of Grafana's HTTP API the guardian uses (Grafana itself cannot run on the test
machine): a real HTTP server on a free loopback port, in a thread. It answers as Grafana's source does
where the guardian depends on it (grafana/grafana, pkg/api/annotations.go, pkg/api/dashboard.go,
pkg/services/annotations/annotationsimpl/xorm_store.go, pkg/services/tag, pkg/services/accesscontrol/
middleware.go), and every request the guardian sends is checked against Grafana's OpenAPI document
(tests/contracts/grafana_openapi_extract.json, tests/unit/test_contract_grafana.py).

    GET   /api/dashboards/uid/:uid   dashboards:read    -> {"dashboard": {...}, "meta": {...}} | 404
    POST  /api/annotations           annotations:create -> {"message": "Annotation added", "id": N}
    PATCH /api/annotations/:id       annotations:write  -> {"message": "Annotation patched"}
    GET   /api/annotations?tags=..   annotations:read   -> the annotations carrying every tag given

What it does as Grafana does:
- 401 without `Authorization: Bearer <token>`; 403 when the token lacks the route's permission, with
  Grafana's body: {"title": "Access denied", "message": "You'll need additional permissions to perform
  this action. Permissions needed: <action>", "accessErrorId": "ACE<10 digits>"}.
- A POST whose `dashboardUID` names no dashboard is NOT refused: PostAnnotation only sets dashboardId when
  the lookup succeeds, so the annotation is stored organisation-wide (dashboardId 0) and answered 200.
- Tags are parsed as Grafana does (trimmed, "key:value" split on ':' keeping two parts, empty keys and
  duplicates dropped), then their estimated JSON length ('[', quotes, commas, ']') must not exceed
  `tags_length` (Grafana's [annotations] tags_length, default 500): else 400 with the errutil body
  {"statusCode": 400, "messageId": "annotations.tag-limit-exceeded", "message": "Tags length exceeds the
  maximum allowed."}. A tag key or value longer than the `tag` table's VARCHAR(100) fails the insert on
  MySQL and PostgreSQL (`strict_db`, the default; SQLite would store it): 500 "Failed to save annotation".
- 400 {"message": "bad request data"} when the body does not bind (a wrong type), 400 "Failed to save
  annotation" for an empty text, 404 "Annotation not found", 404 "Dashboard not found".

`down = True` answers 503 to everything until set back to False. `calls` records every request (method,
path, query, content type, JSON body, status) for the contract test; `requests` keeps (method, path,
status).
"""
from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.stubs.loopback import LoopbackServer, json_body

ALL_PERMISSIONS = frozenset({"annotations:create", "annotations:write", "annotations:read", "dashboards:read"})
TAG_COLUMN = 100  # tag.key and tag.value are VARCHAR(100) (value 512 since Grafana's newest tag migration)
DASHBOARDS = {"release-guardian": "Release Guardian"}  # the provisioned dashboard (grafana/dashboards/)
TAG_LIMIT_BODY = {"statusCode": 400, "messageId": "annotations.tag-limit-exceeded",
                  "message": "Tags length exceeds the maximum allowed."}
_FIELDS = {"dashboardUID": str, "text": str, "dashboardId": int, "panelId": int, "time": int, "timeEnd": int}


@dataclass
class Call:
    """One request as it arrived, and the status it got."""
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    body: Any
    status: int
    answer: Any = None


def parse_tags(tags: list[str]) -> list[str]:
    """Grafana's tag.ParseTagPairs then JoinTagPairs: what it stores for the tags it is given."""
    out: list[str] = []
    for pair in tags:
        key, sep, rest = pair.partition(":")
        value = rest.split(":")[0].strip(" ") if sep else ""
        tag = f"{key.strip(' ')}:{value}" if value else key.strip(" ")
        if key.strip(" ") and tag not in out:
            out.append(tag)
    return out


def tags_length(tags: list[str]) -> int:
    """Grafana's validateTagsLength estimate: '[' + each tag in quotes, comma-separated + ']' (bytes)."""
    return 2 + sum(len(t.encode()) + 2 for t in tags) + max(len(tags) - 1, 0)


def _bind_problem(body: Any) -> bool:
    """Would Go's JSON binding of Post/PatchAnnotationsCmd fail on this body?"""
    if not isinstance(body, dict):
        return True
    for name, kind in _FIELDS.items():
        value = body.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            return True
    tags = body.get("tags")
    return tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags))


class GrafanaStub(LoopbackServer):
    def __init__(self, token: str = "stub-token", *, permissions: frozenset[str] | set[str] = ALL_PERMISSIONS,
                 dashboards: dict[str, str] | None = None, tags_length: int = 500, strict_db: bool = True):
        self.token = token
        self.permissions = set(permissions)
        self.dashboards = dict(DASHBOARDS if dashboards is None else dashboards)  # uid -> title
        self.tags_length, self.strict_db = tags_length, strict_db
        self.down = False
        self.annotations: dict[int, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) in arrival order
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._next_id = 1
        self.serve(self._handler(), "grafana-stub")

    def find(self, *tags: str) -> list[dict[str, Any]]:
        with self._lock:
            found = [dict(a) for a in self.annotations.values() if set(tags) <= set(a.get("tags", []))]
        return sorted(found, key=lambda a: -a["id"])

    def dashboard_id(self, uid: str) -> int:
        """Grafana's numeric id of the dashboard `uid` (1, 2, ... in the order given)."""
        return list(self.dashboards).index(uid) + 1

    # -- Grafana's handlers, as functions of the request: (status, answer) ----------------------------------
    def get_dashboard(self, uid: str) -> tuple[int, Any]:
        if uid not in self.dashboards:
            return 404, {"message": "Dashboard not found"}
        dash = {"id": self.dashboard_id(uid), "uid": uid, "title": self.dashboards[uid], "panels": []}
        return 200, {"dashboard": dash, "meta": {"slug": uid, "url": f"/d/{uid}/{uid}", "canEdit": True}}

    def post_annotation(self, body: Any) -> tuple[int, Any]:
        if _bind_problem(body):
            return 400, {"message": "bad request data"}
        uid = body.get("dashboardUID") or ""
        dashboard_id = self.dashboard_id(uid) if uid in self.dashboards else int(body.get("dashboardId") or 0)
        if not body.get("text"):
            return 400, {"message": "Failed to save annotation"}
        tags = parse_tags(body.get("tags") or [])
        if (refused := self._refuse_tags(tags, "Failed to save annotation")) is not None:
            return refused
        now = int(time.time() * 1000)
        start, end = int(body.get("time") or 0) or now, int(body.get("timeEnd") or 0)
        end = end or start
        with self._lock:
            aid = self._next_id
            self._next_id += 1
            self.annotations[aid] = {  # as GET /api/annotations shows it (Annotation: dashboardUID null if 0)
                "id": aid, "dashboardId": dashboard_id, "dashboardUID": uid if dashboard_id else None,
                "panelId": int(body.get("panelId") or 0), "time": min(start, end), "timeEnd": max(start, end),
                "tags": tags, "text": body["text"]}
        return 200, {"message": "Annotation added", "id": aid}

    def patch_annotation(self, aid: int, body: Any) -> tuple[int, Any]:
        if _bind_problem(body):
            return 400, {"message": "bad request data"}
        with self._lock:
            found = self.annotations.get(aid)
            if found is None:
                return 404, {"message": "Annotation not found"}
            tags = body["tags"] if body.get("tags") is not None else found["tags"]
            if (refused := self._refuse_tags(tags, "Failed to update annotation")) is not None:
                return refused
            found["tags"] = parse_tags(tags)
            if body.get("text"):
                found["text"] = body["text"]
            for name in ("time", "timeEnd"):
                if int(body.get(name) or 0) > 0:
                    found[name] = body[name]
        return 200, {"message": "Annotation patched"}

    def _refuse_tags(self, tags: list[str], failed: str) -> tuple[int, Any] | None:
        if tags_length(tags) > self.tags_length:
            return 400, TAG_LIMIT_BODY
        parts = [p for t in parse_tags(tags) for p in t.split(":", 1)]
        if self.strict_db and any(len(p) > TAG_COLUMN for p in parts):  # VARCHAR(100): MySQL, PostgreSQL
            return 500, {"message": failed}
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, payload: Any, body: Any = None) -> None:
                data = json.dumps(payload).encode()
                url = urlsplit(self.path)
                with stub._lock:
                    stub.requests.append((self.command, self.path, status))
                    stub.calls.append(Call(self.command, url.path, parse_qs(url.query),
                                           self.headers.get("Content-Type"), body, status, payload))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _gate(self, permission: str, body: Any = None) -> bool:
                if stub.down:
                    self._answer(503, {"message": "Service Unavailable"}, body)
                    return False
                if self.headers.get("Authorization") != f"Bearer {stub.token}":
                    self._answer(401, {"message": "Unauthorized"}, body)
                    return False
                if permission not in stub.permissions:  # accesscontrol middleware: deny()
                    self._answer(403, {"title": "Access denied", "accessErrorId": f"ACE{random.randrange(10**10):010d}",
                                       "message": "You'll need additional permissions to perform this action. "
                                                  f"Permissions needed: {permission}"}, body)
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                if url.path.startswith("/api/dashboards/uid/"):
                    if self._gate("dashboards:read"):
                        self._answer(*stub.get_dashboard(url.path.removeprefix("/api/dashboards/uid/")))
                elif url.path == "/api/annotations":
                    if self._gate("annotations:read"):
                        self._answer(200, stub.find(*parse_qs(url.query).get("tags", [])))
                else:
                    self._answer(404, {"message": "Not found"})

            def do_POST(self) -> None:  # noqa: N802
                body = json_body(self)
                if self.path != "/api/annotations":
                    self._answer(404, {"message": "Not found"}, body)
                elif self._gate("annotations:create", body):
                    self._answer(*stub.post_annotation(body), body)

            def do_PATCH(self) -> None:  # noqa: N802
                body = json_body(self)
                parts = self.path.split("/")
                if len(parts) != 4 or parts[:3] != ["", "api", "annotations"] or not parts[3].isdigit():
                    self._answer(404, {"message": "Not found"}, body)
                elif self._gate("annotations:write", body):
                    self._answer(*stub.patch_annotation(int(parts[3]), body), body)

        return Handler
