"""`ticketfleet classify`: JSONL in, JSONL triage out, through the same engine, no queue.

Input lines are ``{"id": any, "text": str, "locale"?: str}``. Output lines keep the input order and
carry every field with its confidence (with trained heads, their own fields too: ``<field>`` and
``<field>_confidence``, no gate). A bad line is reported (stderr) and skipped; it never stops the
lines around it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ticketfleet.core.errors import LineError, describe_validation_error
from ticketfleet.core.schemas import Engine, EngineInput, ThreadMessage, Triage
from ticketfleet.core.settings import TRIAGE_FIELD_NAMES, GatePolicy
from ticketfleet.core.vocabulary import Role
from ticketfleet.pii import redact_text
from ticketfleet.pipeline.gates import apply_gates, needs_review


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Any
    text: str = Field(min_length=1)
    locale: str | None = None


def triage_record(request_id: Any, triage: Triage, policies: dict[str, GatePolicy]) -> dict[str, Any]:
    record: dict[str, Any] = {"id": request_id}
    gates = apply_gates(triage, policies)
    for field in TRIAGE_FIELD_NAMES:
        prediction = getattr(triage, field)
        record[field] = prediction.value
        record[f"{field}_confidence"] = round(prediction.confidence, 4)
        record[f"{field}_gate"] = gates[field]["gate"]
    # Fields of trained heads beyond the built-in ones (a team's own, e.g. "queue"): no gate applies.
    for field, prediction in triage.extra.items():
        record[field] = prediction.value
        record[f"{field}_confidence"] = round(prediction.confidence, 4)
    record["needs_review"] = needs_review(gates)
    return record


def _requests(stream: IO[bytes], errors: list[LineError]) -> Iterator[ClassifyRequest]:
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            yield ClassifyRequest.model_validate(json.loads(raw.decode("utf-8")))
        except UnicodeDecodeError as exc:
            errors.append(LineError(number, f"invalid UTF-8 at byte {exc.start}"))
        except json.JSONDecodeError as exc:
            errors.append(LineError(number, f"malformed JSON: {exc.msg}"))
        except ValidationError as exc:
            errors.append(LineError(number, describe_validation_error(exc)))


def classify_stream(
    stream: IO[bytes], out: IO[str], engine: Engine, *, batch_size: int, policies: dict[str, GatePolicy]
) -> list[LineError]:
    errors: list[LineError] = []
    batch: list[ClassifyRequest] = []

    def flush() -> None:
        inputs = [
            EngineInput(
                item_id=i,
                # The model never reads personal data, here as in the fleet.
                thread=[ThreadMessage(role=Role.customer, text=redact_text(r.text, locale=r.locale))],
                want_draft=False,
                locale_hint=r.locale,
            )
            for i, r in enumerate(batch)
        ]
        for request, triage in zip(batch, engine.classify(inputs), strict=True):
            out.write(json.dumps(triage_record(request.id, triage, policies), ensure_ascii=False) + "\n")
        out.flush()
        batch.clear()

    for request in _requests(stream, errors):
        batch.append(request)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return errors
