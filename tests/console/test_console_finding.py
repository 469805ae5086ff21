"""The console's finding page over real HTTP: a finding that arrived over an agent's stream is
looked up by its key (Store.finding), with its evidence; an unknown one is a 404."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from collector_proc import CollectorProc
from consolekit import PASSWORDS, Client, add_user
from fleetkit import LoadAgent, enroll

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CollectorProc, str]]:
    tmp = tmp_path_factory.mktemp("finding")
    collector = CollectorProc(tmp, "--http", "127.0.0.1:0")
    collector.start()
    add_user(collector.url, "vic", "viewer")
    enroll(collector, tmp / "agent")
    # Load finding i is "f-{i:07d}" on one host; 1,500 of them span more than one page of 1,000.
    agent = LoadAgent(tmp / "agent", 1500, "--process", "ollama", "--exit-when-drained")
    agent.start()
    assert agent.wait(60) == 0
    yield collector, agent.host_id
    collector.stop()


def test_a_finding_page_shows_that_finding(fleet: tuple[CollectorProc, str]) -> None:
    collector, host = fleet
    client = Client(f"http://{collector.http}")
    assert client.login("vic", PASSWORDS["viewer"]) == 303
    # The oldest finding: the last a newest-first scan of the host's pages would reach.
    for fid in ("f-0000000", "f-0001499", "f-0000742"):
        status, _, body = client.request(f"/findings/{quote(host)}/{fid}")
        assert status == 200, (fid, body[:300])
        assert f"load finding {int(fid[2:])}<" in body and "ollama" in body
    status, _, body = client.request(f"/findings/{quote(host)}/f-9999999")
    assert status == 404 and "No finding f-9999999" in body
    status, _, _ = client.request("/findings/no-such-host/f-0000000")
    assert status == 404
