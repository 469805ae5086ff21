"""The fleet report: its numbers equal the store's (computed here from the fixture fleet's own
findings, not by the query code), the four formats carry the same numbers, hostile names stay text,
the PDF is valid and its pages render, and the control mapping is validated strictly."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from report_fleet import DAY, FLEET, HOSTILE_HOST, HOSTILE_PROCESS, HOSTILE_USER, TREND, F, load_fleet

from collector.cli import main
from collector.query.times import utc_day
from collector.reports import ControlsError, build_report, load_controls, render
from collector.reports.controls import SECTIONS
from collector.storage import Store, open_store

WINDOW_DAYS = 30
NOW = time.time()  # hosts' contact times are the store's clock, so findings are placed around it

#: The report names hosts by their names (the HTML, the PDF); CSV and JSON keep the ids as keys.
NAMES = {h.host_id: h.hostname for h in FLEET}
IDS = {name: host_id for host_id, name in NAMES.items()}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'fleet.db'}"
    with open_store(url) as store:
        load_fleet(store, NOW)
    return url


@pytest.fixture
def store(db: str) -> Iterator[Store]:
    with open_store(db, create=False) as s:
        yield s


@pytest.fixture(scope="module")
def rendered(db: str) -> dict[str, bytes]:
    with open_store(db, create=False) as s:
        report = build_report(s, WINDOW_DAYS * DAY, NOW)
    return {fmt: render(report, fmt) for fmt in ("html", "pdf", "csv", "json")}


# ---- what the fixture says, computed from its lists


def in_window() -> list[tuple[str, F]]:
    return [(h.host_id, f) for h in FLEET for f in h.findings if f.age_days <= WINDOW_DAYS]


def expected_services() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for host, f in in_window():
        if not f.service:
            continue
        s = out.setdefault(
            f.service,
            {
                "vendor": f.vendor,
                "category": f.category,
                "hosts": set(),
                "processes": set(),
                "findings": 0,
                "unapproved": 0,
                "bytes_out": 0,
            },
        )
        s["hosts"].add(host)
        s["processes"].add(f.process)
        s["findings"] += 1
        s["unapproved"] += 0 if f.approved else 1
        s["bytes_out"] += f.bytes_out
    return {
        k: {
            **v,
            "hosts": len(v["hosts"]),
            "processes": len(v["processes"]),
            "approved": v["findings"] - v["unapproved"],
        }
        for k, v in out.items()
    }


def expected_activity(kinds: set[str]) -> dict[tuple[str, str], tuple[int, int, int]]:
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for host, f in in_window():
        if f.kind in kinds:
            t = out[(host, f.kind)]
            t[0] += 1
            t[1] += 0 if f.approved else 1
            t[2] += f.bytes_out if f.transfer or f.service else (4_100_000_000 if f.sha256 else 0)
    return {k: (v[0], v[1], v[2]) for k, v in out.items()}


def expected_census() -> dict[str, tuple[int, int, int]]:
    holders: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for h in FLEET:
        for f in h.findings:
            if f.kind == "MODEL_ARTIFACT":
                holders[f.sha256].append((h.host_id, f.approved))
    return {
        sha: (len({h for h, _ in held}), len({h for h, ok in held if not ok}), len(held))
        for sha, held in holders.items()
    }


def expected_kinds() -> Counter[str]:
    kinds = Counter(f.kind for _, f in in_window())
    kinds["AGENT_HEALTH"] += sum(1 for h in FLEET if h.silent)  # the collector's silent mark, 2 days old
    return kinds


# ---- the typed report


def test_coverage_counts_the_fleet(store: Store) -> None:
    c = build_report(store, WINDOW_DAYS * DAY, NOW).coverage
    assert c.hosts_known == len(FLEET)
    assert c.agents_enrolled == sum(1 for h in FLEET if h.enrolled and not h.revoked)
    assert c.agents_revoked == sum(1 for h in FLEET if h.revoked)
    assert c.hosts_silent == sum(1 for h in FLEET if h.silent)
    assert c.hosts_reporting == len(FLEET) - c.hosts_silent
    states: dict[str, Counter[int]] = defaultdict(Counter)
    for h in FLEET:
        for name, state in h.sensors.items():
            states[name][state] += 1
    from report_fleet import ACTIVE, DEGRADED, INACTIVE

    assert {s.sensor: (s.active, s.degraded, s.inactive) for s in c.sensors} == {
        name: (n[ACTIVE], n[DEGRADED], n[INACTIVE]) for name, n in states.items()
    }
    assert c.hosts_all_sensors_active == sum(1 for h in FLEET if all(s == ACTIVE for s in h.sensors.values()))


def test_services_vendors_and_categories_in_the_window(store: Store) -> None:
    report = build_report(store, WINDOW_DAYS * DAY, NOW)
    want = expected_services()
    got = {
        s.service: {
            "vendor": s.vendor,
            "category": s.category,
            "hosts": s.hosts,
            "processes": s.processes,
            "findings": s.findings,
            "unapproved": s.unapproved,
            "bytes_out": s.bytes_out,
            "approved": s.approved,
        }
        for s in report.services
    }
    assert got == want
    by_vendor: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for s in want.values():
        v = by_vendor[(s["vendor"], s["category"])]
        v[0] += 1
        v[1] += s["findings"]
        v[2] += s["unapproved"]
        v[3] += s["bytes_out"]
    assert {
        (v.vendor, v.category): [v.services, v.findings, v.unapproved, v.bytes_out] for v in report.vendors
    } == (dict(by_vendor))
    # The 60-day-old claude.ai contact is outside a 30-day window but inside "everything".
    old = [f for h in FLEET for f in h.findings if f.age_days > WINDOW_DAYS]
    assert old
    everything = {s.service: s.findings for s in build_report(store, None, NOW).services}
    assert everything["claude.ai"] == want["claude.ai"]["findings"] + sum(
        1 for f in old if f.service == "claude.ai"
    )


def test_runtimes_compute_transfers_and_census(store: Store) -> None:
    report = build_report(store, WINDOW_DAYS * DAY, NOW)
    runtimes: dict[str, list[set[str] | int]] = {}
    for host, f in in_window():
        if f.runtime:
            r = runtimes.setdefault(f.runtime, [set(), set(), 0, 0])
            r[0].add(host)  # type: ignore[union-attr]
            if f.kind == "MODEL_SERVER_EXPOSED":
                r[1].add(host)  # type: ignore[union-attr]
            r[2] += 1  # type: ignore[operator]
            r[3] += 0 if f.approved else 1  # type: ignore[operator]
    assert {r.runtime: (r.hosts, r.exposed_hosts, r.findings, r.unapproved) for r in report.runtimes} == {
        k: (len(v[0]), len(v[1]), v[2], v[3])
        for k, v in runtimes.items()  # type: ignore[arg-type]
    }
    compute = expected_activity({"GPU_AI_WORKLOAD", "FINE_TUNING"})
    assert {(a.host_id, a.kind): (a.findings, a.unapproved) for a in report.compute} == {
        k: v[:2] for k, v in compute.items()
    }
    transfers = expected_activity({"MODEL_DOWNLOAD", "MODEL_EXFILTRATION"})
    assert {(a.host_id, a.kind): (a.findings, a.unapproved, a.bytes) for a in report.transfers} == transfers
    assert {t.kind: t.bytes for t in report.transfer_totals} == {
        kind: sum(v[2] for (_, k), v in transfers.items() if k == kind) for _, kind in transfers
    }
    census = expected_census()
    assert {m.sha256: (m.hosts, m.unapproved_hosts, m.copies) for m in report.models} == census
    assert report.models[0].unapproved_hosts == max(v[1] for v in census.values())  # the spread one first


def test_risk_counts_trend_and_top_hosts(store: Store) -> None:
    report = build_report(store, WINDOW_DAYS * DAY, NOW)
    kinds = expected_kinds()
    assert report.fleet.findings_by_kind == dict(kinds)
    assert report.fleet.findings == sum(kinds.values())
    assert [(t.day, t.score, t.level) for t in report.trend] == [
        (utc_day(NOW - ago * DAY), score, level) for ago, score, level, _, _ in TREND
    ]
    # Hosts with an unapproved finding in the window, and silent hosts (their AGENT_HEALTH mark).
    at_risk = {host for host, f in in_window() if not f.approved} | {h.host_id for h in FLEET if h.silent}
    assert {h.host_id for h in report.top_hosts} == at_risk
    assert all(h.reasons for h in report.top_hosts if h.host_id not in {x.host_id for x in FLEET if x.silent})
    # The host with a critical exfiltration outranks the fin host with one medium contact.
    order = [h.host_id for h in report.top_hosts]
    assert order.index(HOSTILE_HOST) < order.index("h-fin-04")
    assert HOSTILE_USER in {u.host_id for u in report.top_users}


# ---- the formats


def csv_values(body: bytes) -> dict[tuple[str, str, str], str]:
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"))))
    assert rows[0] == ["section", "item", "metric", "value"]
    out = {(s, i, m): v for s, i, m, v in rows[1:]}
    assert len(out) == len(rows) - 1, "each (section, item, metric) once"
    return out


class Tables(HTMLParser):
    """Table cells' text by table id: {id: [[cell, ...], ...]} (header rows included)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_tables(body: bytes) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(body.decode("utf-8"))
    return parser.tables


