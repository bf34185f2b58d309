"""The idempotent inbox: an event's receivers commit their work once, however often it arrives.

For a subscription made with ``inbox=True`` the daemon records the envelope id in the
same database transaction as the receivers' work. A redelivered event finds its id
there and is acked without running the receivers again; a receiver that raises rolls
the id back with its work, so the retry runs in full.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.db import DEFAULT_DB_ALIAS, IntegrityError, transaction
from django.utils import timezone

from broadcaster.envelope import Envelope
from broadcaster.models import InboxEntry

__all__ = ["prune", "run_once"]

logger = logging.getLogger(__name__)


def run_once(envelope: Envelope, receivers: Callable[[], None], using: str = DEFAULT_DB_ALIAS) -> bool:
    """Run `receivers` in one transaction with the inbox row; False if already handled."""
    with transaction.atomic(using=using):
        try:
            with transaction.atomic(using=using):
                InboxEntry.objects.using(using).create(
                    key=InboxEntry.key_for(envelope.source, envelope.id),
                    event_id=envelope.id,
                    event_type=envelope.type,
                    source=envelope.source,
                )
        except IntegrityError:
            logger.info("skipped %s %s: already handled (inbox)", envelope.type, envelope.id)
            return False
        receivers()
    return True


def prune(retention: float, using: str = DEFAULT_DB_ALIAS) -> int:
    """Delete inbox rows older than `retention` seconds; return how many."""
    cutoff = timezone.now() - timedelta(seconds=retention)
    deleted, _ = InboxEntry.objects.using(using).filter(handled_at__lt=cutoff).delete()
    return deleted
