"""`umbra-agent run`: sensors -> pipeline -> spool -> stream, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import psutil
from umbra import codec, contract
from umbra.private import make_private_dir, sqlite_files, tighten
from umbra.v1 import agent_pb2 as apb
from umbra.v1 import finding_pb2 as fpb

from agent import __version__
from agent.catalog.runtimes import load_runtime_catalog
from agent.config import AgentConfig, ConfigError
from agent.delivery.spool import Spool
from agent.delivery.stream import Backoff, StreamClient
from agent.delivery.tracker import FindingTracker
from agent.detection import evidence
from agent.detection.aitools import AiToolsDetector
from agent.detection.artifacts import ArtifactDetector
from agent.detection.finetune import FineTuningDetector
from agent.detection.gpu import GpuUsage, GpuWorkloadDetector
from agent.detection.health import watchdog_draft
from agent.detection.network import NetworkDetector
from agent.detection.runtime import RuntimeDetector
from agent.identity.credentials import collector_address, credentials_loader, identity_path, load_identity
from agent.identity.enroll import keep_renewed
from agent.identity.host import HOST_ID_FILE, host_facts, host_id
from agent.logs import configure_logging
from agent.pipeline import Detector, Pipeline
from agent.policy.fleet import POLICY_FILE, PolicyKeeper
from agent.policy.rules import policy_from_config
from agent.privacy import scrub
from agent.sensors.aitools.sensor import AiToolsSensor
from agent.sensors.base import Sensor, SensorState, SensorStatus
from agent.sensors.files.sensor import FileSensor
from agent.sensors.gpu import GpuSensor
from agent.sensors.network.sensor import NetworkSensor
from agent.sensors.network.socket_table import SocketTableSensor, catalog_names
from agent.sensors.process.sensor import ProcessSensor
from agent.status_file import process_start, remove_status, status_path, write_status
from agent.watchdog import Ceilings, Watchdog, own_usage, restarts_so_far

log = logging.getLogger(__name__)

CAPTURE_DROPS: Final = "capture_drops"  # the spool counter `umbra-agent status` reads

_WIRE_STATES = {
    SensorState.ACTIVE: apb.SENSOR_STATE_ACTIVE,
    SensorState.DEGRADED: apb.SENSOR_STATE_DEGRADED,
    SensorState.INACTIVE: apb.SENSOR_STATE_INACTIVE,
}


def build_pipeline(config: AgentConfig, tracker: FindingTracker) -> Pipeline:
    """The sensors and detectors the config enables; shared by `scan`, `run` and `status`."""
    privacy = config.privacy  # what the sensors scrub from process facts: the catalog and these
    scrub.configure(privacy.secret_options, privacy.key_patterns, privacy.value_patterns)
    catalog = load_runtime_catalog()
    sensors: list[Sensor] = []
    if config.sensors.process.enabled:
        section = config.sensors.process
        sensors.append(
            ProcessSensor(
                catalog.is_candidate,
                deep_interval=section.deep_interval,
                large_rss_bytes=section.large_process_mib * 2**20,
                exec_events=section.exec_events,
            )
        )
    gpu = config.sensors.gpu
    detectors: list[Detector] = [RuntimeDetector(catalog)]
    if gpu.enabled:
        sensors.append(GpuSensor(interval=gpu.interval, facts_interval=gpu.facts_interval))
        usage = GpuUsage(gpu.sustained_seconds, gpu.sustained_samples, gpu.sustained_utilization)
        detectors += [GpuWorkloadDetector(catalog), FineTuningDetector(usage=usage)]
    else:  # training without an NVIDIA GPU (CPU, Apple, AMD) is still seen by its process facts
        detectors.append(FineTuningDetector())
    policy = policy_from_config(config)
    if config.sensors.network.enabled:
        endpoints = policy.endpoints
        assert endpoints is not None
        capture: Sensor = NetworkSensor(
            config.sensors.network.interface or None, watch=lambda h: endpoints.match(h) is not None
        )
        cannot = capture.status()
        if cannot.state is SensorState.INACTIVE:  # no capture here: the socket tables instead
            capture = SocketTableSensor(
                catalog_names(endpoints),
                resolve_per_second=config.sensors.network.resolve_per_second,
                capture_reason=cannot.reason,
            )
        sensors.append(capture)
        detectors.append(
            NetworkDetector(
                endpoints, approved=policy.approved_services, upload_threshold=policy.upload_threshold_bytes
            )
        )
    files = config.sensors.files
    if files.enabled:
        sensors.append(
            FileSensor(
                state_path=config.files_state_path,
                homes=files.homes or None,
                paths=files.watched_paths,
                default_roots=files.default_roots,
                scan_homes=files.scan_homes,
                media_prefixes=files.media_prefixes or None,
                sync_folders=files.sync_folders,
                files_per_second=files.files_per_second,
                read_bytes_per_second=files.read_mib_per_second * 2**20,
                hash_bytes_per_second=files.hash_mib_per_second * 2**20,
                cpu_percent=files.cpu_percent,
                settle_seconds=files.settle_seconds,
                rescan_interval=files.rescan_interval,
                max_tracked_files=files.max_tracked_files,
                max_queued_events=files.max_queued_events,
                max_models=files.max_models,
                max_watches=files.max_watches,
                model_rule=files.models,
            )
        )
        detectors.append(ArtifactDetector())
    ai = config.sensors.aitools
    if ai.enabled:
        sensors.append(
            AiToolsSensor(
                homes=ai.homes or None,
                project_dirs=ai.project_dirs,
                interval=ai.interval,
                processes=ai.processes,
                max_files=ai.max_files,
                max_file_bytes=ai.max_file_kib * 1024,
                max_depth=ai.max_depth,
            )
        )
        detectors.append(AiToolsDetector(policy=policy))
    return Pipeline(sensors, detectors, policy, tracker)


def private_paths(config: AgentConfig) -> list[Path]:
    """What the agent keeps that only it may read: its state directory, spool, file-state cache,
    identity (key and certificate), pushed policy and kept host id."""
    state = config.state_dir
    return [
        state,
        *sqlite_files(config.spool_path),
        *sqlite_files(config.files_state_path),
        identity_path(state),
        state / POLICY_FILE,
        state / HOST_ID_FILE,
    ]


def inventory(pipeline: Pipeline) -> apb.Inventory | None:
    """The Inventory message: model weights on disk now (once the first scan has run), and the AI
    tooling sensor's last inventory (agents installed, MCP servers configured, AI extensions)."""
    files = next((s for s in pipeline.sensors if isinstance(s, FileSensor)), None)
    tools = next((s for s in pipeline.sensors if isinstance(s, AiToolsSensor)), None)
    files_ready = files is not None and files.first_scan_done.is_set()
    if not files_ready and (tools is None or not tools.inventories):
        return None
    message = apb.Inventory(taken_at=codec.timestamp(time.time()))
    if files is not None and files_ready:
        message.models.extend(evidence.model_file_evidence(model).model_file for model in files.inventory())
    if tools is not None:
        detector = next((d for d in pipeline.detectors if isinstance(d, AiToolsDetector)), AiToolsDetector())
        for draft in (d for obs in tools.last_inventory for d in detector.detect(obs)):
            for ev in draft.evidence:
                which = ev.WhichOneof("detail")
                if which == "ai_agent":
                    message.ai_agents.append(ev.ai_agent)
                elif which == "mcp_server":
                    message.mcp_servers.append(ev.mcp_server)
                elif which == "ai_extension":
                    message.ai_extensions.append(ev.ai_extension)
    return message


