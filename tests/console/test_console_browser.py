"""The console in real headless Chromium (Debian's, driven by Playwright; never `playwright
install`), on a real TLS collector fed by real agents: a `umbra-agent run` seeing a stand-in
ollama, and load agents (the real spool and stream client) with hostile names.

Screenshots go to the test's tmp dir; UMBRA_SCREENSHOTS=DIR also copies them there (docs/console)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_proc import CollectorProc, wait_for
from conftest import SpawnRuntime, cli, port_or_free
from consolekit import PASSWORDS, add_user
from fleetkit import LoadAgent, enroll

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
HOSTILE_HOST = '"><img src=x onerror=alert(1)>'
HOSTILE_PROCESS = "<script>alert(2)</script>"
HOSTILE_USER = "<img src=x onerror=alert(3)>"

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make setup)"),
]


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProc]:
    c = CollectorProc(tmp_path, "--http", "127.0.0.1:0", "--monitor-interval", "300ms")
    c.start()
    add_user(c.url, "ann", "admin")
    add_user(c.url, "vic", "viewer")
    yield c
    c.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


def shoot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / "screenshots" / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, "a rendered page, not a blank one"
    keep = os.environ.get("UMBRA_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def login(page: Any, base: str, user: str, role: str) -> None:
    page.goto(base + "/")
    assert page.url.startswith(base + "/login"), "an anonymous visit lands on the login form"
    page.fill("#username", user)
    page.fill("#password", PASSWORDS[role])
    page.click("#signin")
    page.wait_for_url(base + "/")
    assert page.text_content("#who") == f"{user} ({role})"
    # The session cookie as Chromium keeps it: out of reach of scripts, never sent cross-site.
    (session,) = [c for c in page.context.cookies() if c["name"] == "umbra_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert "umbra_session" not in page.evaluate("document.cookie")


def hostile_agent(collector: CollectorProc, tmp_path: Path) -> LoadAgent:
    state = tmp_path / "hostile"
    enroll(collector, state)
    agent = LoadAgent(
        state, 5, "--hostname", HOSTILE_HOST, "--process", HOSTILE_PROCESS, "--user", HOSTILE_USER,
        "--severities", "high", "--exit-when-drained", "--heartbeat", "0.3",
    )  # fmt: skip
    agent.start()
    assert agent.wait(60) == 0
    return agent


def test_admin_sees_the_fleet_filters_opens_a_host_edits_the_policy_and_signs_out(
    collector: CollectorProc, browser: Any, tmp_path: Path, spawn_runtime: SpawnRuntime
) -> None:
    state = tmp_path / "agent"
    host = enroll(collector, state)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{state}"\n[collector]\nheartbeat_interval = 0.5\nbackoff_initial = 0.2\n'
        "backoff_max = 1.0\n[sensors.process]\ninterval = 0.5\n[sensors.gpu]\nenabled = false\n"
    )
    spawn_runtime(["ollama", "serve"], listen=[f"127.0.0.1:{port_or_free(11434)}"])
    hostile = hostile_agent(collector, tmp_path)
    agent = subprocess.Popen(
        [cli("umbra-agent"), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def ollama() -> dict[str, Any] | None:
            found = collector.cli_json("findings", "--host", host, "--kind", "LOCAL_MODEL_RUNTIME")
            return next((f for f in found if f["process"] and f["process"]["name"] == "ollama"), None)

        before = wait_for("the real agent's ollama finding", ollama)
        assert before["policy"]["approved"] is False
        base = f"http://{collector.http}"
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        login(page, base, "ann", "admin")
        # The overview says what the CLI says.
        fleet = collector.cli_json("fleet")["fleet"]
        assert page.text_content("#findings-total b") == str(fleet["findings"])
        assert page.text_content("#hosts-reporting b") == "2"
        # Hosts by name, the id on hover (and in the link).
        hosts = collector.cli_json("hosts")
        named = {h["host_id"]: h["hostname"] for h in (hosts if isinstance(hosts, list) else hosts["hosts"])}
        assert named[host], "the real agent names its host"
        link = page.locator(f'#top-hosts a[title="{host}"]')
        assert link.text_content() == named[host] and link.get_attribute("href") == f"/hosts/{host}"
        assert "ollama" in page.text_content("#runtimes")
        assert page.locator("svg.chart").count() >= 3
        shoot(page, tmp_path, "overview")
        # Filter the findings feed: the hostile host's findings are high, the real agent's are not all.
        page.click("text=Findings")
        page.select_option("select[name=severity]", "high")
        page.fill("input[name=host]", hostile.host_id)
        page.click("#apply")
        page.wait_for_url("**/findings?**")
        rows = page.locator("table.findings tr").count() - 1
        assert rows == 5 and page.locator("td.sev-high").count() == 5
        shoot(page, tmp_path, "findings")
        page.fill("input[name=host]", host)
        page.select_option("select[name=severity]", "")
        page.select_option("select[name=kind]", "LOCAL_MODEL_RUNTIME")
        page.click("#apply")
        page.wait_for_url("**kind=LOCAL_MODEL_RUNTIME**")
        page.click("a.finding-link >> nth=0")
        assert page.text_content("#process")  # the finding page shows its evidence
        # Open the real agent's host page.
        page.click("text=Hosts")
        page.fill("input[name=q]", host)
        page.click("text=Apply")
        assert page.locator("tr.host-row").count() == 1
        page.click("a.host-link")
        assert host in page.text_content("main") and "process" in page.text_content("#sensors")
        assert "ollama" in page.text_content("#host-runtimes")
        shoot(page, tmp_path, "host")
        # Edit the policy: approve ollama; the running agent receives it and re-judges its finding.
        page.click("text=Policy")
        page.fill("#approved_runtimes", "ollama")
        page.fill("#min_confidence", "0.4")
        page.click("#save-policy")
        page.wait_for_url("**/policy?stored=1")
        assert "Version 1" in page.text_content("#policy-version")
        shoot(page, tmp_path, "policy")
        kept = wait_for(
            "the agent to keep policy version 1",
            lambda: (state / "policy.json").exists() and json.loads((state / "policy.json").read_text()),
        )
        assert kept["version"] == 1 and kept["approved_runtimes"] == ["ollama"]
        after = wait_for(
            "the ollama finding approved by the pushed policy",
            lambda: (lambda f: f if f and f["policy"]["approved"] else None)(ollama()),
        )
        assert after["policy"]["rule"] == "approved_runtimes:ollama"
        page.click("text=Enrollment")
        assert host in page.text_content("#agents")
        shoot(page, tmp_path, "enrollment")
        page.click("#logout")
        page.wait_for_url("**/login")
        page.goto(base + "/hosts")
        assert page.url.startswith(base + "/login"), "signed out: the pages are closed again"
    finally:
        agent.terminate()
        agent.wait(timeout=30)


def test_viewer_reads_but_is_refused_the_policy_and_enrollment(
    collector: CollectorProc, browser: Any, tmp_path: Path
) -> None:
    base = f"http://{collector.http}"
    page = browser.new_page()
    login(page, base, "vic", "viewer")
    assert "Enrollment" not in page.text_content("nav")
    page.goto(base + "/policy")
    assert (
        page.locator("#save-policy").count() == 0
        and page.locator("#approved_runtimes[readonly]").count() == 1
    )
    # A viewer who forges the admin's form still gets 403 from the server.
    response = page.request.post(
        base + "/policy",
        form={
            "csrf": page.get_attribute("input[name=csrf] >> nth=0", "value"),
            "approved_runtimes": "ollama",
        },
    )
    assert response.status == 403
    assert page.goto(base + "/enrollment").status == 403
    shoot(page, tmp_path, "viewer-refused")
    assert collector.cli_json("policy", "show") == {"policy": None}


def test_hostile_names_show_as_text_and_nothing_executes(
    collector: CollectorProc, browser: Any, tmp_path: Path
) -> None:
    hostile = hostile_agent(collector, tmp_path)
    base = f"http://{collector.http}"
    page = browser.new_page()
    events: list[str] = []
    page.on("dialog", lambda d: (events.append(f"dialog {d.message}"), d.dismiss()))
    page.on("console", lambda m: events.append(f"console {m.text}"))
    page.on("pageerror", lambda e: events.append(f"error {e}"))
    login(page, base, "ann", "admin")
    for path in ("/", "/hosts", "/findings", f"/hosts/{hostile.host_id}"):
        page.goto(base + path)
        assert page.locator("script").count() == 0 and page.locator("img").count() == 0, path
    page.goto(base + "/hosts")
    assert HOSTILE_HOST in page.text_content("table#hosts")
    page.goto(base + "/findings")
    assert page.locator("td.process", has_text=HOSTILE_PROCESS).count() == 5
    assert page.locator("td.user", has_text=HOSTILE_USER).count() == 5
    page.click("a.finding-link >> nth=0")
    assert HOSTILE_PROCESS in page.text_content("#process")
    page.goto(base + "/")
    assert HOSTILE_USER in page.text_content("#top-users")
    assert HOSTILE_HOST in page.text_content("#top-hosts")  # its name, as text
    shoot(page, tmp_path, "hostile-names")
    assert events == [], events
