"""Secrets and prompts on real command lines never leave the host (issue 17, item 1).

Real processes run with the command lines of the issue: `llama-server ... --api-key sk-SECRET123456
-p "summarise the Q3 acquisition memo"`, a prompt given to `ollama run`, a Hugging Face token
given to vLLM, a proxy URL with a password and a token in its query, and an option only this
site's config names secret. The real agent looks at them:

- `umbra-agent scan --format json`: not on stdout, not on stderr;
- `umbra-agent run` against a real collector over mutual TLS: not in the agent's spool or state
  files (their raw bytes, so even a row written and deleted would show), not in its log, not in
  what the collector received and stored (its CLI, and the raw bytes of its SQLite file, -wal
  and -shm), not in the collector's log;
- the same over plain gRPC to a development collector, captured on loopback with a raw packet
  socket: not in the bytes on the wire;

while each finding still names the program, its model and its options, with the marker where
each secret was.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_proc import CollectorProc, agent_config, enroll_agent, start_agent, stop_child, wait_for
from conftest import SpawnBinary, cli, port_or_free

from agent.catalog.runtimes import load_runtime_catalog
from agent.detection.runtime import RuntimeDetector
from agent.privacy import scrub
from agent.privacy.scrub import MARKER
from agent.sensors.process.facts import describe_process
from agent.sensors.process.sensor import ProcessSensor

API_KEY = "sk-SECRET123456"
PROMPT = "summarise the Q3 acquisition memo"
OLLAMA_PROMPT = "draft the layoff announcement for Friday"
HF_TOKEN = "hf_abcdefghijklmnopqrstuvwxyzSECRET1"
URL_PASSWORD = "pw-hunter2-SECRET"
URL_TOKEN = "qtok-SECRET-777"
SITE_SECRET = "corp-SECRET-4242"

#: Every string that must not leave the process sensor, and telling fragments of the prompts.
SECRETS = [
    API_KEY,
    PROMPT,
    "acquisition",
    OLLAMA_PROMPT,
    "layoff",
    HF_TOKEN,
    URL_PASSWORD,
    URL_TOKEN,
    SITE_SECRET,
]


def _leaked(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in data]


@pytest.fixture
def runtimes(spawn_binary: SpawnBinary) -> dict[str, list[str]]:
    """The stand-ins, by catalog id: real processes with the secret-bearing command lines."""
    port = port_or_free(8080)
    argv = {
        "llama-cpp": [
            "llama-server",
            "-m",
            "x.gguf",
            "--api-key",
            API_KEY,
            "-p",
            PROMPT,
            "--port",
            str(port),
        ],
        "ollama": ["ollama", "run", "llama3.2", OLLAMA_PROMPT],
        "vllm": [
            "vllm",
            "serve",
            "Qwen/Qwen2.5-1.5B-Instruct",
            "--hf-token",
            HF_TOKEN,
            "--corp-secret",
            SITE_SECRET,
        ],
        "litellm": [
            "litellm",
            "--model",
            "ollama/llama3",
            "--api_base",
            f"https://alice:{URL_PASSWORD}@proxy.example.com:8443/v1?token={URL_TOKEN}&region=eu",
        ],
    }
    spawn_binary(argv["llama-cpp"], listen=[f"127.0.0.1:{port}"])
    for name in ("ollama", "vllm", "litellm"):
        spawn_binary(argv[name])
    return argv


#: What each command line must read once scrubbed: program, model and options kept.
EXPECTED = {
    "llama-cpp": ["llama-server", "-m", "x.gguf", "--api-key", MARKER, "-p", MARKER, "--port"],
    "ollama": ["ollama", "run", "llama3.2", MARKER],
    "vllm": ["vllm", "serve", "Qwen/Qwen2.5-1.5B-Instruct", "--hf-token", MARKER, "--corp-secret", MARKER],
    "litellm": [
        "litellm",
        "--model",
        "ollama/llama3",
        "--api_base",
        f"https://{MARKER}@proxy.example.com:8443/v1?token={MARKER}&region=eu",
    ],
}


def _config(tmp_path: Path) -> Path:
    more = '[sensors.files]\nenabled = false\n[privacy]\nsecret_options = ["--corp-secret"]\n'
    config = agent_config(tmp_path / "agent.toml", tmp_path / "agent-state", more)
    config.write_text(config.read_text().replace("[agent]", '[agent]\nlog_level = "debug"'))
    return config


def _runtime_findings(findings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_runtime: dict[str, dict[str, Any]] = {}
    for finding in findings:
        if finding["kind"] != "LOCAL_MODEL_RUNTIME":
            continue
        for evidence in finding["evidence"]:
            if evidence["type"] == "runtime":
                by_runtime[evidence["runtime_id"]] = finding
    return by_runtime


def _check_scrubbed(by_runtime: dict[str, dict[str, Any]]) -> None:
    """Each runtime found, its command line (finding and instance evidence) scrubbed as expected."""
    assert set(EXPECTED) <= set(by_runtime), sorted(by_runtime)
    for runtime_id, expected in EXPECTED.items():
        finding = by_runtime[runtime_id]
        assert finding["process"]["cmdline"][: len(expected)] == expected, runtime_id
        instances = [e for e in finding["evidence"] if e["type"] == "instance"]
        assert instances and all(i["process"]["cmdline"][: len(expected)] == expected for i in instances)


def test_the_process_sensor_hands_detectors_scrubbed_command_lines(
    runtimes: dict[str, list[str]],
) -> None:
    """The choke point itself: what the sensor observes is already scrubbed, so every draft a
    detector builds from it (summary, reasons, evidence) is clean. The config's addition is put in
    force as `build_pipeline` does it."""
    scrub.configure(secret_options=["--corp-secret"])
    try:
        seen = _observe_runtimes(len(runtimes))
    finally:
        scrub.configure()  # the packaged rules alone again, as for every other test
    for runtime_id, expected in EXPECTED.items():
        assert seen[runtime_id][: len(expected)] == expected
    assert scrub.scrub_argv(runtimes["vllm"])[-1] == SITE_SECRET  # the site's option is the config's


def _observe_runtimes(count: int) -> dict[str, list[str]]:
    """Poll a process sensor until `count` runtimes are found: runtime id -> observed argv."""
    catalog = load_runtime_catalog()
    sensor = ProcessSensor(catalog.is_candidate, exec_events=False)
    detector = RuntimeDetector(catalog)
    seen: dict[str, list[str]] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(seen) < count:
        for obs in sensor.poll():
            for draft in detector.detect(obs):
                seen[draft.evidence[0].runtime.runtime_id] = list(obs.cmdline)
                assert _leaked(repr(draft)) == [], draft.summary
        time.sleep(0.2)
    return seen


def test_scan_json_prints_no_secret_and_no_prompt(tmp_path: Path, runtimes: dict[str, list[str]]) -> None:
    result = subprocess.run(
        [
            cli("umbra-agent"),
            "scan",
            "--format",
            "json",
            "--duration",
            "1",
            "--config",
            str(_config(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert _leaked(result.stdout) == [] and _leaked(result.stderr) == []
    _check_scrubbed(_runtime_findings([json.loads(line) for line in result.stdout.splitlines()]))


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProc]:
    work = tmp_path / "collector"
    work.mkdir()
    c = CollectorProc(work)
    c.start()
    yield c
    c.stop()


def _files_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_run_streams_no_secret_to_the_spool_the_wire_or_the_store(
    tmp_path: Path, collector: CollectorProc, runtimes: dict[str, list[str]]
) -> None:
    config = _config(tmp_path)
    enroll_agent(collector, config)
    agent = start_agent(config)
    try:
        stored = wait_for(
            "the four runtimes at the collector",
            lambda: (lambda found: found if set(EXPECTED) <= set(found) else None)(
                _runtime_findings(collector.cli_json("findings"))
            ),
        )
        _check_scrubbed(stored)  # what crossed the wire, as the collector took it
        spool = tmp_path / "agent-state" / "spool.db"
        assert spool.exists()
    finally:
        agent_log = stop_child(agent)
    assert "DEBUG" in agent_log  # the agent logged at debug level, and still leaked nothing
    assert _leaked(agent_log) == []

    findings = collector.cli_json("findings")
    assert _leaked(json.dumps(findings)) == []
    assert _leaked(collector.log_text()) == []
    # Raw bytes, while the collector still runs (its -wal and -shm exist) and after the agent
    # stopped: a secret written once and deleted later would still be in a page or the WAL.
    collector_files = _files_bytes(collector.work)
    assert {"collector.db", "collector.db-wal"} <= set(collector_files)
    assert {name: _leaked(data) for name, data in collector_files.items() if _leaked(data)} == {}
    agent_files = _files_bytes(tmp_path / "agent-state")
    assert "spool.db" in agent_files
    assert {name: _leaked(data) for name, data in agent_files.items() if _leaked(data)} == {}


class LoopbackCapture(threading.Thread):
    """The bytes of every TCP segment to or from `port` on the loopback interface, read with a raw
    AF_PACKET socket (root), as a packet capture would see them."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.payload = bytearray()
        self.segments = 0
        self.stopping = threading.Event()
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))  # IPv4
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.start()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                frame = self.sock.recv(262144)
            except TimeoutError:
                continue
            ip = frame[14:]  # loopback frames carry an Ethernet header of zeros
            if len(ip) < 20 or ip[9] != 6:  # not TCP
                continue
            tcp = ip[(ip[0] & 0x0F) * 4 :]
            if len(tcp) < 20 or self.port not in struct.unpack("!HH", tcp[:4]):
                continue
            self.segments += 1
            self.payload += tcp[(tcp[12] >> 4) * 4 :]

    def stop(self) -> bytes:
        self.stopping.set()
        self.join(timeout=5)
        self.sock.close()
        return bytes(self.payload)


