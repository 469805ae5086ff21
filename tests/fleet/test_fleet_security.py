"""Enrollment and mutual TLS over real sockets: who may connect, as whom, and what is refused.

The collector runs in this process (CollectorServer with TLS, a real SQLite file); agents enroll
with the real `agent.identity.enroll` code and stream with real certificates. Every refusal is checked
for its gRPC status, and the attacks are made while a good agent keeps streaming.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from fleetkit import build_finding
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from umbra.v1 import agent_pb2, agent_pb2_grpc

from agent.identity import enroll as agent_enroll
from agent.identity.credentials import (
    TLS_CHANNEL_OPTIONS,
    Identity,
    csr_pem,
    key_pem,
    load_identity,
    new_key,
    save_identity,
)
from collector import pki
from collector.ingest import CollectorServer, ServerTLS
from collector.storage import SQLiteStore

pytestmark = pytest.mark.timeout(120)


@asynccontextmanager
async def tls_collector(work: Path, **options: Any) -> AsyncIterator[CollectorServer]:
    store = SQLiteStore(str(work / "collector.db"))
    identity = pki.load_or_create(work / "pki")
    validity = options.pop("agent_validity", dt.timedelta(days=30))
    tls = ServerTLS(identity=identity, enroll_addr="127.0.0.1:0", agent_validity=validity)
    options.setdefault("monitor_interval", 0.2)
    server = CollectorServer(store, "127.0.0.1:0", tls=tls, grace=0.5, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        store.close()


def mint(server: CollectorServer, uses: int = 1, ttl: float = 3600.0) -> str:
    secret = pki.new_token_secret()
    server.store.create_token(pki.token_hash(secret), time.time() + ttl, uses)
    assert server._tls is not None
    return pki.Token(secret, server._tls.identity.ca.pin).text


async def enroll(server: CollectorServer, state: Path, token: str | None = None) -> Identity:
    assert server.enroll_address is not None
    return await asyncio.to_thread(
        agent_enroll.enroll, server.enroll_address, token or mint(server), state, hostname="ws"
    )


def mtls(server: CollectorServer, identity: Identity) -> aio.Channel:
    return aio.secure_channel(
        server.grpc_address,
        identity.credentials(),
        options=[*TLS_CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)],
    )


def batch(sequence: int, ids: list[str], host_id: str = "") -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(
        batch=agent_pb2.FindingBatch(
            sequence=sequence, findings=[build_finding(i, host_id=host_id) for i in ids]
        )
    )


def hello(claimed: str = "whoever") -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(
        hello=agent_pb2.Hello(
            host=agent_pb2.HostFacts(host_id=claimed, hostname="ws"), protocol_version="umbra.v1"
        )
    )


async def refused(call: Any, *messages: Any) -> grpc.StatusCode:
    """Write `messages`, then read: the status the stream ends with (a write may be the one to fail)."""
    with pytest.raises(aio.AioRpcError) as err:
        for message in messages:
            await call.write(message)
        await call.read()
    code: grpc.StatusCode = err.value.code()
    return code


def rows(server: CollectorServer, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    import sqlite3

    conn = sqlite3.connect(str(server.store.path))  # type: ignore[attr-defined]
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_enrolled_agent_streams_and_its_identity_is_the_certificate(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with tls_collector(tmp_path) as server:
            a = await enroll(server, tmp_path / "a")
            b = await enroll(server, tmp_path / "b")
            assert a.host_id.startswith("h-") and a.host_id != b.host_id
            assert a.collector == server.grpc_address  # the stream port, told at enrollment
            assert load_identity(tmp_path / "a") == a
            assert (tmp_path / "a" / "identity.json").stat().st_mode & 0o077 == 0
            async with mtls(server, a) as channel:
                call = agent_pb2_grpc.StreamServiceStub(channel).Stream()
                # Agent A claims to be B in its Hello and in every finding.
                await call.write(hello(claimed=b.host_id))
                await call.write(batch(1, ["x", "y"], host_id=b.host_id))
                assert (await call.read()).ack.sequence == 1
                await call.done_writing()
                assert await call.code() == grpc.StatusCode.OK
            assert rows(server, "SELECT DISTINCT host_id FROM findings") == [(a.host_id,)]
            assert rows(server, "SELECT count(*) FROM findings WHERE host_id = ?", b.host_id) == [(0,)]
            hosts = {h.host_id: h for h in server.store.hosts()}
            assert hosts[a.host_id].findings_total == 2 and b.host_id not in hosts
            assert {r.host_id for r in server.store.agents()} == {a.host_id, b.host_id}

    asyncio.run(scenario())


def test_no_client_certificate_or_another_ca_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with tls_collector(tmp_path) as server:
            assert server._tls is not None
            ca_pem = server._tls.identity.ca_pem
            # 1. The stream port without a client certificate: the TLS handshake fails.
            creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
            async with aio.secure_channel(server.grpc_address, creds, options=TLS_CHANNEL_OPTIONS) as channel:
                call = agent_pb2_grpc.StreamServiceStub(channel).Stream()
                assert await refused(call, hello()) == grpc.StatusCode.UNAVAILABLE
            # 2. The enrollment port takes connections without a certificate, but never streams.
            assert server.enroll_address is not None
            async with aio.secure_channel(
                server.enroll_address, creds, options=TLS_CHANNEL_OPTIONS
            ) as channel:
                call = agent_pb2_grpc.StreamServiceStub(channel).Stream()
                assert await refused(call, hello("host-claimed")) == grpc.StatusCode.UNAUTHENTICATED
            # 3. A certificate from another CA, even naming an enrolled host: refused at the handshake.
            real = await enroll(server, tmp_path / "real")
            other_ca = pki.CertificateAuthority.create()
            key = new_key()
            forged = other_ca.sign_agent_csr(csr_pem(key, "x"), dt.timedelta(days=1), host_id=real.host_id)
            forged_identity = Identity(
                real.host_id, real.collector, key_pem(key), forged.certificate_pem, ca_pem, 0, 0
            )
            async with mtls(server, forged_identity) as channel:
                call = agent_pb2_grpc.StreamServiceStub(channel).Stream()
                assert await refused(call, hello()) == grpc.StatusCode.UNAVAILABLE
            assert server.store.hosts() == [] or all(h.findings_total == 0 for h in server.store.hosts())

    asyncio.run(scenario())


def test_used_expired_unknown_and_mispinned_tokens_refuse_enrollment(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with tls_collector(tmp_path) as server:
            token = mint(server)
            await enroll(server, tmp_path / "first", token)
            with pytest.raises(agent_enroll.EnrollError, match="UNAUTHENTICATED"):
                await enroll(server, tmp_path / "again", token)  # single use by default
            with pytest.raises(agent_enroll.EnrollError, match="UNAUTHENTICATED"):
                await enroll(server, tmp_path / "late", mint(server, ttl=-1))  # expired
            pin = token.split(".", 1)[1]
            with pytest.raises(agent_enroll.EnrollError, match="UNAUTHENTICATED"):
                await enroll(server, tmp_path / "unknown", f"{pki.new_token_secret()}.{pin}")
            # A token made for another collector's CA: the agent stops before sending anything.
            other_pin = pki.CertificateAuthority.create().pin
            secret = pki.new_token_secret()
            server.store.create_token(pki.token_hash(secret), time.time() + 60, 1)
            with pytest.raises(agent_enroll.EnrollError, match="does not present the CA"):
                await enroll(server, tmp_path / "mitm", f"{secret}.{other_pin}")
            assert server.store.tokens()[0].uses_left == 1 or any(
                t.uses_left == 1 for t in server.store.tokens()
            )
            # A multi-use token enrolls as many agents as it says.
            shared = mint(server, uses=2)
            one = await enroll(server, tmp_path / "m1", shared)
            two = await enroll(server, tmp_path / "m2", shared)
            assert one.host_id != two.host_id
            with pytest.raises(agent_enroll.EnrollError, match="UNAUTHENTICATED"):
                await enroll(server, tmp_path / "m3", shared)
            for state in ("again", "late", "unknown", "mitm", "m3"):
                assert load_identity(tmp_path / state) is None
            assert server.stats.enrollments == 3
            assert server.stats.refused_by_status["UNAUTHENTICATED"] == 4

    asyncio.run(scenario())


def test_bad_csr_is_invalid_argument_and_does_not_burn_the_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with tls_collector(tmp_path) as server:
            token = mint(server)
            assert server._tls is not None and server.enroll_address is not None
            creds = grpc.ssl_channel_credentials(root_certificates=server._tls.identity.ca_pem)
            async with aio.secure_channel(
                server.enroll_address, creds, options=TLS_CHANNEL_OPTIONS
            ) as channel:
                stub = agent_pb2_grpc.EnrollServiceStub(channel)
                for csr in (b"", b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n", os.urandom(300)):
                    with pytest.raises(aio.AioRpcError) as err:
                        await stub.Enroll(agent_pb2.EnrollRequest(token=token, csr_pem=csr), timeout=10)
                    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                raw = channel.unary_unary("/umbra.v1.EnrollService/Enroll")
                with pytest.raises(aio.AioRpcError) as err:
                    await raw(b"\xff\xff\xff\xff garbage", timeout=10)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            await enroll(server, tmp_path / "ok", token)  # the token still works
            assert server.stats.malformed_messages == 1

    asyncio.run(scenario())


def test_revoked_agent_is_cut_off_and_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with tls_collector(tmp_path) as server:
            a = await enroll(server, tmp_path / "a")
            async with mtls(server, a) as channel:
                call = agent_pb2_grpc.StreamServiceStub(channel).Stream()
                await call.write(hello())
                await call.write(batch(1, ["before"]))
                assert (await call.read()).ack.sequence == 1
                assert server.store.revoke_agent(a.host_id, time.time())  # `umbra-collector agent revoke`
                # The open stream ends within the monitor interval.
                with pytest.raises(aio.AioRpcError) as err:
                    await asyncio.wait_for(call.read(), timeout=10)
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            async with mtls(server, a) as channel:
                call = agent_pb2_grpc.StreamServiceStub(channel).Stream()
                assert await refused(call, hello()) == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(agent_enroll.EnrollError, match="PERMISSION_DENIED"):
                await asyncio.to_thread(agent_enroll.renew, tmp_path / "a", a)
            assert rows(server, "SELECT id FROM findings") == [("before",)]

    asyncio.run(scenario())


def test_certificate_renewal_keeps_the_host_id(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with tls_collector(tmp_path, agent_validity=dt.timedelta(seconds=3)) as server:
            a = await enroll(server, tmp_path / "a")
            lifetime = a.not_after - a.not_before
            assert 3.0 <= lifetime <= 4.0  # whole seconds in X.509
            assert a.not_before + 1.0 < a.renew_at() <= a.not_after - 0.5
            stop = asyncio.Event()
            renewed: list[Identity] = []
            task = asyncio.create_task(
                agent_enroll.keep_renewed(
                    tmp_path / "a", stop, lambda: a.collector, on_renewed=renewed.append
                )
            )
            deadline = time.monotonic() + 20
            while len(renewed) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            stop.set()
            await task
            assert len(renewed) >= 2, "renewed before expiry, more than once"
            latest = load_identity(tmp_path / "a")
            assert latest is not None and latest.host_id == a.host_id
            assert latest.cert_pem != a.cert_pem and latest.key_pem != a.key_pem  # a new key, too
            assert server.stats.renewals >= 2
            (record,) = server.store.agents()
            assert record.renewed_at > record.enrolled_at
            async with mtls(server, latest) as channel:  # the renewed certificate streams
                call = agent_pb2_grpc.StreamServiceStub(channel).Stream()
                await call.write(hello())
                await call.write(batch(1, ["after-renewal"]))
                assert (await call.read()).ack.sequence == 1
                await call.done_writing()

    asyncio.run(scenario())


def test_garbage_and_a_100mb_message_are_refused_while_others_keep_streaming(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with tls_collector(tmp_path) as server:
            good = await enroll(server, tmp_path / "good")
            bad = await enroll(server, tmp_path / "bad")
            acks: list[int] = []
            stop = asyncio.Event()

            async def good_agent() -> None:
                async with mtls(server, good) as channel:
                    call = agent_pb2_grpc.StreamServiceStub(channel).Stream()
                    await call.write(hello())
                    seq = 0
                    while not stop.is_set():
                        seq += 1
                        await call.write(batch(seq, [f"g{seq}-{i}" for i in range(20)]))
                        acks.append((await call.read()).ack.sequence)
                        await asyncio.sleep(0.02)
                    await call.done_writing()
                    assert await call.code() == grpc.StatusCode.OK

            streaming = asyncio.create_task(good_agent())
            while len(acks) < 3:
                await asyncio.sleep(0.05)

            # Garbage bytes straight at both ports: the connection is dropped, nothing else.
            for address in (server.grpc_address, server.enroll_address):
                assert address is not None
                host, port = address.rsplit(":", 1)

                def send_garbage(host: str = host, port: int = int(port)) -> bytes:
                    with socket.create_connection((host, port), timeout=10) as sock:
                        sock.sendall(os.urandom(64 * 1024))
                        sock.settimeout(10)
                        try:
                            return sock.recv(4096)
                        except OSError:
                            return b""

                await asyncio.to_thread(send_garbage)

            async with mtls(server, bad) as channel:
                # A valid gRPC frame whose bytes are not an AgentMessage: INVALID_ARGUMENT.
                raw = channel.stream_stream("/umbra.v1.StreamService/Stream")
                call = raw()
                assert (
                    await refused(call, b"\x0a\xff\xff\xff\xff\x0f not protobuf")
                    == grpc.StatusCode.INVALID_ARGUMENT
                )
                # An empty message after a good Hello: INVALID_ARGUMENT too.
                call = agent_pb2_grpc.StreamServiceStub(channel).Stream()
                await call.write(hello())
                assert await refused(call, agent_pb2.AgentMessage()) == grpc.StatusCode.INVALID_ARGUMENT
            big_options = [*TLS_CHANNEL_OPTIONS, ("grpc.max_send_message_length", 200 * 2**20)]
            async with aio.secure_channel(
                server.grpc_address, bad.credentials(), options=big_options
            ) as channel:
                call = channel.stream_stream("/umbra.v1.StreamService/Stream")()
                await call.write(hello().SerializeToString())
                with pytest.raises(aio.AioRpcError) as err:
                    await call.write(b"\x00" * (100 * 2**20))
                    await call.read()
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            deadline = time.monotonic() + 10
            while server.stats.streams_broken < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert server.stats.streams_broken >= 1, "counted among the streams the transport ended"

            seen = len(acks)
            while len(acks) < seen + 5:  # the good agent kept going, on the same stream
                await asyncio.sleep(0.05)
            stop.set()
            await streaming
            assert acks == list(range(1, len(acks) + 1))
            assert server.stats.malformed_messages == 1
            assert server.stats.refused_by_status["INVALID_ARGUMENT"] == 2

    asyncio.run(scenario())


def test_streams_per_identity_are_bounded_and_hello_has_a_deadline(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with tls_collector(tmp_path, max_streams_per_host=2, hello_timeout=1.0) as server:
            a = await enroll(server, tmp_path / "a")
            async with mtls(server, a) as channel:
                stub = agent_pb2_grpc.StreamServiceStub(channel)
                open_calls = []
                for n in (1, 2):
                    call = stub.Stream()
                    await call.write(hello())
                    await call.write(batch(n, [f"s{n}"]))
                    assert (await call.read()).ack.sequence == n
                    open_calls.append(call)
                third = stub.Stream()
                assert await refused(third, hello()) == grpc.StatusCode.RESOURCE_EXHAUSTED
                await open_calls[0].done_writing()
                assert await open_calls[0].code() == grpc.StatusCode.OK
                again = stub.Stream()  # a slot is free again
                await again.write(hello())
                await again.write(batch(3, ["s3"]))
                assert (await again.read()).ack.sequence == 3
                silent = stub.Stream()  # connects, never says Hello
                assert await refused(silent) == grpc.StatusCode.DEADLINE_EXCEEDED
                for call in (open_calls[1], again):
                    await call.done_writing()

    asyncio.run(scenario())


def test_grpc_health_service(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with tls_collector(tmp_path) as server:
            assert server._tls is not None and server.enroll_address is not None
            creds = grpc.ssl_channel_credentials(root_certificates=server._tls.identity.ca_pem)
            async with aio.secure_channel(
                server.enroll_address, creds, options=TLS_CHANNEL_OPTIONS
            ) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                for service in ("", "umbra.v1.StreamService", "umbra.v1.EnrollService"):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                with pytest.raises(aio.AioRpcError) as err:
                    await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND

    asyncio.run(scenario())


def test_pki_is_kept_across_restarts_and_an_operator_ca_can_be_used(tmp_path: Path) -> None:
    first = pki.load_or_create(tmp_path / "pki")
    again = pki.load_or_create(tmp_path / "pki")
    assert first.ca.pin == again.ca.pin and first.chain_pem == again.chain_pem
    assert (tmp_path / "pki" / "ca.key").stat().st_mode & 0o077 == 0
    # A new name for the server certificate reissues it, under the same CA.
    renamed = pki.load_or_create(tmp_path / "pki", server_names=["collector.example"])
    assert renamed.ca.pin == first.ca.pin and renamed.chain_pem != first.chain_pem
    # The operator's CA.
    operator = pki.CertificateAuthority.create()
    (tmp_path / "op.crt").write_bytes(operator.cert_pem)
    (tmp_path / "op.key").write_bytes(key_pem(operator.key))  # type: ignore[arg-type]
    theirs = pki.load_or_create(tmp_path / "pki2", ca_cert=tmp_path / "op.crt", ca_key=tmp_path / "op.key")
    assert theirs.ca.pin == operator.pin and not (tmp_path / "pki2" / "ca.key").exists()
    # A leaf certificate is no CA.
    leaf = operator.sign_agent_csr(csr_pem(new_key(), "x"), dt.timedelta(days=1))
    (tmp_path / "leaf.crt").write_bytes(leaf.certificate_pem)
    with pytest.raises(pki.PKIError):
        pki.load_or_create(tmp_path / "pki3", ca_cert=tmp_path / "leaf.crt", ca_key=tmp_path / "op.key")
    # Host ids come from the key, never from the CSR's subject.
    key = new_key()
    one = operator.sign_agent_csr(csr_pem(key, "victim-host"), dt.timedelta(days=1))
    two = operator.sign_agent_csr(csr_pem(key, "other-name"), dt.timedelta(days=1))
    assert one.host_id == two.host_id == pki.host_id_for_key(key.public_key())


def test_identity_file_is_replaced_atomically(tmp_path: Path) -> None:
    ca = pki.CertificateAuthority.create()
    key = new_key()
    issued = ca.sign_agent_csr(csr_pem(key, "x"), dt.timedelta(days=1))
    saved = save_identity(
        tmp_path, issued.host_id, "127.0.0.1:1", key_pem(key), issued.certificate_pem, ca.cert_pem
    )
    assert load_identity(tmp_path) == saved
    assert not list(tmp_path.glob("*.tmp"))


def test_agent_enroll_command_reports_failures_in_one_line(tmp_path: Path) -> None:
    import subprocess

    from conftest import cli

    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nstate_dir = "{tmp_path / "state"}"\n')

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [cli("umbra-agent"), "enroll", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    async def scenario() -> None:
        async with tls_collector(tmp_path / "collector") as server:
            assert server.enroll_address is not None
            token = mint(server)
            ok = await asyncio.to_thread(run, "--collector", server.enroll_address, "--token", token)
            assert ok.returncode == 0 and "enrolled as h-" in ok.stdout
            used = await asyncio.to_thread(run, "--collector", server.enroll_address, "--token", token)
            assert used.returncode == 1 and used.stderr.count("\n") == 1
            assert (
                used.stderr.startswith(f"umbra-agent: error: the collector at {server.enroll_address} ")
                and "refused this token (UNAUTHENTICATED" in used.stderr
                and "umbra-collector token create" in used.stderr  # the fix, named
            )
            status = await asyncio.to_thread(
                subprocess.run,
                [cli("umbra-agent"), "status", "--config", str(config), "--format", "json"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            doc = json.loads(status.stdout)
            assert doc["enrolled"] is True and doc["collector"] == server.grpc_address
            assert doc["host_id"] == load_identity(tmp_path / "state").host_id  # type: ignore[union-attr]

    asyncio.run(scenario())
    with socket.socket() as probe:  # nothing listens here
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    away = run("--collector", f"127.0.0.1:{port}", "--token", "secret.pin")
    assert away.returncode == 1 and "cannot reach" in away.stderr and "Traceback" not in away.stderr
    bad = run("--collector", "no-port", "--token", "secret.pin")
    assert bad.returncode == 1 and "HOST:PORT" in bad.stderr
