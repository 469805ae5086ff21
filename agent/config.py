"""Agent configuration: a TOML file, validated strictly, with defaults for everything.

An unknown key or a wrong type is an error that names the key, so a typo cannot silently
turn a sensor off. See the README's configuration reference. Without --config the agent reads
/etc/umbra/agent.toml when it exists. A duration is a number of seconds or a string with its unit
("90s", "15m"); an old key name (see RENAMED) is still read, with a warning naming the new one.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from umbra.durations import FORMS, parse_duration

from agent.catalog.secrets import extra_rules
from agent.catalog.source import CatalogError
from agent.sensors.files.significance import ModelRule


class ConfigError(ValueError):
    """A broken config file: the message is one line for the operator."""


#: Read when no --config is given and the file exists (the packaged systemd unit's config).
DEFAULT_CONFIG = Path("/etc/umbra/agent.toml")

#: Old key -> its name now, per section; the fleet policy (umbra-collector policy set) uses the new
#: names for the same things, so one word means one thing on both sides.
RENAMED: dict[str, dict[str, str]] = {
    "sensors.files": {"paths": "watched_paths"},
}


def _stderr_warning(message: str) -> None:
    print(f"umbra-agent: warning: {message}", file=sys.stderr)


def default_state_dir() -> Path:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/umbra")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "umbra"


@dataclass(frozen=True)
class AgentSection:
    host_id: str = ""  # empty: derived once from the machine id and kept in state_dir
    state_dir: str = ""  # empty: /var/lib/umbra as root, ~/.local/state/umbra otherwise
    log_level: str = "info"
    log_format: str = "text"  # "json": one JSON object a line (journald, log shippers)
    status_interval: float = 5.0  # seconds between rewrites of <state_dir>/status.json (`umbra-agent status`)


@dataclass(frozen=True)
class CollectorSection:
    address: str = ""  # empty: the collector this agent enrolled with, else 127.0.0.1:50051
    batch_size: int = 500
    max_in_flight: int = 4  # batches sent and not yet acknowledged
    heartbeat_interval: float = 30.0
    # Reconnect backoff: OpenTelemetry's exporter defaults.
    backoff_initial: float = 5.0
    backoff_multiplier: float = 1.5
    backoff_max: float = 30.0
    backoff_jitter: float = 0.5


@dataclass(frozen=True)
class SpoolSection:
    path: str = ""  # empty: <state_dir>/spool.db
    max_findings: int = 100_000


@dataclass(frozen=True)
class ProcessSensorSection:
    enabled: bool = True
    interval: float = 2.0
    deep_interval: float = 15.0  # how often followed processes' maps, files and env are re-read
    large_process_mib: int = 512  # a process this large is followed even if nothing names it AI
    exec_events: bool = True  # the kernel's exec events (Linux, root) on top of polling


@dataclass(frozen=True)
class GpuSensorSection:
    enabled: bool = True
    interval: float = 5.0  # seconds between NVML reads (at most as often as the process sensor polls)
    facts_interval: float = 30.0  # re-read the libraries and model files GPU processes map
    # Sustained GPU use (a FINE_TUNING signal): memory held for `sustained_seconds`, over at least
    # `sustained_samples` reads, with a mean SM utilisation of `sustained_utilization` percent.
    sustained_seconds: float = 60.0
    sustained_samples: int = 5
    sustained_utilization: float = 10.0


@dataclass(frozen=True)
class NetworkSensorSection:
    enabled: bool = True
    interface: str = ""  # empty: every interface
    catalog: str = ""  # a TOML file of your own AI endpoints, merged over the packaged catalog
    resolve_per_second: float = 2.0  # without capture: catalog names resolved per second (0: none)


@dataclass(frozen=True)
class FilesSensorSection:
    enabled: bool = True
    watched_paths: tuple[str, ...] = ()  # more directories to inventory and watch (the fleet policy's name)
    homes: tuple[str, ...] = ()  # empty: every user's home directory (uid >= 1000) and the agent's
    default_roots: bool = True  # the catalog's model locations (HF cache, Ollama, LM Studio, Downloads ...)
    scan_homes: bool = True  # inventory whole home directories (watched: model locations only)
    media_prefixes: tuple[str, ...] = ()  # empty: the catalog's (/media, /run/media, /mnt, /Volumes)
    sync_folders: tuple[str, ...] = ()  # more cloud-sync folders, beside the catalog's
    state_path: str = ""  # empty: <state_dir>/files.db (hash cache)
    files_per_second: int = 2000
    read_mib_per_second: float = 8.0  # identification reads
    hash_mib_per_second: float = 64.0
    cpu_percent: float = 2.0  # of one core, for the sensor's worker thread (walk, identification, hashing)
    settle_seconds: float = 2.0  # a file quiet this long is looked at (at once when closed, on Linux)
    rescan_interval: float = 86400.0
    max_tracked_files: int = 200_000
    max_queued_events: int = 10_000
    max_models: int = 10_000
    max_watches: int = 64
    # [sensors.files.models]: when a model file counts (size and parameter floors, package trees,
    # NumPy context); a file that does not is reported at info with the reasons.
    models: ModelRule = field(default_factory=ModelRule)


@dataclass(frozen=True)
class AiToolsSensorSection:
    enabled: bool = True
    homes: tuple[str, ...] = ()  # empty: every directory in /home, /root, and users with uid >= 1000
    project_dirs: tuple[str, ...] = ()  # more project directories whose .mcp.json (etc.) are read
    interval: float = 300.0  # seconds between inventories of configs, installs and extensions
    processes: bool = True  # running agents and MCP servers, on every poll
    max_files: int = 2000  # configuration files read per inventory
    max_file_kib: int = 4096  # a bigger configuration file is skipped (counted)
    max_depth: int = 32  # nesting of a configuration document


@dataclass(frozen=True)
class SensorsSection:
    process: ProcessSensorSection = field(default_factory=ProcessSensorSection)
    gpu: GpuSensorSection = field(default_factory=GpuSensorSection)
    network: NetworkSensorSection = field(default_factory=NetworkSensorSection)
    files: FilesSensorSection = field(default_factory=FilesSensorSection)
    aitools: AiToolsSensorSection = field(default_factory=AiToolsSensorSection)


@dataclass(frozen=True)
class FindingsSection:
    refresh_interval: float = 300.0  # resend a still-present finding at most this often


@dataclass(frozen=True)
class PolicySection:
    approved_runtimes: tuple[str, ...] = ()
    approved_services: tuple[str, ...] = ()  # endpoint catalog service ids or vendor slugs
    min_confidence: float = 0.5
    upload_threshold_bytes: int = 1_000_000
    approved_model_hashes: tuple[str, ...] = ()  # SHA-256 of approved model files
    approved_paths: tuple[str, ...] = ()  # directories whose model files are approved
    approved_agents: tuple[str, ...] = ()  # AI agent catalog ids (agent/catalog/aitools.toml)
    approved_mcp_servers: tuple[str, ...] = ()  # MCP server names, packages or remote hosts
    approved_extensions: tuple[str, ...] = ()  # extension ids or AI extension catalog ids


@dataclass(frozen=True)
class PrivacySection:
    """Additions to the secrets catalog (agent/catalog/secrets.toml); its own rules always apply."""

    secret_options: tuple[str, ...] = ()  # options whose value is replaced, for every program
    key_patterns: tuple[str, ...] = ()  # regexes on names of KEY=value, --name=value, ?name=value
    value_patterns: tuple[str, ...] = ()  # regexes replaced wherever they match (group `secret`: that part)


@dataclass(frozen=True)
class WatchdogSection:
    """The agent's ceilings on its own process (agent/watchdog.py); osquery's are 10 % and 200 MB."""

    enabled: bool = True  # false: measure and show the figures, never shed work nor restart
    cpu_percent: float = 5.0  # of one core, averaged over cpu_window
    memory_mib: int = 120  # resident memory
    cpu_window: float = 300.0  # sustained use, not a burst (a first inventory, a busy minute)
    interval: float = 5.0  # seconds between measurements
    restart_after: float = 300.0  # over a ceiling this long with all sheddable work paused: restart
    restart_backoff: float = 60.0  # the least run time before a restart; doubles per restart, up to 1 h


@dataclass(frozen=True)
class AgentConfig:
    agent: AgentSection = field(default_factory=AgentSection)
    collector: CollectorSection = field(default_factory=CollectorSection)
    spool: SpoolSection = field(default_factory=SpoolSection)
    sensors: SensorsSection = field(default_factory=SensorsSection)
    findings: FindingsSection = field(default_factory=FindingsSection)
    policy: PolicySection = field(default_factory=PolicySection)
    privacy: PrivacySection = field(default_factory=PrivacySection)
    watchdog: WatchdogSection = field(default_factory=WatchdogSection)

    @property
    def state_dir(self) -> Path:
        return Path(self.agent.state_dir) if self.agent.state_dir else default_state_dir()

    @property
    def spool_path(self) -> Path:
        return Path(self.spool.path) if self.spool.path else self.state_dir / "spool.db"

    @property
    def files_state_path(self) -> Path:
        """The file sensor's hash cache."""
        files = self.sensors.files
        return Path(files.state_path) if files.state_path else self.state_dir / "files.db"


