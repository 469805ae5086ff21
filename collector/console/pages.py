"""The console's HTML pages. Each reads through collector.query (what the CLI says, the console
shows) and renders a Jinja2 template with autoescaping; admin forms write through
collector.fleet_admin, as the CLI does."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..fleet_admin import mint_token, revoke_agent, store_policy
from ..policy import LIST_KEYS, THRESHOLDS, PolicyError
from ..query import activity, snapshots
from ..query.admin import agents_view, policy_view, tokens_view
from ..query.documents import hosts_view, inventories_view
from ..query.findings import BadQuery, list_findings, one_finding
from ..query.hosts import host_names, resolve_host
from ..query.risk import risk_board
from ..query.times import parse_duration
from ..risk import MCP_ACCESS_REASONS, mcp_access_reasons
from ..storage.base import Store
from . import charts
from .api import BadRequest, findings_filter
from .auth import Identity, csrf_ok
from .render import Renderer

log = logging.getLogger(__name__)

PAGE = 50
LEVEL_ORDER = ("critical", "high", "medium", "low", "none")
HOST_SORTS = {
    "risk": lambda h: (-h["risk"]["score"], h["host_id"]),
    "name": lambda h: (h["hostname"] or h["host_id"]).lower(),
    "findings": lambda h: (-h["findings_total"], h["host_id"]),
    "last_seen": lambda h: h["last_seen"] or "",
}
SERVICE_KINDS = ("AI_SERVICE_ACCESS", "AI_DATA_UPLOAD")
RUNTIME_KINDS = ("LOCAL_MODEL_RUNTIME", "MODEL_SERVER_EXPOSED")
AITOOL_KINDS = ("AI_AGENT", "MCP_SERVER", "AI_EXTENSION")
TOOL_HOSTS_SHOWN = 12  # hosts named in a tool's row; the rest are counted


def _who(request: Request) -> Identity:
    who: Identity | None = request.state.who
    assert who is not None  # the auth middleware let only the identified through
    return who


def page_routes(
    store: Store, render: Renderer, silent_after: float, token_pin: str | None
) -> list[BaseRoute]:
    def html(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        return render.page(request, template, status=status, **context)

    def forbidden(request: Request) -> Response:
        return html(request, "error.html", 403, title="Forbidden", message="This needs the admin role.")

    def overview(request: Request) -> Response:
        board = risk_board(store, 10)
        hosts = hosts_view(store)
        states = activity.host_states(store, silent_after)
        trend = snapshots.trend(store, "fleet", "", 30)
        services = activity.services(store)
        unapproved = [s for s in services if s.unapproved]
        by_level = {lvl: 0 for lvl in LEVEL_ORDER}
        for h in hosts:
            by_level[h["risk"]["level"]] = by_level.get(h["risk"]["level"], 0) + 1
        return html(
            request,
            "overview.html",
            title="Fleet overview",
            board=board,
            names=host_names(store),
            states=states,
            silent=activity.silent_hosts(store, silent_after),
            trend_chart=charts.line([(r.day, r.score) for r in trend], title="Fleet risk, daily"),
            levels_chart=charts.bars(
                [(lvl, float(n)) for lvl, n in by_level.items()],
                colours=charts.LEVEL_COLOURS,
                title="Hosts by risk level",
            ),
            services_chart=charts.bars(
                [(s.service, float(s.hosts)) for s in unapproved[:8]], title="Unapproved AI services by hosts"
            ),
            bytes_chart=charts.bars(
                [(s.service, float(s.bytes_out)) for s in sorted(unapproved, key=lambda s: -s.bytes_out)[:8]],
                title="Unapproved AI services by bytes sent",
            ),
            services=services[:15],
            runtimes=activity.runtimes(store),
            transfers=activity.transfers(store),
            compute=activity.compute(store),
            aitools=activity.aitools(store),
        )

    def hosts(request: Request) -> Response:
        q = request.query_params.get("q", "").strip().lower()
        sort = request.query_params.get("sort", "risk")
        rows = hosts_view(store)
        if q:
            rows = [h for h in rows if q in h["host_id"].lower() or q in h["hostname"].lower()]
        rows.sort(key=HOST_SORTS.get(sort, HOST_SORTS["risk"]))
        return html(request, "hosts.html", title="Hosts", hosts=rows, q=q, sort=sort, sorts=list(HOST_SORTS))

    def host(request: Request) -> Response:
        try:  # /hosts/ID or /hosts/NAME, as everywhere
            host_id = resolve_host(store, request.path_params["host_id"])
        except BadQuery as exc:
            return html(request, "error.html", 404, title="No such host", message=str(exc))
        found = [h for h in hosts_view(store) if h["host_id"] == host_id]
        if not found:
            return html(request, "error.html", 404, title="No such host", message=f"No host {host_id}.")

        def of(*kinds: str, n: int = PAGE) -> list[dict[str, Any]]:
            where = findings_filter({"host": host_id, "kind": ",".join(kinds)})
            return list_findings(store, where, n).findings

        inventory = inventories_view(store, host_id)
        aitools = of(*AITOOL_KINDS)
        return html(
            request,
            "host.html",
            title=found[0]["hostname"] or host_id,
            host=found[0],
            trend=charts.line(
                [(r.day, r.score) for r in snapshots.trend(store, "host", host_id, 30)],
                title="Host risk, daily",
            ),
            runtimes=of(*RUNTIME_KINDS),
            compute=[r for r in activity.compute(store) if r.host_id == host_id],
            gpu=of("GPU_AI_WORKLOAD", "FINE_TUNING"),
            models=inventory[0]["models"] if inventory else [],
            inventory=inventory[0] if inventory else None,
            services=of(*SERVICE_KINDS),
            aitools=aitools,
            access_reasons=mcp_access_reasons(aitools),
            timeline=list_findings(store, findings_filter({"host": host_id}), PAGE).findings,
        )

    def findings(request: Request) -> Response:
        q = {k: v for k, v in request.query_params.items() if v}
        error = ""
        result = None
        try:
            result = list_findings(store, findings_filter(q), PAGE, q.get("cursor") or None)
        except (BadRequest, BadQuery, ValueError) as exc:
            error = str(exc)
        args = {k: v for k, v in q.items() if k != "cursor"}
        return html(
            request,
            "findings.html",
            400 if error else 200,
            title="Findings",
            error=error,
            findings=result.findings if result else [],
            names=host_names(store) if result and result.findings else {},
            next_cursor=result.cursor if result else None,
            args=args,
            filters=q,
        )

    def finding(request: Request) -> Response:
        host_id, fid = request.path_params["host_id"], request.path_params["finding_id"]
        f = one_finding(store, host_id, fid)
        if f is not None:
            return html(
                request, "finding.html", title=f.get("summary") or f["kind"], f=f, names=host_names(store)
            )
        return html(
            request, "error.html", 404, title="No such finding", message=f"No finding {fid} on {host_id}."
        )

    def models(request: Request) -> Response:
        return html(request, "models.html", title="Model census", models=activity.census(store, 200, 20))

    def tools(request: Request) -> Response:
        kind = request.query_params.get("kind", "")
        if kind and kind not in AITOOL_KINDS:
            return html(request, "error.html", 400, title="Bad request", message=f"No tool kind {kind!r}.")
        rows = [r for r in activity.tools(store) if not kind or r.kind == kind]
        return html(
            request,
            "tools.html",
            title="AI tools",
            tools=rows,
            kind=kind,
            kinds=AITOOL_KINDS,
            names=host_names(store),
            risky=MCP_ACCESS_REASONS,
            shown=TOOL_HOSTS_SHOWN,
        )

    def policy_page(request: Request, status: int = 200, error: str = "", notice: str = "") -> Response:
        return html(
            request,
            "policy.html",
            status,
            title="Policy",
            policy=policy_view(store),
            list_keys=list(LIST_KEYS),
            thresholds=list(THRESHOLDS),
            error=error,
            notice=notice,
        )

    async def admin_form(request: Request) -> tuple[Identity, FormData] | Response:
        """An admin's form with a good CSRF token, or the refusal to send (403 either way)."""
        who = _who(request)
        form = await request.form()
        if not csrf_ok(who, str(form.get("csrf", ""))):
            return html(request, "error.html", 403, title="Forbidden", message="Bad or missing CSRF token.")
        if not who.admin:
            return forbidden(request)
        return who, form

    def policy_get(request: Request) -> Response:
        return policy_page(request)

    async def policy_post(request: Request) -> Response:
        checked = await admin_form(request)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        doc: dict[str, Any] = {
            key: [line.strip() for line in str(form.get(key, "")).splitlines() if line.strip()]
            for key in LIST_KEYS
        }
        doc["thresholds"] = {}
        try:
            for name in THRESHOLDS:
                text = str(form.get(name, "")).strip()
                if text:
                    doc["thresholds"][name] = float(text)
            version = store_policy(store, doc, "policy form")
        except (PolicyError, ValueError) as exc:
            return policy_page(request, 400, error=str(exc))
        log.info("policy version %d stored by %s from the console", version, who.name)
        return RedirectResponse(f"/policy?stored={version}", status_code=303)

    def enrollment_page(request: Request, status: int = 200, token: str = "", error: str = "") -> Response:
        if not _who(request).admin:
            return forbidden(request)
        return html(
            request,
            "enrollment.html",
            status,
            title="Enrollment",
            tokens=tokens_view(store),
            agents=agents_view(store),
            token=token,
            error=error,
            can_mint=token_pin is not None,
        )

    def enrollment(request: Request) -> Response:
        return enrollment_page(request)

    async def enrollment_post(request: Request) -> Response:
        checked = await admin_form(request)
        if isinstance(checked, Response):
            return checked
        who, form = checked
        action = str(form.get("action", ""))
        if action == "revoke":
            host_id = str(form.get("host_id", ""))
            if not revoke_agent(store, host_id):
                return enrollment_page(request, 400, error=f"no enrolled agent {host_id}")
            log.info("agent %s revoked by %s from the console", host_id, who.name)
            return RedirectResponse("/enrollment", status_code=303)
        if action == "mint" and token_pin is not None:
            try:
                ttl = parse_duration(str(form.get("ttl", "24h")) or "24h")
                uses = int(str(form.get("uses", "1")) or "1")
                if not 1 <= uses <= 10_000:
                    raise ValueError("uses must be 1..10000")
            except ValueError as exc:
                return enrollment_page(request, 400, error=str(exc))
            token, _ = mint_token(store, token_pin, ttl, uses, str(form.get("note", ""))[:200])
            log.info("enrollment token minted by %s from the console", who.name)
            return enrollment_page(request, token=token)
        return enrollment_page(request, 400, error="unknown action")

    routes: list[tuple[str, Callable[..., Any], list[str]]] = [
        ("/", overview, ["GET"]),
        ("/hosts", hosts, ["GET"]),
        ("/hosts/{host_id:path}", host, ["GET"]),
        ("/findings", findings, ["GET"]),
        ("/findings/{host_id}/{finding_id:path}", finding, ["GET"]),
        ("/models", models, ["GET"]),
        ("/tools", tools, ["GET"]),
        ("/policy", policy_get, ["GET"]),
        ("/policy", policy_post, ["POST"]),
        ("/enrollment", enrollment, ["GET"]),
        ("/enrollment", enrollment_post, ["POST"]),
    ]
    return [Route(path, fn, methods=methods) for path, fn, methods in routes]
