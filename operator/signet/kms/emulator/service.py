"""The KeyManagementService RPCs, as a ``grpc`` generic handler over proto-plus types.

Each RPC is a small function from request to response that raises
:class:`~signet.kms.emulator.names.KmsStatusError`; :meth:`KmsService.handler` wraps
them all in the same envelope: count the call, apply injected faults, abort with the
right status, and write the audit entry. Only ASYMMETRIC_SIGN keys exist here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
from google.cloud.kms_v1 import types as kms

from signet.kms.algorithms import ALGORITHMS
from signet.kms.crc import crc32c
from signet.kms.emulator.audit import SERVICE, AuditLog
from signet.kms.emulator.faults import SIGN, Counters, Faults
from signet.kms.emulator.names import KmsStatusError, invalid, parse_version
from signet.kms.emulator.state import (
    DESTROY_SCHEDULED_SECONDS,
    ENABLED,
    CryptoKeyRecord,
    KeyRingRecord,
    KeyStore,
    VersionRecord,
)

log = logging.getLogger(__name__)

_SOFTWARE = kms.ProtectionLevel.SOFTWARE
_ALG_ENUM = kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm
_STATE_ENUM = kms.CryptoKeyVersion.CryptoKeyVersionState
_MAX_PAGE = 1000
R = TypeVar("R")
Item = TypeVar("Item")

Rpc = Callable[[Any], Any]
Handler = Callable[[Any, grpc.ServicerContext], Any]


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _key_ring_msg(r: KeyRingRecord) -> kms.KeyRing:
    return kms.KeyRing(name=r.name, create_time=_ts(r.create_time))


def _key_msg(k: CryptoKeyRecord) -> kms.CryptoKey:
    return kms.CryptoKey(
        name=k.name,
        purpose=kms.CryptoKey.CryptoKeyPurpose.ASYMMETRIC_SIGN,
        create_time=_ts(k.create_time),
        version_template=kms.CryptoKeyVersionTemplate(
            protection_level=_SOFTWARE, algorithm=_ALG_ENUM.__members__[k.algorithm.name]
        ),
        destroy_scheduled_duration=timedelta(seconds=DESTROY_SCHEDULED_SECONDS),
    )


def _version_msg(v: VersionRecord) -> kms.CryptoKeyVersion:
    msg = kms.CryptoKeyVersion(
        name=v.name,
        state=_STATE_ENUM.__members__[v.state],
        protection_level=_SOFTWARE,
        algorithm=_ALG_ENUM.__members__[v.algorithm.name],
        create_time=_ts(v.create_time),
        generate_time=_ts(v.create_time),
    )
    if v.destroy_time is not None:
        msg.destroy_time = _ts(v.destroy_time)
    return msg


def _page(items: Sequence[Any], page_size: int, page_token: str) -> tuple[Sequence[Any], str]:
    """Offset-based paging; the token is opaque to clients anyway."""
    try:
        start = int(page_token) if page_token else 0
    except ValueError:
        raise invalid(f"invalid page_token {page_token!r}.") from None
    size = min(page_size, _MAX_PAGE) if page_size > 0 else _MAX_PAGE
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


def _listing(
    response: Callable[..., R],
    field: str,
    items: Sequence[Item],
    message: Callable[[Item], Any],
    req: Any,
) -> R:
    """The page of ``items`` a List request asks for, as ``response`` with the messages in
    ``field``: every List RPC pages and counts the same way."""
    page, token = _page(items, req.page_size, req.page_token)
    return response(
        **{field: [message(item) for item in page]}, next_page_token=token, total_size=len(items)
    )


def _require_enabled(v: VersionRecord) -> None:
    if v.state != ENABLED:
        raise KmsStatusError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{v.name} is not enabled, current state is: {v.state}.",
        )


class KmsService:
    """RPC implementations bound to one store, fault set, counter set and audit log."""

    def __init__(self, store: KeyStore, faults: Faults, counters: Counters, audit: AuditLog):
        self.store = store
        self.faults = faults
        self.counters = counters
        self.audit = audit

    # -- key rings ---------------------------------------------------------------------

    def create_key_ring(self, req: kms.CreateKeyRingRequest) -> kms.KeyRing:
        return _key_ring_msg(self.store.create_key_ring(req.parent, req.key_ring_id))

    def get_key_ring(self, req: kms.GetKeyRingRequest) -> kms.KeyRing:
        return _key_ring_msg(self.store.get_key_ring(req.name))

    def list_key_rings(self, req: kms.ListKeyRingsRequest) -> kms.ListKeyRingsResponse:
        rings = self.store.list_key_rings(req.parent)
        return _listing(kms.ListKeyRingsResponse, "key_rings", rings, _key_ring_msg, req)

    # -- crypto keys -------------------------------------------------------------------

    def create_crypto_key(self, req: kms.CreateCryptoKeyRequest) -> kms.CryptoKey:
        key = req.crypto_key
        if key.purpose != kms.CryptoKey.CryptoKeyPurpose.ASYMMETRIC_SIGN:
            raise invalid(
                f"purpose {key.purpose.name} is not supported by the emulator; "
                "only ASYMMETRIC_SIGN keys are."
            )
        template = key.version_template
        algorithm = template.algorithm.name
        if algorithm not in ALGORITHMS:
            raise invalid(
                f"algorithm {algorithm} is not valid for ASYMMETRIC_SIGN in the emulator; "
                f"supported: {', '.join(ALGORITHMS)}."
            )
        level = template.protection_level
        if level not in (kms.ProtectionLevel.PROTECTION_LEVEL_UNSPECIFIED, _SOFTWARE):
            raise invalid(f"protection level {level.name} is not available in the emulator.")
        record = self.store.create_crypto_key(
            req.parent,
            req.crypto_key_id,
            algorithm,
            skip_initial_version=req.skip_initial_version_creation,
        )
        return _key_msg(record)

    def get_crypto_key(self, req: kms.GetCryptoKeyRequest) -> kms.CryptoKey:
        return _key_msg(self.store.get_crypto_key(req.name))

    def list_crypto_keys(self, req: kms.ListCryptoKeysRequest) -> kms.ListCryptoKeysResponse:
        keys = self.store.list_crypto_keys(req.parent)
        return _listing(kms.ListCryptoKeysResponse, "crypto_keys", keys, _key_msg, req)

    # -- versions ----------------------------------------------------------------------

    def create_crypto_key_version(
        self, req: kms.CreateCryptoKeyVersionRequest
    ) -> kms.CryptoKeyVersion:
        return _version_msg(self.store.create_version(req.parent))

    def get_crypto_key_version(self, req: kms.GetCryptoKeyVersionRequest) -> kms.CryptoKeyVersion:
        return _version_msg(self.store.get_version(req.name))

    def list_crypto_key_versions(
        self, req: kms.ListCryptoKeyVersionsRequest
    ) -> kms.ListCryptoKeyVersionsResponse:
        versions = self.store.list_versions(req.parent)
        return _listing(
            kms.ListCryptoKeyVersionsResponse, "crypto_key_versions", versions, _version_msg, req
        )

    def update_crypto_key_version(
        self, req: kms.UpdateCryptoKeyVersionRequest
    ) -> kms.CryptoKeyVersion:
        paths = list(req.update_mask.paths)
        if paths != ["state"]:
            raise invalid(f"update_mask must be exactly ['state'] in the emulator, got {paths}.")
        version = req.crypto_key_version
        return _version_msg(self.store.set_state(version.name, version.state.name))

    def destroy_crypto_key_version(
        self, req: kms.DestroyCryptoKeyVersionRequest
    ) -> kms.CryptoKeyVersion:
        return _version_msg(self.store.destroy(req.name))

    def restore_crypto_key_version(
        self, req: kms.RestoreCryptoKeyVersionRequest
    ) -> kms.CryptoKeyVersion:
        return _version_msg(self.store.restore(req.name))

    # -- crypto ------------------------------------------------------------------------

    def get_public_key(self, req: kms.GetPublicKeyRequest) -> kms.PublicKey:
        fmt = req.public_key_format
        pem_fmt = kms.PublicKey.PublicKeyFormat.PEM
        if fmt not in (kms.PublicKey.PublicKeyFormat.PUBLIC_KEY_FORMAT_UNSPECIFIED, pem_fmt):
            raise invalid(f"public_key_format {fmt.name} is not supported for this key.")
        v = self.store.get_version(req.name)
        _require_enabled(v)
        pem_crc = crc32c(v.public_pem.encode())
        if self.faults.corrupt_pem_crc:
            pem_crc ^= 0x1
        msg = kms.PublicKey(
            pem=v.public_pem,
            pem_crc32c=pem_crc,
            algorithm=_ALG_ENUM.__members__[v.algorithm.name],
            name=v.name,
            protection_level=_SOFTWARE,
        )
        if fmt == pem_fmt:
            msg.public_key_format = pem_fmt
            msg.public_key = kms.ChecksummedData(
                data=v.public_pem.encode(), crc32c_checksum=pem_crc
            )
        return msg

    def asymmetric_sign(self, req: kms.AsymmetricSignRequest) -> kms.AsymmetricSignResponse:
        v = self.store.get_version(req.name)
        _require_enabled(v)
        alg = v.algorithm
        pb = kms.AsymmetricSignRequest.pb(req)
        verified_digest = verified_data = False
        if alg.prehashed:
            if pb.data:
                raise invalid(f"data is not supported for {alg.name}; send a digest instead.")
            which = pb.digest.WhichOneof("digest") if pb.HasField("digest") else None
            if which is None:
                raise invalid("digest is required.")
            if which != alg.digest_field:
                raise invalid(
                    f"The requested digest type ({which}) does not match the key algorithm "
                    f"{alg.name} (expected {alg.digest_field})."
                )
            payload: bytes = getattr(pb.digest, which)
            if len(payload) != alg.digest_size:
                raise invalid(
                    f"digest has length {len(payload)}, expected {alg.digest_size} for {which}."
                )
            if pb.HasField("digest_crc32c"):
                if crc32c(payload) != pb.digest_crc32c.value:
                    raise invalid("The checksum in field digest_crc32c did not match the data.")
                verified_digest = True
        else:
            if pb.HasField("digest"):
                raise invalid(f"digest is not supported for {alg.name}; send data instead.")
            payload = pb.data
            if not payload:
                raise invalid("data is required.")
            if pb.HasField("data_crc32c"):
                if crc32c(payload) != pb.data_crc32c.value:
                    raise invalid("The checksum in field data_crc32c did not match the data.")
                verified_data = True
        signature = alg.sign_prepared(v.private_key, payload)
        sig_crc = crc32c(signature)
        faults = self.faults
        if faults.corrupt_signature_crc:
            sig_crc ^= 0x1
        if faults.drop_verified_crc:
            verified_digest = verified_data = False
        name = v.name
        if faults.wrong_response_name:
            key_name, number = parse_version(name)
            name = f"{key_name}/cryptoKeyVersions/{number + 1000}"
        return kms.AsymmetricSignResponse(
            signature=signature,
            signature_crc32c=sig_crc,
            verified_digest_crc32c=verified_digest,
            verified_data_crc32c=verified_data,
            name=name,
            protection_level=_SOFTWARE,
        )

    # -- envelope ----------------------------------------------------------------------

    def _envelope(self, method: str, rpc: Rpc, resource_of: Callable[[Any], str]) -> Handler:
        """Count, inject faults, translate errors and audit around one RPC."""

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.monotonic()
            self.counters.started(method)
            code, message = grpc.StatusCode.OK, ""
            try:
                faults = self.faults
                if faults.latency_s > 0 and faults.applies_to(method):
                    time.sleep(faults.latency_s)
                    if not context.is_active():
                        raise KmsStatusError(
                            grpc.StatusCode.DEADLINE_EXCEEDED, "client went away during latency"
                        )
                injected = faults.pick_error(method)
                if injected is not None:
                    raise KmsStatusError(injected.code, injected.message)
                if method == SIGN and not faults.take_sign_quota():
                    raise KmsStatusError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "Quota exceeded for quota metric 'Asymmetric sign requests' "
                        f"(limit {faults.sign_qps:g} per second).",
                    )
                return rpc(request)
            except KmsStatusError as exc:
                code, message = exc.code, exc.message
            except Exception:
                log.exception("emulator %s failed", method)
                code, message = grpc.StatusCode.INTERNAL, "internal error in the KMS emulator"
            finally:
                self.counters.finished(method, resource_of(request), code)
                self.audit.record(
                    method,
                    resource_of(request),
                    code,
                    message,
                    {k: v for k, v in context.invocation_metadata() if isinstance(v, str)},
                    context.peer(),
                    time.monotonic() - start,
                )
            context.abort(code, message)

        return handle

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to add to a ``grpc.server``."""
        by_name = lambda r: r.name  # noqa: E731
        by_parent = lambda r: r.parent  # noqa: E731
        table: dict[str, tuple[Rpc, type[Any], type[Any], Callable[[Any], str]]] = {
            "CreateKeyRing": (
                self.create_key_ring,
                kms.CreateKeyRingRequest,
                kms.KeyRing,
                lambda r: f"{r.parent}/keyRings/{r.key_ring_id}",
            ),
            "GetKeyRing": (self.get_key_ring, kms.GetKeyRingRequest, kms.KeyRing, by_name),
            "ListKeyRings": (
                self.list_key_rings,
                kms.ListKeyRingsRequest,
                kms.ListKeyRingsResponse,
                by_parent,
            ),
            "CreateCryptoKey": (
                self.create_crypto_key,
                kms.CreateCryptoKeyRequest,
                kms.CryptoKey,
                lambda r: f"{r.parent}/cryptoKeys/{r.crypto_key_id}",
            ),
            "GetCryptoKey": (self.get_crypto_key, kms.GetCryptoKeyRequest, kms.CryptoKey, by_name),
            "ListCryptoKeys": (
                self.list_crypto_keys,
                kms.ListCryptoKeysRequest,
                kms.ListCryptoKeysResponse,
                by_parent,
            ),
            "CreateCryptoKeyVersion": (
                self.create_crypto_key_version,
                kms.CreateCryptoKeyVersionRequest,
                kms.CryptoKeyVersion,
                by_parent,
            ),
            "GetCryptoKeyVersion": (
                self.get_crypto_key_version,
                kms.GetCryptoKeyVersionRequest,
                kms.CryptoKeyVersion,
                by_name,
            ),
            "ListCryptoKeyVersions": (
                self.list_crypto_key_versions,
                kms.ListCryptoKeyVersionsRequest,
                kms.ListCryptoKeyVersionsResponse,
                by_parent,
            ),
            "UpdateCryptoKeyVersion": (
                self.update_crypto_key_version,
                kms.UpdateCryptoKeyVersionRequest,
                kms.CryptoKeyVersion,
                lambda r: r.crypto_key_version.name,
            ),
            "DestroyCryptoKeyVersion": (
                self.destroy_crypto_key_version,
                kms.DestroyCryptoKeyVersionRequest,
                kms.CryptoKeyVersion,
                by_name,
            ),
            "RestoreCryptoKeyVersion": (
                self.restore_crypto_key_version,
                kms.RestoreCryptoKeyVersionRequest,
                kms.CryptoKeyVersion,
                by_name,
            ),
            "GetPublicKey": (self.get_public_key, kms.GetPublicKeyRequest, kms.PublicKey, by_name),
            SIGN: (
                self.asymmetric_sign,
                kms.AsymmetricSignRequest,
                kms.AsymmetricSignResponse,
                by_name,
            ),
        }
        handlers = {
            method: grpc.unary_unary_rpc_method_handler(
                self._envelope(method, rpc, resource_of),
                request_deserializer=req_type.deserialize,
                response_serializer=resp_type.serialize,
            )
            for method, (rpc, req_type, resp_type, resource_of) in table.items()
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)
