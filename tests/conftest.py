"""Shared fixtures: real PostgreSQL and Redis, a migrated throwaway database, the tiny Qwen2.5 model.

Services: ``TICKETFLEET_DATABASE_URL`` / ``TICKETFLEET_REDIS_URL`` when set (CI points them at the
machine's PostgreSQL and Redis), else embedded servers started from the pip wheels. Either way each
test session works in a database of its own, created here and dropped at the end. The Redis given to
the tests is flushed by the fault tests: do not point it at one you care about.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.orm import Session

from db.migrate import upgrade
from db.session import get_engine, normalise_url
from tests.fakes.zendesk import FakeZendesk
from tests.support.audit import truncate_tables
from ticketfleet.core.settings import Settings
from ticketfleet.services import EmbeddedServices, redis_client

REPO_ROOT = Path(__file__).resolve().parent.parent
# One PII vault key per test session, in the environment so that every Settings() (the fixture's, the
# CLI's get_settings(), worker subprocesses) agrees on it. Production must set its own.
os.environ.setdefault("TICKETFLEET_PII_KEY", base64.b64encode(os.urandom(32)).decode())
TABLES = (
    "write_backs",
    "source_health",
    "pii_vault",
    "audit_events",
    "audit_chain_head",
    "drafts",
    "triage_results",
    "work_items",
    "messages",
    "tickets",
    "connector_cursors",
    "sources",
)


def _psycopg_url(url: str) -> str:
    return normalise_url(url).replace("postgresql+psycopg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database (keeps host/socket query parameters)."""
    base, _, query = url.partition("?")
    prefix = base.rsplit("/", 1)[0]
    return f"{prefix}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServices | None]:
    if os.environ.get("TICKETFLEET_DATABASE_URL") and os.environ.get("TICKETFLEET_REDIS_URL"):
        yield None
        return
    services = EmbeddedServices(tmp_path_factory.mktemp("embedded"))
    yield services
    services.stop()


@pytest.fixture(scope="session")
def server_urls(embedded: EmbeddedServices | None) -> tuple[str, str]:
    if embedded is None:
        return os.environ["TICKETFLEET_DATABASE_URL"], os.environ["TICKETFLEET_REDIS_URL"]
    urls = embedded.start()
    return (
        os.environ.get("TICKETFLEET_DATABASE_URL", urls.database_url),
        os.environ.get("TICKETFLEET_REDIS_URL", urls.redis_url),
    )


@pytest.fixture(scope="session")
def fresh_database(server_urls: tuple[str, str]) -> Iterator[object]:
    """A factory of empty databases on the test server; all are dropped at session end."""
    created: list[str] = []
    admin = _psycopg_url(server_urls[0])

    def make() -> str:
        name = f"tf_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _with_database(normalise_url(server_urls[0]), name)

    yield make
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(fresh_database) -> str:  # type: ignore[no-untyped-def]
    url: str = fresh_database()
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def redis_url(server_urls: tuple[str, str]) -> str:
    return server_urls[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ticketfleet.testing.tiny_qwen import build_tiny_qwen

    cache = Path(os.environ.get("TICKETFLEET_TEST_CACHE", REPO_ROOT / ".ticketfleet" / "test-cache"))
    cache.mkdir(parents=True, exist_ok=True)
    # Untied output layer: greedy drafts are (random but) non-empty, so the fleet stores drafts.
    return build_tiny_qwen(cache, tied=False)


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str, tiny_model_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        model=str(tiny_model_dir),
        max_new_tokens=8,
        batch_size=4,
        max_wait_ms=20,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture(scope="session")
def engine(settings: Settings):  # type: ignore[no-untyped-def]
    from ticketfleet.engine import TransformersEngine

    return TransformersEngine.from_settings(settings)


@pytest.fixture
def clean_db(database_url: str) -> Iterator[str]:
    """For code that commits on its own: the tables are emptied after the test."""
    yield database_url
    with get_engine(database_url).begin() as conn:
        truncate_tables(conn, TABLES)  # audit_events refuses TRUNCATE; see tests/support/audit.py


@pytest.fixture
def db_session(database_url: str) -> Iterator[Session]:
    """A session inside a transaction rolled back after the test (commits become savepoints)."""
    connection = get_engine(database_url).connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture
def flushed_redis(redis_url: str) -> Iterator[str]:
    client = redis_client(redis_url)
    client.flushall()
    yield redis_url
    client.flushall()


@pytest.fixture
def zendesk() -> Iterator[tuple[FakeZendesk, str]]:
    """A running fake Zendesk and its base URL (tests/fakes/zendesk.py), for connector and CLI tests."""
    api = FakeZendesk()
    with api.running() as base_url:
        yield api, base_url
