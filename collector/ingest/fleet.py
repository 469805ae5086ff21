"""Fleet state shared by all streams of one process: open streams per host, revocations, the policy,
silent hosts; and the per-stream state and messages the stream servicer queues."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
from umbra.v1 import agent_pb2

from .limits import MAX_PENDING_BATCHES_PER_STREAM
from .writer import Outcome


@dataclass(eq=False)
class StreamState:
    host_id: str
    out: asyncio.Queue[Any]
    policy_version: int
    sensors: dict[str, str] = field(default_factory=dict)  # name -> last state reported as health
    dropped_reported: int = 0
    held: int = 0  # bytes of the global Budget this stream holds
    #: Batches received and not yet acked; the reader waits for a slot (back-pressure).
    window: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_PENDING_BATCHES_PER_STREAM)
    )


@dataclass(frozen=True)
class Abort:
    code: grpc.StatusCode
    message: str


class Pending:
    __slots__ = ("cost", "future", "sequence")

    def __init__(self, sequence: int, cost: int, future: asyncio.Future[Outcome]) -> None:
        self.sequence, self.cost, self.future = sequence, cost, future


END = object()


class Fleet:
    """What the streams share: open streams per host, revocations, the policy, silent hosts."""

    def __init__(self) -> None:
        self.streams: dict[str, set[StreamState]] = {}
        self.revoked: frozenset[str] = frozenset()
        self.enrolled: set[str] = set()
        self.policy: agent_pb2.Policy | None = None
        self.silent: dict[str, float] = {}  # host -> silent since

    def policy_for(self, version: int) -> agent_pb2.CollectorMessage | None:
        if self.policy is None or self.policy.version <= version:
            return None
        return agent_pb2.CollectorMessage(policy=self.policy)
