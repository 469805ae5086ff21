"""Exports: OCSF Detection Findings validated by an independent OCSF model package, JSON lines, CSV."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from collector_testkit import T0, build_finding
from py_ocsf_models.events.findings.detection_finding import DetectionFinding
from py_ocsf_models.events.findings.severity_id import SeverityID
from umbra import codec

from collector.query.export import export
from collector.storage import open_store


def filled(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'export.db'}"
    with open_store(url) as store:
        store.store_batch(
            "host-a",
            1,
            [
                build_finding(f"f{i}", severity=s, last_seen=T0 + i)
                for i, s in enumerate(codec.SEVERITY_NAMES)
            ],
        )
        store.store_batch("host-b", 1, [build_finding(f"g{i}", last_seen=T0 - i) for i in range(2500)])
    return url


def test_ocsf_events_validate_and_carry_the_finding(tmp_path: Path) -> None:
    out = io.StringIO()
    with open_store(filled(tmp_path)) as store:
        n = export(store, "ocsf", out)
    lines = out.getvalue().splitlines()
    assert n == len(lines) == 2505  # more than two pages of 1,000
    for line in lines:
        event = json.loads(line)
        model = DetectionFinding.model_validate(event)  # raises when a required field is wrong
        assert (model.class_uid, model.category_uid, int(model.type_uid)) == (2004, 2, 200401)
        assert model.metadata.product.name == "Umbra"
    by_uid = {json.loads(line)["finding_info"]["uid"]: json.loads(line) for line in lines}
    critical = by_uid["host-a/f4"]
    assert DetectionFinding.model_validate(critical).severity_id == SeverityID.Critical
    assert critical["time"] == int((T0 + 4) * 1000)  # OCSF times are milliseconds
    assert critical["device"]["uid"] == "host-a"
    assert critical["process"]["pid"] == 4242 and critical["process"]["name"] == "ollama"
    assert critical["evidences"][0]["data"]["type"] == "runtime"
    assert critical["evidences"][0]["data"]["runtime_id"] == "ollama"
    assert critical["unmapped"]["kind"] == "LOCAL_MODEL_RUNTIME"
    assert by_uid["host-a/f0"]["severity_id"] == SeverityID.Informational


def test_jsonl_and_csv_hold_every_finding_once(tmp_path: Path) -> None:
    with open_store(filled(tmp_path)) as store:
        jsonl, table = io.StringIO(), io.StringIO()
        export(store, "jsonl", jsonl)
        export(store, "csv", table)
        since = export(store, "jsonl", io.StringIO(), since=T0)
    ids = [(f["host_id"], f["id"]) for f in map(json.loads, jsonl.getvalue().splitlines())]
    assert len(ids) == len(set(ids)) == 2505
    rows = list(csv.DictReader(io.StringIO(table.getvalue())))
    assert {(r["host_id"], r["id"]) for r in rows} == set(ids)
    assert since == 6  # host-a's five (T0..T0+4) and host-b's g0 at T0


def test_export_command_writes_a_file(tmp_path: Path) -> None:
    url = filled(tmp_path)
    target = tmp_path / "out.ocsf.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector.cli",
            "export",
            "--db",
            url,
            "--format",
            "ocsf",
            "--output",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "exported 2505 findings" in result.stderr
    assert sum(1 for _ in target.open()) == 2505
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector.cli",
            "export",
            "--db",
            url,
            "--output",
            str(tmp_path / "no" / "x"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("umbra-collector: error: cannot write")
