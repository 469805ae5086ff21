"""The stream sends the host's Inventory after Hello, and again only when it changes (models, runtimes or
AI tooling; not its time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from umbra.v1 import agent_pb2 as apb
from umbra.v1 import agent_pb2_grpc as apb_grpc
from umbra.v1 import finding_pb2 as fpb

from agent.delivery.spool import Spool
from agent.delivery.stream import Backoff, StreamClient


class Recorder(apb_grpc.StreamServiceServicer):
    def __init__(self) -> None:
        self.received: list[apb.AgentMessage] = []

    async def Stream(
        self, request_iterator: AsyncIterator[apb.AgentMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[apb.CollectorMessage]:
        async for message in request_iterator:
            self.received.append(message)
            if message.HasField("batch"):
                yield apb.CollectorMessage(ack=apb.Ack(sequence=message.batch.sequence))


def _inventory(*paths: str) -> apb.Inventory:
    return apb.Inventory(models=[fpb.ModelFileEvidence(path=p, format="gguf", size_bytes=10) for p in paths])


def test_inventory_follows_hello_and_is_resent_only_when_it_changes(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        recorder = Recorder()
        server = grpc.aio.server()
        apb_grpc.add_StreamServiceServicer_to_server(recorder, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        current = [_inventory("/models/a.gguf")]
        client = StreamClient(
            f"127.0.0.1:{port}",
            Spool(tmp_path / "spool.db"),
            lambda: apb.Hello(host=apb.HostFacts(host_id="h1")),
            lambda: apb.Heartbeat(),
            heartbeat_interval=0.2,
            backoff=Backoff(initial=0.1, maximum=0.2),
            inventory=lambda: current[0],
        )
        stop = asyncio.Event()
        task = asyncio.create_task(client.run(stop))
        await asyncio.sleep(1.0)  # several heartbeats with an unchanged inventory
        current[0] = _inventory("/models/a.gguf", "/models/b.gguf")
        await asyncio.sleep(0.6)
        # only the AI tooling changes (an MCP server configured): that is a change too
        changed = apb.Inventory()
        changed.CopyFrom(current[0])
        changed.mcp_servers.append(fpb.McpServerEvidence(name="files", package="mcp-server-filesystem"))
        current[0] = changed
        await asyncio.sleep(0.6)
        # a new taken_at alone is not
        same = apb.Inventory()
        same.CopyFrom(changed)
        same.taken_at.FromSeconds(1_800_000_000)
        current[0] = same
        await asyncio.sleep(0.6)
        stop.set()
        await task
        await server.stop(None)
        return [m.WhichOneof("body") for m in recorder.received]

    kinds = asyncio.run(scenario())
    assert kinds[:2] == ["hello", "inventory"]
    assert kinds.count("inventory") == 3, kinds
    assert kinds.count("heartbeat") >= 3
