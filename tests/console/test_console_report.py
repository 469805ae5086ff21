"""The console's "Download report" over real HTTP: a TLS collector fed by two load agents (the real
spool and stream client), a viewer's session and a bearer key download the fleet report in each
format; the anonymous and the forged are refused."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest
from collector_proc import CollectorProc
from consolekit import PASSWORDS, Client, add_user, api_key
from fleetkit import LoadAgent, enroll

from collector.reports import FORMATS, MEDIA_TYPES

pytestmark = pytest.mark.timeout(180)

HOSTNAMES = ("ws-ann-07", "gpu-lab-02")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CollectorProc, list[str]]]:
    """A collector with a viewer, and two hosts whose findings arrived over their streams."""
    tmp = tmp_path_factory.mktemp("report")
    collector = CollectorProc(tmp, "--http", "127.0.0.1:0")
    collector.start()
    add_user(collector.url, "vic", "viewer")
    host_ids = []
    for i, name in enumerate(HOSTNAMES):
        state = tmp / name
        enroll(collector, state)
        agent = LoadAgent(
            state, 12, "--hostname", name, "--prefix", f"r{i}", "--severities", "high,medium",
            "--exit-when-drained", "--heartbeat", "0.3",
        )  # fmt: skip
        agent.start()
        assert agent.wait(60) == 0
        host_ids.append(agent.host_id)
    yield collector, host_ids
    collector.stop()


def viewer(collector: CollectorProc) -> Client:
    client = Client(f"http://{collector.http}")
    assert client.login("vic", PASSWORDS["viewer"]) == 303
    return client


def test_every_page_offers_the_report_in_each_format(fleet: tuple[CollectorProc, list[str]]) -> None:
    collector, _ = fleet
    status, _, body = viewer(collector).request("/")
    assert status == 200
    for fmt in FORMATS:
        assert f'href="/report?format={fmt}"' in body


def test_a_viewer_downloads_the_report_in_each_format(fleet: tuple[CollectorProc, list[str]]) -> None:
    collector, host_ids = fleet
    client = viewer(collector)
    got = {}
    for fmt in FORMATS:
        # since= (empty): the whole history; the load agents' findings are dated mid-2025.
        status, headers, body = client.fetch(f"/report?format={fmt}&since=")
        assert status == 200, (fmt, body[:300])
        assert headers["Content-Type"] == MEDIA_TYPES[fmt]
        disposition = headers["Content-Disposition"]
        assert disposition.startswith("attachment;") and disposition.endswith(f'.{fmt}"'), disposition
        got[fmt] = body
    assert got["pdf"].startswith(b"%PDF-") and got["pdf"].rstrip().endswith(b"%%EOF")
    html = got["html"].decode()
    assert html.lstrip().lower().startswith("<!doctype html>")
    for host in host_ids:
        assert host in html, f"{host} missing from the HTML report"
    report = json.loads(got["json"])
    assert report["format"] == "umbra-report/1"
    assert report["coverage"]["hosts_known"] == len(host_ids)
    assert {h["host_id"] for h in report["top_hosts"]} == set(host_ids)
    rows = list(csv.reader(io.StringIO(got["csv"].decode())))
    assert rows[0] == ["section", "item", "metric", "value"]
    assert ["coverage", "fleet", "hosts_known", str(len(host_ids))] in rows
    assert set(host_ids) <= {r[1] for r in rows if r[0] == "top_hosts"}


def test_a_bearer_key_downloads_it_too(fleet: tuple[CollectorProc, list[str]]) -> None:
    collector, _ = fleet
    key = api_key(collector.url, "viewer")
    status, headers, body = Client(f"http://{collector.http}").fetch(
        "/report?format=pdf", headers={"Authorization": f"Bearer {key}"}
    )
    assert status == 200 and headers["Content-Type"] == "application/pdf" and body.startswith(b"%PDF-")


def test_the_anonymous_and_the_forged_get_no_report(fleet: tuple[CollectorProc, list[str]]) -> None:
    collector, host_ids = fleet
    anonymous = Client(f"http://{collector.http}")
    for fmt in FORMATS:
        status, headers, body = anonymous.fetch(f"/report?format={fmt}")
        assert status == 303, fmt
        assert headers["Location"] == f"/login?next=%2Freport%3Fformat%3D{fmt}"
        assert not body.startswith(b"%PDF") and all(h.encode() not in body for h in host_ids)
    forged = {"Authorization": "Bearer umbra_00000000_forged"}
    status, _, body = anonymous.fetch("/report?format=json", headers=forged)
    assert status == 303 and b"umbra-report" not in body


def test_a_bad_format_or_window_is_a_clear_400(fleet: tuple[CollectorProc, list[str]]) -> None:
    collector, _ = fleet
    client = viewer(collector)
    status, _, body = client.request("/report?format=docx")
    assert status == 400 and "html, pdf, csv or json" in body
    status, _, body = client.request("/report?format=json&since=soon")
    assert status == 400


def test_the_window_of_the_download_is_honoured(fleet: tuple[CollectorProc, list[str]]) -> None:
    collector, host_ids = fleet
    client = viewer(collector)
    _, _, whole = client.fetch("/report?format=json&since=")
    _, _, recent = client.fetch("/report?format=json")  # the button's default: the last 30 days
    whole_report, recent_report = json.loads(whole), json.loads(recent)
    assert {h["host_id"] for h in whole_report["top_hosts"]} == set(host_ids)
    assert sum(h["findings"] for h in whole_report["top_hosts"]) == 2 * 12
    # Every load finding was last seen in mid-2025: none falls in the last 30 days.
    assert recent_report["meta"]["since_seconds"] == 30 * 86_400
    assert recent_report["top_hosts"] == [] and recent_report["coverage"]["hosts_known"] == len(host_ids)