def test_csv_json_and_html_carry_the_fixture_numbers(rendered: dict[str, bytes]) -> None:
    values = csv_values(rendered["csv"])
    doc = json.loads(rendered["json"])
    tables = html_tables(rendered["html"])
    services = expected_services()
    html_services = {row[0]: row[1:] for row in tables["t-services"][1:]}
    json_services = {s["service"]: s for s in doc["services"]}
    for name, s in services.items():
        for metric in ("hosts", "processes", "findings", "unapproved", "bytes_out"):
            assert values[("services", name, metric)] == str(s[metric])
            assert json_services[name][metric] == s[metric]
        assert html_services[name] == [
            s["vendor"],
            s["category"],
            *(str(s[m]) for m in ("hosts", "processes", "findings", "unapproved", "bytes_out")),
        ]
    census = expected_census()
    for sha, (hosts, unapproved_hosts, copies) in census.items():
        assert values[("models", sha, "hosts")] == str(hosts)
        assert values[("models", sha, "unapproved_hosts")] == str(unapproved_hosts)
        assert values[("models", sha, "copies")] == str(copies)
    assert {m["sha256"]: (m["hosts"], m["unapproved_hosts"], m["copies"]) for m in doc["models"]} == census
    assert {row[0][:16]: tuple(int(c) for c in row[5:8]) for row in tables["t-models"][1:]} == {
        sha[:16]: v for sha, v in census.items()
    }
    transfers = expected_activity({"MODEL_DOWNLOAD", "MODEL_EXFILTRATION"})
    for (host, kind), (n, unappr, nbytes) in transfers.items():
        assert values[("transfers", host, f"{kind}.findings")] == str(n)
        assert values[("transfers", host, f"{kind}.bytes")] == str(nbytes)
        assert [NAMES[host], kind, str(n), str(unappr), str(nbytes)] in tables["t-transfers"]
    kinds = expected_kinds()
    for kind, n in kinds.items():
        assert values[("findings_by_kind", kind, "findings")] == str(n)
    assert doc["fleet"]["findings_by_kind"] == dict(kinds)
    coverage = {row[0]: row[1] for row in tables["t-coverage"][1:]}
    assert (
        coverage["Hosts known (said Hello)"]
        == values[("coverage", "fleet", "hosts_known")]
        == str(len(FLEET))
    )
    assert (
        coverage["Hosts silent"]
        == values[("coverage", "fleet", "hosts_silent")]
        == str(doc["coverage"]["hosts_silent"])
    )
    # Top hosts: the same scores, to the shown decimal, in all three.
    for row in tables["t-top-hosts"][1:]:
        host, score = IDS[row[0]], row[1]  # the HTML names hosts; CSV and JSON key them by id
        assert values[("top_hosts", host, "score")] == score
        assert f"{next(h['score'] for h in doc['top_hosts'] if h['host_id'] == host):.1f}" == score


