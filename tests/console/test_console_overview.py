"""The console names hosts: the overview (riskiest hosts, AI tools, GPU, transfers, silent hosts),
the findings feed and a finding show each host's name with its id on hover and in the link, and a
silent host's last contact as a date; from a real collector's console over a store filled through
the Store interface."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_proc import CollectorProc
from consolekit import PASSWORDS, Client, add_user

from collector.query.times import iso_seconds
from collector.storage.sqlite import SQLiteStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "collector"))
from collector_testkit import build_finding, build_hello

pytestmark = pytest.mark.timeout(120)

LONG_AGO = time.time() - 10 * 86400  # silent by any --silent-after
HOSTILE = '<b id="x">ws</b>'


@pytest.fixture
def viewer(tmp_path: Path) -> Iterator[Client]:
    collector = CollectorProc(tmp_path, "--http", "127.0.0.1:0")
    with SQLiteStore(str(collector.db)) as store:
        store.upsert_host("h-aaa111", build_hello("h-aaa111", "ws-alpha"), "ipv4:10.0.0.1:5000")
        store.store_batch("h-aaa111", 1, [build_finding("crit", severity="critical")])
        store.upsert_host("h-bbb222", build_hello("h-bbb222", HOSTILE), "ipv4:10.0.0.2:5000")
        store.store_batch("h-bbb222", 1, [build_finding("high", severity="high")])
    with SQLiteStore(str(collector.db), clock=lambda: LONG_AGO) as store:
        store.upsert_host("h-quiet", build_hello("h-quiet", "ws-quiet"), "ipv4:10.0.0.3:5000")
        store.upsert_host("h-nameless", build_hello("h-nameless", ""), "ipv4:10.0.0.4:5000")
    collector.start()
    add_user(collector.url, "vic", "viewer")
    client = Client(f"http://{collector.http}")
    assert client.login("vic", PASSWORDS["viewer"]) == 303
    yield client
    collector.stop()


def card(page: str, card_id: str) -> str:
    return page.split(f'id="{card_id}"', 1)[1].split("</section>", 1)[0]


def links(html: str) -> list[tuple[str, str, str]]:
    """(href, title, text) of every host link."""
    return re.findall(r'<a href="(/hosts/[^"]*)" title="([^"]*)">(.*?)</a>', html)


def test_the_overview_names_hosts_and_dates_silent_ones(viewer: Client) -> None:
    status, _, page = viewer.request("/")
    assert status == 200
    top = links(card(page, "top-hosts"))
    assert ("/hosts/h-aaa111", "h-aaa111", "ws-alpha") in top
    # A hostile name is text, not markup; its link still goes to the id.
    assert ("/hosts/h-bbb222", "h-bbb222", "&lt;b id=&#34;x&#34;&gt;ws&lt;/b&gt;") in top
    silent = card(page, "silent")
    assert ("/hosts/h-quiet", "h-quiet", "ws-quiet") in links(silent)
    assert ("/hosts/h-nameless", "h-nameless", "h-nameless") in links(silent)  # no name: the id
    assert iso_seconds(LONG_AGO) in silent and str(int(LONG_AGO)) not in silent


def test_the_findings_feed_and_a_finding_name_their_host(viewer: Client) -> None:
    status, _, page = viewer.request("/findings")
    assert status == 200
    table = page.split('<table class="findings">', 1)[1].split("</table>", 1)[0]
    assert ("/hosts/h-aaa111", "h-aaa111", "ws-alpha") in links(table)
    status, _, page = viewer.request("/findings/h-bbb222/high")
    assert status == 200
    host = page.split("<dt>Host</dt>", 1)[1].split("</dd>", 1)[0]
    # The name as text, and the id beside it: a finding page says exactly which host.
    assert links(host) == [("/hosts/h-bbb222", "h-bbb222", "&lt;b id=&#34;x&#34;&gt;ws&lt;/b&gt;")]
    assert '<span class="mono muted">h-bbb222</span>' in host
