"""The IMAP connector against a real Dovecot started by the tests (tests/support/imap_server.py).

Mail is delivered with IMAP APPEND, exactly as a mail server's delivery would leave it in the INBOX.
The shared contract runs first; IMAP's own behaviour (threads, MIME, charsets, UIDVALIDITY) follows.
"""

from __future__ import annotations

import base64
import email
import email.policy
import imaplib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage, Message
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.base import ConfigError, NotFound, PullPage, SourceTimeout, WriteBack
from connectors.email_message import parse_mail
from connectors.email_text import decode_bytes
from connectors.imap import ImapConnector, ImapOptions, from_config, imap_utf7
from db.ingest import ingest_tickets
from db.models import Message as DbMessage
from db.models import Ticket
from tests.support.connector_contract import ConnectorContract, SourceHarness, pull_all
from tests.support.imap_server import DovecotServer, ImapAccount, running_dovecot
from ticketfleet.core.inbound import InboundMessage

SUPPORT = "support@shop.example"


def _mailbox_arg(name: str) -> str:
    return '"' + imap_utf7(name) + '"'


def _new_id() -> str:
    return f"<{uuid.uuid4().hex}@customer.example>"


class ImapHarness(SourceHarness):
    page_size = 3
    supports_faults = False  # a real Dovecot cannot be told to answer 429
    supports_labels = True  # tags become IMAP keywords on the thread's messages

    def __init__(self, account: ImapAccount, server: DovecotServer) -> None:
        super().__init__()
        self.account = account
        self.server = server

    def connector(self, *, valid_credentials: bool = True, **overrides: object) -> ImapConnector:
        options = {
            "host": self.account.host,
            "port": self.account.port,
            "ssl": False,
            "username": self.account.username,
            "support_address": SUPPORT,
            "page_size": self.page_size,
            "timeout_seconds": 10,
            **overrides,
        }
        password = self.account.password if valid_credentials else "wrong-" + self.account.password
        return ImapConnector(
            "mail", options=ImapOptions.model_validate(options), password=SecretStr(password)
        )

    # --- delivering mail ------------------------------------------------------------------------

    def append(self, message: Message | bytes, mailbox: str = "INBOX", flags: str | None = None) -> int:
        raw = message if isinstance(message, bytes) else message.as_bytes(policy=email.policy.SMTP)
        conn = self.account.login()
        try:
            typ, data = conn.append(_mailbox_arg(mailbox), flags, imaplib.Time2Internaldate(time.time()), raw)
            assert typ == "OK", data
            match = re.search(rb"APPENDUID \d+ (\d+)", data[0])
            assert match, data
            return int(match.group(1))
        finally:
            conn.logout()

    def mail(
        self,
        text: str,
        *,
        subject: str = "Question",
        sender: str = "Ana Souza <ana@example.com>",
        message_id: str | None = None,
        in_reply_to: str | None = None,
        references: list[str] | None = None,
    ) -> EmailMessage:
        message = EmailMessage()
        message["From"] = sender
        message["To"] = SUPPORT
        message["Subject"] = subject
        message["Date"] = email.utils.formatdate()
        message["Message-ID"] = message_id or _new_id()
        if in_reply_to:
            message["In-Reply-To"] = in_reply_to
        if references:
            message["References"] = " ".join(references)
        message.set_content(text)
        return message

    def create_ticket(self, *, subject: str, text: str, requester_email: str | None = None) -> str:
        message = self.mail(text, subject=subject, sender=requester_email or "Ana Souza <ana@example.com>")
        self.append(message)
        return str(message["Message-ID"])

    def add_customer_message(self, external_id: str, text: str) -> None:
        self.append(
            self.mail(text, subject="Re: follow-up", in_reply_to=external_id, references=[external_id])
        )

    # --- reading back ---------------------------------------------------------------------------

    def messages(self, mailbox: str) -> list[tuple[int, str, Message]]:
        """(uid, flags, message) of every message in ``mailbox``."""
        conn = self.account.login()
        try:
            typ, _ = conn.select(_mailbox_arg(mailbox), readonly=True)
            assert typ == "OK", mailbox
            _, data = conn.uid("SEARCH", "ALL")
            uids = data[0].split()
            if not uids:
                return []
            _, fetched = conn.uid("FETCH", b",".join(uids).decode(), "(FLAGS BODY.PEEK[])")
        finally:
            conn.logout()
        found = []
        for item in fetched:
            if isinstance(item, tuple):
                meta = item[0].decode()
                uid = int(re.search(r"UID (\d+)", meta).group(1))  # type: ignore[union-attr]
                flags = re.search(r"FLAGS \(([^)]*)\)", meta).group(1)  # type: ignore[union-attr]
                found.append((uid, flags, email.message_from_bytes(item[1], policy=email.policy.default)))
        return found

    @staticmethod
    def _in_thread(message: Message, external_id: str) -> bool:
        linked = f"{message.get('References', '')} {message.get('In-Reply-To', '')}"
        return message.get("Message-ID") == external_id or external_id in linked

    @staticmethod
    def body_of(message: Message) -> str:
        part = message.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
        return str(part.get_content()).replace("\r\n", "\n") if part is not None else ""

    def notes(self, external_id: str) -> list[str]:
        return [self.body_of(m) for _, _, m in self.messages("Drafts") if self._in_thread(m, external_id)]

    def public_replies(self, external_id: str) -> list[str]:
        return [
            self.body_of(m)
            for box in ("INBOX", "Sent")
            for _, _, m in self.messages(box)
            if SUPPORT in str(m.get("From", "")) and self._in_thread(m, external_id)
        ]

    def labels(self, external_id: str) -> set[str]:
        return {
            flag.removeprefix("$")
            for _, flags, m in self.messages("INBOX")
            if self._in_thread(m, external_id)
            for flag in flags.split()
            if flag.startswith("$tf-")
        }

    def missing_ticket_id(self) -> str:
        return f"<missing-{uuid.uuid4().hex}@nowhere.invalid>"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    with running_dovecot() as server:
        yield server


