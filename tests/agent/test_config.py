"""Broken config files are refused with one line that names the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError, load_config


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    config = load_config(None)
    assert config == AgentConfig()
    assert config.spool_path == config.state_dir / "spool.db"


def test_values_are_read_and_typed(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            """
[agent]
host_id = "ws-42"
state_dir = "/tmp/umbra-state"
[collector]
address = "collector.example:6000"
backoff_initial = 1
[sensors.process]
interval = 0.5
[policy]
approved_runtimes = ["ollama"]
""",
        )
    )
    assert config.agent.host_id == "ws-42"
    assert config.collector.address == "collector.example:6000"
    assert config.collector.backoff_initial == 1.0 and isinstance(config.collector.backoff_initial, float)
    assert config.sensors.process.interval == 0.5
    assert config.policy.approved_runtimes == ("ollama",)
    assert config.spool_path == Path("/tmp/umbra-state/spool.db")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[agent\nhost_id = 1", "not valid TOML"),
        ("[agnet]\nhost_id = 'x'", "unknown key 'agnet'"),
        ("[sensors.process]\nintervall = 2", "unknown key 'intervall'"),
        ("[sensors.process]\ninterval = 'fast'", "expected a number"),
        ("[sensors.process]\nenabled = 1", "expected true or false"),
        ("[collector]\nbatch_size = 1.5", "expected an integer"),
        ("[collector]\naddress = 'nohost'", "is not HOST:PORT"),
        ("[collector]\naddress = 'h:99999'", "is not HOST:PORT"),
        ("[policy]\napproved_runtimes = 'ollama'", "expected a list of strings"),
        ("[policy]\nmin_confidence = 2", "between 0 and 1"),
        ("agent = 3", "expected a table"),
        ("[agent]\nlog_format = 'syslog'", "log_format 'syslog' is not text/json"),
        (
            "[privacy]\nsecret_options = ['api-key']",
            "[privacy] secret_options: 'api-key' is not an option name",
        ),
        ("[privacy]\nkey_patterns = ['(oops']", "[privacy] key_patterns: '(oops' does not compile"),
        ("[privacy]\nvalue_patterns = ['x*']", "[privacy] value_patterns: 'x*' matches the empty string"),
        ("[privacy]\nsecret_option = ['--x']", "unknown key 'secret_option'"),
        ("[privacy]\nkey_patterns = 'token'", "expected a list of strings"),
    ],
)
def test_broken_config_names_the_problem(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    message = str(info.value)
    assert names in message
    assert "\n" not in message


def test_privacy_additions_are_read(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            """
[privacy]
secret_options = ["--corp-secret", "-K"]
key_patterns = ["^internal[-_]"]
value_patterns = ["CORP-[0-9]{6}"]
""",
        )
    )
    assert config.privacy.secret_options == ("--corp-secret", "-K")
    assert config.privacy.key_patterns == ("^internal[-_]",)
    assert config.privacy.value_patterns == ("CORP-[0-9]{6}",)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.toml")
