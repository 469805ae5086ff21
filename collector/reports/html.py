"""The report as one self-contained HTML page (Jinja2, autoescaped; charts as inline SVG)."""

from __future__ import annotations

from functools import cache

import jinja2

from .charts import COLOURS, BarChart, LineChart, bar_chart, trend_chart
from .controls import FRAMEWORKS, Clause
from .model import Report
from .tabular import show

LEVELS = ("critical", "high", "medium", "low", "none")
TOP_BARS = 10


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("collector.reports", "templates"),
        autoescape=True,  # every host, user, process and service name is text, never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["show"] = show
    return env


def charts(report: Report) -> dict[str, BarChart | LineChart]:
    f = report.fleet
    vendors = [
        (
            f"{v.vendor or '(unknown)'} · {v.category or '(unknown)'}",
            [("unapproved", v.unapproved), ("approved", v.approved)],
        )
        for v in report.vendors[:TOP_BARS]
    ]
    kinds = sorted(f.findings_by_kind.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_BARS]
    return {
        "vendors": bar_chart(
            "AI service findings by vendor and category",
            vendors,
            legend=(("unapproved", "unapproved"), ("approved", "approved")),
        ),
        "levels": bar_chart(
            "Hosts by risk level",
            [(level, [(f"level-{level}", f.hosts_by_level.get(level, 0))]) for level in LEVELS],
        ),
        "kinds": bar_chart("Findings in the window by kind", [(k, [("bar", n)]) for k, n in kinds]),
        "trend": trend_chart("Fleet risk by day (riskiest host's score, 0-100)", report.trend),
    }


def to_html(report: Report) -> str:
    clauses: dict[str, Clause] = {}
    for item in report.controls:
        for c in item.clauses:
            clauses.setdefault(f"{FRAMEWORKS.index(c.framework)}:{c.id}", c)
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            r=report,
            charts=charts(report),
            frameworks=FRAMEWORKS,
            colours=COLOURS,
            clauses=[clauses[k] for k in sorted(clauses)],
        )
    )
