"""Shared fixtures: real PostgreSQL and Redis, a migrated throwaway database, the tiny Qwen2.5 model
and a stub engine.

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
from db.models import Base
from db.session import get_engine, normalise_url
from tests.fakes.engine import STUB_MODEL_ID, StubEngine
from tests.fakes.zendesk import FakeZendesk
from tests.support.audit import truncate_tables
from ticketfleet.core.settings import Settings
from ticketfleet.services import EmbeddedServices, redis_client

REPO_ROOT = Path(__file__).resolve().parent.parent
# One PII vault key per test session, in the environment so that every Settings() (the fixture's, the
# CLI's get_settings(), worker subprocesses) agrees on it. Production must set its own.
os.environ.setdefault("TICKETFLEET_PII_KEY", base64.b64encode(os.urandom(32)).decode())
# Every table of the store, children first (the reverse of SQLAlchemy's dependency order), so a test
# that commits can be cleaned up after; a table added to db/models.py is included without edits here.
# Alembic's own bookkeeping table is not a model, and is excluded should it ever become one.
TABLES = tuple(
    table.name for table in reversed(Base.metadata.sorted_tables) if table.name != "alembic_version"
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


def _service_settings(database_url: str, redis_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {"max_new_tokens": 8, "batch_size": 4, "max_wait_ms": 20}
    values.update(overrides)
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        _env_file=None,  # type: ignore[call-arg]
        **values,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
def store_settings(database_url: str, redis_url: str) -> Settings:
    """Settings for the test database and Redis with the stub engine as ``engine_factory``: for tests
    that drive the pipeline with ``stub_engine``, so they load neither the tiny model nor torch."""
    return _service_settings(
        database_url, redis_url, model=STUB_MODEL_ID, engine_factory="tests.fakes.engine:make"
    )


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str, tiny_model_dir: Path) -> Settings:
    """Settings for the test database and Redis with the tiny Qwen2.5 model: for tests that run the
    real engine or worker processes."""
    return _service_settings(database_url, redis_url, model=str(tiny_model_dir))


@pytest.fixture(scope="session")
def engine(settings: Settings):  # type: ignore[no-untyped-def]
    from ticketfleet.engine import TransformersEngine

    return TransformersEngine.from_settings(settings)


@pytest.fixture
def stub_engine() -> StubEngine:
    """A deterministic engine without a model (tests/fakes/engine.py); fresh per test (it records calls)."""
    return StubEngine()


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