def capture_drops(pipeline: Pipeline) -> int:
    """Packets the network capture lost since it started (0 without a capture)."""
    return sum(s.dropped for s in pipeline.sensors if isinstance(s, NetworkSensor))


def wire_statuses(statuses: list[SensorStatus]) -> list[apb.SensorStatus]:
    return [apb.SensorStatus(name=s.name, state=_WIRE_STATES[s.state], reason=s.reason) for s in statuses]


def enroll_hint(address: str, config_file: Path | None) -> str:
    """The command that enrolls this agent with the collector it is configured for."""
    host, _, port = address.rpartition(":")
    enroll_port = int(port) + 1 if port.isdigit() and 0 < int(port) < 65535 else 50052
    config = f" --config {config_file}" if config_file is not None else ""
    return (
        "not enrolled: this agent speaks plain gRPC, which only a development collector "
        "(serve --insecure) accepts. To enroll, mint a token on the collector "
        f"(umbra-collector token create --token-file token.txt) and run: umbra-agent enroll --collector "
        f"{host}:{enroll_port} --token-file token.txt{config}"
    )


def _logging_only(new: AgentConfig, old: AgentConfig) -> bool:
    """The configs differ at most in how the agent logs: applied without a restart."""
    agent = replace(new.agent, log_level=old.agent.log_level, log_format=old.agent.log_format)
    return replace(new, agent=agent) == old


