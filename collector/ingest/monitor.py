"""The fleet monitor: every `interval` it reloads revocations and the policy from the store (another
process, `umbra-collector agent revoke` / `policy set`, may have changed them), ends revoked agents'
streams, pushes a newer policy to every stream, marks hosts silent, and runs the periodic extras
(the workers' shared counters, the daily risk snapshot)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from .. import health
from ..policy import to_wire
from ..storage.base import Store, StoreError
from .fleet import Abort, Fleet
from .offload import Offloader
from .stats import ServerStats

log = logging.getLogger(__name__)


class Monitor:
    def __init__(
        self,
        store: Store,
        fleet: Fleet,
        stats: ServerStats,
        offload: Offloader,
        *,
        silent_after: float,
        interval: float,
        primary: bool,
        periodic: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._fleet = fleet
        self._stats = stats
        self._offload = offload
        self._silent_after = silent_after
        self._interval = interval
        #: Only the primary process of a `serve --workers N` marks hosts silent (the others only read
        #: the marks, to notice hosts coming back), so a silence is recorded once.
        self._primary = primary
        self._periodic = periodic

    async def refresh(self) -> None:
        """Reload revocations and the policy from the store; end revoked agents' streams; push a
        newer policy to every open stream."""
        fleet = self._fleet
        revoked = await self._offload.run(self._store.revoked_hosts)
        for host_id in revoked - fleet.revoked:
            fleet.enrolled.discard(host_id)
            for state in fleet.streams.get(host_id, ()):
                state.out.put_nowait(Abort(grpc.StatusCode.PERMISSION_DENIED, f"agent {host_id} is revoked"))
        fleet.revoked = revoked
        record = await self._offload.run(self._store.current_policy)
        if record is not None and (fleet.policy is None or record.version > fleet.policy.version):
            fleet.policy = to_wire(record.version, record.body)
            pushed = 0
            for states in fleet.streams.values():
                for state in states:
                    message = fleet.policy_for(state.policy_version)
                    if message is not None:
                        state.policy_version = record.version
                        state.out.put_nowait(message)
                        pushed += 1
            self._stats.policy_pushes += pushed
            if pushed:
                log.info("policy version %d pushed to %d streams", record.version, pushed)

    async def check_silence(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        contacts = await self._offload.run(self._store.host_contacts)
        fleet = self._fleet
        for c in contacts:
            if c.silent_since > 0:
                fleet.silent.setdefault(c.host_id, c.silent_since)
                continue
            if now - c.last_seen < self._silent_after or c.host_id in fleet.silent or not self._primary:
                continue
            await self._offload.run(
                self._store.record_health, c.host_id, health.silent(c.last_seen, now), now
            )
            fleet.silent[c.host_id] = now
            self._stats.hosts_marked_silent += 1
            log.warning("host %s is silent: no contact for %.0f s", c.host_id, now - c.last_seen)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
                await self.check_silence()
                if self._periodic is not None:
                    await asyncio.to_thread(self._periodic)
            except StoreError as exc:
                log.error("monitor: %s", exc)
            except Exception:
                log.exception("monitor failed")
