"""The X.509 leaf an ``X509Spec`` asks for.

A Certificate and a CertificateSigningRequest are judged by the same policy as the same
`signet.api.certificate.X509Spec`; reading that spec into the `LeafRequest` pki builds
happens here once, so a name or subject attribute the spec gains cannot reach one path's
certificates and not the other's. Pure; the LeafRequest validates itself (ValueError).
"""

from __future__ import annotations

import datetime

from signet.api.certificate import X509Spec
from signet.pki.request import LeafRequest


def leaf_request(
    spec: X509Spec, *, spiffe_id: str | None, duration: datetime.timedelta
) -> LeafRequest:
    """The leaf ``spec`` names; ``spiffe_id`` is resolved by the caller (it depends on the
    issuer's trust domain and the requester's namespace), and stays out of ``uris``."""
    return LeafRequest(
        common_name=spec.common_name,
        organizations=spec.subject.organizations,
        organizational_units=spec.subject.organizational_units,
        countries=spec.subject.countries,
        provinces=spec.subject.provinces,
        localities=spec.subject.localities,
        street_addresses=spec.subject.street_addresses,
        postal_codes=spec.subject.postal_codes,
        serial_number=spec.subject.serial_number,
        dns_names=spec.dns_names,
        ip_addresses=spec.ip_addresses,
        uris=spec.uris,
        email_addresses=spec.email_addresses,
        spiffe_id=spiffe_id,
        usages=spec.usages,
        duration=duration,
    )
