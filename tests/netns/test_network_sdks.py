"""Real clients, real handshakes: the official SDKs, unmodified, seen by the agent in a namespace.

The test makes two network namespaces joined by a veth pair. In the client namespace,
`/etc/netns/<client>/hosts` resolves api.openai.com, api.anthropic.com and huggingface.co to
the server namespace, where a fake HTTPS service (`fake_ai_service.py`) answers with a
certificate a test CA signed for the three names. The SDKs trust that CA through
SSL_CERT_FILE and nothing else is changed: they call their real host names over real TLS.

`umbra-agent scan` runs inside the client namespace (so it captures there) while three
child processes each make one SDK call: an OpenAI chat completion, an Anthropic message,
and a 20 MB `HfApi().upload_file` through the Hub's LFS protocol (Xet disabled). The agent
must report each service with its vendor and the process (pid and command line) that
made the call, and AI_DATA_UPLOAD for the upload with a byte count within 5 % of the truth.

The truth is what the client sent on the upload's connection at the HTTP layer (request
heads and bodies, counted by the server as it read them). The agent counts IP bytes, which
adds TLS records, the handshake, and TCP/IP headers; here that is about 0.3 % more.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from netnskit import NetnsPair, make_test_ca, netns_usable, wait_for_capture

HERE = Path(__file__).parent
AGENT = Path(sys.executable).parent / "umbra-agent"
NAMES = ["api.openai.com", "api.anthropic.com", "huggingface.co"]
UPLOAD = 20_000_000
SCAN_SECONDS = 15.0  # the clients take ~3 s on an idle 2-core machine; the rest is slack for load
SETTLE = 2.5  # the sensor's quiet time (1 s) plus polls (0.5 s) before the scan's last poll

_why_not = netns_usable()
pytestmark = [
    pytest.mark.skipif(bool(_why_not), reason=_why_not or "-"),
    pytest.mark.timeout(120),
]


@dataclass
class Scenario:
    findings: list[dict[str, Any]]
    clients: dict[str, dict[str, Any]]  # sdk -> its JSON line (pid, version ...)
    server_log: list[dict[str, Any]]
    agent_stderr: str


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    for module in ("openai", "anthropic", "huggingface_hub"):
        try:
            __import__(module)
        except ImportError:
            pytest.fail(f"{module} is not installed: run `make setup` (it is in the dev extra)")
    work = tmp_path_factory.mktemp("sdks")
    ca, cert, key = make_test_ca(work, NAMES)
    config = work / "agent.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{work / "state"}"\n'
        "[sensors.process]\nenabled = false\ninterval = 0.5\n"
        "[sensors.gpu]\nenabled = false\n[sensors.files]\nenabled = false\n"
    )
    log = work / "server.jsonl"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "SSL_CERT_FILE": str(ca),
        "REQUESTS_CA_BUNDLE": str(ca),
        "HF_HOME": str(work / "hf"),
        "HF_HUB_DISABLE_XET": "1",  # the LFS path: the Xet path speaks its own protocol to CAS hosts
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    with NetnsPair(NAMES) as ns:
        server = subprocess.Popen(
            ns.exec_argv(
                ns.server, [sys.executable, str(HERE / "fake_ai_service.py"), str(cert), str(key), str(log)]
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            pytest.fail(f"the fake service did not start: {server.stderr.read() if server.stderr else ''}")
        agent = subprocess.Popen(
            ns.exec_argv(
                ns.client,
                [
                    str(AGENT),
                    "scan",
                    "--duration",
                    f"{SCAN_SECONDS}s",
                    "--format",
                    "json",
                    "--config",
                    str(config),
                ],
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started = time.monotonic()
        wait_for_capture(agent)
        clients = {
            sdk: subprocess.Popen(
                ns.exec_argv(
                    ns.client,
                    [
                        "/usr/bin/env",
                        "-i",
                        *(f"{k}={v}" for k, v in env.items()),
                        sys.executable,
                        "-W",
                        "ignore",
                        str(HERE / "sdk_client.py"),
                        sdk,
                        str(UPLOAD),
                    ],
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for sdk in ("openai", "anthropic", "huggingface")
        }
        results: dict[str, dict[str, Any]] = {}
        for sdk, proc in clients.items():
            out, err = proc.communicate(timeout=SCAN_SECONDS)
            assert proc.returncode == 0, f"the {sdk} client failed: {err[-2000:]}"
            results[sdk] = json.loads(out.strip().splitlines()[-1])
            assert results[sdk]["pid"] == proc.pid  # `ip netns exec` and `env` exec: one process
        done = time.monotonic() - started
        assert done < SCAN_SECONDS - SETTLE, f"clients took {done:.1f} s: too little scan left to drain"
        out, err = agent.communicate(timeout=SCAN_SECONDS + 60)
        assert agent.returncode == 0, err
        server.kill()
        server.wait()
    yield Scenario(
        [json.loads(line) for line in out.splitlines() if line.strip()],
        results,
        [json.loads(line) for line in log.read_text().splitlines()],
        err,
    )


def _network(finding: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in finding["evidence"] if e.get("type") == "network")


@pytest.mark.parametrize(
    ("sdk", "host", "vendor"),
    [
        ("openai", "api.openai.com", "OpenAI"),
        ("anthropic", "api.anthropic.com", "Anthropic"),
        ("huggingface", "huggingface.co", "Hugging Face"),
    ],
)
def test_each_sdk_call_is_reported_with_vendor_and_process(
    scenario: Scenario, sdk: str, host: str, vendor: str
) -> None:
    access = [
        f for f in scenario.findings if f["kind"] == "AI_SERVICE_ACCESS" and _network(f)["host_name"] == host
    ]
    assert len(access) == 1, (scenario.findings, scenario.agent_stderr)
    finding = access[0]
    evidence = _network(finding)
    assert evidence["vendor"] == vendor
    assert evidence["source"] == "tls_sni"
    assert evidence["remote_port"] == 443
    process = finding["process"]
    assert process is not None, f"{host}: no process: {finding['summary']}"
    assert process["pid"] == scenario.clients[sdk]["pid"]
    assert process["cmdline"][-3:-1] == [str(HERE / "sdk_client.py"), sdk]
    assert process["cmdline"][0] == sys.executable


def test_the_hub_upload_is_an_upload_within_five_percent(scenario: Scenario) -> None:
    lfs = [e for e in scenario.server_log if e["event"] == "lfs"]
    assert len(lfs) == 1 and lfs[0]["sha256_ok"] and lfs[0]["size"] == UPLOAD  # the real LFS upload
    conn = lfs[0]["conn"]
    truth = next(e["received"] for e in scenario.server_log if e["event"] == "closed" and e["conn"] == conn)
    uploads = [f for f in scenario.findings if f["kind"] == "AI_DATA_UPLOAD"]
    assert [_network(f)["host_name"] for f in uploads] == ["huggingface.co"], scenario.findings
    upload = uploads[0]
    assert upload["process"]["pid"] == scenario.clients["huggingface"]["pid"]
    counted = _network(upload)["bytes_out"]
    assert abs(counted - truth) <= 0.05 * truth, f"agent counted {counted} bytes, the client sent {truth}"
    assert upload["policy"]["approved"] is False


def test_small_api_calls_are_not_uploads(scenario: Scenario) -> None:
    for f in scenario.findings:
        if f["kind"] == "AI_SERVICE_ACCESS" and _network(f)["host_name"] != "huggingface.co":
            assert 0 < _network(f)["bytes_out"] < 1_000_000
