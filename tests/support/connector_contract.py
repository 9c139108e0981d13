"""The contract every connector passes: one suite, run against each source (fakes and real RT/IMAP).

A connector's test module provides a ``harness`` fixture (a :class:`SourceHarness` that drives the source
system directly: creates tickets, reads back notes and tags) and a test class inheriting
:class:`ConnectorContract`::

    @pytest.fixture
    def harness(...) -> Iterator[ZendeskHarness]: ...

    class TestZendeskContract(ConnectorContract):
        pass

HTTP sources are tested against local servers that reproduce the documented API (pagination, auth,
errors) over real sockets on 127.0.0.1; the fault tests run where the harness can inject faults
(``supports_faults``). Nothing here patches functions.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import pytest

from connectors.base import (
    AuthError,
    BadResponse,
    Connector,
    ConnectorError,
    NotFound,
    PullPage,
    RateLimited,
    ServerError,
    SourceTimeout,
    WriteBack,
)
from ticketfleet.core.inbound import InboundTicket

Fault = Literal["429", "500", "malformed", "timeout"]


class SourceHarness(ABC):
    """Drives one source system for the contract suite."""

    # How many tickets one pull page holds for the connector the harness builds (small, to exercise paging).
    page_size: ClassVar[int] = 3
    # Whether inject_fault works (local fake servers); real servers (RT, IMAP) cannot be told to fail.
    supports_faults: ClassVar[bool] = False
    # Whether the source has per-ticket labels (tags / fields) the connector writes.
    supports_labels: ClassVar[bool] = True
    # Whether bad credentials can be tested (a source without authentication sets False).
    supports_auth: ClassVar[bool] = True

    def __init__(self) -> None:
        # Every sleep the connector's HTTP layer asked for (Retry-After, backoff), recorded instead of slept.
        self.sleeps: list[float] = []

    @abstractmethod
    def connector(self, *, valid_credentials: bool = True) -> Connector:
        """A connector for this source, with ``self.sleeps.append`` as its sleep function where it has one."""

    @abstractmethod
    def create_ticket(self, *, subject: str, text: str, requester_email: str | None = None) -> str:
        """Create a customer ticket in the source; return its external id as the connector reports it."""

    @abstractmethod
    def add_customer_message(self, external_id: str, text: str) -> None:
        """Append a customer reply to an existing ticket."""

    @abstractmethod
    def notes(self, external_id: str) -> list[str]:
        """Bodies of the internal notes / private comments / drafts on the ticket, oldest first."""

    @abstractmethod
    def public_replies(self, external_id: str) -> list[str]:
        """Bodies of public replies sent to the customer by anyone other than the customer."""

    def labels(self, external_id: str) -> set[str]:
        """Tags on the ticket, plus custom field values as ``name=value``."""
        raise NotImplementedError

    def inject_fault(self, fault: Fault, *, count: int = 1, retry_after: float | None = None) -> None:
        """Make the next ``count`` API requests fail this way."""
        raise NotImplementedError

    def missing_ticket_id(self) -> str:
        """An external id that exists nowhere in the source."""
        return "999999999"


def pull_all(
    connector: Connector, cursor: str | None = None, *, max_pages: int = 200
) -> tuple[list[PullPage], str | None]:
    pages: list[PullPage] = []
    for _ in range(max_pages):
        page = connector.pull(cursor)
        pages.append(page)
        cursor = page.cursor if page.cursor is not None else cursor
        if not page.has_more:
            return pages, cursor
    raise AssertionError(f"pull did not finish within {max_pages} pages")


def _ids(pages: list[PullPage]) -> list[str]:
    return [item.external_id for page in pages for item in page.items]


def _by_id(pages: list[PullPage]) -> dict[str, InboundTicket]:
    return {item.external_id: item for page in pages for item in page.items}


def _unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


class ConnectorContract:
    """Inherit in a ``Test…`` class next to a ``harness`` fixture."""

    # --- pull -------------------------------------------------------------------------------------

    def test_pull_returns_created_ticket_normalised(self, harness: SourceHarness) -> None:
        text = _unique("My parcel never arrived, order 4471")
        ext = harness.create_ticket(
            subject="Where is my parcel", text=text, requester_email="ana@example.com"
        )
        pages, _ = pull_all(harness.connector())
        tickets = _by_id(pages)
        assert ext in tickets, f"created ticket {ext} not pulled; got {sorted(tickets)}"
        ticket = tickets[ext]
        assert isinstance(ticket, InboundTicket)
        assert any(m.role == "customer" and text in m.text for m in ticket.messages)
        assert ticket.channel == "ticket", "a ticket created in the source is a ticket, not a chat"

    def test_pull_pages_through_everything_without_gaps(self, harness: SourceHarness) -> None:
        created = {
            harness.create_ticket(subject=f"Paging {i}", text=_unique(f"paging ticket {i}"))
            for i in range(harness.page_size * 2 + 1)
        }
        pages, _ = pull_all(harness.connector())
        assert len(pages) >= 3, "page_size tickets per page: 2×page_size+1 tickets need three pages"
        missing = created - set(_ids(pages))
        assert not missing, f"tickets never pulled: {sorted(missing)}"

    def test_pull_from_final_cursor_sees_new_ticket_and_follow_up(self, harness: SourceHarness) -> None:
        first = harness.create_ticket(subject="First", text=_unique("first ticket"))
        connector = harness.connector()
        _, cursor = pull_all(connector)
        assert cursor is not None, "a finished pull must leave a cursor to resume from"
        second = harness.create_ticket(subject="Second", text=_unique("second ticket"))
        follow_up = _unique("any news on this?")
        harness.add_customer_message(first, follow_up)
        pages, _ = pull_all(connector, cursor)
        tickets = _by_id(pages)
        assert second in tickets, "a ticket created after the cursor must be pulled"
        assert first in tickets, "a ticket with a new customer message must be pulled again"
        assert any(follow_up in m.text for m in tickets[first].messages)

    # --- push -------------------------------------------------------------------------------------

    def _write_back(self, ext: str, note: str | None = None) -> WriteBack:
        return WriteBack(
            ticket_external_id=ext,
            tags=["tf-lang-en", "tf-intent-shipping"],
            fields={"priority": "high", "language": "en"},
            note=note
            if note is not None
            else _unique("Draft reply: we are sorry, the parcel is on its way."),
            idempotency_key=uuid.uuid4().hex,
        )

    def test_push_writes_an_internal_note_never_a_public_reply(self, harness: SourceHarness) -> None:
        ext = harness.create_ticket(subject="Parcel", text=_unique("where is my parcel"))
        write_back = self._write_back(ext)
        receipt = harness.connector().push(write_back)
        assert write_back.note is not None
        notes = harness.notes(ext)
        assert sum(write_back.note in n for n in notes) == 1, notes
        assert not any(write_back.note in r for r in harness.public_replies(ext)), "a draft went public"
        assert receipt.deduplicated is False

    def test_push_twice_leaves_one_note(self, harness: SourceHarness) -> None:
        ext = harness.create_ticket(subject="Parcel", text=_unique("where is my parcel"))
        write_back = self._write_back(ext)
        connector = harness.connector()
        connector.push(write_back)
        again = connector.push(write_back)
        assert again.deduplicated is True
        assert write_back.note is not None
        assert sum(write_back.note in n for n in harness.notes(ext)) == 1

    def test_push_applies_labels(self, harness: SourceHarness) -> None:
        if not harness.supports_labels:
            pytest.skip("this source has no per-ticket labels")
        ext = harness.create_ticket(subject="Parcel", text=_unique("where is my parcel"))
        harness.connector().push(self._write_back(ext))
        labels = harness.labels(ext)
        assert {"tf-lang-en", "tf-intent-shipping"} <= labels or "priority=high" in labels, labels

    def test_push_to_missing_ticket_is_not_found(self, harness: SourceHarness) -> None:
        with pytest.raises(NotFound):
            harness.connector().push(self._write_back(harness.missing_ticket_id()))

    # --- check and auth -------------------------------------------------------------------------

    def test_check_describes_the_source(self, harness: SourceHarness) -> None:
        description = harness.connector().check()
        assert isinstance(description, str) and description.strip()

    def test_bad_credentials_raise_auth_error(self, harness: SourceHarness) -> None:
        if not harness.supports_auth:
            pytest.skip("this source has no authentication")
        connector = harness.connector(valid_credentials=False)
        with pytest.raises(AuthError):
            connector.check()
        with pytest.raises(AuthError):
            connector.pull(None)

    # --- faults (local fake servers) --------------------------------------------------------------

    def _needs_faults(self, harness: SourceHarness) -> None:
        if not harness.supports_faults:
            pytest.skip("this source cannot be told to fail")

    def test_429_retry_after_is_honoured(self, harness: SourceHarness) -> None:
        self._needs_faults(harness)
        ext = harness.create_ticket(subject="Rate", text=_unique("rate limited"))
        harness.inject_fault("429", count=1, retry_after=7)
        pages, _ = pull_all(harness.connector())
        assert ext in _ids(pages)
        assert 7 in harness.sleeps, f"Retry-After: 7 not honoured; slept {harness.sleeps}"

    def test_5xx_is_retried_with_backoff(self, harness: SourceHarness) -> None:
        self._needs_faults(harness)
        ext = harness.create_ticket(subject="Flaky", text=_unique("server error"))
        harness.inject_fault("500", count=2)
        pages, _ = pull_all(harness.connector())
        assert ext in _ids(pages)
        assert len(harness.sleeps) >= 2

    def test_persistent_5xx_raises_server_error(self, harness: SourceHarness) -> None:
        self._needs_faults(harness)
        harness.inject_fault("500", count=50)
        with pytest.raises(ServerError):
            harness.connector().pull(None)

    def test_malformed_json_is_bad_response(self, harness: SourceHarness) -> None:
        self._needs_faults(harness)
        harness.inject_fault("malformed", count=1)
        with pytest.raises(BadResponse):
            harness.connector().pull(None)

    def test_timeout_is_retryable_then_raised(self, harness: SourceHarness) -> None:
        self._needs_faults(harness)
        harness.inject_fault("timeout", count=50)
        with pytest.raises(SourceTimeout):
            harness.connector().pull(None)

    def test_errors_belong_to_the_documented_tree(self, harness: SourceHarness) -> None:
        self._needs_faults(harness)
        harness.inject_fault("429", count=50, retry_after=100_000)
        with pytest.raises(RateLimited) as caught:
            harness.connector().pull(None)
        assert isinstance(caught.value, ConnectorError)
