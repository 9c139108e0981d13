"""Drives a real RT for the connector tests: customers write in through RT's mail gateway, the harness
reads notes, replies and custom fields back through REST 2.0 as root (independently of the connector)."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, ClassVar

import httpx

from connectors.http import RetryPolicy, SourceHttp
from connectors.rt import RtConnector
from tests.support.connector_contract import SourceHarness
from tests.support.rt_server import CUSTOM_FIELDS, RtServer


class RtHarness(SourceHarness):
    page_size: ClassVar[int] = 3
    supports_faults: ClassVar[bool] = False  # a real server cannot be told to fail

    def __init__(self, server: RtServer) -> None:
        super().__init__()
        self.server = server
        self.admin = server.admin_client()
        # A queue per test: every test sees only its own tickets, whatever ran before it.
        self.queue = f"tf-{uuid.uuid4().hex[:10]}"
        self.admin.post("/queue", json={"Name": self.queue}).raise_for_status()
        self.requestors: dict[str, str] = {}
        self._connectors: list[RtConnector] = []

    def close(self) -> None:
        for connector in self._connectors:
            connector.http.client.close()
        self.admin.close()

    # --- the connector under test -------------------------------------------------------------

    def connector(
        self, *, valid_credentials: bool = True, user: tuple[str, str] | None = None, **options: Any
    ) -> RtConnector:
        """Root's auth token by default; ``user`` = (name, password) for basic auth as another user."""
        token = self.server.token if valid_credentials else "1-1-00000000000000000000000000000000"
        client = httpx.Client(
            base_url=self.server.api_url,
            headers={} if user else {"Authorization": f"token {token}"},
            auth=user,
            timeout=30,
        )
        http = SourceHttp(
            client,
            source="rt-test",
            retry=RetryPolicy(max_retries=2, backoff_base=0.01),
            sleep=self.sleeps.append,
        )
        settings: dict[str, Any] = {
            "queues": [self.queue],
            "custom_fields": CUSTOM_FIELDS,
            "page_size": self.page_size,
            **options,
        }
        connector = RtConnector("rt-test", http, **settings)
        self._connectors.append(connector)
        return connector

    # --- customers and agents -----------------------------------------------------------------

    def mail(
        self,
        *,
        sender: str,
        subject: str,
        text: str | None = None,
        html: str | None = None,
        charset: str = "utf-8",
        ticket: str | None = None,
    ) -> None:
        """Deliver an e-mail through RT's mail gateway, as the MTA's rt-mailgate would."""
        message = EmailMessage()
        message["From"] = sender
        message["To"] = "rt@ticketfleet.invalid"
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain="example.com")
        if text is not None:
            message.set_content(text, charset=charset)
        if html is not None:
            if text is None:
                message.set_content(html, subtype="html", charset=charset)
            else:
                message.add_alternative(html, subtype="html", charset=charset)
        self.deliver(message.as_bytes(), ticket=ticket)

    def deliver(self, raw: bytes, *, ticket: str | None = None, action: str = "correspond") -> None:
        form = {"queue": self.queue, "action": action, **({"ticket": ticket} if ticket else {})}
        response = httpx.post(
            f"{self.server.base_url}/REST/1.0/NoAuth/mail-gateway",
            data=form,
            # A plain form field, as rt-mailgate sends it (with a filename, Mason would see an upload).
            files={"message": (None, raw)},
            timeout=60,
        )
        response.raise_for_status()
        assert response.text.startswith("ok"), (
            f"mail gateway refused the message: {response.text}\n{self.server.log_tail()}"
        )

    def newest_ticket_from(self, sender: str) -> str:
        found = self.admin.get(
            "/tickets",
            params={
                "query": f"Queue = '{self.queue}' AND Requestor.EmailAddress = '{sender}'",
                "orderby": "id",
                "order": "DESC",
                "per_page": "1",
            },
        )
        found.raise_for_status()
        items = found.json()["items"]
        assert items, f"no ticket from {sender} in {self.queue}"
        return str(items[0]["id"])

    def create_ticket(self, *, subject: str, text: str, requester_email: str | None = None) -> str:
        sender = requester_email or f"customer-{uuid.uuid4().hex[:8]}@example.com"
        self.mail(sender=sender, subject=subject, text=text)
        ticket_id = self.newest_ticket_from(sender)
        self.requestors[ticket_id] = sender
        return ticket_id

    def create_ticket_as_agent(self, *, subject: str, text: str, requester_email: str) -> str:
        """What an agent does for a phone caller: a ticket created through REST by root, for the customer."""
        created = self.admin.post(
            "/ticket",
            json={
                "Queue": self.queue,
                "Subject": subject,
                "Requestor": requester_email,
                "Content": text,
                "ContentType": "text/plain",
            },
        )
        created.raise_for_status()
        ticket_id = str(created.json()["id"])
        self.requestors[ticket_id] = requester_email
        return ticket_id

    def add_customer_message(self, external_id: str, text: str) -> None:
        sender = self.requestors[external_id]
        self.mail(sender=sender, subject=f"Re: ticket {external_id}", text=text, ticket=external_id)

    def agent_reply(self, external_id: str, text: str) -> None:
        self.admin.post(
            f"/ticket/{external_id}/correspond", json={"Content": text, "ContentType": "text/plain"}
        ).raise_for_status()

    def agent_comment(self, external_id: str, text: str) -> None:
        self.admin.post(
            f"/ticket/{external_id}/comment", json={"Content": text, "ContentType": "text/plain"}
        ).raise_for_status()

    # --- reading back -------------------------------------------------------------------------

    def _transactions(self, external_id: str, kind: str) -> list[dict[str, Any]]:
        history = self.admin.get(
            f"/ticket/{external_id}/history",
            params={"fields": "Type,Creator", "fields[Creator]": "EmailAddress", "per_page": "100"},
        )
        history.raise_for_status()
        return [t for t in history.json()["items"] if t["Type"] == kind]

    def _contents(self, external_id: str, transaction_ids: set[str]) -> list[str]:
        attachments = self.admin.get(
            f"/ticket/{external_id}/attachments",
            params={"fields": "TransactionId,ContentType,Content", "per_page": "100"},
        )
        attachments.raise_for_status()
        return [
            a["Content"]
            for a in attachments.json()["items"]
            if str(a["TransactionId"]) in transaction_ids and a["ContentType"].startswith("text/")
        ]

    def notes(self, external_id: str) -> list[str]:
        comments = {str(t["id"]) for t in self._transactions(external_id, "Comment")}
        return self._contents(external_id, comments)

    def public_replies(self, external_id: str) -> list[str]:
        customer = self.requestors.get(external_id, "").lower()
        replies = {
            str(t["id"])
            for t in self._transactions(external_id, "Correspond")
            if str(t["Creator"].get("EmailAddress") or "").lower() != customer
        }
        return self._contents(external_id, replies)

    def custom_fields(self, external_id: str) -> dict[str, list[str]]:
        ticket = self.admin.get(f"/ticket/{external_id}")
        ticket.raise_for_status()
        return {f["name"]: list(f["values"]) for f in ticket.json()["CustomFields"]}

    def labels(self, external_id: str) -> set[str]:
        label_of = {name: label for label, name in CUSTOM_FIELDS.items()}
        return {
            f"{label_of.get(name, name)}={value}"
            for name, values in self.custom_fields(external_id).items()
            for value in values
        }
