"""audit log: hash chain set in the database, append-only enforced ALWAYS, insert-only app role

Revision ID: a1e2d3c4b5f6
Revises: ee58a9b51894
Create Date: 2026-11-30 00:40:00

Design and threat model: docs/audit.md. The canonical serialisation below is mirrored, independently,
by ``db.audit_chain.row_hash`` in Python (what ``ticketfleet audit verify`` recomputes); change both or
neither, and bump the ``tf-audit-v1`` tag.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "a1e2d3c4b5f6"
down_revision: str | None = "ee58a9b51894"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "ticketfleet_app"

# The canonical form: a tag, then each field as "<utf-8 byte length>:<text>," (a netstring), or "~"
# for NULL. Length prefixes make the concatenation unambiguous whatever the fields contain.
# jsonb::text is PostgreSQL's normalised form (keys sorted and de-duplicated, fixed spacing), so it
# is canonical for a stored value. Time is whole microseconds since the epoch: no time-zone or
# formatting ambiguity. PL/pgSQL rather than an SQL function: it runs once per inserted row, and a
# non-inlined SQL function re-plans per call (5x slower here).
CANONICAL_FUNCTIONS = r"""
CREATE FUNCTION audit_canonical(
    seq bigint, occurred_at timestamptz, actor text, event_type text, entity_type text,
    entity_id bigint, data jsonb, before jsonb, after jsonb, prev_hash bytea
) RETURNS bytea LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    canonical text := 'tf-audit-v1;';
    part text;
BEGIN
    FOREACH part IN ARRAY ARRAY[
        seq::text, (extract(epoch FROM occurred_at) * 1000000)::bigint::text, actor, event_type,
        entity_type, entity_id::text, data::text, before::text, after::text, encode(prev_hash, 'hex')]
    LOOP
        IF part IS NULL THEN
            canonical := canonical || '~';
        ELSE
            canonical := canonical || octet_length(convert_to(part, 'UTF8')) || ':' || part || ',';
        END IF;
    END LOOP;
    RETURN convert_to(canonical, 'UTF8');
END $$;
"""

# Serialisation choice: a row lock on the one-row audit_chain_head table (SELECT … FOR UPDATE), not
# pg_advisory_xact_lock. Both serialise chaining; the row lock is also correct under REPEATABLE READ
# and SERIALIZABLE: a transaction whose snapshot predates the last chained statement gets a
# serialisation error on the lock instead of reading a stale head and silently forking the chain,
# which an advisory lock plus "read the last row" would do.
# Cost: every transaction that writes audit events holds the lock from its first audit INSERT until it
# commits, so chaining transactions run one after another (hashing itself takes microseconds). The
# application therefore writes its events as ONE batched INSERT, as the LAST statement of each
# transaction (db.audit.AuditTrail): the lock is held only for that INSERT and the commit, and a holder
# never waits on another lock afterwards, so no deadlock cycle can form. bench/audit.py measures it.
# The head row moves once per statement (AFTER … FOR EACH STATEMENT), not once per row: updating one
# row thousands of times in a transaction makes each later lookup walk its version chain (quadratic).
# Within a statement, the rows it already chained are newer than the head (visible to the trigger,
# not yet in the head), so the trigger takes whichever of head and last row is further along; a tail
# deleted behind the triggers' back therefore stays a visible gap rather than being silently re-used.
# SECURITY DEFINER: the app role has no privilege on audit_chain_head; only these functions move it.
CHAIN_FUNCTION = r"""
CREATE FUNCTION audit_events_chain() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    head_seq bigint;
    head_hash bytea;
    last_seq bigint;
    last_hash bytea;
BEGIN
    SELECT seq, row_hash INTO head_seq, head_hash FROM audit_chain_head WHERE id FOR UPDATE;
    IF NOT FOUND THEN  -- genesis, or the head row was removed: recreate it, then lock it
        INSERT INTO audit_chain_head (id, seq, row_hash) VALUES (true, 0, decode(repeat('00', 32), 'hex'))
            ON CONFLICT DO NOTHING;
        SELECT seq, row_hash INTO head_seq, head_hash FROM audit_chain_head WHERE id FOR UPDATE;
    END IF;
    SELECT seq, row_hash INTO last_seq, last_hash FROM audit_events ORDER BY seq DESC LIMIT 1;
    IF last_seq > head_seq THEN  -- chained earlier in this same statement
        head_seq := last_seq;
        head_hash := last_hash;
    END IF;
    -- Whatever the client sent for these is overwritten: the database alone numbers, times and hashes.
    NEW.seq := head_seq + 1;
    NEW.prev_hash := head_hash;
    NEW.occurred_at := clock_timestamp();  -- taken under the lock: time never goes back along seq
    NEW.row_hash := sha256(audit_canonical(
        NEW.seq, NEW.occurred_at, NEW.actor, NEW.event_type, NEW.entity_type, NEW.entity_id,
        NEW.data, NEW.before, NEW.after, NEW.prev_hash));
    RETURN NEW;
END $$;

