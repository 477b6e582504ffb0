"""Migrations: Alembic takes an empty database to head, and the migrated schema is exactly models.Base.metadata.

SQLite always; PostgreSQL too when a driver is installed and postgresql://postgres@127.0.0.1:5432/test answers
(each run in a fresh database, dropped afterwards).
"""
import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from app.identity import database
from models import Base

ROOT = Path(__file__).resolve().parent.parent
MODEL_TABLES = {"users", "api_tokens", "revoked_jwts", "schema_versions", "audit_events", "groups", "group_members",
                "namespace_grants", "access_generation"}
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def script_head(url):
    heads = ScriptDirectory.from_config(database.alembic_config(url)).get_heads()
    assert len(heads) == 1, "the migrations have more than one head: %s" % heads
    return heads[0]


def current_revision(engine):
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def drift(engine):
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def assert_at_head_without_drift(url):
    engine = create_engine(url)
    try:
        assert current_revision(engine) == script_head(url)
        assert MODEL_TABLES == set(Base.metadata.tables)
        assert set(inspect(engine).get_table_names()) == MODEL_TABLES | {"alembic_version"}
        assert drift(engine) == []
    finally:
        engine.dispose()


def sqlite_url(path):
    return "sqlite:///" + str(path)


# --- SQLite -----------------------------------------------------------------------------------------------

def test_upgrade_takes_an_empty_sqlite_file_to_head(tmp_path):
    path = tmp_path / "depot.db"
    path.touch()  # an existing, empty file: SQLite reads it as an empty database
    url = sqlite_url(path)
    engine = create_engine(url)
    try:
        assert current_revision(engine) is None
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()

    database.upgrade(url)
    assert_at_head_without_drift(url)


def test_upgrade_creates_a_missing_sqlite_file(tmp_path):
    url = sqlite_url(tmp_path / "new.db")
    database.upgrade(url)
    assert (tmp_path / "new.db").exists()
    assert_at_head_without_drift(url)


def test_upgrade_is_idempotent(tmp_path):
    url = sqlite_url(tmp_path / "depot.db")
    database.upgrade(url)
    database.upgrade(url)
    assert_at_head_without_drift(url)


def test_a_fresh_sqlite_database_differs_from_the_models(tmp_path):
    """The control for the no-drift check: compare_metadata does see missing tables."""
    engine = create_engine(sqlite_url(tmp_path / "empty.db"))
    try:
        found = drift(engine)
    finally:
        engine.dispose()
    added = {diff[1].name for diff in found if diff[0] == "add_table"}
    assert added == MODEL_TABLES


def test_service_start_migrates_its_database(make_depot, project_schema):
    depot = make_depot(project_schema)
    url = database.database_url(depot.data_dir)
    assert url.startswith("sqlite:///") and url.endswith("depot.db")
    assert_at_head_without_drift(url)
    depot.restart()  # starting on an up-to-date database changes nothing
    assert_at_head_without_drift(url)


def test_cli_db_upgrade(make_depot, project_schema):
    depot = make_depot(project_schema)
    depot.close()  # the server stopped: the command refuses a data dir a running server holds
    data_dir = depot.data_dir
    env = {k: v for k, v in os.environ.items() if k != "DEPOT_DATABASE_URL"}
    result = subprocess.run([sys.executable, "-m", "app", "db", "upgrade", "--data-dir", str(data_dir)],
                            cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_at_head_without_drift(sqlite_url(os.path.join(data_dir, "depot.db")))


# --- PostgreSQL -------------------------------------------------------------------------------------------

def postgres_driver():
    try:
        import psycopg  # noqa: F401
        return "postgresql+psycopg"
    except ImportError:
        pass
    try:
        import psycopg2  # noqa: F401
        return "postgresql+psycopg2"
    except ImportError:
        return None


@contextlib.contextmanager
def fresh_postgres_database():
    """The URL of a new, empty PostgreSQL database, dropped afterwards; skips without a driver or a server."""
    driver = postgres_driver()
    if driver is None:
        pytest.skip("no PostgreSQL driver: neither psycopg nor psycopg2 is installed")
    server_url = POSTGRES_URL.replace("postgresql", driver, 1)
    server = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any connection failure means there is no server to test
        server.dispose()
        pytest.skip("PostgreSQL is not reachable at %s: %s" % (POSTGRES_URL, exc))
    name = "depot_test_%s" % uuid.uuid4().hex[:12]
    with server.connect() as connection:
        connection.execute(text('CREATE DATABASE "%s"' % name))
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with server.connect() as connection:
            connection.execute(text('DROP DATABASE IF EXISTS "%s"' % name))
        server.dispose()


def test_postgresql_migrates_without_drift():
    with fresh_postgres_database() as url:
        engine = create_engine(url)
        try:
            assert current_revision(engine) is None
        finally:
            engine.dispose()
        database.upgrade(url)
        assert_at_head_without_drift(url)