def watchdog_for(config: AgentConfig, pipeline: Pipeline) -> Watchdog:
    w = config.watchdog
    ceilings = Ceilings(
        w.cpu_percent, w.memory_mib * 2**20, w.cpu_window, w.restart_after, w.restart_backoff, w.enabled
    )
    return Watchdog(ceilings, pipeline.sensors, interval=w.interval, restarts=restarts_so_far())


@dataclass(frozen=True)
class DaemonExit:
    """Why `run_daemon` returned: a stop (neither set), a changed configuration (SIGHUP: the caller
    starts the daemon again with it, in this process), or the watchdog's last resort (the caller
    re-executes)."""

    reload: AgentConfig | None = None
    restart: bool = False


async def run_daemon(
    config: AgentConfig,
    reload: Callable[[], AgentConfig] | None = None,
    config_file: Path | None = None,
) -> DaemonExit:
    """Run until SIGTERM/SIGINT, a SIGHUP that brings a changed configuration, or the watchdog's
    restart. `reload` reads the configuration again; a file with an error is refused and the
    running one kept."""
    # Signals first: a SIGTERM during start-up (sensors starting, a first scan) is a clean stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    current = config
    restart_with: AgentConfig | None = None

    def on_hangup() -> None:
        nonlocal current, restart_with
        if reload is None:
            log.warning("SIGHUP: no configuration file to read again")
            return
        try:
            new = reload()
        except ConfigError as exc:
            log.error("SIGHUP: configuration refused, the running one is kept: %s", exc)
            return
        if new == current:
            log.info("SIGHUP: configuration reloaded, unchanged")
        elif _logging_only(new, current):
            configure_logging(new.agent.log_level, new.agent.log_format)
            log.info("SIGHUP: configuration reloaded: logging changed")
        else:
            log.info("SIGHUP: configuration reloaded: restarting the sensors and the stream with it")
            restart_with = new
            stop.set()
        current = new

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    state_dir = config.state_dir
    os.umask(0o077)  # whatever the daemon creates (spool, state, keys) is its user's alone
    make_private_dir(state_dir)
    tighten(private_paths(config), log)
    identity = load_identity(state_dir)  # enrolled: mutual TLS, and the certificate's host id
    host = identity.host_id if identity is not None else host_id(config.agent.host_id, state_dir)
    spool = Spool(config.spool_path, max_findings=config.spool.max_findings)
    tracker = FindingTracker(host, config.findings.refresh_interval, state_store=spool)
    pipeline = build_pipeline(config, tracker)
    keeper = PolicyKeeper(state_dir, pipeline.policy, lambda policy, _: pipeline.apply_policy(policy))
    statuses = pipeline.start()
    for status in statuses:
        log.info(
            "sensor %s: %s%s", status.name, status.state.value, f" ({status.reason})" if status.reason else ""
        )
    me = psutil.Process()
    me.cpu_percent()  # prime: the first call has no interval to measure

    def hello() -> apb.Hello:
        return apb.Hello(
            host=host_facts(host),
            agent_version=__version__,
            sensors=wire_statuses(pipeline.statuses()),
            policy_version=pipeline.policy.version,
            protocol_version=contract.PROTOCOL_VERSION,
        )

    def heartbeat() -> apb.Heartbeat:
        return apb.Heartbeat(
            sent_at=codec.timestamp(time.time()),
            cpu_percent=me.cpu_percent(),
            rss_bytes=me.memory_info().rss,
            spool_depth=spool.depth(),
            dropped_total=spool.dropped(),
            sensors=wire_statuses(pipeline.statuses()),
            capture_drops=capture_drops(pipeline),
        )

    c = config.collector
    address = collector_address(c.address, identity)
    client = StreamClient(
        address,
        spool,
        hello,
        heartbeat,
        batch_size=c.batch_size,
        max_in_flight=c.max_in_flight,
        heartbeat_interval=c.heartbeat_interval,
        backoff=Backoff(c.backoff_initial, c.backoff_multiplier, c.backoff_max, c.backoff_jitter),
        credentials=credentials_loader(state_dir),
        on_policy=keeper.receive,
        inventory=lambda: inventory(pipeline),
    )
    if identity is None:
        log.warning("%s", enroll_hint(address, config_file))
    watchdog = watchdog_for(config, pipeline)
    started_at = time.time()
    restart = False
    episodes = 0  # the watchdog's interventions in this process

    def guard() -> list[fpb.Finding]:
        """One watchdog check (from the sensing loop, between polls: the tracker has one thread)."""
        nonlocal restart, episodes
        was = watchdog.state
        try:
            report = watchdog.check()
        except Exception:  # a watchdog bug must not stop the agent it watches
            log.exception("watchdog check failed")
            return []
        if report is None:
            return []
        if report.state != "active" and was == "active":
            episodes += 1
        if report.restart:
            restart = True
            stop.set()
        draft = watchdog_draft(report.state, report.reason, f"{started_at:.3f}:{episodes}")
        finding = pipeline.judge(draft, time.time())
        return [finding] if finding is not None else []

    def status_doc() -> dict[str, Any]:
        usage = watchdog.last or own_usage()  # before the watchdog's first check (a long first poll)
        stats = client.stats
        return {
            "version": __version__,
            "pid": os.getpid(),
            "process_start": process_start(os.getpid()),
            "started_at": started_at,
            "interval": config.agent.status_interval,
            "host_id": host,
            "collector": {
                "address": address,
                "enrolled": identity is not None,
                "connected": stats.connected,
                "last_error": stats.last_error,
                "last_ack_sequence": stats.last_ack_sequence,
                "last_ack_at": stats.last_ack_at or None,
                "batches_sent": stats.batches_sent,
                "batches_acked": stats.batches_acked,
                "reconnects": stats.reconnects,
            },
            "spool": {"path": str(config.spool_path), "depth": spool.depth(), "dropped": spool.dropped()},
            "sensors": [
                {"name": s.name, "state": s.state.value, "reason": s.reason} for s in pipeline.statuses()
            ],
            "process": {
                "cpu_percent": watchdog.cpu_percent(config.agent.status_interval),
                "cpu_percent_window": watchdog.cpu_percent(),
                "rss_bytes": usage.rss_bytes,
                "peak_rss_bytes": max(watchdog.peak_rss, usage.rss_bytes),
                "threads": threading.active_count(),
            },
            "watchdog": {
                "enabled": config.watchdog.enabled,
                "state": watchdog.state,
                "reason": watchdog.reason,
                "shed": list(watchdog.shed_work),
                "restarts": watchdog.restarts,
                "cpu_ceiling_percent": config.watchdog.cpu_percent,
                "cpu_window_seconds": config.watchdog.cpu_window,
                "memory_ceiling_bytes": config.watchdog.memory_mib * 2**20,
            },
        }

    status_file = status_path(state_dir)

    async def keep_status() -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(write_status, status_file, status_doc())
            except OSError as exc:
                log.warning("cannot write %s: %s", status_file, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=config.agent.status_interval)

    log.info(
        "umbra-agent %s (pid %d): host %s, collector %s (%s), spool %s",
        __version__,
        os.getpid(),
        host,
        address,
        "mutual TLS" if identity is not None else "not enrolled: plain gRPC, development collectors only",
        config.spool_path,
    )

    files = next((s for s in pipeline.sensors if isinstance(s, FileSensor)), None)

    async def sense() -> None:
        interval = config.sensors.process.interval
        inventory_due = files is not None
        lost = 0
        spool.set_counter(CAPTURE_DROPS, lost)  # this run's, for `umbra-agent status`
        next_check = 0.0
        while not stop.is_set():
            started = time.monotonic()
            findings = await asyncio.to_thread(pipeline.poll)
            if inventory_due and files is not None and files.first_scan_done.is_set():
                inventory_due = False
                client.notify()  # the inventory goes now, not with the next heartbeat
            if capture_drops(pipeline) != lost:
                lost = capture_drops(pipeline)
                spool.set_counter(CAPTURE_DROPS, lost)
            if started >= next_check:
                next_check = started + watchdog.interval
                findings += guard()
            if findings:
                dropped = spool.append(findings, client.send_cursor, tracker.take_unsaved())
                if dropped:
                    log.warning("spool full: dropped %d low-severity findings", dropped)
                client.notify()
            elapsed = time.monotonic() - started
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, interval - elapsed))

    try:
        await asyncio.gather(
            sense(), client.run(stop), keep_renewed(state_dir, stop, lambda: address), keep_status()
        )
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        # Drained: the last poll's findings were appended before sense() returned; what the
        # collector has not acknowledged stays in the spool for the next start.
        pipeline.stop()
        depth = spool.depth()
        spool.close()
        if not restart:
            remove_status(status_file, os.getpid())
        log.info(
            "umbra-agent %s: spool closed with %d findings waiting for the collector",
            "restarting (watchdog)" if restart else "stopped",
            depth,
        )
    return DaemonExit(reload=None if restart else restart_with, restart=restart)
