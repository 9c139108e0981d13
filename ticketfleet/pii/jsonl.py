"""JSONL in, JSONL out: the line protocol of ``ticketfleet redact``.

A bad line is reported (line number and what was wrong) and skipped; every good line still comes out,
in input order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from ticketfleet.core.errors import LineError, describe_validation_error
from ticketfleet.pii.redactor import redact_text


class RedactRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The id comes back exactly as given (string or integer), so lines can be joined back.
    id: StrictStr | StrictInt
    text: str
    locale: str | None = Field(default=None, max_length=35)
    country: str | None = Field(default=None, min_length=2, max_length=2)


class RedactResponse(BaseModel):
    id: StrictStr | StrictInt
    text: str


def redact_jsonl(lines: Iterable[str], out: TextIO) -> list[LineError]:
    errors: list[LineError] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            request = RedactRequest.model_validate_json(line)
        except ValidationError as exc:
            # Never echo the line itself: it is the unredacted text.
            errors.append(LineError(number, describe_validation_error(exc, whole="line")))
            continue
        text = redact_text(request.text, locale=request.locale, country=request.country)
        out.write(json.dumps(RedactResponse(id=request.id, text=text).model_dump(), ensure_ascii=False))
        out.write("\n")
    return errors
