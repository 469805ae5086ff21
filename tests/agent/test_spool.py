"""The spool keeps findings on disk until acknowledged, across reopen, bounded."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path

from umbra.v1 import finding_pb2 as fpb

from agent.delivery.spool import Spool
from agent.delivery.tracker import TrackedState
from agent.privacy.scrub import MARKER


def _finding(fid: str, severity: int = fpb.SEVERITY_MEDIUM, count: int = 1) -> fpb.Finding:
    return fpb.Finding(id=fid, kind=fpb.KIND_LOCAL_MODEL_RUNTIME, severity=severity, count=count)  # type: ignore[arg-type]


def test_lease_keeps_rows_until_commit_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = Spool(path)
    spool.append([_finding("a"), _finding("b"), _finding("c")])
    leased = spool.lease(0, 2)
    assert [s.finding.id for s in leased] == ["a", "b"]
    assert spool.depth() == 3, "leasing must not remove anything"
    spool.close()

    spool = Spool(path)  # a crash before the ack: everything is still there
    assert [s.finding.id for s in spool.lease(0, 10)] == ["a", "b", "c"]
    assert spool.commit(leased[-1].seq) == 2
    assert [s.finding.id for s in spool.lease(0, 10)] == ["c"]
    spool.close()


def test_sequences_strictly_increase_and_are_never_reused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.append([_finding("a"), _finding("b")])
    first = [s.seq for s in spool.lease(0, 10)]
    spool.commit(first[-1])
    spool.append([_finding("c")])
    (second,) = [s.seq for s in spool.lease(0, 10)]
    assert first == sorted(first) and second > first[-1]


def test_unsent_version_is_replaced_but_in_flight_version_is_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.append([_finding("a", count=1)])
    (in_flight,) = spool.lease(0, 10)
    spool.append([_finding("a", count=2)], not_after=in_flight.seq)  # 'a' v1 is in flight: keep it
    spool.append([_finding("a", count=3)], not_after=in_flight.seq)  # v2 was never sent: replace it
    assert [s.finding.count for s in spool.lease(0, 10)] == [1, 3]


def test_full_spool_drops_lowest_severity_oldest_first_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_findings=3)
    spool.append([_finding("low-old", fpb.SEVERITY_LOW), _finding("high", fpb.SEVERITY_HIGH)])
    spool.append([_finding("low-new", fpb.SEVERITY_LOW)])
    dropped = spool.append([_finding("crit", fpb.SEVERITY_CRITICAL), _finding("med", fpb.SEVERITY_MEDIUM)])
    assert dropped == 2
    assert spool.dropped() == 2
    assert sorted(s.finding.id for s in spool.lease(0, 10)) == ["crit", "high", "med"]


def test_tracker_state_is_saved_with_its_findings(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    state = TrackedState(1.0, 2.0, 3, ["1@1.00"], 2.0, "abc")
    spool.append([_finding("a")], states={"a": state})
    spool.close()
    assert Spool(tmp_path / "spool.db").load_state("a") == state


def test_states_not_saved_within_the_retention_are_forgotten_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = Spool(path, state_retention=1.0)
    gone = TrackedState(1.0, 2.0, 3, ["1@1.00"], 2.0, "abc")
    spool.append([_finding("gone")], states={"gone": gone})
    time.sleep(1.2)
    live = TrackedState(1.0, 9.0, 5, ["1@1.00", "2@8.00"], 9.0, "def")
    spool.append([_finding("live")], states={"live": live})
    spool.close()
    spool = Spool(path, state_retention=1.0)  # a restart prunes
    assert spool.load_state("gone") is None, "a state unsaved for longer than the retention is kept"
    assert spool.load_state("live") == live
    spool.close()


def test_a_spool_from_before_state_pruning_keeps_its_states(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    state = TrackedState(1.0, 2.0, 3, ["1@1.00"], 2.0, "abc")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE finding_state (id TEXT PRIMARY KEY, state TEXT NOT NULL)")
    db.execute("INSERT INTO finding_state VALUES ('a', ?)", (json.dumps(asdict(state)),))
    db.commit()
    db.close()
    spool = Spool(path, state_retention=3600.0)
    assert spool.load_state("a") == state, "an old spool's states must start a new retention, not vanish"
    spool.close()


def test_a_spool_an_older_agent_left_is_scrubbed_once_opened_and_its_old_bytes_are_gone(
    tmp_path: Path,
) -> None:
    """An agent from before command lines were scrubbed at the source queued a finding with the
    raw command line: opening the spool scrubs it before it can be sent, and the file keeps no copy."""
    secret, prompt = "sk-SECRET123456", "summarise the Q3 acquisition memo"
    raw = fpb.Finding(id="f1", kind=fpb.KIND_LOCAL_MODEL_RUNTIME, severity=fpb.SEVERITY_MEDIUM)
    raw.process.cmdline[:] = ["llama-server", "-m", "x.gguf", "--api-key", secret, "-p", prompt]
    raw.evidence.add().instance.process.cmdline[:] = list(raw.process.cmdline)
    path = tmp_path / "spool.db"
    old = Spool(path)
    old.append([raw])
    old.close()
    with sqlite3.connect(path) as db:  # as the older agent left it: never scrubbed
        db.execute("PRAGMA user_version = 0")
    db.close()
    assert secret.encode() in path.read_bytes() + _wal(path)

    spool = Spool(path)
    (leased,) = spool.lease(0, 10)
    spool.close()
    expected = ["llama-server", "-m", "x.gguf", "--api-key", MARKER, "-p", MARKER]
    assert list(leased.finding.process.cmdline) == expected
    assert list(leased.finding.evidence[0].instance.process.cmdline) == expected
    on_disk = path.read_bytes() + _wal(path)
    assert secret.encode() not in on_disk and b"acquisition" not in on_disk


def _wal(path: Path) -> bytes:
    wal = path.with_name(path.name + "-wal")
    return wal.read_bytes() if wal.exists() else b""