def test_every_csv_number_is_in_the_json(rendered: dict[str, bytes]) -> None:
    """The CSV is the JSON flattened: every CSV value appears at its place in the JSON document."""
    values = csv_values(rendered["csv"])
    doc = json.loads(rendered["json"])
    for s in doc["services"]:
        assert values[("services", s["service"], "approved")] == str(s["approved"])
    for v in doc["vendors"]:
        assert values[("vendors", f"{v['vendor']} / {v['category']}", "unapproved")] == str(v["unapproved"])
    for t in doc["trend"]:
        assert values[("trend", t["day"], "score")] == f"{t['score']:.1f}"
    for item in doc["controls"]:
        for c in item["clauses"]:
            assert values[("controls", item["section"], c["id"])] == c["framework"]
    for host_id, name in doc["host_names"].items():
        assert values[("hosts", host_id, "hostname")] == name
    assert doc["host_names"] == NAMES
    sections = {k[0] for k in values}
    assert {"coverage", "services", "vendors", "runtimes", "models", "risk", "trend", "controls"} <= sections


def test_hostile_names_are_text_in_html(rendered: dict[str, bytes]) -> None:
    html = rendered["html"].decode("utf-8")
    for hostile in (HOSTILE_HOST, HOSTILE_PROCESS, HOSTILE_USER, "<i>evil</i>"):
        assert hostile not in html
    assert "<script" not in html.lower() and "onerror=" not in html and "<img" not in html
    tables = html_tables(rendered["html"])
    assert NAMES[HOSTILE_HOST] in [row[0] for row in tables["t-top-hosts"]]  # its name, shown as text
    assert HOSTILE_USER in [row[0] for row in tables["t-top-users"]]


