"""The JSON API under /api (and /healthz, /metrics): the read side's views as JSON, for scripts.

GET /api/fleet, /api/hosts, /api/risk, /api/findings, /api/services, /api/runtimes, /api/models,
/api/compute, /api/transfers, /api/aitools, /api/tools, /api/silent, /api/trend, /api/inventory.
Every route calls the query layer; nothing here reads the store itself, and nothing writes.

/api/findings takes host (its id or its name; an unknown one is a 400), kind (comma-separated),
severity (comma-separated) or min_severity (that or higher), user, service, vendor, runtime, sha256,
approved (true/false), since and until (a duration back from now: 30d, 12h), limit and cursor; the
body is a list, and the next page's cursor is in the X-Next-Cursor header (absent on the last page).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..query import activity, snapshots
from ..query.documents import fleet_view, hosts_view, inventories_view
from ..query.findings import BadQuery, at_least, finding_filter, list_findings
from ..query.risk import risk_board
from ..query.times import parse_duration
from ..storage.base import Store
from ..storage.reads import FindingFilter

log = logging.getLogger(__name__)

MAX_LIMIT = 100_000
Query = Mapping[str, str]


class BadRequest(ValueError):
    pass


def limit(query: Query, default: int, name: str = "limit") -> int:
    text = query.get(name, "")
    if not text:
        return default
    if not text.isdigit() or not 0 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"{name} must be an integer 0..{MAX_LIMIT}")
    return int(text)


def ago(query: Query, name: str) -> float | None:
    text = query.get(name, "")
    return time.time() - parse_duration(text) if text else None


def scope(query: Query) -> Literal["host", "user", "fleet"]:
    value = query.get("scope", "fleet")
    if value not in ("host", "user", "fleet"):
        raise BadRequest("scope must be host, user or fleet")
    return value  # type: ignore[return-value]


def findings_filter(q: Query) -> FindingFilter:
    """The findings filter of a query string (the API's and the console's findings feed)."""
    approved = q.get("approved", "")
    if approved not in ("", "true", "false"):
        raise BadRequest("approved must be true or false")
    return finding_filter(
        kinds=tuple(k for k in q.get("kind", "").split(",") if k),
        severities=(
            at_least(q["min_severity"])
            if q.get("min_severity")
            else tuple(s for s in q.get("severity", "").split(",") if s)
        ),
        host=q.get("host"),
        user=q.get("user"),
        service=q.get("service"),
        vendor=q.get("vendor"),
        runtime=q.get("runtime"),
        sha256=q.get("sha256"),
        approved=None if not approved else approved == "true",
        since=ago(q, "since"),
        until=ago(q, "until"),
    )


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def api_routes(
    store: Store,
    health: Callable[[], dict[str, Any]],
    metrics: Callable[[], tuple[bytes, str]] | None,
    silent_after: float,
) -> list[BaseRoute]:
    def findings(q: Query, headers: dict[str, str]) -> Any:
        n = limit(q, 1000)
        if n == 0:
            return []
        result = list_findings(store, findings_filter(q), n, q.get("cursor") or None)
        if result.cursor is not None:
            headers["X-Next-Cursor"] = result.cursor
        return result.findings

    views: dict[str, Callable[[Query, dict[str, str]], Any]] = {
        "/healthz": lambda q, h: health(),
        "/api/fleet": lambda q, h: fleet_view(store, limit(q, 100)),
        "/api/hosts": lambda q, h: hosts_view(store),
        "/api/risk": lambda q, h: risk_board(store, limit(q, 10)).to_dict(),
        "/api/findings": findings,
        "/api/services": lambda q, h: [r.to_dict() for r in activity.services(store, ago(q, "since"))],
        "/api/runtimes": lambda q, h: [r.to_dict() for r in activity.runtimes(store, ago(q, "since"))],
        "/api/models": lambda q, h: [r.to_dict() for r in activity.census(store, limit(q, 100) or 1)],
        "/api/compute": lambda q, h: [r.to_dict() for r in activity.compute(store, ago(q, "since"))],
        "/api/transfers": lambda q, h: [r.to_dict() for r in activity.transfers(store, ago(q, "since"))],
        "/api/aitools": lambda q, h: [r.to_dict() for r in activity.aitools(store, ago(q, "since"))],
        "/api/tools": lambda q, h: [r.to_dict() for r in activity.tools(store)],
        "/api/silent": lambda q, h: [s.to_dict() for s in activity.silent_hosts(store, silent_after)],
        "/api/trend": lambda q, h: [
            r.to_dict() for r in snapshots.trend(store, scope(q), q.get("key", ""), int(limit(q, 30, "days")))
        ],
        "/api/inventory": lambda q, h: {"inventories": inventories_view(store, q.get("host") or None)},
    }

    def endpoint(view: Callable[[Query, dict[str, str]], Any], path: str) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            headers: dict[str, str] = {}
            try:
                body = view(request.query_params, headers)
            except (BadRequest, BadQuery, ValueError) as exc:
                return json_response({"error": str(exc)}, 400)
            except Exception:
                log.exception("http %s failed", path)
                return json_response({"error": "internal error, see the collector log"}, 500)
            return json_response(body, headers=headers)

        return handle

    routes: list[BaseRoute] = [Route(path, endpoint(view, path)) for path, view in views.items()]
    if metrics is not None:

        def scrape(request: Request) -> Response:
            data, content_type = metrics()
            return Response(data, media_type=content_type)

        routes.append(Route("/metrics", scrape))
    return routes