@pytest.fixture
def harness(dovecot: DovecotServer) -> ImapHarness:
    return ImapHarness(dovecot.new_account(), dovecot)


class TestImapContract(ConnectorContract):
    pass


# --- threads ------------------------------------------------------------------------------------


def _tickets(pages: list[PullPage]) -> dict[str, list[InboundMessage]]:
    """Threads as ingest stores them: pages merged by ticket, a message seen again skipped."""
    merged: dict[str, list[InboundMessage]] = {}
    for page in pages:
        for item in page.items:
            thread = merged.setdefault(item.external_id, [])
            seen = {m.external_id for m in thread}
            thread.extend(m for m in item.messages if m.external_id not in seen)
    return merged


def test_threads_by_references_and_in_reply_to_across_pages(harness: ImapHarness) -> None:
    root, reply, orphan_root = _new_id(), _new_id(), _new_id()
    harness.append(harness.mail("My order 88 is late", subject="Late order", message_id=root))
    harness.append(harness.mail("Any news?", subject="Re: Late order", message_id=reply, references=[root]))
    # Page 2: a reply naming only its parent (no References): its root is found through the mailbox.
    only_parent = _new_id()
    harness.append(harness.mail("Still waiting", message_id=only_parent, in_reply_to=reply))
    harness.append(
        harness.mail(
            "We are checking with the courier.",
            sender=f"Shop Support <{SUPPORT}>",
            in_reply_to=only_parent,
            references=[root, reply, only_parent],
        )
    )
    # Page 3: a chain of parents two deep, and a reply whose root this mailbox never saw.
    harness.append(harness.mail("Hello??", in_reply_to=only_parent))
    harness.append(harness.mail("Reply to an old thread", in_reply_to=_new_id(), references=[orphan_root]))

    pages, _ = pull_all(harness.connector(page_size=2))
    assert len(pages) == 3
    tickets = _tickets(pages)
    assert set(tickets) == {root, orphan_root}, sorted(tickets)
    thread = tickets[root]
    assert [m.text for m in thread] == [
        "My order 88 is late",
        "Any news?",
        "Still waiting",
        "We are checking with the courier.",
        "Hello??",
    ]
    assert [m.role for m in thread] == ["customer", "customer", "customer", "agent", "customer"]
    assert thread[0].external_id == root
    assert [m.text for m in tickets[orphan_root]] == ["Reply to an old thread"]
    assert all(page.rejected == [] for page in pages)
    # However the messages fall into pages, each lands in the same thread.
    for page_size in (1, 4, 10):
        regrouped = _tickets(pull_all(harness.connector(page_size=page_size))[0])
        assert {k: [m.external_id for m in v] for k, v in regrouped.items()} == {
            k: [m.external_id for m in v] for k, v in tickets.items()
        }, f"page_size={page_size}"