needs_poppler = pytest.mark.skipif(
    shutil.which("pdftoppm") is None or shutil.which("pdftotext") is None,
    reason="poppler-utils missing (make setup installs it)",
)


@needs_poppler
def test_pdf_is_valid_renders_and_shows_hostile_names_as_text(
    rendered: dict[str, bytes], tmp_path: Path
) -> None:
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(rendered["pdf"])
    assert rendered["pdf"].startswith(b"%PDF-") and rendered["pdf"].rstrip().endswith(b"%%EOF")
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))
    assert pages >= 2
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True)
    images = sorted(tmp_path.glob("page-*.png"))
    assert len(images) == pages
    assert all(p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 2000 for p in images)
    text = subprocess.run(["pdftotext", "-raw", str(pdf), "-"], capture_output=True, text=True, check=True)
    flat = " ".join(text.stdout.split())
    assert "Control mapping" in flat and "GOVERN 1.6" in flat and "A.6.2.8" in flat
    assert f"{NAMES[HOSTILE_HOST]} MODEL_EXFILTRATION" in flat  # the name, literally, as text in a table row
    assert "mallory</b>" in flat


# ---- the command


def test_cli_writes_each_format(db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for fmt in ("json", "csv", "html"):
        out = tmp_path / f"r.{fmt}"
        assert main(["report", "--db", db, "--format", fmt, "--output", str(out), "--since", "30d"]) == 0
        assert out.stat().st_size > 500
    assert json.loads((tmp_path / "r.json").read_text())["format"] == "umbra-report/1"
    assert "wrote the html report" in capsys.readouterr().err
    nowhere = str(tmp_path / "no" / "such" / "r.json")
    assert main(["report", "--db", db, "--format", "json", "--output", nowhere]) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--db", db, "--format", "docx", "--output", str(tmp_path / "r.docx")])
    assert exit_.value.code == 2


def test_render_refuses_an_unknown_format(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown report format"):
        render(build_report(store, None, NOW), "xlsx")


# ---- the control mapping


def test_control_mapping_covers_every_section_with_sourced_clauses() -> None:
    items = load_controls()
    assert [i.section for i in items] == list(SECTIONS)
    ids = {(c.framework, c.id) for i in items for c in i.clauses}
    for want in [
        ("NIST AI RMF 1.0", "GOVERN 1.6"),
        ("NIST AI RMF 1.0", "MAP 4.1"),
        ("NIST AI RMF 1.0", "MANAGE 3.1"),
        ("NIST AI RMF 1.0", "MANAGE 3.2"),
        ("EU AI Act", "Art. 26(5)"),
        ("EU AI Act", "Art. 26(6)"),
        ("ISO/IEC 42001", "A.4.2"),
        ("ISO/IEC 42001", "A.6.2.6"),
        ("ISO/IEC 42001", "A.6.2.8"),
        ("ISO/IEC 42001", "A.10.3"),
    ]:
        assert want in ids
    assert all(c.source.startswith("https://") for i in items for c in i.clauses)
    for item in items:
        assert {c.framework for c in item.clauses} >= {"NIST AI RMF 1.0", "ISO/IEC 42001"}


GOOD_CLAUSE = '[[clause]]\nid = "X 1"\nframework = "EU AI Act"\ntitle = "t"\nsource = "https://e.eu/x"\n'
GOOD_ITEM = '[[item]]\nsection = "coverage"\ntitle = "t"\nsupports = "s"\nclauses = ["X 1"]\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD_CLAUSE + GOOD_ITEM.replace('["X 1"]', '["X 2"]'), "unknown clauses"),
        (GOOD_CLAUSE.replace("https://", "http://") + GOOD_ITEM, "https"),
        (GOOD_CLAUSE + 'note = "x"\n' + GOOD_ITEM, "unknown"),
        (GOOD_CLAUSE.replace('title = "t"\n', "") + GOOD_ITEM, "missing"),
        (GOOD_CLAUSE.replace("EU AI Act", "SOC 2") + GOOD_ITEM, "unknown framework"),
        (GOOD_CLAUSE + GOOD_CLAUSE + GOOD_ITEM, "twice"),
        (GOOD_CLAUSE + GOOD_ITEM.replace("coverage", "weather"), "not a report section"),
        (GOOD_CLAUSE + GOOD_CLAUSE.replace("X 1", "X 9") + GOOD_ITEM, "no item uses"),
        ("[[clause]\n", "controls.toml"),
    ],
)
def test_control_mapping_is_validated_strictly(text: str, message: str) -> None:
    with pytest.raises(ControlsError, match=message):
        load_controls(text)
    assert load_controls(GOOD_CLAUSE + GOOD_ITEM)[0].clauses[0].id == "X 1"
