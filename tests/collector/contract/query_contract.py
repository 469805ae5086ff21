"""The read side's storage contract, for every backend (GRR's db_test_mixin pattern).

A backend's test module composes `QueryContract` into a `Test...` class and provides a `store`
fixture yielding an empty, open store of that backend. Everything here goes through the `Store`
interface (and the query layer over it) with plain findings, so it holds for any SQL database.
Expected results are stated from the findings and the risk model, never copied from output.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Any

import pytest
from umbra import codec
from umbra.v1 import finding_pb2

from collector import risk
from collector.query import activity, snapshots
from collector.query.documents import hosts_view
from collector.query.findings import BadQuery, finding_filter, list_findings
from collector.query.risk import as_of, host_risks, risk_board, user_risks
from collector.storage.base import Store
from collector.storage.reads import RARE_KINDS, FindingFilter, SnapshotRow

T0 = 1_750_000_000.0
DAY = 86400.0


def finding(
    fid: str,
    *,
    kind: str = "LOCAL_MODEL_RUNTIME",
    severity: str = "high",
    confidence: float = 1.0,
    approved: bool = False,
    last_seen: float = T0,
    user: str = "",
    process: str = "proc",
    runtime: str = "",
    service: str = "",
    vendor: str = "",
    bytes_out: int = 0,
    sha256: str = "",
    path: str = "",
    fmt: str = "gguf",
    transfer: bool = False,
) -> finding_pb2.Finding:
    """A finding with the evidence the fleet views group on."""
    evidence = []
    if runtime:
        evidence.append(finding_pb2.Evidence(runtime=finding_pb2.RuntimeEvidence(runtime_id=runtime)))
    if service:
        evidence.append(
            finding_pb2.Evidence(
                network=finding_pb2.NetworkEvidence(host_name=service, vendor=vendor, bytes_out=bytes_out)
            )
        )
    if sha256 and not transfer:
        evidence.append(
            finding_pb2.Evidence(
                model_file=finding_pb2.ModelFileEvidence(
                    path=path,
                    format=fmt,
                    sha256=sha256,
                    size_bytes=4_000_000_000,
                    architecture="llama",
                    parameter_count=7_000_000_000,
                )
            )
        )
    if transfer:
        evidence.append(
            finding_pb2.Evidence(
                transfer=finding_pb2.TransferEvidence(
                    source_path=path, destination="/media/usb", sha256=sha256, size_bytes=bytes_out
                )
            )
        )
    f = finding_pb2.Finding(
        id=fid,
        kind=codec.kind_value(kind),
        severity=codec.severity_value(severity),
        confidence=confidence,
        user=user,
        process=finding_pb2.Process(pid=100, name=process),
        policy=finding_pb2.PolicyDecision(approved=approved, rule="test"),
        evidence=evidence,
        summary=f"finding {fid}",
    )
    f.last_seen.CopyFrom(codec.timestamp(last_seen))
    f.first_seen.CopyFrom(codec.timestamp(last_seen - 60))
    return f


def store_on(store: Store, host_id: str, *findings: finding_pb2.Finding) -> None:
    store.store_batch(host_id, 1, list(findings))


def ids(findings: list[dict[str, Any]]) -> list[str]:
    return [f["id"] for f in findings]


class QueryContract:
    # ---- findings listed with a cursor

    def test_pages_list_every_finding_once_newest_first(self, store: Store) -> None:
        for h in range(3):
            # Ties on last_seen across hosts and ids: the keyset order must still be total.
            store_on(store, f"host-{h}", *(finding(f"f{i:02d}", last_seen=T0 + i // 4) for i in range(10)))
        everything = store.findings(limit=None)
        seen: list[tuple[str, str]] = []
        after = None
        pages = 0
        while True:
            page = store.findings_page(FindingFilter(), 7, after)
            seen += [(f["host_id"], f["id"]) for f in page.findings]
            pages += 1
            if page.next is None:
                break
            after = page.next
        assert pages == 5  # 30 findings, 7 a page
        assert len(seen) == len(set(seen)) == 30
        assert {(f["host_id"], f["id"]) for f in everything} == set(seen)
        times = [f["last_seen"] for f in store.findings_page(FindingFilter(), 30).findings]
        assert times == sorted(times, reverse=True)

    def test_a_kind_lists_the_same_whether_rare_or_common(self, store: Store) -> None:
        # More findings of one kind than RARE_KINDS (its listing walks the index by last_seen) and
        # a few of another (its listing sorts them all): each page is exactly that kind's order.
        common, rare = "AI_SERVICE_ACCESS", "MODEL_EXFILTRATION"
        for h in range(2):
            batch = [
                finding(f"c{i}", kind=common, approved=i % 3 == 0, last_seen=T0 - (i * 7919 % 5000))
                for i in range(RARE_KINDS // 2 + 50)
            ]
            batch += [finding(f"r{i}", kind=rare, last_seen=T0 - i // 2) for i in range(30)]
            store.store_batch(f"host-{h}", 1, batch)
        everything = store.findings(limit=None)
        for kind, approved in ((common, None), (common, False), (rare, None)):
            want = sorted(
                (
                    (f["last_seen"], f["host_id"], f["id"])
                    for f in everything
                    if f["kind"] == kind and approved in (None, f["policy"].get("approved", False))
                ),
                reverse=True,
            )
            where = FindingFilter(kinds=(int(codec.kind_value(kind)),), approved=approved)
            got, after = [], None
            for _ in range(3):  # the first pages, through the cursor
                page = store.findings_page(where, 40, after)
                got += [(f["last_seen"], f["host_id"], f["id"]) for f in page.findings]
                after = page.next
                if after is None:
                    break
            assert got == want[:120], (kind, approved)
            if approved is None:  # Store.findings has no approval filter
                listed = store.findings(kind=kind, limit=25)
                assert [f["last_seen"] for f in listed] == [w[0] for w in want[:25]]
                assert {f["kind"] for f in listed} == {kind}

    def test_a_cursor_is_stable_while_findings_arrive(self, store: Store) -> None:
        store_on(store, "h", *(finding(f"f{i}", last_seen=T0 + i) for i in range(6)))
        first = store.findings_page(FindingFilter(), 3)
        assert ids(first.findings) == ["f5", "f4", "f3"]
        store_on(store, "h", finding("newer", last_seen=T0 + 100))
        rest = store.findings_page(FindingFilter(), 10, first.next)
        assert ids(rest.findings) == ["f2", "f1", "f0"] and rest.next is None

    def test_the_query_layer_cursor_round_trips_and_refuses_junk(self, store: Store) -> None:
        store_on(store, "h", *(finding(f"f{i}", last_seen=T0 + i) for i in range(5)))
        where = finding_filter()
        first = list_findings(store, where, limit=2)
        assert first.cursor is not None
        second = list_findings(store, where, limit=2, cursor=first.cursor)
        assert ids(first.findings) + ids(second.findings) == ["f4", "f3", "f2", "f1"]
        with pytest.raises(BadQuery):
            list_findings(store, where, limit=2, cursor="not-a-cursor")
        with pytest.raises(BadQuery):
            finding_filter(kinds=("NOT_A_KIND",))

    def test_every_filter_narrows_to_exactly_its_findings(self, store: Store) -> None:
        store_on(
            store,
            "h1",
            finding(
                "svc",
                kind="AI_SERVICE_ACCESS",
                severity="medium",
                service="api.openai.com",
                vendor="OpenAI",
                user="alice",
                last_seen=T0 - 5 * DAY,
            ),
            finding("run", runtime="ollama", user="bob", approved=True, last_seen=T0 - DAY),
            finding("mdl", kind="MODEL_ARTIFACT", severity="low", sha256="ab" * 32, path="/m/a.gguf"),
        )
        store_on(
            store, "h2", finding("svc2", kind="AI_SERVICE_ACCESS", service="claude.ai", vendor="Anthropic")
        )

        def match(**kw: Any) -> set[str]:
            return {f["id"] for f in store.iter_findings(finding_filter(**kw), page_size=2)}

        assert match() == {"svc", "run", "mdl", "svc2"}
        assert match(kinds=("AI_SERVICE_ACCESS",)) == {"svc", "svc2"}
        assert match(kinds=("MODEL_ARTIFACT", "LOCAL_MODEL_RUNTIME")) == {"run", "mdl"}
        assert match(severities=("medium", "low")) == {"svc", "mdl"}
        assert match(host="h2") == {"svc2"}
        assert match(user="alice") == {"svc"}
        assert match(service="API.OpenAI.com") == {"svc"}  # host names compare lower-case
        assert match(vendor="Anthropic") == {"svc2"}
        assert match(runtime="ollama") == {"run"}
        assert match(sha256="AB" * 32) == {"mdl"}
        assert match(approved=True) == {"run"}
        assert match(approved=False) == {"svc", "mdl", "svc2"}
        assert match(since=T0 - 2 * DAY) == {"run", "mdl", "svc2"}
        assert match(until=T0 - 2 * DAY) == {"svc"}
        assert match(host="h1", kinds=("AI_SERVICE_ACCESS",), approved=False) == {"svc"}

    def test_one_finding_is_read_by_its_key_as_the_pages_show_it(self, store: Store) -> None:
        store_on(store, "host-a", finding("x", user="ann"), finding("y"))
        store_on(store, "host-b", finding("x", user="bob", severity="low"))
        # A later sighting on another day: merged (the first first_seen kept) and moved on by last_seen.
        store_on(store, "host-a", finding("x", user="ann", last_seen=T0 + 3 * DAY))
        listed = {(f["host_id"], f["id"]): f for f in store.findings(limit=None)}
        for key in [("host-a", "x"), ("host-a", "y"), ("host-b", "x")]:
            assert store.finding(*key) == listed[key], key
        a_x = store.finding("host-a", "x")
        assert a_x is not None and a_x["user"] == "ann"
        assert (a_x["first_seen"], a_x["last_seen"]) == (
            codec.iso(codec.timestamp(T0 - 60)),
            codec.iso(codec.timestamp(T0 + 3 * DAY)),
        )
        b_x = store.finding("host-b", "x")
        assert b_x is not None and (b_x["count"], b_x["user"], b_x["severity"]) == (1, "bob", "low")
        assert store.finding("host-a", "nope") is None
        assert store.finding("host-c", "x") is None
        assert store.finding("host-b", "y") is None, "an id is a finding only on its own host"
        store.drop_before(T0 + DAY)  # retention forgets y and host-b's x; host-a's x was seen since
        assert store.finding("host-a", "y") is None and store.finding("host-b", "x") is None
        assert store.finding("host-a", "x") == a_x

    def test_a_newer_version_moves_the_facts_and_an_older_one_does_not(self, store: Store) -> None:
        store_on(store, "h", finding("x", kind="AI_SERVICE_ACCESS", service="a.example", user="u1"))
        store_on(
            store,
            "h",
            finding("x", kind="AI_SERVICE_ACCESS", service="b.example", user="u2", last_seen=T0 + 10),
        )
        store_on(
            store,
            "h",
            finding("x", kind="AI_SERVICE_ACCESS", service="c.example", user="u3", last_seen=T0 - 10),
        )
        assert [s.service for s in store.services()] == ["b.example"]
        assert set(user_risks(store)) == {"u2"}

    # ---- risk: the ordering of hosts and users follows from their findings

    def test_hosts_rank_by_the_risk_model(self, store: Store) -> None:
        for h in ("a-runtime", "b-services", "c-approved", "d-unsure", "e-stale", "f-quiet"):
            store.upsert_host(h, _hello(h), "ipv4:127.0.0.1:1")
        # critical exposed server and a high runtime: the riskiest
        store_on(
            store,
            "a-runtime",
            finding("exp", kind="MODEL_SERVER_EXPOSED", severity="critical"),
            finding("rt", severity="high", runtime="ollama"),
        )
        # three unapproved AI services, medium each
        store_on(
            store,
            "b-services",
            *(
                finding(f"s{i}", kind="AI_SERVICE_ACCESS", severity="medium", service=f"s{i}.ai")
                for i in range(3)
            ),
        )
        # the same, approved by policy: no risk
        store_on(
            store,
            "c-approved",
            *(
                finding(f"s{i}", kind="AI_SERVICE_ACCESS", severity="critical", approved=True)
                for i in range(3)
            ),
        )
        # a high finding the detector is unsure of
        store_on(store, "d-unsure", finding("u", severity="high", confidence=0.2))
        # a critical finding last seen 200 days before the fleet's newest: decayed to nothing
        store_on(store, "e-stale", finding("old", severity="critical", last_seen=T0 - 200 * DAY))
        fleet, per_host = host_risks(store, now=T0 + 3600)
        board = risk_board(store, top=10, now=T0 + 3600)
        assert [r.host_id for r in board.hosts] == ["a-runtime", "b-services", "d-unsure"]
        assert per_host["a-runtime"].level == "high" and per_host["b-services"].level == "medium"
        assert per_host["d-unsure"].level == "low"
        for quiet in ("c-approved", "e-stale", "f-quiet"):
            assert (per_host[quiet].score, per_host[quiet].level) == (0.0, "none")
        assert per_host["b-services"].reasons == ("3 unapproved AI services",)
        assert per_host["a-runtime"].reasons == ("1 exposed model server", "1 unapproved local model runtime")
        assert per_host["e-stale"].unapproved == 1  # still counted, just weighs nothing
        assert fleet.hosts == 6 and fleet.level == "high" and fleet.hosts_at_risk == 2
        assert fleet.max_score == per_host["a-runtime"].score

    def test_age_decay_halves_a_month_old_finding(self, store: Store) -> None:
        store_on(store, "fresh", finding("x", severity="high"))
        store_on(store, "month", finding("x", severity="high", last_seen=T0 - 20 * DAY))
        store_on(store, "quarter", finding("x", severity="high", last_seen=T0 - 60 * DAY))
        _, per_host = host_risks(store, now=T0)
        fresh, month, quarter = (per_host[h].score for h in ("fresh", "month", "quarter"))
        assert fresh > month > quarter > 0
        # scores are shown to one decimal
        assert month == pytest.approx(fresh / 2, abs=0.05) and quarter == pytest.approx(fresh / 4, abs=0.05)

    def test_as_of_is_now_or_the_newest_finding(self, store: Store) -> None:
        assert store.newest_finding() == 0.0
        assert as_of(store, now=T0) == T0
        store_on(store, "h", finding("a", last_seen=T0 - DAY), finding("b", last_seen=T0 - 2 * DAY))
        assert store.newest_finding() == pytest.approx(T0 - DAY)
        assert as_of(store, now=T0) == pytest.approx(T0 - DAY)  # scored as of its last data
        assert as_of(store, now=T0 - 3 * DAY) == T0 - 3 * DAY  # an agent's clock ahead changes nothing

    def test_users_rank_by_the_risk_model(self, store: Store) -> None:
        store_on(
            store,
            "h1",
            finding("a", severity="critical", user="alice"),
            finding("b", severity="low", user="bob"),
            finding("n", severity="critical"),
        )
        store_on(
            store,
            "h2",
            finding("a2", severity="high", user="alice"),
            finding("c", severity="critical", user="carol", approved=True),
        )
        users = user_risks(store, now=T0)
        assert set(users) == {"alice", "bob", "carol"}  # findings without a user belong to none
        assert [u.host_id for u in risk_board(store, now=T0).users] == ["alice", "bob"]
        assert users["carol"].score == 0.0 and users["alice"].unapproved == 2

    def test_sql_scores_equal_the_reference_model(self, store: Store) -> None:
        rng = random.Random(11)
        for h in range(5):
            batch = [
                finding(
                    f"f{i}",
                    kind=rng.choice(codec.KIND_NAMES),
                    severity=rng.choice(codec.SEVERITY_NAMES),
                    confidence=round(rng.random(), 3),
                    approved=rng.random() < 0.3,
                    # whole days plus an hour: never on an age bucket's edge
                    last_seen=T0 - rng.randrange(0, 120) * DAY - 3600,
                    user=rng.choice(["", "u1", "u2"]),
                )
                for i in range(40)
            ]
            store_on(store, f"host-{h}", *batch)
        now = T0 + 10 * DAY
        reference_time = as_of(store, now)
        dicts = store.findings(limit=None)
        fleet, per_host = host_risks(store, now=now)
        expected_fleet, expected = risk.fleet_risk([f"host-{h}" for h in range(5)], dicts)
        for h, got in per_host.items():
            want = risk.host_risk(h, dicts, reference_time)
            assert got.score == pytest.approx(want.score, abs=0.051), h
            assert (got.unapproved, got.by_severity, got.findings) == (want.unapproved, want.by_severity, 40)
        assert fleet.findings_by_kind == expected_fleet.findings_by_kind
        assert fleet.findings_by_severity == expected_fleet.findings_by_severity
        assert fleet.unapproved == expected_fleet.unapproved and fleet.findings == 200
        for user, got in user_risks(store, now=now).items():
            assert got.score == pytest.approx(
                risk.host_risk(user, dicts, reference_time, key="user").score, abs=0.051
            )
        del expected

    # ---- fleet activity

    def test_services_across_the_fleet(self, store: Store) -> None:
        store_on(
            store,
            "h1",
            finding(
                "o1", kind="AI_SERVICE_ACCESS", service="api.openai.com", vendor="OpenAI", process="curl"
            ),
            finding(
                "o2",
                kind="AI_DATA_UPLOAD",
                service="api.openai.com",
                vendor="OpenAI",
                process="python",
                bytes_out=5_000_000,
            ),
            finding(
                "c1", kind="AI_SERVICE_ACCESS", service="copilot.github.com", vendor="GitHub", approved=True
            ),
        )
        store_on(
            store,
            "h2",
            finding(
                "o3",
                kind="AI_SERVICE_ACCESS",
                service="api.openai.com",
                vendor="OpenAI",
                process="curl",
                bytes_out=1000,
            ),
            finding(
                "c2", kind="AI_SERVICE_ACCESS", service="copilot.github.com", vendor="GitHub", approved=True
            ),
            finding("r", runtime="ollama"),
        )
        rows = store.services()
        assert [r.service for r in rows] == ["api.openai.com", "copilot.github.com"]
        openai, copilot = rows
        assert (openai.vendor, openai.hosts, openai.processes, openai.bytes_out) == (
            "OpenAI",
            2,
            2,
            5_001_000,
        )
        assert (openai.findings, openai.unapproved) == (3, 3)
        assert (copilot.hosts, copilot.unapproved, copilot.findings) == (2, 0, 2)
        assert [r.service for r in store.services(since=T0 + 1)] == []

    def test_runtimes_and_exposed_servers(self, store: Store) -> None:
        store_on(
            store,
            "h1",
            finding("r", runtime="ollama"),
            finding("e", kind="MODEL_SERVER_EXPOSED", severity="critical", runtime="ollama"),
        )
        store_on(store, "h2", finding("r", runtime="ollama", approved=True), finding("v", runtime="vllm"))
        store_on(store, "h3", finding("v", runtime="vllm"), finding("l", runtime="llamacpp"))
        rows = {r.runtime: r for r in store.runtimes()}
        assert [r.runtime for r in store.runtimes()] == ["ollama", "vllm", "llamacpp"]
        assert (rows["ollama"].hosts, rows["ollama"].exposed_hosts, rows["ollama"].unapproved) == (2, 1, 2)
        assert (rows["vllm"].hosts, rows["vllm"].exposed_hosts) == (2, 0)

    def test_gpu_fine_tuning_exfiltration_and_downloads(self, store: Store) -> None:
        store_on(
            store,
            "h1",
            finding("g1", kind="GPU_AI_WORKLOAD"),
            finding("g2", kind="GPU_AI_WORKLOAD"),
            finding("t", kind="FINE_TUNING", approved=True),
            finding(
                "x",
                kind="MODEL_EXFILTRATION",
                sha256="cd" * 32,
                path="/m/w.gguf",
                transfer=True,
                bytes_out=7_000,
            ),
        )
        store_on(
            store,
            "h2",
            finding("d", kind="MODEL_DOWNLOAD", service="huggingface.co", bytes_out=9_000),
            finding("r", runtime="ollama"),
        )
        compute = {(r.host_id, r.kind): r for r in activity.compute(store)}
        assert set(compute) == {("h1", "GPU_AI_WORKLOAD"), ("h1", "FINE_TUNING")}
        assert compute["h1", "GPU_AI_WORKLOAD"].findings == 2 and compute["h1", "FINE_TUNING"].unapproved == 0
        moves = {(r.host_id, r.kind): r.bytes for r in activity.transfers(store)}
        assert moves == {("h1", "MODEL_EXFILTRATION"): 7_000, ("h2", "MODEL_DOWNLOAD"): 9_000}
        exfil = list(store.iter_findings(finding_filter(kinds=("MODEL_EXFILTRATION",), sha256="cd" * 32)))
        assert ids(exfil) == ["x"]

    def test_model_census_puts_unapproved_weights_on_many_hosts_first(self, store: Store) -> None:
        shared, approved, lone = "11" * 32, "22" * 32, "33" * 32
        for h in range(3):
            store_on(
                store, f"h{h}", finding("m1", kind="MODEL_ARTIFACT", sha256=shared, path=f"/home/u{h}/w.gguf")
            )
        for h in range(5):
            store_on(
                store,
                f"h{h}",
                finding(
                    "m2",
                    kind="MODEL_ARTIFACT",
                    sha256=approved,
                    path="/opt/ok.safetensors",
                    fmt="safetensors",
                    approved=True,
                ),
            )
        store_on(
            store, "h9", finding("m3", kind="MODEL_ARTIFACT", sha256=lone, path="/tmp/x.onnx", fmt="onnx")
        )
        # an exfiltration of the shared weights is not a copy on disk
        store_on(store, "h7", finding("x", kind="MODEL_EXFILTRATION", sha256=shared, transfer=True))
        rows = store.model_census(limit=10, holders=2)
        assert [r.sha256 for r in rows] == [shared, lone, approved]
        first = rows[0]
        assert (first.hosts, first.unapproved_hosts, first.copies) == (3, 3, 3)
        assert (first.format, first.architecture, first.parameters) == ("gguf", "llama", 7_000_000_000)
        assert [(m.host_id, m.path) for m in first.holders] == [
            ("h0", "/home/u0/w.gguf"),
            ("h1", "/home/u1/w.gguf"),
        ]
        assert (rows[2].hosts, rows[2].unapproved_hosts, rows[2].format) == (5, 0, "safetensors")
        assert [r.sha256 for r in store.model_census(limit=1)] == [shared]

    def test_silent_hosts(self, store: Store) -> None:
        store.upsert_host("talking", _hello("talking"), "p")
        store.upsert_host("quiet", _hello("quiet"), "p")
        store.record_health("quiet", _health(), T0)
        silent = activity.silent_hosts(store, silent_after=3600)
        assert [s.host_id for s in silent] == ["quiet"] and silent[0].silent_since == pytest.approx(T0)

    # ---- daily snapshots

    def test_snapshots_keep_one_row_per_day_and_key(self, store: Store) -> None:
        store_on(store, "h1", finding("a", severity="critical", user="alice"))
        store_on(store, "h2", finding("b", severity="low"))
        rows = snapshots.take(store, now=T0)
        day = rows[0].day
        assert rows[0] == SnapshotRow(day, "fleet", "", 40.0, "high", 2, 2)
        assert {(r.scope, r.key) for r in rows} == {
            ("fleet", ""),
            ("host", "h1"),
            ("host", "h2"),
            ("user", "alice"),
        }
        assert not snapshots.ensure_daily(store, now=T0)  # today's is there
        store_on(store, "h2", finding("c", severity="critical"))
        snapshots.take(store, now=T0)  # on demand: replaces the day's rows
        store.record_risk_snapshot([SnapshotRow("2000-01-01", "host", "h2", 1.0, "low", 1, 1)])
        trend = store.risk_snapshots("host", "h2")
        assert [(r.day, r.score) for r in trend] == [("2000-01-01", 1.0), (day, 42.0)]
        assert snapshots.trend(store, "host", "h2", days=7, now=T0) == trend[1:]
        assert snapshots.ensure_daily(store, now=T0 + DAY)
        assert [r.day for r in store.risk_snapshots("fleet", "")][-1] > day

    def test_host_counts_from_the_tally_equal_the_stored_counts(self, store: Store) -> None:
        hello = _hello("h1")
        hello.sensors.add(name="network", state=1)
        hello.sensors.add(name="gpu", state=2, reason="no NVML")
        store.upsert_host("h1", hello, "p")
        store_on(store, "h1", finding("a", severity="critical"), finding("b", severity="low", approved=True))
        store_on(store, "h2", finding("a", severity="low"))
        stored = {h.host_id: h for h in store.hosts()}
        bare = {h.host_id: h for h in store.hosts(with_counts=False)}
        assert (stored["h1"].findings_total, stored["h1"].findings_unapproved) == (2, 1)
        assert stored["h1"].findings_by_severity == {"critical": 1, "low": 1}
        assert (bare["h1"].findings_total, bare["h1"].findings_by_severity) == (0, {})
        assert bare["h1"].hostname == stored["h1"].hostname == "h1"
        assert len(stored["h1"].sensors) == 2
        for host in stored.values():  # the host list's dicts: asdict's shape, nested records included
            assert host.to_dict() == dataclasses.asdict(host)
        for view in hosts_view(store):
            host = stored[view["host_id"]]
            assert (view["findings_total"], view["findings_unapproved"], view["findings_by_severity"]) == (
                host.findings_total,
                host.findings_unapproved,
                host.findings_by_severity,
            )

    def test_counts_by_kind_and_severity(self, store: Store) -> None:
        store_on(
            store,
            "h1",
            finding("a", severity="critical"),
            finding("b", kind="AI_SERVICE_ACCESS", severity="info"),
        )
        store_on(store, "h2", finding("a", severity="critical", approved=True))
        fleet, _ = host_risks(store, now=T0)
        expected = Counter(f["kind"] for f in store.findings(limit=None))
        assert fleet.findings_by_kind == dict(expected)
        assert fleet.findings_by_severity == {"critical": 2, "info": 1}
        assert (fleet.findings, fleet.unapproved) == (3, 2)


def _hello(host_id: str) -> Any:
    from umbra.v1 import agent_pb2

    return agent_pb2.Hello(host=agent_pb2.HostFacts(host_id=host_id, hostname=host_id))


def _health() -> finding_pb2.Finding:
    from collector import health

    return health.silent(T0 - 7200, T0)

    # ---- read side for the report

    def test_service_categories_come_from_each_services_findings(self, store: Store) -> None:
        def contact(fid: str, service: str, category: str, last_seen: float = T0) -> finding_pb2.Finding:
            f = finding(fid, kind="AI_SERVICE_ACCESS", last_seen=last_seen)
            network = finding_pb2.NetworkEvidence(host_name=service, category=category)
            f.evidence.append(finding_pb2.Evidence(network=network))
            return f

        store_on(
            store, "h1", contact("a", "chatgpt.com", "chat_app"), contact("b", "api.openai.com", "model_api")
        )
        store_on(store, "h2", contact("c", "chatgpt.com", "chat_app", T0 + 5), contact("d", "x.example", ""))
        names = ["chatgpt.com", "api.openai.com", "x.example", "never.seen"]
        assert activity.service_categories(store, names) == {
            "chatgpt.com": "chat_app",
            "api.openai.com": "model_api",
            "x.example": "",
            "never.seen": "",
        }

    def test_risk_since_counts_only_the_window(self, store: Store) -> None:
        store_on(store, "h1", finding("new", last_seen=T0), finding("old", last_seen=T0 - 40 * DAY))
        store_on(store, "h2", finding("older", last_seen=T0 - 40 * DAY))
        fleet, per_host = host_risks(store, T0, since=T0 - 30 * DAY)
        assert fleet.findings == 1
        assert per_host["h1"].findings == 1 and per_host["h2"].findings == 0
        assert host_risks(store, T0)[0].findings == 3
        assert user_risks(store, T0, since=T0 + 1) == {}
