"""pii vault: encrypted originals of redacted values

Revision ID: b2f1c3d4e5a6
Revises: a1e2d3c4b5f6
Create Date: 2026-11-30 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'b2f1c3d4e5a6'
down_revision: str | None = 'a1e2d3c4b5f6'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'pii_vault',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('ticket_id', sa.BigInteger(), nullable=False),
        sa.Column('placeholder', sa.String(length=40), nullable=False),
        sa.Column('key_id', sa.String(length=16), nullable=False),
        sa.Column('nonce', sa.LargeBinary(), nullable=True),
        sa.Column('ciphertext', sa.LargeBinary(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('purge_after', sa.DateTime(timezone=True), nullable=False),
        sa.Column('purged_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint('(nonce IS NULL) = (ciphertext IS NULL)', name=op.f('ck_pii_vault_sealed_or_purged')),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_pii_vault_ticket_id_tickets'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_pii_vault')),
        sa.UniqueConstraint('ticket_id', 'placeholder', name='uq_pii_vault_ticket_placeholder'),
    )
    op.create_index(op.f('ix_pii_vault_purge_after'), 'pii_vault', ['purge_after'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_pii_vault_purge_after'), table_name='pii_vault')
    op.drop_table('pii_vault')
