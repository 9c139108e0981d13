"""Scaffolding shared by the connector tests that talk to the local fake APIs of ``tests/fakes/``.

* :class:`FakeApiHarness` — a :class:`SourceHarness` over one running fake: it opens the HTTP clients
  its connectors use (closed with it), builds a :class:`SourceHttp` that records sleeps instead of
  sleeping, and forwards fault injection to the fake;
* :func:`serve_harness` — the body of a ``harness`` fixture: start the fake, yield the harness, close;
* :func:`registry_http` — the client the core registry hands ``from_config`` (no credentials);
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

import httpx

from connectors.http import RetryPolicy, SourceHttp
from tests.fakes.server import FakeApi
from tests.support.connector_contract import Fault, SourceHarness

FakeT = TypeVar("FakeT", bound=FakeApi)
HarnessT = TypeVar("HarnessT", bound="FakeApiHarness[Any]")
CLIENT_TIMEOUT = 0.5  # seconds: the fakes answer at once; a hang should fail the test fast


def registry_http(base_url: str) -> SourceHttp:
    """What the core registry hands from_config: base URL and timeout, no credentials."""
    return SourceHttp(httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT), source="registry")


class FakeApiHarness(SourceHarness, Generic[FakeT]):
    supports_faults = True
    # The connector's source name in the tests (it appears in error messages and SourceHttp).
    source_name: ClassVar[str]

    def __init__(self, api: FakeT, base_url: str) -> None:
        super().__init__()
        self.api = api
        self.base_url = base_url
        self.clients: list[httpx.Client] = []

    def open_client(self, **client_options: Any) -> httpx.Client:
        """An httpx client on the fake (auth, headers, timeout as given); closed with the harness."""
        client = httpx.Client(base_url=self.base_url, **({"timeout": CLIENT_TIMEOUT} | client_options))
        self.clients.append(client)
        return client

    def retrying_http(self, **client_options: Any) -> SourceHttp:
        """A SourceHttp with a short retry policy, a fixed jitter seed and sleeps recorded in ``sleeps``."""
        return SourceHttp(
            self.open_client(**client_options),
            source=self.source_name,
            retry=RetryPolicy(max_retries=3, backoff_base=0.01),
            sleep=self.sleeps.append,
            rng=random.Random(7),
        )

    def inject_fault(self, fault: Fault, *, count: int = 1, retry_after: float | None = None) -> None:
        self.api.inject_fault(fault, count=count, retry_after=retry_after)

    def close(self) -> None:
        for client in self.clients:
            client.close()


def serve_harness(make: Callable[[FakeT, str], HarnessT], api: FakeT) -> Iterator[HarnessT]:
    """Run ``api`` on a local port and yield the harness built on it; its clients close afterwards."""
    with api.running() as base_url:
        harness = make(api, base_url)
        try:
            yield harness
        finally:
            harness.close()
