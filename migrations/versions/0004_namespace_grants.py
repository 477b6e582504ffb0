"""namespace permissions: groups, their members, and grants on namespace patterns

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'groups',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('name', sa.String(128), nullable=False, unique=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False))
    op.create_table(
        'group_members',
        sa.Column('group_id', sa.Integer(), sa.ForeignKey('groups.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'), primary_key=True))
    op.create_index('ix_group_members_user_id', 'group_members', ['user_id'])
    op.create_table(
        'namespace_grants',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('user_id', sa.Integer(), sa.ForeignKey('users.id', ondelete='CASCADE'), nullable=True),
        sa.Column('group_id', sa.Integer(), sa.ForeignKey('groups.id', ondelete='CASCADE'), nullable=True),
        sa.Column('pattern', sa.String(160), nullable=False),
        sa.Column('permission', sa.String(16), nullable=False),
        sa.Column('created_by', sa.String(128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False))
    op.create_index('ix_namespace_grants_user_id', 'namespace_grants', ['user_id'])
    op.create_index('ix_namespace_grants_group_id', 'namespace_grants', ['group_id'])


def downgrade():
    op.drop_table('namespace_grants')
    op.drop_table('group_members')
    op.drop_table('groups')
