"""a change counter for grants, groups and memberships: servers reload them only when it moved

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table(
        'access_generation',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('value', sa.Integer(), nullable=False))
    op.bulk_insert(table, [{'id': 1, 'value': 0}])


def downgrade():
    op.drop_table('access_generation')
