"""The console's enrollment page end to end over real HTTP: a token minted there enrolls a real agent
(`umbra-agent enroll`), the agent streams with its certificate, and revoking it there cuts its open
stream and refuses it from then on (the collector's monitor reloads revocations every
--monitor-interval). A viewer's revoke, or one without the session's CSRF token, changes nothing."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_proc import CollectorProc, wait_for
from consolekit import PASSWORDS, Client, add_user
from fleetkit import LoadAgent, enroll
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProc]:
    c = CollectorProc(tmp_path, "--http", "127.0.0.1:0", "--monitor-interval", "300ms")
    c.start()
    add_user(c.url, "ann", "admin")
    add_user(c.url, "vic", "viewer")
    yield c
    c.stop()


def signed_in(collector: CollectorProc, user: str, role: str) -> Client:
    client = Client(f"http://{collector.http}")
    assert client.login(user, PASSWORDS[role]) == 303
    return client


def refusals(admin: Client, code: str) -> float:
    """The collector's count of streams and enrollments refused with `code`, from /metrics."""
    status, _, text = admin.request("/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "umbra_refusals_total" and s.labels.get("code") == code:
                return s.value
    return 0.0


def stored(collector: CollectorProc, host_id: str) -> int:
    return int(collector.query("SELECT count(*) FROM findings WHERE host_id = ?", (host_id,))[0][0])


def agent_record(collector: CollectorProc, host_id: str) -> dict[str, object]:
    (record,) = [a for a in collector.cli_json("agent", "list")["agents"] if a["host_id"] == host_id]
    return record  # type: ignore[no-any-return]


def test_a_minted_token_enrolls_an_agent_and_revoking_it_cuts_the_agent_off(
    collector: CollectorProc, tmp_path: Path
) -> None:
    admin = signed_in(collector, "ann", "admin")
    status, _, body = admin.request(
        "/enrollment",
        {"csrf": admin.csrf("/enrollment"), "action": "mint", "ttl": "1h", "uses": "1", "note": "desk-7"},
    )
    assert status == 200
    token = html.unescape(re.search(r'id="new-token">([^<]+)<', body).group(1))  # type: ignore[union-attr]
    # The token the page showed once enrolls a real agent, as the operator would paste it.
    state = tmp_path / "agent"
    host = enroll(collector, state, token)
    (minted,) = collector.cli_json("token", "list")["tokens"]
    assert minted["note"] == "desk-7" and minted["uses_left"] == 0, "single use, now spent"
    assert agent_record(collector, host)["revoked"] is False
    status, _, body = admin.request("/enrollment")
    assert status == 200 and f'name="host_id" value="{host}"' in body, "listed with a Revoke button"

    # The agent streams with its certificate: the real spool and stream client, a finding every 0.1 s.
    agent = LoadAgent(
        state, 100_000, "--chunk", "1", "--interval", "0.1", "--heartbeat", "0.3", "--backoff-max", "0.5"
    ).start()
    try:
        assert agent.host_id == host
        wait_for("findings from the enrolled agent", lambda: stored(collector, host) >= 3)
        before = refusals(admin, "PERMISSION_DENIED")

        # Neither a viewer nor a form without the session's CSRF token revokes anything.
        viewer = signed_in(collector, "vic", "viewer")
        status, _, body = viewer.request(
            "/enrollment", {"csrf": viewer.csrf("/"), "action": "revoke", "host_id": host}
        )
        assert status == 403 and "admin" in body
        forged = {"csrf": "not-the-token", "action": "revoke", "host_id": host}
        assert admin.request("/enrollment", forged)[0] == 403
        assert agent_record(collector, host)["revoked"] is False
        status, _, body = admin.request(
            "/enrollment", {"csrf": admin.csrf("/enrollment"), "action": "revoke", "host_id": "h-nobody"}
        )
        assert status == 400 and "no enrolled agent h-nobody" in body

        # The admin revokes it from the page.
        status, headers, _ = admin.request(
            "/enrollment", {"csrf": admin.csrf("/enrollment"), "action": "revoke", "host_id": host}
        )
        assert status == 303 and headers["Location"] == "/enrollment"
        record = agent_record(collector, host)
        assert record["revoked"] is True and record["revoked_at"]
        status, _, body = admin.request("/enrollment")
        assert status == 200 and f'name="host_id" value="{host}"' not in body, "no Revoke button now"
        row = re.search(rf"<tr><td class=\"mono\"><a [^>]*>{host}</a>.*?</tr>", body, re.S)
        assert row and str(record["revoked_at"]) in row.group(0), "the page shows when it was revoked"

        # The collector ends the open stream, and refuses every reconnection with the same certificate.
        wait_for(
            "the agent's stream to be refused as revoked",
            lambda: agent.err is not None and "PERMISSION_DENIED" in agent.err.text(),
        )
        wait_for("a refused reconnection", lambda: refusals(admin, "PERMISSION_DENIED") >= before + 2)
        kept = stored(collector, host)
        wait_for("more refused reconnections", lambda: refusals(admin, "PERMISSION_DENIED") >= before + 4)
        assert stored(collector, host) == kept, "nothing from a revoked agent is stored"
        assert agent.spool_depth() > 0, "its new findings wait in its spool, unacknowledged"
        assert agent.proc is not None and agent.proc.poll() is None, "the agent keeps trying: no crash"
    finally:
        agent.stop()
