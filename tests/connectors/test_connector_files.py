"""The files connector: contract suite, incremental reads by byte offset, rotation, rejected lines."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.files import FilesConnector
from tests.support.connector_contract import ConnectorContract, SourceHarness, pull_all


class FilesHarness(SourceHarness):
    supports_auth = False
    supports_faults = False

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.inbox = folder / "tickets.jsonl"
        self.inbox.touch()

    def connector(self, *, valid_credentials: bool = True) -> FilesConnector:
        return FilesConnector("files-test", path=str(self.folder / "*.jsonl"), page_size=self.page_size)

    def _append(self, record: dict[str, object]) -> None:
        with self.inbox.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def create_ticket(self, *, subject: str, text: str, requester_email: str | None = None) -> str:
        ext = uuid.uuid4().hex[:12]
        record: dict[str, object] = {
            "external_id": ext,
            "subject": subject,
            "messages": [{"role": "customer", "text": text, "external_id": "m1"}],
        }
        if requester_email:
            record["requester"] = {"email": requester_email}
        self._append(record)
        return ext

    def add_customer_message(self, external_id: str, text: str) -> None:
        self._append(
            {"external_id": external_id, "messages": [{"text": text, "external_id": uuid.uuid4().hex}]}
        )

    def _outbox(self, external_id: str) -> list[dict[str, object]]:
        outbox = self.folder / "files-test.outbox.jsonl"
        if not outbox.exists():
            return []
        records = [json.loads(line) for line in outbox.read_text().splitlines() if line.strip()]
        return [r for r in records if r["ticket_external_id"] == external_id]

    def notes(self, external_id: str) -> list[str]:
        return [str(r["note"]) for r in self._outbox(external_id) if r["note"]]

    def public_replies(self, external_id: str) -> list[str]:
        return []  # the outbox only ever holds internal notes

    def labels(self, external_id: str) -> set[str]:
        out: set[str] = set()
        for record in self._outbox(external_id):
            out |= set(record["tags"])  # type: ignore[arg-type]
            out |= {f"{k}={v}" for k, v in record["fields"].items()}  # type: ignore[attr-defined]
        return out


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[FilesHarness]:
    yield FilesHarness(tmp_path)


class TestFilesContract(ConnectorContract):
    pass


def _line(ext: str, text: str = "hello there") -> str:
    return json.dumps({"external_id": ext, "text": text}) + "\n"


def test_appended_file_is_read_from_the_stored_offset(tmp_path: Path) -> None:
    inbox = tmp_path / "in.jsonl"
    inbox.write_text(_line("a") + _line("b"))
    connector = FilesConnector("f", path=str(inbox), page_size=10)
    _, cursor = pull_all(connector)
    with inbox.open("a") as handle:
        handle.write(_line("c") + '{"external_id": "d", "te')  # d is still being written
    pages, cursor = pull_all(connector, cursor)
    assert [i.external_id for p in pages for i in p.items] == ["c"]
    with inbox.open("a") as handle:
        handle.write('xt": "late"}\n')
    pages, _ = pull_all(connector, cursor)
    assert [i.external_id for p in pages for i in p.items] == ["d"]


def test_truncated_or_rotated_file_is_read_again_from_the_start(tmp_path: Path) -> None:
    inbox = tmp_path / "in.jsonl"
    inbox.write_text(_line("a") + _line("b") + _line("c"))
    connector = FilesConnector("f", path=str(inbox), page_size=10)
    _, cursor = pull_all(connector)
    inbox.write_text(_line("z"))  # truncated and rewritten: shorter than the stored offset
    pages, cursor = pull_all(connector, cursor)
    assert [i.external_id for p in pages for i in p.items] == ["z"]
    rotated = tmp_path / "new.jsonl"
    rotated.write_text(_line("y") + _line("x") + _line("w"))
    rotated.replace(inbox)  # same name, new inode, longer than before
    pages, _ = pull_all(connector, cursor)
    assert [i.external_id for p in pages for i in p.items] == ["y", "x", "w"]


def test_rejected_lines_are_reported_and_good_lines_kept(tmp_path: Path) -> None:
    inbox = tmp_path / "in.jsonl"
    inbox.write_text(_line("a") + "{not json\n" + json.dumps({"external_id": "b"}) + "\n" + _line("c"))
    page = FilesConnector("f", path=str(inbox), page_size=10).pull(None)
    assert [i.external_id for i in page.items] == ["a", "c"]
    assert [ref for ref, _ in page.rejected] == ["in.jsonl:2", "in.jsonl:3"]
    assert "malformed JSON" in page.rejected[0][1]
    assert "needs 'text'" in page.rejected[1][1]


def test_csv_is_read_incrementally_with_stable_message_ids(tmp_path: Path) -> None:
    inbox = tmp_path / "in.csv"
    inbox.write_text('external_id,text\nt1,first\nt1,"second, with\na newline"\n')
    connector = FilesConnector("f", path=str(inbox), page_size=1)
    first = connector.pull(None)
    assert [m.external_id for m in first.items[0].messages] == ["line-2"]
    assert first.has_more
    second = connector.pull(first.cursor)
    assert [m.text for m in second.items[0].messages] == ["second, with\na newline"]
    # csv counts a quoted multi-line record by the line it ends on: stable across re-reads
    assert [m.external_id for m in second.items[0].messages] == ["line-4"]
    with inbox.open("a") as handle:
        handle.write("t2,third\n")
    third = connector.pull(second.cursor)
    assert [(i.external_id, i.messages[0].external_id) for i in third.items] == [("t2", "line-5")]


def test_outbox_defaults_beside_the_files_before_any_wildcard(tmp_path: Path) -> None:
    assert FilesConnector("s", path=str(tmp_path / "in.jsonl")).outbox == tmp_path / "s.outbox.jsonl"
    globbed = FilesConnector("s", path=str(tmp_path / "*" / "in-*.jsonl"))
    assert globbed.outbox == tmp_path / "s.outbox.jsonl"
