"""case-insensitively unique usernames: users.username_key

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Existing rows migrate: each user's key is its username in lower case. Where earlier releases let two names
differ only in case, the older account (lower id) keeps the plain key and each later one gets '<key>#<id>';
'#' is not allowed in a username, so no new account can ever take such a key, and each account still logs in
under its exact name.
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

users = sa.table('users', sa.column('id', sa.Integer()), sa.column('username', sa.String()),
                 sa.column('username_key', sa.String()))


def upgrade():
    op.add_column('users', sa.Column('username_key', sa.String(length=160), nullable=True))
    fill_username_keys(op.get_bind())
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('username_key', existing_type=sa.String(length=160), nullable=False)
        batch_op.create_index(batch_op.f('ix_users_username_key'), ['username_key'], unique=True)


def fill_username_keys(connection):
    taken = set()
    for user_id, username in connection.execute(sa.select(users.c.id, users.c.username).order_by(users.c.id)):
        key = username.lower()
        if key in taken:
            key = '%s#%d' % (key, user_id)
        taken.add(key)
        connection.execute(users.update().where(users.c.id == user_id).values(username_key=key))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_users_username_key'))
        batch_op.drop_column('username_key')
