"""`umbra-agent scan --pcap FILE`: the network detections on a saved capture, as Zeek's -r."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, cli

PCAPS = REPO.parent / "shared" / "pcaps" / "pcap"
pytestmark = pytest.mark.skipif(
    not PCAPS.is_dir(), reason="../shared/pcaps is not checked out beside the repo"
)


def _scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([cli("umbra-agent"), "scan", *args], capture_output=True, text=True, timeout=120)


def _config(tmp_path: Path, extra: str = "") -> Path:
    catalog = tmp_path / "endpoints.toml"
    catalog.write_text("""schema_version = 1
[[service]]
id = "ntop-ai"
vendor = "ntop"
product = "ntop (configured as an AI service for this test)"
category = "chat_app"
risk = "high"
source = "https://www.ntop.org/"
hosts = ["www.ntop.org"]
""")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nhost_id = "pcap-host"\nstate_dir = "{tmp_path}"\n'
        f'[sensors.network]\ncatalog = "{catalog}"\n{extra}'
    )
    return config


def test_a_configured_service_in_a_capture_is_reported(tmp_path: Path) -> None:
    result = _scan(
        "--pcap", str(PCAPS / "443-firefox.pcap"), "--format", "json", "--config", str(_config(tmp_path))
    )
    assert result.returncode == 0, result.stderr
    (finding,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert finding["kind"] == "AI_SERVICE_ACCESS" and finding["severity"] == "high"
    (network,) = [e for e in finding["evidence"] if e["type"] == "network"]
    assert network["host_name"] == "www.ntop.org" and network["source"] == "tls_sni"
    assert network["vendor"] == "ntop" and network["bytes_out"] > 0
    assert finding["policy"] == {"approved": False, "rule": "default:unapproved"}


def test_an_approved_service_is_kept_at_info_with_its_rule(tmp_path: Path) -> None:
    config = _config(tmp_path, '[policy]\napproved_services = ["ntop"]\n')
    result = _scan("--pcap", str(PCAPS / "443-firefox.pcap"), "--format", "json", "--config", str(config))
    (finding,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert finding["policy"] == {"approved": True, "rule": "approved_services:ntop"}
    assert finding["severity"] == "info"


def test_the_default_catalog_finds_no_ai_in_captures_without_ai(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nhost_id = "pcap-host"\nstate_dir = "{tmp_path}"\n')
    for pcap in sorted(PCAPS.iterdir())[:12]:  # the whole set runs in test_netscan_pcaps
        result = _scan("--pcap", str(pcap), "--format", "json", "--config", str(config))
        assert result.returncode == 0, (pcap.name, result.stderr)
        assert result.stdout == "", pcap.name


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [(b"not a capture at all", 2, "not a pcap or pcapng"), (None, 1, "cannot read")],
)
def test_bad_capture_files_get_one_clear_line(
    tmp_path: Path, content: bytes | None, status: int, message: str
) -> None:
    path = tmp_path / "capture.pcap"
    if content is not None:
        path.write_bytes(content)
    result = _scan("--pcap", str(path))
    assert result.returncode == status
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_unknown_approved_service_is_a_config_error(tmp_path: Path) -> None:
    config = _config(tmp_path, '[policy]\napproved_services = ["not-a-vendor"]\n')
    result = _scan("--pcap", str(PCAPS / "443-firefox.pcap"), "--config", str(config))
    assert result.returncode == 2 and "not-a-vendor" in result.stderr