@pytest.mark.skipif(os.geteuid() != 0, reason="a raw packet socket needs root")
def test_the_bytes_on_the_wire_hold_no_secret(tmp_path: Path, runtimes: dict[str, list[str]]) -> None:
    """Plain gRPC to a development collector (--insecure), captured on loopback: the findings cross
    the wire (their program names and markers are in the bytes), the secrets and prompts do not."""
    work = tmp_path / "collector"
    work.mkdir()
    collector = CollectorProc(work, "--insecure")
    collector.start()
    port = int(collector.grpc.rpartition(":")[2])
    config = _config(tmp_path)
    config.write_text(config.read_text().replace("[collector]", f'[collector]\naddress = "{collector.grpc}"'))
    capture = LoopbackCapture(port)
    agent = start_agent(config)
    try:
        wait_for(
            "the four runtimes at the collector",
            lambda: set(EXPECTED) <= set(_runtime_findings(collector.cli_json("findings"))),
        )
    finally:
        stop_child(agent)
        wire = capture.stop()
        collector.stop()
    assert capture.segments > 0
    assert b"llama-server" in wire and b"x.gguf" in wire  # the findings crossed here
    assert _leaked(wire) == []
    assert MARKER.encode() in wire


def test_an_executable_path_with_a_token_in_it_is_scrubbed_too(
    tmp_path: Path, idle_server_binary: Path
) -> None:
    token_dir = tmp_path / f"ghp_{'a1B2c3D4e5' * 4}"  # a GitHub token as a directory name
    token_dir.mkdir()
    binary = token_dir / "llama-server"
    shutil.copy(idle_server_binary, binary)
    proc = subprocess.Popen([str(binary), "-m", "x.gguf"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        obs = describe_process(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert obs is not None
    assert obs.exe == f"{tmp_path}/{MARKER}/llama-server"
    assert obs.cmdline == (f"{tmp_path}/{MARKER}/llama-server", "-m", "x.gguf")
