"""Resource-name parsing with the same error split as Cloud KMS.

A name that does not have the right shape is the caller's bug (INVALID_ARGUMENT); a
well-formed name that points nowhere is NOT_FOUND. Keeping the parsing in one place makes
every RPC agree on that split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc

ID_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,63}")
"""Key ring and crypto key ids, as documented by Cloud KMS."""

_LOCATION = re.compile(r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)")
_KEY_RING = re.compile(_LOCATION.pattern + r"/keyRings/(?P<key_ring>[^/]+)")
_CRYPTO_KEY = re.compile(_KEY_RING.pattern + r"/cryptoKeys/(?P<crypto_key>[^/]+)")
_VERSION = re.compile(_CRYPTO_KEY.pattern + r"/cryptoKeyVersions/(?P<version>[^/]+)")
_PROJECT_OR_LOCATION = re.compile(r"[a-z0-9][a-z0-9.:_-]{0,62}")
_VERSION_ID = re.compile(r"[1-9][0-9]{0,8}")


class KmsStatusError(Exception):
    """An RPC failure with a gRPC status; the service wrapper turns it into an abort."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> KmsStatusError:
    """Shorthand for INVALID_ARGUMENT."""
    return KmsStatusError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(name: str) -> KmsStatusError:
    """NOT_FOUND worded like Cloud KMS."""
    return KmsStatusError(grpc.StatusCode.NOT_FOUND, f"{name} not found.")


def check_id(kind: str, value: str) -> str:
    """Validate a key ring / crypto key id; returns it for chaining."""
    if not ID_PATTERN.fullmatch(value):
        raise invalid(f"{kind} id {value!r} must match [a-zA-Z0-9_-]{{1,63}}.")
    return value


@dataclass(frozen=True)
class LocationName:
    """``projects/P/locations/L``."""

    project: str
    location: str

    def __str__(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"


def parse_location(name: str) -> LocationName:
    """Parse a location (the parent of key rings)."""
    m = _LOCATION.fullmatch(name)
    if not m or not all(_PROJECT_OR_LOCATION.fullmatch(m[g]) for g in ("project", "location")):
        raise invalid(f"Resource name [{name}] does not match projects/*/locations/*.")
    return LocationName(m["project"], m["location"])


def parse_key_ring(name: str) -> str:
    """Validate and return a key ring name."""
    m = _KEY_RING.fullmatch(name)
    if not m or not ID_PATTERN.fullmatch(m["key_ring"]):
        raise invalid(f"Resource name [{name}] does not match projects/*/locations/*/keyRings/*.")
    parse_location(name.rsplit("/keyRings/", 1)[0])
    return name


def parse_crypto_key(name: str) -> str:
    """Validate and return a crypto key name."""
    m = _CRYPTO_KEY.fullmatch(name)
    if not m or not ID_PATTERN.fullmatch(m["crypto_key"]):
        raise invalid(
            f"Resource name [{name}] does not match projects/*/locations/*/keyRings/*/cryptoKeys/*."
        )
    parse_key_ring(name.rsplit("/cryptoKeys/", 1)[0])
    return name


def parse_version(name: str) -> tuple[str, int]:
    """Validate a crypto key version name; returns (crypto key name, version number)."""
    m = _VERSION.fullmatch(name)
    if not m or not _VERSION_ID.fullmatch(m["version"]):
        raise invalid(
            f"Resource name [{name}] does not match "
            "projects/*/locations/*/keyRings/*/cryptoKeys/*/cryptoKeyVersions/*."
        )
    key_name, _, version = name.rpartition("/cryptoKeyVersions/")
    return parse_crypto_key(key_name), int(version)
