"""Consistent agent configuration (issue 17, item 5), through the real `umbra-agent` command:
the fleet policy's names for the same things (an old name works, with a warning), an unknown
runtime id refused like an unknown service, durations with units, /etc/umbra/agent.toml by default."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest
from conftest import cli
from umbra import contract
from umbra.v1 import agent_pb2

from agent.config import AgentConfig, ConfigError, config_path, load_config
from agent.policy.fleet import PolicyKeeper
from agent.policy.rules import Policy, policy_from_config

QUIET = (
    "[sensors.gpu]\nenabled = false\n[sensors.network]\nenabled = false\n[sensors.process]\nenabled = false\n"
)


def _status(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cli("umbra-agent"), "status", "--format", "json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'[agent]\nstate_dir = "{tmp_path / "state"}"\n{QUIET}{text}')
    return path


def test_old_files_paths_key_works_with_a_deprecation_warning(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    result = _status(_config(tmp_path, f'[sensors.files]\npaths = ["{models}"]\n'))
    assert result.returncode == 0, result.stderr
    assert "[sensors.files]: 'paths' is deprecated, call it 'watched_paths'" in result.stderr
    config = load_config(_config(tmp_path, f'[sensors.files]\npaths = ["{models}"]\n'), warn=lambda m: None)
    assert config.sensors.files.watched_paths == (str(models),)
    new = _status(_config(tmp_path, f'[sensors.files]\nwatched_paths = ["{models}"]\n'))
    assert new.returncode == 0 and "deprecated" not in new.stderr
    both = _status(
        _config(tmp_path, f'[sensors.files]\npaths = ["{models}"]\nwatched_paths = ["{models}"]\n')
    )
    assert both.returncode == 2 and "are the same key; keep 'watched_paths'" in both.stderr


def test_unknown_runtime_id_is_refused_like_an_unknown_service(tmp_path: Path) -> None:
    result = _status(_config(tmp_path, '[policy]\napproved_runtimes = ["olama"]\n'))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "umbra-agent: error: [policy] approved_runtimes: 'olama' is no runtime id in the catalog "
        "(agent/catalog/runtimes.toml, e.g. 'ollama', 'llama-cpp', 'vllm')"
    )
    service = _status(_config(tmp_path, '[policy]\napproved_services = ["opnai"]\n'))
    assert service.returncode == 2 and "'opnai' is no service id or vendor" in service.stderr
    assert _status(_config(tmp_path, '[policy]\napproved_runtimes = ["ollama", "vllm"]\n')).returncode == 0


def test_durations_take_a_unit_or_plain_seconds(tmp_path: Path) -> None:
    config = load_config(
        _config(tmp_path, '[collector]\nheartbeat_interval = "2m"\nbackoff_initial = "250ms"\n')
    )
    assert config.collector.heartbeat_interval == 120.0 and config.collector.backoff_initial == 0.25
    with pytest.raises(ConfigError, match=r"heartbeat_interval: expected a number of seconds or a duration"):
        load_config(_config(tmp_path, '[collector]\nheartbeat_interval = "soon"\n'))


def test_etc_umbra_agent_toml_is_read_when_there(tmp_path: Path) -> None:
    default = tmp_path / "etc-agent.toml"
    assert config_path(None, default) is None
    assert load_config(None, default=default).agent.log_level == "info"
    default.write_text('[agent]\nlog_level = "debug"\n')
    assert config_path(None, default) == default
    assert load_config(None, default=default).agent.log_level == "debug"
    given = tmp_path / "given.toml"
    given.write_text('[agent]\nlog_level = "error"\n')
    assert load_config(given, default=default).agent.log_level == "error"  # --config wins


def test_status_json_still_parses_with_a_warning_on_stderr(tmp_path: Path) -> None:
    """Warnings go to stderr only, so `status --format json` stays machine-readable."""
    result = _status(_config(tmp_path, f'[sensors.files]\npaths = ["{tmp_path}"]\n'))
    assert json.loads(result.stdout)["enrolled"] is False


def test_a_pushed_policy_with_unknown_ids_is_applied_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The collector cannot check ids against the agent's catalogs; the agent says which name nothing."""
    applied: list[Policy] = []
    keeper = PolicyKeeper(tmp_path, policy_from_config(AgentConfig()), lambda p, _: applied.append(p))
    rules = [
        agent_pb2.PolicyRule(
            name="approved_runtimes", kind=contract.RULE_APPROVED_RUNTIME, values=["ollama", "olama"]
        ),
        agent_pb2.PolicyRule(
            name="approved_services", kind=contract.RULE_APPROVED_SERVICE, values=["openai", "opnai"]
        ),
    ]
    with caplog.at_level(logging.WARNING, logger="agent.policy.fleet"):
        assert keeper.receive(agent_pb2.Policy(version=2, rules=rules))
    assert applied[-1].approved_runtimes == {"ollama", "olama"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    tail = "name nothing in this agent's catalog, so approve nothing"
    assert warnings == [
        f"fleet policy version 2: approved_runtimes 'olama' {tail}",
        f"fleet policy version 2: approved_services 'opnai' {tail}",
    ]
