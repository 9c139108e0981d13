"""Bulk statements with one array parameter per column: a batch of any size is one SHORT statement.

Why not ``IN (…)`` lists and multi-row ``VALUES``: their SQL text grows with the batch (a 500-row
insert is a 3,000-placeholder statement, a new text for every batch size), so neither psycopg's
statement cache (it keeps statements under 4 KiB) nor PostgreSQL's prepared statements can reuse
them; every batch was parsed anew on both sides. In the ingest benchmark that parsing took about a
third of the API server's CPU. ``= ANY(%(ids)s::BIGINT[])`` and ``INSERT … SELECT … FROM
unnest(%(a)s::T1[], %(b)s::T2[], …)`` are the same few hundred bytes for 1 row or 5,000.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Select,
    Table,
    TableValuedAlias,
    any_,
    column,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.types import TypeEngine


def any_of(
    target: ColumnElement[Any] | QueryableAttribute[Any], values: Iterable[Any], type_: TypeEngine[Any]
) -> ColumnElement[bool]:
    """``target = ANY(<one array parameter>)``: an ``IN`` whose SQL does not grow with the list."""
    return target == any_(literal(list(values), ARRAY(type_)))


def in_ids(target: ColumnElement[Any] | QueryableAttribute[Any], ids: Iterable[int]) -> ColumnElement[bool]:
    """``target = ANY(<bigint[] parameter>)``: the id lookups of the ingest and work-item paths."""
    return any_of(target, ids, BigInteger())


def unnest_rows(columns: Sequence[Column[Any]], rows: Sequence[Mapping[str, Any]]) -> TableValuedAlias:
    """``unnest(<array of c1>, <array of c2>, …) AS anon(c1, c2, …)``: the rows as one relation, each
    array typed as its column, to select from or join (``relation.c.<key>``).

    Every row must have every column's key (``None`` for NULL).
    """
    arrays = [literal([row[c.key] for row in rows], ARRAY(c.type)) for c in columns]
    return func.unnest(*arrays).table_valued(*(column(c.key) for c in columns)).render_derived()


def unnest_select(columns: Sequence[Column[Any]], rows: Sequence[Mapping[str, Any]]) -> Select[Any]:
    """``SELECT c1, c2, … FROM unnest(…)``, for ``insert(table).from_select([c.key …], …)``."""
    relation = unnest_rows(columns, rows)
    return select(*(relation.c[c.key] for c in columns))


def table_of(model: type[Any]) -> Table:
    """The Core table of a mapped class (bulk statements work on columns, not ORM attributes)."""
    return cast(Table, model.__table__)
