"""python -m app admin: account recovery on a data dir, when nobody can log in to use the admin API.

The commands work on an existing data dir's SQL database alone (its server may be running or stopped; they never
need a login). The password is asked for twice at the terminal, or taken from DEPOT_NEW_PASSWORD, never from an
argument: an argument would stay in the shell history and be visible to other users in the process list. Each
command is audited with the actor "cli".
"""
import getpass
import json
import os
import sys

from app import database, datadir
from app.audit import Audit
from app.auth import USERNAME_RULE, Identity
from app.compiler import compile_schema, load_schema_file
from app.errors import DepotError
from app.schema_store import SchemaStore
from app.service import DEFAULT_SCHEMA

PASSWORD_VARIABLE = "DEPOT_NEW_PASSWORD"
PASSWORD_SOURCE = "The password is asked for twice at the terminal, or read from %s." % PASSWORD_VARIABLE
ACTOR = "cli"


class CliError(Exception):
    pass


def add_parser(commands):
    """Register `admin reset-password` and `admin create` under the top-level ``commands``."""
    admin = commands.add_parser("admin", help="account recovery on a data dir: reset a password, create a user",
                                description="Account recovery that needs no login: works on an existing data "
                                "dir's SQL database, whether its server runs or not (a running one sees the change "
                                "within seconds). %s It is never an argument. Audited as actor 'cli'."
                                % PASSWORD_SOURCE)
    admin_commands = admin.add_subparsers(dest="admin_command", required=True, metavar="ADMIN_COMMAND")
    reset = admin_commands.add_parser(
        "reset-password", help="set a user's password; ends every token of theirs and re-enables the account",
        description="Set USERNAME's password. Every earlier login token and API token of the account stops "
        "working, and a disabled account is enabled again: the reset hands the account back, and what may have "
        "made it unsafe (the old password, its tokens) no longer works. Scopes are unchanged. " + PASSWORD_SOURCE)
    reset.add_argument("username", metavar="USERNAME", help="the account (case-insensitive)")
    reset.set_defaults(handler=cmd_reset_password)
    create = admin_commands.add_parser("create", help="create a user (for example a new admin)",
                                       description="Create USERNAME (%s) with the given scopes. %s"
                                       % (USERNAME_RULE, PASSWORD_SOURCE))
    create.add_argument("username", metavar="USERNAME", help="the new account's name")
    create.add_argument("--scopes", required=True, help="comma-separated scopes the schema declares, e.g. "
                        "read,write,admin")
    create.set_defaults(handler=cmd_create)
    for parser in (reset, create):
        parser.add_argument("--data-dir", default="./data", help="an existing data dir (default ./data); "
                            "DEPOT_DATABASE_URL, when set, names the database instead")


def cmd_reset_password(args):
    def reset(identity):
        re_enabled = identity.reset_password(args.username, read_new_password())
        return {"re_enabled": re_enabled}, "password of %r reset; its earlier tokens no longer work%s" % (
            args.username, "; the account was disabled and is active again" if re_enabled else "")
    return run(args, "admin.users.reset_password", reset)


def cmd_create(args):
    def create(identity):
        scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
        view = identity.create_user(args.username, read_new_password(), scopes)
        return {"scopes": view["scopes"]}, "created %r with scope(s) %s" % (view["username"],
                                                                          ", ".join(view["scopes"]))
    return run(args, "admin.users.create", create)


def run(args, action, change):
    """Open the data dir's database, make ``change`` (identity -> (audit detail, message)) and audit it."""
    try:
        sessions, engine = open_database(args.data_dir)
    except CliError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    try:
        return change_and_audit(sessions, args.username, action, change)
    finally:
        engine.dispose()


def change_and_audit(sessions, username, action, change):
    audit = Audit(sessions)
    try:
        detail, message = change(Identity(None, sessions, auth_settings(sessions)))
    except (CliError, DepotError) as exc:
        code = exc.code if isinstance(exc, DepotError) else "CLI_ERROR"
        audit.record(ACTOR, action, username, "failure", detail={"code": code})
        print("error: %s" % exc, file=sys.stderr)
        return 1
    audit.record(ACTOR, action, username, "success", detail=detail)
    print(message)
    return 0


def open_database(data_dir):
    """The data dir's SQL database (or DEPOT_DATABASE_URL's, when set: the data dir then plays no part), migrated
    to head: (session factory, engine). A running server may hold the data dir: these commands need only SQL, and
    the server sees an account's change within app.auth.STATE_CACHE_SECONDS."""
    url = os.environ.get("DEPOT_DATABASE_URL") or database.database_url(datadir.require(data_dir))
    database.upgrade(url)
    engine, sessions = database.connect(url)
    return sessions, engine


def auth_settings(sessions):
    """The active schema's auth settings (password rules, scope names), or the project schema's when the
    server has never started on this data dir."""
    active = SchemaStore(sessions).active()
    doc = json.loads(active.document) if active is not None else load_schema_file(DEFAULT_SCHEMA)
    compiled, report = compile_schema(doc, "the active schema")
    if compiled is None:
        raise CliError("the active schema cannot be compiled:\n%s" % report.to_text())
    return compiled.auth_settings


def read_new_password():
    """DEPOT_NEW_PASSWORD, else asked twice at the terminal (without echo)."""
    if PASSWORD_VARIABLE in os.environ:
        return os.environ[PASSWORD_VARIABLE]
    try:
        first = getpass.getpass("New password: ")
        second = getpass.getpass("The same again: ")
    except EOFError:
        raise CliError("no password given (type it at the prompt, or set %s)" % PASSWORD_VARIABLE)
    if first != second:
        raise CliError("the two passwords differ; nothing changed")
    return first
