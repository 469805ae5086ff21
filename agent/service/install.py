"""`umbra-agent install` and `uninstall`: lay the agent down as a system service, and take it away.

What goes where (under `root`, `/` on a real host; tests use a folder):
  usr/local/bin/umbra-agent              the one-file binary (the running one, or --binary)
  etc/systemd/system/umbra-agent.service the unit (umbra-agent.service beside this module)
  etc/umbra/agent.toml                   the config: state dir, JSON logs, the collector address
  var/lib/umbra/                         the state (0700): identity.json after enrollment, the spool
The unit names the same paths; a test installs into a folder and checks each one it names.

Uninstall works as Debian's remove and purge: it takes the binary and the unit away and keeps the
config and the state (the agent's identity and unsent findings) unless asked to purge them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from agent.config import parse_config

UNIT_NAME = "umbra-agent.service"
BINARY = Path("usr/local/bin/umbra-agent")
UNIT = Path("etc/systemd/system") / UNIT_NAME
CONFIG = Path("etc/umbra/agent.toml")
STATE = Path("var/lib/umbra")


class InstallError(Exception):
    """Install or uninstall cannot go on; the message is one line for the operator."""


@dataclass(frozen=True)
class Layout:
    """The installed paths under one root."""

    root: Path

    def at(self, relative: Path) -> Path:
        return self.root / relative

    @property
    def on_this_host(self) -> bool:
        return self.root.resolve() == Path("/")


def unit_text() -> str:
    return resources.files("agent.service").joinpath(UNIT_NAME).read_text(encoding="utf-8")


def config_text(collector: str) -> str:
    """The config install writes: every other key keeps its default (README: configuration)."""
    lines = [
        "# Umbra agent configuration, written by `umbra-agent install`. Every key is optional;",
        "# the README's configuration reference lists them. `systemctl reload umbra-agent` applies",
        "# a change (a file with an error is refused, and the running configuration kept).",
        "[agent]",
        f'state_dir = "/{STATE}"',
        'log_format = "json"  # one JSON object a line, for journald',
    ]
    if collector:
        lines += ["", "[collector]", f"address = {json.dumps(collector)}"]  # a TOML basic string
    return "\n".join(lines) + "\n"


def running_binary() -> Path | None:
    """The one-file binary this process runs from; None when it runs from a Python install."""
    return Path(sys.executable) if getattr(sys, "frozen", False) else None


def install(
    root: Path,
    binary: Path | None,
    collector: str = "",
    token: str = "",
    ca_pem: bytes | None = None,
) -> list[str]:
    """Lay the service down under `root`; returns what was done, one line each, for the operator."""
    layout = Layout(root)
    source = binary if binary is not None else running_binary()
    if source is None:
        raise InstallError("not running as the one-file binary: give --binary PATH (`make binary`)")
    if not source.is_file() or not os.access(source, os.X_OK):
        raise InstallError(f"{source} is not an executable file")
    if token and not collector:
        raise InstallError("--token needs --collector HOST:PORT (the collector's enrollment address)")
    # a bad address fails before anything is written
    if parse_config(config_text(collector), "--collector").collector.address != collector:
        raise InstallError(f"--collector {collector!r} is not HOST:PORT")
    config = layout.at(CONFIG)
    if config.exists() and collector:
        raise InstallError(f"{config} exists: edit its [collector] address, or `uninstall --purge` first")
    done: list[str] = []
    state = layout.at(STATE)
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    done.append(f"state directory {state} (0700)")
    stream = collector
    if token:
        from agent.identity.enroll import enroll  # gRPC and TLS only when enrolling

        identity = enroll(collector, token, state, ca_pem=ca_pem)
        stream = identity.collector
        done.append(f"enrolled as {identity.host_id}; stream to {stream}")
    _copy(source, layout.at(BINARY), 0o755)
    done.append(f"binary {layout.at(BINARY)}")
    _write(layout.at(UNIT), unit_text(), 0o644)
    done.append(f"unit {layout.at(UNIT)}")
    if config.exists():
        done.append(f"config {config} kept as it was")
    else:
        _write(config, config_text(stream), 0o644)
        done.append(f"config {config}" + (f" (collector {stream})" if stream else ""))
    done.extend(_systemctl(layout, ["daemon-reload"], ["enable", "--now", UNIT_NAME]))
    return done


def uninstall(root: Path, purge: bool = False) -> list[str]:
    """Take the service away; with `purge`, its config and state (identity, spool) as well."""
    layout = Layout(root)
    unit = layout.at(UNIT)
    done = _systemctl(layout, ["disable", "--now", UNIT_NAME]) if unit.exists() else []
    doomed = [layout.at(BINARY), unit] + ([layout.at(CONFIG)] if purge else [])
    for path in doomed:
        if path.exists():
            path.unlink()
            done.append(f"removed {path}")
    if purge:
        for folder in (layout.at(STATE), layout.at(CONFIG).parent):
            if folder.exists():
                shutil.rmtree(folder)
                done.append(f"removed {folder}")
    else:
        done.append(f"kept {layout.at(CONFIG)} and {layout.at(STATE)} (--purge removes them)")
    done.extend(_systemctl(layout, ["daemon-reload"]))
    return done


def _systemctl(layout: Layout, *commands: list[str]) -> list[str]:
    """Tell systemd, when the install is for this host and systemd manages it."""
    if not layout.on_this_host:
        return []
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return ["systemd does not run here: no systemctl"]
    done = []
    for args in commands:
        result = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise InstallError(f"systemctl {' '.join(args)}: {result.stderr.strip() or result.returncode}")
        done.append(f"systemctl {' '.join(args)}")
    return done


def _copy(source: Path, target: Path, mode: int) -> None:
    """Copy through a temporary file and rename, so a running copy of the target is never torn."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(target: Path, text: str, mode: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    os.replace(tmp, target)
