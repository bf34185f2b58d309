"""Which outbox relay of a database publishes now, and whether the database lets it.

One relay of a database publishes at a time, so rows leave in id order: a transaction
holding PostgreSQL's advisory lock (``pg_try_advisory_xact_lock``), MySQL's ``GET_LOCK``
around a READ COMMITTED transaction, or on SQLite an exclusive ``flock()`` of a file
beside the database. None of these is a lock a business write waits for. See outbox.py
for why, and for what each database does with the rows.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # Windows: SQLite relays go on without their lock file
    fcntl = None  # type: ignore[assignment]

from django.db import DatabaseError, connections, transaction

from broadcaster.exceptions import ConfigurationError

__all__ = ["file_turn", "require_skip_locked", "skip_locked_problem", "turn"]

logger = logging.getLogger(__name__)

_ADVISORY_LOCK_KEY = 0x6272_6F61_6463_7374  # "broadcst": one key for every relay of a database


@contextmanager
def turn(using: str) -> Iterator[bool]:
    """A transaction in which this relay may publish (True) or another relay has the turn (False).

    One relay of a database publishes at a time, so rows leave in id order. On
    PostgreSQL the advisory lock is the transaction's, freed by the commit that stamps
    the rows. MySQL's GET_LOCK belongs to the session, not the transaction: it is taken
    before the transaction and released after it ends (in `finally`, whatever happened),
    so the next relay reads only rows whose stamps committed.
    """
    connection = connections[using]
    if connection.vendor != "mysql":
        with transaction.atomic(using=using):
            yield _try_xact_lock(using) if connection.vendor == "postgresql" else True
        return
    name = _mysql_lock_name(connection.settings_dict["NAME"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT GET_LOCK(%s, 0)", [name])
        row = cursor.fetchone()
    mine = bool(row and row[0] == 1)
    try:
        if mine:
            _read_committed_next(using)
        with transaction.atomic(using=using):
            yield mine
    finally:
        if mine:
            _release_mysql_lock(using, name)


@contextmanager
def file_turn(using: str) -> Iterator[bool]:
    """SQLite's turn: an exclusive flock() of ``<database>.relay-lock``, beside the database.

    It is not the database's lock, so no send() waits on it; it serializes the relays
    of every process on this machine. Where it cannot be had (no fcntl, a read-only
    directory, an in-memory database) relays go on without it: two of them may then
    publish the same rows (at least once).
    """
    path = _lock_path(connections[using].settings_dict["NAME"])
    try:
        handle = None if path is None else open(path, "a")  # noqa: SIM115 - closed in finally
    except OSError:
        handle = None
    if handle is None:
        yield True
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        handle.close()  # releases the flock


def _lock_path(database: object) -> str | None:
    name = str(database)
    if fcntl is None or not name or name == ":memory:" or "mode=memory" in name:
        return None
    return f"{name}.relay-lock"


def _try_xact_lock(using: str) -> bool:
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])
        row = cursor.fetchone()
    return bool(row and row[0])


def _mysql_lock_name(database: str) -> str:
    # GET_LOCK names are the server's, across its databases, and at most 64 characters.
    name = f"broadcaster.outbox.{database}"
    return name if len(name) <= 64 else f"broadcaster.outbox.{hashlib.sha256(database.encode()).hexdigest()[:40]}"


def _read_committed_next(using: str) -> None:
    # Under REPEATABLE READ, InnoDB's FOR UPDATE also locks the gap after the last row
    # read, which would hold up every insert of a new outbox row (every send() in outbox
    # mode) while the broker is waited for. READ COMMITTED (Django's default) takes no
    # gap lock; this makes it so for the relay's next transaction, whatever the setting.
    if not connections[using].in_atomic_block:
        with connections[using].cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")


def _release_mysql_lock(using: str, name: str) -> None:
    try:
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT RELEASE_LOCK(%s)", [name])
    except DatabaseError as exc:
        # The session is gone (a database restart): the server freed its lock with it.
        logger.debug("relay_outbox: RELEASE_LOCK failed (%s)", exc)


def require_skip_locked(using: str) -> None:
    """Raise ConfigurationError when the database cannot SKIP LOCKED (system check broadcaster.E011)."""
    problem = skip_locked_problem(using)
    if problem is not None:
        raise ConfigurationError(f"{problem} (broadcaster.E011)")


def skip_locked_problem(using: str) -> str | None:
    """Why database `using` cannot run the relay's SELECT ... FOR UPDATE SKIP LOCKED, or None.

    Connects to the database (the server version decides): call it from a check tagged
    database, never at import or in `manage.py check` without --database.
    """
    connection = connections[using]
    if connection.vendor == "sqlite":
        return None  # the relay locks no rows there
    if connection.vendor == "mysql":
        mariadb: bool = connection.mysql_is_mariadb  # type: ignore[attr-defined]
        version: tuple[int, ...] = connection.mysql_version  # type: ignore[attr-defined]
        supported = version >= ((10, 6) if mariadb else (8, 0, 1))
        server = f"{'MariaDB' if mariadb else 'MySQL'} {'.'.join(map(str, version))}"
    else:
        supported = connection.features.has_select_for_update_skip_locked
        server = connection.display_name
    if supported:
        return None
    return (
        f"database {using!r} ({server}) has no SELECT ... FOR UPDATE SKIP LOCKED, which the outbox relay "
        "needs (MariaDB 10.6+, MySQL 8.0.1+, PostgreSQL 9.5+)"
    )
