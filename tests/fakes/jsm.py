"""A local fake of the Jira Cloud / Service Management endpoints the JSM connector uses (127.0.0.1).

Reproduces what the Atlassian REST docs describe:

* basic auth with e-mail and API token; 401 otherwise;
* ``POST /rest/api/3/search/jql`` — a JQL subset: ``project = KEY``, ``updated >= "yyyy/MM/dd HH:mm"``
  read **in the API user's time zone** at minute granularity, ``ORDER BY updated ASC``; ``maxResults``;
  opaque ``nextPageToken`` values (an unknown one is a 400); ``isLast``; the last page carries no token;
* ``PUT /rest/api/3/issue/{idOrKey}`` — ``update.labels`` add/remove, ``fields``; 204; 404 when missing;
* ``GET/POST /rest/servicedeskapi/request/{idOrKey}/comment`` — ``start``/``limit``/``isLastPage``,
  ``public`` true/false, ``created.iso8601``;
* ``GET /rest/api/3/myself`` with the user's ``timeZone``.

Timestamps look like Jira's: ``2026-01-05T09:00:01.000+0000``.
"""

from __future__ import annotations

import base64
import itertools
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from tests.fakes.clock import FakeClock
from tests.fakes.server import FakeApi, Request, Response


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+0000"


def _parse(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")


def _adf(text: str) -> dict[str, Any]:
    return {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": line}]}
            for line in text.split("\n")
            if line
        ],
    }