CREATE FUNCTION audit_events_move_head() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE audit_chain_head AS h SET seq = n.seq, row_hash = n.row_hash, occurred_at = n.occurred_at
        FROM (SELECT seq, row_hash, occurred_at FROM inserted ORDER BY seq DESC LIMIT 1) AS n
        WHERE h.id AND n.seq > h.seq;
    RETURN NULL;
END $$;
"""

BACKFILL = r"""
DO $$
DECLARE
    r record;
    n bigint := 0;
    prev bytea := decode(repeat('00', 32), 'hex');
    h bytea;
    t timestamptz;
BEGIN
    FOR r IN SELECT * FROM audit_events ORDER BY id LOOP
        n := n + 1;
        h := sha256(audit_canonical(n, r.occurred_at, r.actor, r.event_type, r.entity_type,
                                    r.entity_id, r.data, NULL, NULL, prev));
        UPDATE audit_events SET seq = n, prev_hash = prev, row_hash = h WHERE id = r.id;
        prev := h;
        t := r.occurred_at;
    END LOOP;
    INSERT INTO audit_chain_head (id, seq, row_hash, occurred_at) VALUES (true, n, prev, t);
END $$;
"""

# Creating a role needs CREATEROLE; a migrating user without it still gets the rest of the migration
# (a NOTICE says what was skipped). Roles are cluster-wide, so parallel migrations of other databases
# may race on CREATE ROLE: that is not an error either.
GRANTS = rf"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        BEGIN
            CREATE ROLE {APP_ROLE} NOLOGIN;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'ticketfleet: cannot create role {APP_ROLE} (no CREATEROLE); '
                             'skipping app-role grants, see docs/audit.md';
            WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO {APP_ROLE}', current_schema());
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO {APP_ROLE}',
                       current_schema());
        EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO {APP_ROLE}', current_schema());
        -- Tables later migrations create (as this same owner) are usable by the app too; an
        -- append-only table added later must REVOKE like audit_events does here.
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE '
                       'ON TABLES TO {APP_ROLE}', current_schema());
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO {APP_ROLE}',
                       current_schema());
        REVOKE ALL ON audit_events, audit_chain_head, alembic_version FROM {APP_ROLE};
        GRANT SELECT, INSERT ON audit_events TO {APP_ROLE};
        GRANT SELECT ON audit_chain_head, alembic_version TO {APP_ROLE};
    END IF;
END $$;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM PUBLIC;
REVOKE ALL ON audit_chain_head FROM PUBLIC;
"""

UNGRANTS = rf"""
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON TABLES FROM {APP_ROLE}',
                       current_schema());
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON SEQUENCES FROM {APP_ROLE}',
                       current_schema());
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM {APP_ROLE}', current_schema());
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM {APP_ROLE}', current_schema());
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM {APP_ROLE}', current_schema());
    END IF;
END $$;
"""


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("audit_events", sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("audit_events", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.add_column("audit_events", sa.Column("prev_hash", sa.LargeBinary(), nullable=True))
    op.add_column("audit_events", sa.Column("row_hash", sa.LargeBinary(), nullable=True))
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("row_hash", sa.LargeBinary(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id", name=op.f("ck_audit_chain_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )
    op.execute(CANONICAL_FUNCTIONS)
    # Chain the rows written before this migration, in id order (the old trigger must let us).
    op.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete")
    op.execute(BACKFILL)
    for column in ("seq", "prev_hash", "row_hash"):
        op.alter_column("audit_events", column, nullable=False)
    op.create_unique_constraint(op.f("uq_audit_events_seq"), "audit_events", ["seq"])
    op.execute(CHAIN_FUNCTION)
    op.execute(
        """
        CREATE TRIGGER audit_events_chain BEFORE INSERT ON audit_events
            FOR EACH ROW EXECUTE FUNCTION audit_events_chain();
        CREATE TRIGGER audit_events_move_head AFTER INSERT ON audit_events
            REFERENCING NEW TABLE AS inserted
            FOR EACH STATEMENT EXECUTE FUNCTION audit_events_move_head();
        CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
            FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
        -- ALWAYS: the triggers also fire under session_replication_role = replica (or local), which
        -- otherwise silences ordinary triggers.
        ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_no_update_delete;
        ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_no_truncate;
        ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_chain;
        ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_move_head;
        """
    )
    op.execute(GRANTS)


def downgrade() -> None:
    op.execute(UNGRANTS)
    op.execute(
        """
        DROP TRIGGER IF EXISTS audit_events_chain ON audit_events;
        DROP TRIGGER IF EXISTS audit_events_move_head ON audit_events;
        DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events;
        ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete;
        DROP FUNCTION IF EXISTS audit_events_chain();
        DROP FUNCTION IF EXISTS audit_events_move_head();
        DROP FUNCTION IF EXISTS audit_canonical(bigint, timestamptz, text, text, text, bigint, jsonb, jsonb,
                                                jsonb, bytea);
        """
    )
    op.drop_constraint(op.f("uq_audit_events_seq"), "audit_events", type_="unique")
    op.drop_table("audit_chain_head")
    for column in ("row_hash", "prev_hash", "seq", "after", "before"):
        op.drop_column("audit_events", column)
