"""Backend outages: recognise "Redis/PostgreSQL is unreachable" so it becomes 503 ``store_unavailable``.

Requests that need a backend fail fast with a clear code while it is away; requests that do not
(``/v1/parse``, health checks, searches served from the in-memory index) keep answering. Nothing
has to be restarted when the backend returns: redis-py opens a new connection on the next
command, and SQLAlchemy's pool drops dead connections (``pool_pre_ping``) and connects again.
"""

from __future__ import annotations

import re

RETRY_AFTER_S = 2


class BackendUnavailable(RuntimeError):
    """Raised by our own code when a backend cannot be reached and no fallback can answer."""

    def __init__(self, message: str, backend: str = "database") -> None:
        super().__init__(message)
        self.backend = backend


def _outage_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = []
    try:
        from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

        types += [ConnectionError, TimeoutError, BusyLoadingError]
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    try:
        from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        types += [OperationalError, InterfaceError, DisconnectionError, PoolTimeout]
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        pass
    try:
        import psycopg

        types += [psycopg.OperationalError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


_OUTAGES: tuple[type[BaseException], ...] | None = None
# SQLite reports schema mistakes as OperationalError too: those are bugs, not outages
_NOT_AN_OUTAGE = re.compile(r"no such (table|column)|syntax error|unrecognized token", re.IGNORECASE)


def backend_outage(exc: BaseException) -> str | None:
    """``"redis"`` / ``"database"`` when ``exc`` (or what caused it) is a backend being unreachable."""
    global _OUTAGES
    if _OUTAGES is None:
        _OUTAGES = _outage_types()
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, _OUTAGES) and not _NOT_AN_OUTAGE.search(str(current)):
            return "redis" if type(current).__module__.startswith("redis") else "database"
        if isinstance(current, BackendUnavailable):
            return current.backend
        current = current.__cause__ or current.__context__
        seen += 1
    return None
