"""The one-file agent (`make binary`), run as a fleet runs it: no Python, no virtualenv, no
environment at all (`env -i`), from a folder that is not the repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from binary_fixture import bare, binary
from conftest import REPO, SpawnRuntime, cli, port_or_free
from PyInstaller.archive.readers import CArchiveReader

__all__ = ["binary"]  # the session fixture, used by name


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'[agent]\nhost_id = "frozen-host"\nstate_dir = "{tmp_path / "state"}"\n')
    return path


def test_archive_holds_the_agent_its_catalogs_and_wire_code_and_no_collector(binary: Path) -> None:
    archive = CArchiveReader(str(binary))
    modules = set(archive.open_embedded_archive("PYZ.pyz").toc)
    assert {
        "agent.cli.main",
        "agent.daemon",
        "agent.identity.enroll",
        "umbra.v1.agent_pb2",
        "umbra.v1.finding_pb2",
        "umbra.codec",
        "grpc",
        "agent.service.install",
        "agent.sensors.network.bpf",  # the capture filter, compiled by the host's libpcap through ctypes
        "pynvml",  # imported by name when the GPU sensor starts
        "yaml",  # imported on the first YAML document of the AI tools' inventory
        "watchdog.observers.inotify",
        "zstandard",
    } <= modules
    data = set(archive.toc)
    catalogs = {p.name for p in (REPO / "agent" / "catalog").glob("*.toml")}
    assert catalogs and {f"agent/catalog/{name}" for name in catalogs} <= data
    assert "agent/service/umbra-agent.service" in data  # what `install` lays down
    names = modules | data
    assert not [n for n in names if n == "collector" or n.startswith(("collector.", "collector/"))]
    # what the development virtualenv has beside the agent stays out (scapy: the tests' packet tool)
    dev_only = {"numpy", "grpc_tools", "pytest", "scapy"}
    assert not [n for n in names if n.split(".")[0].split("/")[0] in dev_only]
    assert not [n for n in data if n.startswith("libpcap.")]  # the host's, as the spec says


def test_version_matches_the_installed_cli(binary: Path, tmp_path: Path) -> None:
    frozen = bare(binary, "--version", cwd=tmp_path)
    assert frozen.returncode == 0, frozen.stderr
    installed = subprocess.run([cli("umbra-agent"), "--version"], capture_output=True, text=True, check=True)
    assert frozen.stdout == installed.stdout and frozen.stdout.startswith("umbra-agent ")


def test_status_runs_with_an_empty_environment(binary: Path, tmp_path: Path) -> None:
    result = bare(binary, "status", "--format", "json", "--config", str(_config(tmp_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["host_id"] == "frozen-host"
    states = {s["name"]: s["state"] for s in doc["sensors"]}
    assert set(states) == {"process", "gpu", "network", "files", "aitools"}
    assert states["process"] == "active"  # root here: nothing the frozen agent needs is missing
    assert states["aitools"] == "active"
    assert states["network"] == "active"  # capture, and the host's libpcap found through ldconfig


def test_scan_finds_a_stand_in_runtime(binary: Path, tmp_path: Path, spawn_runtime: SpawnRuntime) -> None:
    proc = spawn_runtime(["ollama", "serve"], listen=[f"127.0.0.1:{port_or_free(11434)}"])
    config = _config(tmp_path)
    result = bare(
        binary, "scan", "--duration", "2", "--format", "json", "--config", str(config), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "BPF filter not attached" not in result.stderr  # compiled with the host's libpcap
    findings = [json.loads(line) for line in result.stdout.splitlines()]
    ours = [f for f in findings if f["process"] and f["process"]["pid"] == proc.pid]
    assert [f["kind"] for f in ours] == ["LOCAL_MODEL_RUNTIME"], result.stdout
    assert ours[0]["host_id"] == "frozen-host"
    assert ours[0]["evidence"][0]["runtime_id"] == "ollama"