def test_requester_subject_and_locale_hint(harness: ImapHarness) -> None:
    message = harness.mail(
        "Wo bleibt mein Paket?", subject="Re: Paket", sender="Jörg Weiß <JOERG@Example.de>"
    )
    message["Content-Language"] = "de-DE, en"
    harness.append(message)
    [page] = pull_all(harness.connector())[0]
    [ticket] = page.items
    assert ticket.subject == "Paket"
    assert ticket.requester is not None
    assert (ticket.requester.name, ticket.requester.email) == ("Jörg Weiß", "joerg@example.de")
    assert ticket.locale == "de-DE"
    assert ticket.source == "mail" and ticket.channel == "ticket"
    assert ticket.messages[0].created_at is not None


def test_agent_only_thread_is_reported_not_ingested(harness: ImapHarness) -> None:
    harness.append(harness.mail("Internal copy of our answer", sender=SUPPORT))
    [page] = pull_all(harness.connector())[0]
    assert page.items == []
    assert len(page.rejected) == 1 and "support address" in page.rejected[0][1]


def test_agent_reply_alone_in_a_page_comes_with_its_customer_root(harness: ImapHarness) -> None:
    root = harness.create_ticket(subject="Late", text="Where is it?")
    connector = harness.connector(page_size=1)
    _, cursor = pull_all(connector)
    harness.append(harness.mail("On its way.", sender=SUPPORT, in_reply_to=root, references=[root]))
    [page] = pull_all(connector, cursor)[0]
    [ticket] = page.items
    assert ticket.external_id == root
    assert [(m.role, m.text) for m in ticket.messages] == [
        ("customer", "Where is it?"),
        ("agent", "On its way."),
    ]


# --- MIME and charsets -----------------------------------------------------------------------------


