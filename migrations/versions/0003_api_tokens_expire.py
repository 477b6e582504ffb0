"""every API token expires: api_tokens.expires_at is required

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

API tokens created without an expiry expire 365 days after this migration runs (the default
auth.tokens.max_ttl_seconds), so the scripts using them keep working for a year and then stop.
"""
from datetime import datetime, timedelta, timezone

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

EXPIRY_OF_UNLIMITED_TOKENS = timedelta(days=365)

api_tokens = sa.table('api_tokens', sa.column('expires_at', sa.DateTime(timezone=True)))


def upgrade():
    op.execute(api_tokens.update().where(api_tokens.c.expires_at.is_(None))
               .values(expires_at=datetime.now(timezone.utc) + EXPIRY_OF_UNLIMITED_TOKENS))
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.alter_column('expires_at', existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade():
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.alter_column('expires_at', existing_type=sa.DateTime(timezone=True), nullable=True)
