"""Enrollment: a token buys an agent its client certificate; a certificate buys its successor (renewal)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc
from google.protobuf.message import DecodeError
from grpc import aio
from umbra.v1 import agent_pb2

from ..identity import certificate_common_name
from ..pki import CSRError, split_token, token_hash
from ..storage.base import Store, StoreError, TokenRefused
from .fleet import Fleet
from .limits import ENROLL_SERVICE, MAX_ENROLL_BYTES
from .listeners import ServerTLS
from .offload import Offloader
from .stats import ServerStats

log = logging.getLogger(__name__)

_EnrollContext = aio.ServicerContext[bytes, agent_pb2.EnrollResponse]


class EnrollServicer:
    """Enroll: a token buys a certificate (enrollment port); a certificate buys its successor (renewal)."""

    def __init__(
        self,
        store: Store,
        stats: ServerStats,
        offload: Offloader,
        fleet: Fleet,
        tls: ServerTLS | None,
        stream_port: Callable[[], int],
    ) -> None:
        self._store = store
        self._stats = stats
        self._offload = offload
        self._fleet = fleet
        self._tls = tls
        self._stream_port = stream_port

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            ENROLL_SERVICE,
            {
                "Enroll": grpc.unary_unary_rpc_method_handler(
                    self.Enroll,
                    request_deserializer=None,
                    response_serializer=agent_pb2.EnrollResponse.SerializeToString,
                )
            },
        )

    async def _refuse(
        self, context: _EnrollContext, code: grpc.StatusCode, message: str, why: str = ""
    ) -> None:
        self._stats.enrollments_refused += 1
        self._stats.refused(code)
        log.warning("enrollment from %s refused: %s: %s", context.peer(), code.name, why or message)
        await context.abort(code, message)

    async def Enroll(self, raw: bytes, context: _EnrollContext) -> agent_pb2.EnrollResponse:
        if self._tls is None:
            await self._refuse(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "this collector runs without TLS (serve --insecure, development): "
                "there is nothing to enroll for",
            )
            raise AssertionError("unreachable: abort raises")
        tls = self._tls
        if len(raw) > MAX_ENROLL_BYTES:
            await self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "enroll request too large")
        try:
            request = agent_pb2.EnrollRequest.FromString(raw)
        except DecodeError:
            self._stats.malformed_messages += 1
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "malformed EnrollRequest")
            raise AssertionError("unreachable: abort raises") from None
        renewing_as = certificate_common_name(context.auth_context())
        if renewing_as is not None:
            record = await self._offload.run(self._store.agent, renewing_as)
            if record is None or record.revoked or renewing_as in self._fleet.revoked:
                await self._refuse(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"agent {renewing_as} is {'revoked' if record else 'not enrolled here'}",
                )
        else:
            secret, _ = split_token(request.token)
            if not secret:
                await self._refuse(
                    context, grpc.StatusCode.UNAUTHENTICATED, "an enrollment token is required"
                )
        try:
            issued = await asyncio.to_thread(
                tls.identity.ca.sign_agent_csr, request.csr_pem, tls.agent_validity, renewing_as
            )
        except CSRError as exc:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad CSR: {exc}")
            raise AssertionError("unreachable: abort raises") from exc
        hostname = request.hostname.strip()[:255] if request.hostname.isprintable() else ""
        try:
            if renewing_as is None:
                try:
                    await self._offload.run(self._store.consume_token, token_hash(secret), time.time())
                except TokenRefused as exc:
                    await self._refuse(
                        context,
                        grpc.StatusCode.UNAUTHENTICATED,
                        "enrollment token refused: unknown, expired or already used",
                        why=str(exc),
                    )
                known = await self._offload.run(self._store.agent, issued.host_id)
                if known is not None and known.revoked:
                    await self._refuse(
                        context, grpc.StatusCode.PERMISSION_DENIED, f"agent {issued.host_id} is revoked"
                    )
            await self._offload.run(
                self._store.register_agent,
                issued.host_id,
                issued.serial,
                issued.not_after,
                hostname,
                renewal=renewing_as is not None,
            )
        except StoreError as exc:
            self._stats.store_errors += 1
            log.error("enrollment not stored: %s", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "collector storage unavailable; retry later")
        self._fleet.enrolled.add(issued.host_id)
        if renewing_as is None:
            self._stats.enrollments += 1
            log.info("enrolled %s (%s) from %s", issued.host_id, hostname or "?", context.peer())
        else:
            self._stats.renewals += 1
            log.info("renewed the certificate of %s", issued.host_id)
        return agent_pb2.EnrollResponse(
            certificate_pem=issued.certificate_pem,
            ca_certificate_pem=tls.identity.ca_pem,
            host_id=issued.host_id,
            stream_address=tls.advertise or f":{self._stream_port()}",
        )