def _raw(headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("ascii")
    return head + b"\r\n" + body


def test_multipart_html_and_charsets(harness: ImapHarness, caplog: pytest.LogCaptureFixture) -> None:
    alternative = MIMEMultipart("alternative")
    alternative.attach(MIMEText("Plain part wins.", "plain", "utf-8"))
    alternative.attach(MIMEText("<p>HTML part loses.</p>", "html", "utf-8"))
    alternative["Message-ID"] = alt_id = _new_id()
    alternative["From"] = "ana@example.com"
    alternative["Subject"] = "alternative"

    html = (
        "<html><head><style>p {color: red}</style><script>alert(1)</script></head><body>"
        "<p>Refund&nbsp;please &amp; quickly</p><div>Order&nbsp;<b>77</b><br>Thanks</div>"
        '<div class="gmail_quote">On Mon, Shop wrote:<blockquote>Old text</blockquote></div>'
        "</body></html>"
    )
    related = MIMEMultipart("related")
    related.attach(MIMEText(html, "html", "utf-8"))
    related.attach(MIMEApplication(b"\x89PNG...", "png", Name="logo.png"))
    related["Message-ID"] = html_id = _new_id()
    related["From"] = "ana@example.com"
    related["Subject"] = "html only"

    latin1_id, sjis_id, bad_id, attach_id = _new_id(), _new_id(), _new_id(), _new_id()
    latin1 = _raw(
        {
            "From": "a@example.fr",
            "Subject": "latin1",
            "Message-ID": latin1_id,
            "MIME-Version": "1.0",
            "Content-Type": "text/plain; charset=ISO-8859-1",
            "Content-Transfer-Encoding": "8bit",
        },
        # The en dash is byte 0x96: not Latin-1 but Windows-1252, which "ISO-8859-1" mail really is.
        "Grüße aus Köln, déjà vu – où est ma commande ?\r\n".encode("cp1252"),
    )
    japanese = "注文した商品がまだ届きません。①番の件です。"
    # "①" exists only in Windows' Shift_JIS (cp932), which is what mail labelled Shift_JIS really is.
    sjis = _raw(
        {
            "From": "=?shift_jis?b?"
            + base64.b64encode("山田".encode("cp932")).decode()
            + "?= <y@example.jp>",
            "Subject": "sjis",
            "Message-ID": sjis_id,
            "Content-Language": "ja",
            "MIME-Version": "1.0",
            "Content-Type": "text/plain; charset=Shift_JIS",
            "Content-Transfer-Encoding": "base64",
        },
        base64.b64encode(japanese.encode("cp932")) + b"\r\n",
    )

    bad_charset = _raw(
        {
            "From": "b@example.com",
            "Subject": "bad charset",
            "Message-ID": bad_id,
            "Content-Type": "text/plain; charset=x-no-such-charset",
        },
        b"Hello \xff\xfe world\r\n",
    )
    mixed = MIMEMultipart("mixed")
    mixed.attach(
        MIMEText("Invoice attached.\n\nOn Tue, Shop <support@shop.example> wrote:\n> old answer\n", "plain")
    )
    mixed.attach(MIMEApplication(b"%PDF-1.4", "pdf", Name="invoice.pdf"))
    forwarded = MIMEText("Text of an older, forwarded mail.", "plain")
    forwarded["Subject"] = "Fwd: old"
    mixed.attach(MIMEMessage(forwarded))  # inline message/rfc822: quoted material, not the message
    mixed["Message-ID"] = attach_id
    mixed["From"] = "c@example.com"
    mixed["Subject"] = "attachment"

    for message in (alternative, related, latin1, sjis, bad_charset, mixed):
        harness.append(message)
    with caplog.at_level(logging.WARNING, logger="connectors.imap"):
        pages, _ = pull_all(harness.connector(page_size=10))
    texts = {ext: [m.text for m in messages] for ext, messages in _tickets(pages).items()}
    assert texts[alt_id] == ["Plain part wins."]
    assert texts[html_id] == ["Refund please & quickly\n\nOrder 77\nThanks"]
    assert texts[latin1_id] == ["Grüße aus Köln, déjà vu – où est ma commande ?"]
    assert texts[sjis_id] == [japanese]
    assert texts[attach_id] == ["Invoice attached."]
    assert texts[bad_id] == ["Hello �� world"]
    assert "x-no-such-charset" in caplog.text, "an undecodable charset must be recorded"
    sjis_ticket = next(item for page in pages for item in page.items if item.external_id == sjis_id)
    assert sjis_ticket.requester is not None and sjis_ticket.requester.name == "山田"
    assert sjis_ticket.locale == "ja"


def test_encoded_word_subjects(harness: ImapHarness) -> None:
    subjects = {
        "=?UTF-8?B?w5xiZXJ3ZWlzdW5nIGZlaGxnZXNjaGxhZ2Vu?=": "Überweisung fehlgeschlagen",
        "=?ISO-8859-1?Q?Probl=E8me_de_livraison?= =?ISO-8859-1?Q?_urgent?=": "Problème de livraison urgent",
        "Re: =?iso-2022-jp?b?GyRCJDMkcyRLJEEkTxsoQg==?=": "こんにちは",
        "=?utf-8?q?broken?= =?no-such-charset?q?x?=": "broken",
    }
    ids = {}
    for encoded in subjects:
        ids[encoded] = _new_id()
        harness.append(
            _raw({"From": "a@example.com", "Subject": encoded, "Message-ID": ids[encoded]}, b"Hi\r\n")
        )
    pages, _ = pull_all(harness.connector(page_size=10))
    by_id = {item.external_id: item for page in pages for item in page.items}
    for encoded, expected in subjects.items():
        subject = by_id[ids[encoded]].subject
        assert subject is not None and subject.startswith(expected), (encoded, subject)


# --- bad input and cursors ----------------------------------------------------------------------


def test_malformed_messages_are_rejected_without_stopping_the_page(harness: ImapHarness) -> None:
    good_first = harness.create_ticket(subject="one", text="first good message")
    no_boundary = _raw(
        {"From": "x@example.com", "Message-ID": _new_id(), "Content-Type": "multipart/mixed"},
        b"--nothing here\r\n",
    )
    only_attachment = MIMEMultipart("mixed")
    only_attachment.attach(MIMEApplication(b"\x00\x01", "octet-stream", Name="blob.bin"))
    only_attachment["Message-ID"] = _new_id()
    garbage = b"\xff\xfe\x00 this is not a mail at all"
    no_message_id = _raw({"From": "z@example.com", "Subject": "no id"}, b"Where is my refund?\r\n")
    for raw in (no_boundary, only_attachment, garbage, no_message_id):
        harness.append(raw)
    good_last = harness.create_ticket(subject="two", text="last good message")

    connector = harness.connector(page_size=10)
    [page] = pull_all(connector)[0]
    ids = [item.external_id for item in page.items]
    assert good_first in ids and good_last in ids
    reasons = [reason for _, reason in page.rejected]
    assert len(reasons) == 3, page.rejected
    assert any("NoBoundaryInMultipartDefect" in r for r in reasons)
    assert any("blob.bin" in r for r in reasons)
    assert any("no header fields" in r for r in reasons)
    synthetic = [i for i in ids if i.endswith("@ticketfleet.invalid>")]
    assert len(synthetic) == 1, ids
    # The synthesised id is stable: a re-read (crash and retry) produces the same one.
    assert synthetic[0] in [item.external_id for item in pull_all(connector)[0][0].items]


def test_automatic_replies_are_reported_not_triaged(harness: ImapHarness) -> None:
    root = harness.create_ticket(subject="Refund", text="refund please")
    out_of_office = harness.mail("I am away until Monday.", in_reply_to=root, references=[root])
    out_of_office["Auto-Submitted"] = "auto-replied"
    harness.append(out_of_office)
    bounce = _raw(
        {
            "From": "MAILER-DAEMON@mx.example",
            "Message-ID": _new_id(),
            "Content-Type": 'multipart/report; report-type=delivery-status; boundary="b"',
        },
        b"--b\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n--b--\r\n",
    )
    harness.append(bounce)
    [page] = pull_all(harness.connector(page_size=10))[0]
    assert [[m.text for m in item.messages] for item in page.items] == [["refund please"]]
    reasons = sorted(reason for _, reason in page.rejected)
    assert reasons == [
        "not triaged: Auto-Submitted: auto-replied",
        "not triaged: a delivery or read report (multipart/report)",
    ]


def test_cursor_resumes_and_uidvalidity_change_restarts(harness: ImapHarness) -> None:
    conn = harness.account.login()
    assert conn.create(_mailbox_arg("Support"))[0] == "OK"
    conn.logout()
    first = harness.mail("first", message_id=_new_id())
    harness.append(first, mailbox="Support")
    harness.append(harness.mail("second"), mailbox="Support")
    connector = harness.connector(mailbox="Support")
    _, cursor = pull_all(connector)
    assert cursor is not None and re.fullmatch(r"\d+:2", cursor)
    assert pull_all(connector, cursor)[0][0].items == [], "nothing new after the final cursor"

    # Recreate the mailbox: UIDs restart at 1 under a new UIDVALIDITY.
    conn = harness.account.login()
    assert conn.delete(_mailbox_arg("Support"))[0] == "OK"
    assert conn.create(_mailbox_arg("Support"))[0] == "OK"
    conn.logout()
    after = harness.mail("after the rebuild")
    harness.append(after, mailbox="Support")
    pages, new_cursor = pull_all(connector, cursor)
    assert [i.external_id for p in pages for i in p.items] == [after["Message-ID"]]
    assert new_cursor is not None and new_cursor.split(":")[0] != cursor.split(":")[0]


def test_bad_cursor_is_a_config_error(harness: ImapHarness) -> None:
    with pytest.raises(ConfigError, match="UIDVALIDITY:UID"):
        harness.connector().pull("yesterday")


def test_mail_deleted_before_the_pull_is_skipped(harness: ImapHarness) -> None:
    harness.append(harness.mail("spam spam spam"), flags="(\\Deleted)")
    kept = harness.create_ticket(subject="real", text="a real question")
    pages, cursor = pull_all(harness.connector())
    assert [i.external_id for p in pages for i in p.items] == [kept]
    assert cursor is not None and cursor.endswith(":2")


def test_pull_does_not_mark_mail_read(harness: ImapHarness) -> None:
    harness.create_ticket(subject="unread", text="please keep me unread")
    pull_all(harness.connector())
    [(_, flags, _)] = harness.messages("INBOX")
    assert "\\Seen" not in flags


# --- write-back ---------------------------------------------------------------------------------


def test_draft_is_a_reply_in_drafts_with_key_and_draft_flag(harness: ImapHarness) -> None:
    root = harness.create_ticket(
        subject="Broken kettle", text="It leaks", requester_email="Bo <bo@example.com>"
    )
    harness.add_customer_message(root, "Any update?")
    write_back = WriteBack(
        ticket_external_id=root,
        tags=["tf-intent-refund"],
        note="Draft: sorry about the kettle.",
        idempotency_key="k1",
    )
    receipt = harness.connector().push(write_back)
    [(_, flags, draft)] = harness.messages("Drafts")
    assert "\\Draft" in flags
    assert draft["Subject"] == "Re: Broken kettle"
    assert draft["To"] == "Bo <bo@example.com>"
    assert draft["From"] == SUPPORT
    assert draft["X-Ticketfleet-Key"] == "k1"
    newest = harness.messages("INBOX")[-1][2]["Message-ID"]
    assert draft["In-Reply-To"] == newest
    assert draft["References"].split() == [root, newest]
    assert harness.body_of(draft).strip() == f"Draft: sorry about the kettle.\n\n{write_back.marker}"
    assert receipt.note_id == draft["Message-ID"]
    assert harness.messages("Sent") == [], "a draft is never sent"


def test_retriage_replaces_keywords_of_the_same_family(harness: ImapHarness) -> None:
    root = harness.create_ticket(subject="Refund", text="refund please")
    connector = harness.connector()
    connector.push(
        WriteBack(ticket_external_id=root, tags=["tf-intent-refund", "tf-lang-en"], idempotency_key="a")
    )
    connector.push(WriteBack(ticket_external_id=root, tags=["tf-intent-shipping"], idempotency_key="b"))
    assert harness.labels(root) == {"tf-intent-shipping", "tf-lang-en"}


def test_missing_drafts_mailbox_is_a_config_error(harness: ImapHarness) -> None:
    root = harness.create_ticket(subject="x", text="y")
    with pytest.raises(ConfigError, match="Nope"):
        harness.connector(drafts_mailbox="Nope").push(
            WriteBack(ticket_external_id=root, note="draft", idempotency_key="z")
        )


def test_push_to_non_message_id_is_not_found(harness: ImapHarness) -> None:
    with pytest.raises(NotFound):
        harness.connector().push(
            WriteBack(ticket_external_id="not an id\u00e9", note="x", idempotency_key="q")
        )


# --- check and errors ---------------------------------------------------------------------------


def test_check_counts_messages(harness: ImapHarness) -> None:
    harness.create_ticket(subject="a", text="b")
    harness.create_ticket(subject="c", text="d")
    assert "INBOX: 2 messages" in harness.connector().check()


def test_missing_mailbox_is_a_config_error(harness: ImapHarness) -> None:
    with pytest.raises(ConfigError, match="Archive/None"):
        harness.connector(mailbox="Archive/None").check()


def test_refused_connection_is_a_source_timeout(harness: ImapHarness) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(SourceTimeout):
        harness.connector(port=closed_port).pull(None)


def _needs_tls(harness: ImapHarness) -> str:
    if harness.server.cert is None:
        reason = "openssl is not installed (dovecot-core depends on it): the test server has no certificate"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    return str(harness.server.cert)


def test_tls_with_a_private_ca(harness: ImapHarness) -> None:
    ca_file = _needs_tls(harness)
    harness.create_ticket(subject="tls", text="over TLS")
    connector = harness.connector(ssl=True, port=harness.server.tls_port, ca_file=ca_file)
    assert "1 messages" in connector.check()
    assert len(pull_all(connector)[0][0].items) == 1


def test_starttls_upgrades_the_plain_port(harness: ImapHarness) -> None:
    ca_file = _needs_tls(harness)
    assert "INBOX" in harness.connector(starttls=True, ca_file=ca_file).check()


def test_untrusted_certificate_is_a_config_error(harness: ImapHarness) -> None:
    _needs_tls(harness)
    with pytest.raises(ConfigError, match="certificate"):
        harness.connector(ssl=True, port=harness.server.tls_port).check()
    with pytest.raises(ConfigError, match="ca_file"):
        harness.connector(ssl=True, port=harness.server.tls_port, ca_file="/no/such/ca.pem").check()


# --- configuration ------------------------------------------------------------------------------


def test_from_config_reads_the_password_from_secrets_or_env(
    harness: ImapHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = {
        "host": harness.account.host,
        "port": harness.account.port,
        "ssl": False,
        "username": harness.account.username,
        "support_address": SUPPORT,
    }
    built = from_config("mail", options, {"password": SecretStr(harness.account.password)}, None)
    assert "INBOX" in built.check()
    monkeypatch.setenv("TF_TEST_IMAP_PASSWORD", harness.account.password)
    built = from_config("mail", {**options, "password_env": "TF_TEST_IMAP_PASSWORD"}, {}, None)
    assert "INBOX" in built.check()
    with pytest.raises(ConfigError, match="password"):
        from_config("mail", options, {}, None)
    with pytest.raises(ConfigError, match="support_address"):
        from_config("mail", {**options, "support_address": "nobody"}, {}, None)
    with pytest.raises(ConfigError, match="colour: unknown field"):
        from_config("mail", {**options, "colour": "blue"}, {}, None)


def test_imap_utf7_mailbox_names() -> None:
    assert imap_utf7("Entwürfe") == "Entw&APw-rfe"
    assert imap_utf7("A&B") == "A&-B"
    assert imap_utf7("下書き") == "&Tgtm+DBN-"


@pytest.mark.parametrize("label", ["base64", "rot13", "zlib", "no-such-thing", "utf-8\x00"])
def test_a_charset_label_that_is_no_text_encoding_never_raises(label: str) -> None:
    text, problem = decode_bytes("café".encode(), label)
    assert text == "café" and problem is not None and "unknown charset" in problem


def test_unlabelled_and_us_ascii_bytes_are_utf8_else_windows_1252() -> None:
    assert decode_bytes("café".encode(), None) == ("café", None)
    assert decode_bytes("café".encode(), "us-ascii") == ("café", None)
    assert decode_bytes("café – 5€".encode("cp1252"), None) == ("café – 5€", None)


def test_parse_mail_never_raises_on_nonsense() -> None:
    mail = parse_mail(b"\x00\xff\r\n\r\n\r\n")
    assert mail.synthetic_id and not mail.has_headers
    assert "\x00" not in mail.body.text, "PostgreSQL text cannot hold NUL"


# --- into the store -----------------------------------------------------------------------------


def test_pages_and_a_full_reread_ingest_into_one_thread(harness: ImapHarness, db_session: Session) -> None:
    """A thread split over pages lands as one ticket; re-reading everything (what a UIDVALIDITY change
    does) adds nothing: ingest is idempotent by Message-ID. Real PostgreSQL."""
    root = harness.create_ticket(subject="Lost parcel", text="Parcel 12 never came")
    harness.add_customer_message(root, "Hello? Still nothing.")
    harness.add_customer_message(root, "注文した商品がまだ届きません")
    connector = harness.connector(page_size=1)
    pages, _ = pull_all(connector)
    assert len(pages) == 3
    for page in pages:
        ingest_tickets(db_session, page.items, default_source="mail", source_kind="imap")
    again = [item for page in pull_all(connector)[0] for item in page.items]
    result = ingest_tickets(db_session, again, default_source="mail", source_kind="imap")
    assert result.new_message_ids == []
    ticket_ids = db_session.scalars(select(Ticket.id).where(Ticket.external_id == root)).all()
    assert len(ticket_ids) == 1
    bodies = db_session.scalars(
        select(DbMessage.body).where(DbMessage.ticket_id == ticket_ids[0]).order_by(DbMessage.position)
    ).all()
    assert bodies == ["Parcel 12 never came", "Hello? Still nothing.", "注文した商品がまだ届きません"]
