"""The running service: the data dir's stores, the SQL database, auth, and the engine serving the active schema.

The engine reference is swapped atomically when the schema changes; a request takes the reference once and
finishes on it.
"""
import os

from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from app.auth import Auth, load_or_create_secret
from app.compiler import compile_or_raise, load_schema_file
from app.engine import Engine, Stores
from models import Base

DEFAULT_SCHEMA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schema.json")


def database_url(data_dir):
    return os.environ.get("DEPOT_DATABASE_URL") or "sqlite:///" + os.path.join(os.path.abspath(data_dir), "depot.db")


class Service:
    def __init__(self, data_dir, schema=None, schema_path=None, sync=True, announce=print):
        self.data_dir = os.path.abspath(data_dir)
        os.makedirs(self.data_dir, exist_ok=True)
        if schema is None:
            schema_path = schema_path or DEFAULT_SCHEMA
            schema = load_schema_file(schema_path)
        self.stores = Stores(self.data_dir, sync=sync)
        self.engine = Engine(compile_or_raise(schema, schema_path or "schema"), self.stores)
        self.db = create_engine(database_url(self.data_dir))
        Base.metadata.create_all(self.db)
        self.sessions = sessionmaker(self.db, expire_on_commit=False)
        self.auth = Auth(load_or_create_secret(self.data_dir), self.sessions)
        self.auth.ensure_admin(self.data_dir, announce)

    def close(self):
        self.stores.close()
        self.db.dispose()
