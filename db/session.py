"""Engines and sessions. One engine per process and URL; psycopg 3 is the only driver."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}


def normalise_url(url: str) -> str:
    """Accept the URL forms people paste (postgres://, postgresql://) and pin the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if not url.startswith("postgresql+psycopg://"):
        scheme = url.split("://", 1)[0]
        raise ValueError(f"unsupported database URL scheme {scheme!r}: ticketfleet stores in PostgreSQL only")
    return url


def get_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url not in _engines:
        # pool_pre_ping: workers live for days and Postgres restarts; a dead pooled connection must
        # not fail a batch.
        _engines[url] = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    return _engines[url]


def session_factory(url: str) -> sessionmaker[Session]:
    # One per URL: a sessionmaker defines a new Session subclass, which SQLAlchemy's event system sets
    # up class by class (about a millisecond; the API opens two transactions per chat message).
    url = normalise_url(url)
    if url not in _factories:
        _factories[url] = sessionmaker(get_engine(url), expire_on_commit=False)
    return _factories[url]


@contextmanager
def transaction(url: str) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any exception."""
    with session_factory(url).begin() as session:
        yield session


def dispose_engines() -> None:
    """Forget pooled connections. Called in a worker child after fork: sockets are never shared."""
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()
    _factories.clear()
