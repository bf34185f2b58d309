"""The stale-event guard: an ordered subscription skips an event older than one it applied.

For replicated models (``subscribe(..., ordered=True, version_field="revision")``). The
newest version applied per partition key is recorded in the same database transaction as
the receivers' work, as the inbox records ids: a replayed or backfilled event that is
not newer than the recorded one is acknowledged without running the receivers.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from collections.abc import Callable

from django.db import DEFAULT_DB_ALIAS, transaction

from broadcaster.envelope import Envelope
from broadcaster.exceptions import RejectedMessage
from broadcaster.models import AppliedVersion

__all__ = ["encode", "run_if_newer"]

logger = logging.getLogger(__name__)

_INT_OFFSET = 2**63


def encode(version: object) -> str:
    """`version` as text whose order is the versions' order (ints, dates and datetimes)."""
    if isinstance(version, int) and not isinstance(version, bool):
        if not -_INT_OFFSET <= version < _INT_OFFSET:
            raise RejectedMessage("schema-violation", f"version {version} is outside the 64-bit range")
        return f"i{version + _INT_OFFSET:020d}"
    if isinstance(version, datetime.datetime):
        aware = version if version.tzinfo else version.replace(tzinfo=datetime.UTC)
        return "t" + aware.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    if isinstance(version, datetime.date):
        return "t" + version.isoformat() + "T00:00:00.000000"
    raise RejectedMessage("schema-violation", f"version {version!r} is not an int, date or datetime")


def run_if_newer(
    envelope: Envelope, version: object, receivers: Callable[[], None], using: str = DEFAULT_DB_ALIAS
) -> bool:
    """Run `receivers` and record `version` in one transaction, unless it is not newer; return whether they ran.

    Events without a partition key have no entity to compare with: their receivers just run.
    """
    key = envelope.partition_key
    if key is None:
        receivers()
        return True
    encoded = encode(version)
    digest = hashlib.sha256(f"{len(envelope.type)}:{envelope.type}{key}".encode("utf-8", "surrogatepass")).hexdigest()
    with transaction.atomic(using=using):
        applied = AppliedVersion.objects.using(using).select_for_update().filter(key=digest).first()
        if applied is not None and applied.version >= encoded:
            logger.info(
                "skipped stale %s %s: version %s of key %r is not newer than the applied %s",
                envelope.type,
                envelope.id,
                version,
                key,
                applied.version,
            )
            return False
        receivers()
        if applied is None:
            AppliedVersion.objects.using(using).create(
                key=digest, scope=envelope.type, partition_key=key, version=encoded
            )
        else:
            applied.version = encoded
            applied.save(update_fields=["version", "updated_at"])
    return True