def config_path(path: Path | None, default: Path = DEFAULT_CONFIG) -> Path | None:
    """The file to read: `path` when given, else `default` when it exists, else None (defaults)."""
    if path is not None:
        return path
    return default if default.is_file() else None


def load_config(
    path: Path | None, *, default: Path = DEFAULT_CONFIG, warn: Callable[[str], None] = _stderr_warning
) -> AgentConfig:
    """The config at `path` (else `default` when it exists), or the defaults. Raises ConfigError, one line."""
    path = config_path(path, default)
    if path is None:
        return AgentConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    return parse_config(text, str(path), warn)


def parse_config(text: str, label: str, warn: Callable[[str], None] = _stderr_warning) -> AgentConfig:
    """The config in `text` (`label` names it in errors). Raises ConfigError, one line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {label} is not valid TOML: {exc}") from None
    _rename(raw, "", label, warn)
    config = _build(AgentConfig, raw, label)
    _check(config, label)
    return config


def _rename(raw: Any, section: str, where: str, warn: Callable[[str], None]) -> None:
    """Old key names to new ones, in place, with a warning for each (both given: an error)."""
    if not isinstance(raw, dict):
        return
    for old, new in RENAMED.get(section, {}).items():
        if old in raw:
            if new in raw:
                raise ConfigError(f"{where} [{section}]: {old!r} and {new!r} are the same key; keep {new!r}")
            warn(f"{where} [{section}]: {old!r} is deprecated, call it {new!r}")
            raw[new] = raw.pop(old)
    for key, value in raw.items():
        if isinstance(value, dict):
            _rename(value, f"{section}.{key}" if section else key, where, warn)


#: Float keys that are durations (seconds): they also take a string with a unit ("90s", "15m").
_DURATION_KEYS = ("interval", "seconds", "backoff_initial", "backoff_max")


_T = TypeVar("_T")


def _build(cls: type[_T], raw: Any, where: str) -> _T:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        default = getattr(cls(), name)
        here = f"{where} [{name}]" if "[" not in where else f"{where}.{name}"
        if hasattr(default, "__dataclass_fields__"):
            values[name] = _build(type(default), value, here)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{here}: expected true or false, got {value!r}")
            values[name] = value
        elif isinstance(default, float):
            duration = any(k in name for k in _DURATION_KEYS)
            if duration and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    values[name] = parse_duration(value, zero=True)
                    continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                wanted = f"a number of seconds or a duration ({FORMS})" if duration else "a number"
                raise ConfigError(f"{here}: expected {wanted}, got {value!r}")
            values[name] = float(value)
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{here}: expected an integer, got {value!r}")
            values[name] = value
        elif isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{here}: expected a list of strings, got {value!r}")
            values[name] = tuple(value)
        else:
            if not isinstance(value, str):
                raise ConfigError(f"{here}: expected a string, got {value!r}")
            values[name] = value
    return cls(**values)


def _check(config: AgentConfig, path: str) -> None:
    """Value ranges that types alone cannot express."""
    problems = []
    if config.agent.log_level.lower() not in {"debug", "info", "warning", "error"}:
        problems.append(f"[agent] log_level {config.agent.log_level!r} is not debug/info/warning/error")
    if config.agent.log_format not in {"text", "json"}:
        problems.append(f"[agent] log_format {config.agent.log_format!r} is not text/json")
    host, _, port = config.collector.address.rpartition(":")
    if config.collector.address and (not host or not port.isdigit() or not 0 < int(port) < 65536):
        problems.append(f"[collector] address {config.collector.address!r} is not HOST:PORT")
    if config.collector.batch_size < 1:
        problems.append("[collector] batch_size must be at least 1")
    if config.collector.max_in_flight < 1:
        problems.append("[collector] max_in_flight must be at least 1")
    if config.spool.max_findings < 1:
        problems.append("[spool] max_findings must be at least 1")
    if config.sensors.process.interval <= 0:
        problems.append("[sensors.process] interval must be positive")
    if config.sensors.process.deep_interval < 0 or config.sensors.process.large_process_mib < 0:
        problems.append("[sensors.process] deep_interval and large_process_mib must not be negative")
    gpu = config.sensors.gpu
    if gpu.interval <= 0 or gpu.facts_interval <= 0 or gpu.sustained_seconds <= 0:
        problems.append("[sensors.gpu] interval, facts_interval and sustained_seconds must be positive")
    if gpu.sustained_samples < 2:
        problems.append("[sensors.gpu] sustained_samples must be at least 2")
    if not 0.0 <= gpu.sustained_utilization <= 100.0:
        problems.append("[sensors.gpu] sustained_utilization must be between 0 and 100")
    if config.sensors.network.resolve_per_second < 0:
        problems.append("[sensors.network] resolve_per_second must not be negative")
    if config.policy.upload_threshold_bytes < 0:
        problems.append("[policy] upload_threshold_bytes must not be negative")
    files = config.sensors.files
    if min(files.files_per_second, files.read_mib_per_second, files.hash_mib_per_second) <= 0:
        problems.append("[sensors.files] files_per_second and the MiB/s budgets must be positive")
    if not 0 < files.cpu_percent <= 100:
        problems.append("[sensors.files] cpu_percent must be above 0 and at most 100")
    if files.settle_seconds < 0 or files.rescan_interval < 60:
        problems.append("[sensors.files] settle_seconds must not be negative, rescan_interval at least 60")
    if min(files.max_tracked_files, files.max_queued_events, files.max_models, files.max_watches) < 1:
        problems.append("[sensors.files] max_tracked_files, max_queued_events, max_models, max_watches: >= 1")
    rule = files.models
    if min(rule.min_bytes, rule.min_parameters, rule.package_min_bytes) < 0:
        problems.append("[sensors.files.models] min_bytes, min_parameters, package_min_bytes: >= 0")
    if any(not name or "/" in name for name in rule.package_dirs):
        problems.append("[sensors.files.models] package_dirs are directory names (no '/')")
    if any(not re.fullmatch(r"[0-9a-fA-F]{64}", h) for h in config.policy.approved_model_hashes):
        problems.append("[policy] approved_model_hashes must be SHA-256 hex digests")
    absolute = (*config.policy.approved_paths, *files.watched_paths, *files.media_prefixes)
    if any(not os.path.isabs(p) for p in absolute):
        problems.append(
            "[policy] approved_paths, [sensors.files] watched_paths and media_prefixes must be absolute"
        )
    ai = config.sensors.aitools
    if ai.interval <= 0 or min(ai.max_files, ai.max_file_kib, ai.max_depth) < 1:
        problems.append(
            "[sensors.aitools] interval must be positive, max_files, max_file_kib, max_depth >= 1"
        )
    if any(not os.path.isabs(p) for p in (*ai.homes, *ai.project_dirs)):
        problems.append("[sensors.aitools] homes and project_dirs must be absolute")
    if not 0.0 <= config.policy.min_confidence <= 1.0:
        problems.append("[policy] min_confidence must be between 0 and 1")
    w = config.watchdog
    if not 0 < w.cpu_percent <= 100 or w.memory_mib < 1:
        problems.append("[watchdog] cpu_percent must be above 0 and at most 100, memory_mib at least 1")
    if min(w.cpu_window, w.interval, config.agent.status_interval) <= 0:
        problems.append("[watchdog] cpu_window and interval, [agent] status_interval must be positive")
    if w.restart_after < 0 or w.restart_backoff < 0:
        problems.append("[watchdog] restart_after and restart_backoff must not be negative")
    if not 0.0 <= config.collector.backoff_jitter <= 1.0:
        problems.append("[collector] backoff_jitter must be between 0 and 1")
    privacy = config.privacy
    try:
        extra_rules(privacy.secret_options, privacy.key_patterns, privacy.value_patterns, "[privacy]")
    except CatalogError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError(f"config {path}: {problems[0]}")