class FakeJsm(FakeApi):
    custom_fields = frozenset({"customfield_10050", "customfield_10051"})

    def __init__(
        self,
        email: str = "bot@acme.test",
        api_token: str = "jira-token",
        *,
        project: str = "SUP",
        timezone: str = "America/New_York",
        clock: FakeClock | None = None,
    ) -> None:
        super().__init__()
        self.email = email
        self.api_token = api_token
        self.project = project
        self.timezone = timezone
        self.clock = clock or FakeClock()
        self.issues: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, list[dict[str, Any]]] = {}
        self.tokens: dict[str, tuple[str, int]] = {}
        self.agent = {"accountId": "agent-1", "displayName": "Triage Bot", "emailAddress": email}
        self.slow_comments = 0
        self._ids = itertools.count(10001)
        self._comment_ids = itertools.count(500)
        self.route("POST", r"/rest/api/3/search/jql", self._search)
        self.route("PUT", r"/rest/api/3/issue/(?P<ref>[^/]+)", self._edit)
        self.route("GET", r"/rest/servicedeskapi/request/(?P<ref>[^/]+)/comment", self._list_comments)
        self.route("POST", r"/rest/servicedeskapi/request/(?P<ref>[^/]+)/comment", self._add_comment)
        self.route("GET", r"/rest/api/3/myself", self._myself)

    def authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        return base64.b64decode(header[6:]).decode() == f"{self.email}:{self.api_token}"

    def unauthorised(self) -> Response:
        return Response(401, {"errorMessages": ["Client must be authenticated to access this resource."]})

    @staticmethod
    def _missing() -> Response:
        return Response(
            404,
            {
                "errorMessages": ["Issue does not exist or you do not have permission to see it."],
                "errors": {},
            },
        )

    def _find(self, ref: str) -> dict[str, Any] | None:
        return self.issues.get(ref) or next((i for i in self.issues.values() if i["key"] == ref), None)

    # --- state helpers for the harness ---------------------------------------------------------

    def add_issue(self, summary: str, text: str, *, email: str | None = None) -> str:
        now = _stamp(self.clock.tick())
        issue_id = str(next(self._ids))
        number = len(self.issues) + 1
        reporter_email = email or f"customer{issue_id}@example.com"
        self.issues[issue_id] = {
            "id": issue_id,
            "key": f"{self.project}-{number}",
            "fields": {
                "summary": summary,
                "description": _adf(text),
                "reporter": {
                    "accountId": f"qm:{issue_id}",
                    "displayName": reporter_email.split("@")[0].title(),
                    "emailAddress": reporter_email,
                },
                "created": now,
                "updated": now,
                "labels": [],
                "status": {"name": "Waiting for support"},
                "project": {"key": self.project},
            },
        }
        self.comments[issue_id] = []
        return issue_id

    def add_comment(
        self, issue_id: str, body: str, *, public: bool, author: dict[str, Any]
    ) -> dict[str, Any]:
        when = self.clock.tick()
        comment = {
            "id": str(next(self._comment_ids)),
            "body": body,
            "public": public,
            "author": dict(author),
            "created": {"iso8601": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")},
        }
        self.comments[issue_id].append(comment)
        self.issues[issue_id]["fields"]["updated"] = _stamp(when)
        return comment

    def reporter(self, issue_id: str) -> dict[str, Any]:
        return dict(self.issues[issue_id]["fields"]["reporter"])

    # --- routes --------------------------------------------------------------------------------

    def _search(self, request: Request) -> Response:
        body = request.json() or {}
        max_results = int(body.get("maxResults") or 50)
        token = body.get("nextPageToken")
        jql = body.get("jql") or ""
        if token is not None:
            if token not in self.tokens or self.tokens[token][0] != jql:
                return Response(
                    400, {"errorMessages": ["The provided next page token is invalid or expired."]}
                )
            offset = self.tokens[token][1]
        else:
            offset = 0
        project = re.search(r"project\s*=\s*(\w+)", jql)
        if not project or not re.search(r"ORDER BY updated ASC\s*$", jql):
            return Response(400, {"errorMessages": [f"Unsupported JQL in this fake: {jql}"]})
        rows = [i for i in self.issues.values() if i["fields"]["project"]["key"] == project.group(1)]
        since = re.search(r'updated\s*>=\s*"(\d{4}/\d{2}/\d{2} \d{2}:\d{2})"', jql)
        if since:
            local = datetime.strptime(since.group(1), "%Y/%m/%d %H:%M").replace(
                tzinfo=ZoneInfo(self.timezone)
            )
            rows = [i for i in rows if _parse(i["fields"]["updated"]) >= local]
        rows.sort(key=lambda i: (_parse(i["fields"]["updated"]), int(i["id"])))
        chunk = rows[offset : offset + max_results]
        wanted = body.get("fields") or ["*all"]
        issues = [
            {
                "id": i["id"],
                "key": i["key"],
                "fields": {k: v for k, v in i["fields"].items() if "*all" in wanted or k in wanted},
            }
            for i in chunk
        ]
        answer: dict[str, Any] = {"issues": issues, "isLast": offset + max_results >= len(rows)}
        if not answer["isLast"]:
            next_token = uuid.uuid4().hex
            self.tokens[next_token] = (jql, offset + max_results)
            answer["nextPageToken"] = next_token
        return Response(200, answer)

    def _edit(self, request: Request, ref: str) -> Response:
        issue = self._find(ref)
        if issue is None:
            return self._missing()
        body = request.json() or {}
        fields = body.get("fields") or {}
        unknown = sorted(set(fields) - self.custom_fields)
        if unknown:
            return Response(
                400,
                {
                    "errorMessages": [],
                    "errors": {unknown[0]: "Field cannot be set. It is not on the screen."},
                },
            )
        for operation in (body.get("update") or {}).get("labels") or []:
            label = operation.get("add")
            if label and label not in issue["fields"]["labels"]:
                issue["fields"]["labels"].append(label)
            if operation.get("remove") in issue["fields"]["labels"]:
                issue["fields"]["labels"].remove(operation["remove"])
        issue["fields"].update(fields)
        issue["fields"]["updated"] = _stamp(self.clock.tick())
        return Response(204, None)

    def _list_comments(self, request: Request, ref: str) -> Response:
        issue = self._find(ref)
        if issue is None:
            return self._missing()
        start = int(request.arg("start", "0") or 0)
        limit = int(request.arg("limit", "50") or 50)
        values = self.comments[issue["id"]]
        if request.arg("internal") == "false":
            values = [c for c in values if c["public"]]
        if request.arg("public") == "false":
            values = [c for c in values if not c["public"]]
        chunk = values[start : start + limit]
        return Response(
            200,
            {
                "size": len(chunk),
                "start": start,
                "limit": limit,
                "isLastPage": start + limit >= len(values),
                "values": chunk,
            },
        )

    def _add_comment(self, request: Request, ref: str) -> Response:
        issue = self._find(ref)
        if issue is None:
            return self._missing()
        body = request.json() or {}
        if not body.get("body"):
            return Response(400, {"errorMessage": "Comment body is required"})
        comment = self.add_comment(
            issue["id"], body["body"], public=bool(body.get("public", True)), author=self.agent
        )
        if self.slow_comments:
            self.slow_comments -= 1
            time.sleep(self.slow_seconds)
        return Response(201, comment)

    def _myself(self, request: Request) -> Response:
        return Response(200, {**self.agent, "active": True, "timeZone": self.timezone})
