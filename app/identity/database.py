"""The SQL database: its URL, migrations (Alembic, applied at start) and sessions."""
import os

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, make_url
from sqlalchemy.orm import sessionmaker

MIGRATIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),  # the root
                          "migrations")


def database_url(data_dir):
    return os.environ.get("DEPOT_DATABASE_URL") or "sqlite:///" + os.path.join(os.path.abspath(data_dir), "depot.db")


def alembic_config(url):
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url, revision="head"):
    _create_private(url)
    command.upgrade(alembic_config(url), revision)


def _create_private(url):
    """A new SQLite database file is created readable by its owner only (it holds password and token hashes);
    SQLite gives its -wal and -shm files the same mode."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        try:
            os.close(os.open(parsed.database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass


def connect(url):
    """An engine and a session factory; SQLite gets WAL and foreign keys, for concurrent readers."""
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()
    return engine, sessionmaker(engine, expire_on_commit=False)
