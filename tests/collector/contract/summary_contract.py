"""The kept summaries' contract (storage.summaries), for every backend that keeps them.

A backend's test module composes `SummaryContract` into a `Test...` class beside QueryContract
and provides the same `store` fixture. Kept summaries are refreshed incrementally and must always
equal the full computation (a `since` bound makes the store compute from the findings).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from umbra import codec

from collector import risk
from collector.query import activity, snapshots
from collector.query.risk import host_risks, ranked, risk_board, user_risks
from collector.storage import summaries
from collector.storage.base import Store, score_rows, totals_of

from .query_contract import DAY, T0, finding, store_on


def random_wave(store: Store, rng: random.Random, version: float) -> None:
    """30 findings of random kind, severity, approval, age and user on each of 4 hosts; a later
    wave (larger `version`) sends newer versions of the same ids."""
    for h in range(4):
        batch = [
            finding(
                f"f{i}",
                kind=rng.choice(codec.KIND_NAMES),
                severity=rng.choice(codec.SEVERITY_NAMES),
                confidence=round(rng.random(), 3),
                approved=rng.random() < 0.3,
                last_seen=T0 - rng.randrange(0, 120) * DAY - 3600 + version,
                user=rng.choice(["", "u1", "u2", "u3"]),
            )
            for i in range(30)
        ]
        store_on(store, f"host-{h}", *batch)


class SummaryContract:
    def test_summaries_after_refresh_equal_the_full_computation(self, store: Store) -> None:
        rng = random.Random(5)

        def wave(version: float) -> None:
            random_wave(store, rng, version)

        def rows(by: str, when: float, since: float | None) -> list[tuple[Any, ...]]:
            got = store.tally(by, risk.score_spec(when), since)  # type: ignore[arg-type]
            return sorted(
                (r.key, r.kind, r.severity, r.approved, r.findings, round(r.points, 6)) for r in got
            )

        def full(by: str, when: float) -> list[tuple[Any, ...]]:
            return rows(by, when, T0 - 1000 * DAY)  # a `since` computes from the findings

        def kept(by: str, when: float) -> list[tuple[Any, ...]]:
            return rows(by, when, None)

        wave(0.0)
        store.refresh_summaries(risk.score_spec(T0))
        # as of later times, age buckets change: the kept rows follow them exactly
        for when in (T0, T0 + 3 * DAY, T0 + 25 * DAY, T0 + 100 * DAY, T0):
            assert kept("host", when) == full("host", when), when
            assert kept("user", when) == full("user", when), when
        wave(1.0)  # newer versions: other severities, approvals, users, ages
        assert kept("host", T0) == full("host", T0)
        assert kept("user", T0) == full("user", T0)

    def test_scores_totals_and_some_keys_tally_equal_the_full_tally(self, store: Store) -> None:
        rng = random.Random(11)
        random_wave(store, rng, 0.0)
        store.refresh_summaries(risk.score_spec(T0))
        random_wave(store, rng, 1.0)  # dirty again: each read below refreshes first
        for when in (T0, T0 + 25 * DAY):
            spec = risk.score_spec(when)
            for by in ("host", "user"):
                full = store.tally(by, spec, T0 - 1000 * DAY)  # type: ignore[arg-type]
                assert _rounded(store.scores(by, spec)) == _rounded(score_rows(full))  # type: ignore[arg-type]
                keys = sorted({r.key for r in full})[::2]
                assert _rounded(store.tally_of(by, spec, keys)) == _rounded(  # type: ignore[arg-type]
                    r for r in full if r.key in keys
                )
            full = store.tally("host", spec, T0 - 1000 * DAY)
            assert _rounded(store.tally_totals(spec)) == _rounded(totals_of(full))

    def test_the_board_and_snapshot_from_scores_equal_the_full_fold(self, store: Store) -> None:
        random_wave(store, random.Random(3), 0.0)
        full_fleet, full_hosts = host_risks(store, now=T0, since=T0 - 1000 * DAY)
        full_users = user_risks(store, now=T0, since=T0 - 1000 * DAY)
        board = risk_board(store, top=3, now=T0)
        assert board.fleet == full_fleet
        assert board.hosts == ranked(full_hosts, 3) and board.users == ranked(full_users, 3)
        assert [r.reasons for r in board.hosts] == [full_hosts[r.host_id].reasons for r in board.hosts]
        rows = snapshots.take(store, now=T0)
        assert rows[0].score == full_fleet.max_score and rows[0].findings == full_fleet.findings
        got = {(r.scope, r.key): (r.score, r.level, r.findings, r.unapproved) for r in rows[1:]}
        want = {
            (scope, k): (r.score, r.level, r.findings, r.unapproved)
            for scope, risks in (("host", full_hosts), ("user", full_users))
            for k, r in risks.items()
        }
        assert got == want

    def test_a_key_stored_to_while_its_refresh_computes_stays_dirty(self, store: Store) -> None:
        db: Any = store  # a backend that keeps summaries is a summaries.SummaryDb
        store_on(store, "h1", finding("a", severity="medium"))
        store_on(store, "h2", finding("a", severity="medium"))
        spec = risk.score_spec(T0)

        class StoredMeanwhile:
            """The store, with a batch to h1 stored right after the refresh read the findings."""

            placeholder, lock_rows, stored = db.placeholder, db.lock_rows, False

            def summary_rows(self, sql: str, params: Any) -> Any:
                rows = db.summary_rows(sql, params)
                if "FROM findings" in sql and "GROUP BY" in sql and not self.stored:
                    self.stored = True
                    store_on(store, "h1", finding("b", severity="critical"))
                return rows

            def summary_write(self) -> Any:
                return db.summary_write()

        kinds = sorted(int(codec.kind_value(k)) for k in codec.KIND_NAMES)
        assert summaries.refresh_tally(StoredMeanwhile(), "host", spec, kinds) == 1  # h2 only
        assert store.refresh_summaries(spec) >= 1  # h1 is still dirty: recomputed now
        scores = {r.key: r.points for r in store.scores("host", spec)}
        assert scores["h1"] == pytest.approx(5.0 + 40.0) and scores["h2"] == pytest.approx(5.0)

    def test_refresh_recomputes_only_what_changed(self, store: Store) -> None:
        for h in ("h1", "h2", "h3"):
            store_on(store, h, finding("a", last_seen=T0 - 5 * DAY), finding("b", last_seen=T0 - 20 * DAY))
        assert store.refresh_summaries(risk.score_spec(T0)) == 3
        assert store.refresh_summaries(risk.score_spec(T0)) == 0  # nothing stored since
        store_on(store, "h2", finding("c", severity="critical"))
        assert store.refresh_summaries(risk.score_spec(T0)) == 1  # only the host stored to
        assert store.refresh_summaries(risk.score_spec(T0 + DAY)) == 0  # no finding changes age bucket
        # two days on, "a" turns 7 days old on every host: each is recomputed once
        assert store.refresh_summaries(risk.score_spec(T0 + 2 * DAY + 1)) == 3
        later = risk.fold(store.tally("host", risk.score_spec(T0 + 2 * DAY + 1)))
        assert later["h1"].score == pytest.approx(15.0 * 0.5 + 15.0 * 0.5, abs=0.05)  # both a week+ old
        assert risk.fold(store.tally("host", risk.score_spec(T0)))["h1"].score == pytest.approx(15.0 + 7.5)

    def test_a_finding_moved_to_another_user_or_hash_leaves_the_old_one(self, store: Store) -> None:
        old, new = "44" * 32, "55" * 32
        store_on(store, "h1", finding("x", user="alice"), finding("m", kind="MODEL_ARTIFACT", sha256=old))
        assert set(user_risks(store, now=T0)) == {"alice"}
        assert [r.sha256 for r in store.model_census()] == [old]
        # the newer version of each names another user and other weights (a file replaced in place)
        store_on(
            store,
            "h1",
            finding("x", user="bob", last_seen=T0 + 60),
            finding("m", kind="MODEL_ARTIFACT", sha256=new, last_seen=T0 + 60),
        )
        assert set(user_risks(store, now=T0 + 60)) == {"bob"}
        assert [(r.sha256, r.hosts) for r in store.model_census()] == [(new, 1)]

    def test_every_key_left_behind_by_several_moves_is_recomputed(self, store: Store) -> None:
        # keys with spaces and digits: the list of moved keys must read back whatever they hold
        names = ["ann 3 x", "bo b", "carol"]
        store_on(store, "h1", finding("x", user=names[0]), finding("y", user=names[0]))
        assert set(user_risks(store, now=T0)) == {names[0]}
        # two newer versions stored before any refresh: both earlier users lose the finding
        store_on(store, "h1", finding("x", user=names[1], last_seen=T0 + 60))
        store_on(store, "h1", finding("x", user=names[2], last_seen=T0 + 120))
        store_on(store, "h1", finding("y", user=names[2], last_seen=T0 + 120))
        assert set(user_risks(store, now=T0 + 120)) == {names[2]}
        # an older version changes nothing
        store_on(store, "h1", finding("x", user=names[0], last_seen=T0))
        assert set(user_risks(store, now=T0 + 120)) == {names[2]}
        assert user_risks(store, now=T0 + 120)[names[2]].findings == 2

    def test_kept_services_and_runtimes_equal_the_full_computation(self, store: Store) -> None:
        rng = random.Random(11)
        services = [("api.openai.com", "OpenAI"), ("claude.ai", "Anthropic"), ("copilot.github.com", "GH")]

        def wave(version: float) -> None:
            for h in range(4):
                batch = []
                for i in range(25):
                    shape = rng.choice(("service", "runtime", "exposed", "neither"))
                    service, vendor = rng.choice(services)
                    batch.append(
                        finding(
                            f"f{i}",
                            kind={"service": "AI_SERVICE_ACCESS", "exposed": "MODEL_SERVER_EXPOSED"}.get(
                                shape, "LOCAL_MODEL_RUNTIME"
                            ),
                            approved=rng.random() < 0.3,
                            last_seen=T0 - rng.randrange(0, 30) * DAY + version,
                            process=rng.choice(("curl", "python", "code")),
                            service=service if shape == "service" else "",
                            vendor=vendor if shape == "service" else "",
                            bytes_out=rng.randrange(10_000),
                            runtime=rng.choice(("ollama", "vllm")) if shape in ("runtime", "exposed") else "",
                        )
                    )
                store_on(store, f"host-{h}", *batch)

        def check() -> None:
            past = T0 - 1000 * DAY  # a `since` computes from the findings
            assert store.services() == store.services(since=past)
            assert store.runtimes() == store.runtimes(since=past)

        wave(0.0)
        check()
        store.refresh_summaries(risk.score_spec(T0))
        wave(1.0)  # newer versions: other services, runtimes, processes, approvals, or neither
        check()
        wave(0.5)  # older versions change nothing
        check()
        # a batch with neither service nor runtime still takes a host's finding out of both
        store_on(store, "lone", finding("s", service="lone.ai", runtime="tgi", last_seen=T0))
        assert "lone.ai" in {r.service for r in store.services()}
        assert "tgi" in {r.runtime for r in store.runtimes()}
        store_on(store, "lone", finding("s", last_seen=T0 + 60))
        check()
        assert "lone.ai" not in {r.service for r in store.services()}
        assert "tgi" not in {r.runtime for r in store.runtimes()}

    def test_retention_leaves_no_kept_rows_behind(self, store: Store) -> None:
        old = finding("old", user="ann", runtime="ollama", last_seen=T0 - 100 * DAY)
        store_on(store, "h1", old, finding("new", last_seen=T0))
        store.refresh_summaries(risk.score_spec(T0))
        assert set(user_risks(store, now=T0)) == {"ann"}
        assert [r.runtime for r in store.runtimes()] == ["ollama"]
        store.drop_before(T0 - 50 * DAY)
        assert set(user_risks(store, now=T0)) == set()
        assert store.runtimes() == []
        assert risk.fold(store.tally("host", risk.score_spec(T0)))["h1"].findings == 1

    def test_kept_activity_equals_the_full_computation(self, store: Store) -> None:
        # the activity views (GPU and fine-tuning, transfers, AI tools) from the hosts' kept tally
        rng = random.Random(17)
        kinds = [int(codec.kind_value(k)) for k in codec.KIND_NAMES]

        def wave(version: float) -> None:
            for h in range(4):
                batch = [
                    finding(
                        f"f{i}",
                        kind=rng.choice(codec.KIND_NAMES),
                        approved=rng.random() < 0.4,
                        last_seen=T0 - rng.randrange(0, 120) * DAY + version,
                        service=rng.choice(("", "api.openai.com")),
                        bytes_out=rng.randrange(10_000),
                    )
                    for i in range(30)
                ]
                store_on(store, f"host-{h}", *batch)

        def check(when: float) -> None:
            spec = risk.score_spec(when)
            full = store.activity(kinds, since=T0 - 1000 * DAY)  # a `since` computes from the findings
            assert store.activity(kinds, spec=spec) == full
            assert sum(r.bytes for r in full) > 0 and any(r.unapproved for r in full)
            assert store.activity(kinds[:2], spec=spec) == store.activity(kinds[:2], since=T0 - 1000 * DAY)

        wave(0.0)
        check(T0)  # read before any refresh: the view brings the kept rows up to date
        store.refresh_summaries(risk.score_spec(T0))
        check(T0 + 25 * DAY)
        wave(1.0)  # newer versions: other kinds, approvals, bytes, ages
        check(T0)
        wave(0.5)  # older versions change nothing
        check(T0)
        for view in (activity.compute, activity.transfers, activity.aitools):
            assert view(store) == view(store, since=T0 - 1000 * DAY)
        store.drop_before(T0 - 50 * DAY)
        check(T0)
        store.refresh_summaries(risk.score_spec(T0))
        check(T0)

    def test_kept_fleet_services_follow_hosts_and_retention(self, store: Store) -> None:
        # each service's fleet row (hosts, processes, bytes, findings) is kept apart from the hosts'
        past = T0 - 1000 * DAY
        store_on(
            store,
            "h1",
            finding("a", service="api.openai.com", vendor="OpenAI", bytes_out=10, last_seen=T0 - 100 * DAY),
            finding("b", service="claude.ai", vendor="Anthropic", process="curl", bytes_out=5),
        )
        store_on(store, "h2", finding("a", service="api.openai.com", vendor="OpenAI", bytes_out=7))
        assert store.services() == store.services(since=past)
        assert {r.service: r.hosts for r in store.services()} == {"api.openai.com": 2, "claude.ai": 1}
        store.refresh_summaries(risk.score_spec(T0))
        # h2's finding moves to another service: both services' fleet rows follow
        store_on(store, "h2", finding("a", service="claude.ai", vendor="Anthropic", last_seen=T0 + 60))
        assert store.services() == store.services(since=past)
        assert {r.service: (r.hosts, r.processes) for r in store.services()} == {
            "api.openai.com": (1, 1),
            "claude.ai": (2, 2),
        }
        store.drop_before(T0 - 50 * DAY)  # h1's only api.openai.com finding goes
        assert store.services() == store.services(since=past)
        assert [r.service for r in store.services()] == ["claude.ai"]

    def test_kept_census_holders_equal_the_holders_read_from_the_findings(self, store: Store) -> None:
        # more holders than are kept (summaries.KEPT_HOLDERS): asked for more, a store reads the findings
        rng = random.Random(23)
        hashes = ["a1" * 32, "b2" * 32, "c3" * 32]
        many = summaries.KEPT_HOLDERS + 5

        def wave(version: float) -> None:
            for h in range(many):
                batch = [
                    finding(
                        f"m{i}",
                        kind="MODEL_ARTIFACT",
                        sha256=rng.choice(hashes),
                        path=rng.choice(("/m/a.gguf", "/m/b.gguf")),
                        approved=rng.random() < 0.5,
                        last_seen=T0 - rng.randrange(0, 100) * DAY + version,
                    )
                    for i in range(3)
                ]
                store_on(store, f"host-{h:02d}", *batch)

        def check(more_than_kept: bool = True) -> None:
            full = {r.sha256: r.holders for r in store.model_census(10, many * 3)}
            assert (max(len(h) for h in full.values()) > summaries.KEPT_HOLDERS) == more_than_kept
            for n in (1, 5, summaries.KEPT_HOLDERS):
                kept = store.model_census(10, n)
                assert {r.sha256: r.holders for r in kept} == {sha: h[:n] for sha, h in full.items()}
            assert store.model_census(10, 0)[0].holders == ()

        wave(0.0)
        check()
        store.refresh_summaries(risk.score_spec(T0))
        wave(1.0)  # newer versions: other hashes, paths, approvals
        check()
        store.drop_before(T0 - 50 * DAY)
        check(more_than_kept=False)


def _rounded(rows: Any) -> list[tuple[Any, ...]]:
    """Rows as sorted tuples with points rounded: sums in another order differ in the last bits."""
    return sorted(
        tuple(round(v, 6) if isinstance(v, float) else v for v in dataclasses.astuple(r)) for r in rows
    )
