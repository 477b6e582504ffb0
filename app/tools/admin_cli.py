"""python -m app admin: account recovery and namespace permissions on a data dir, without a login.

The commands work on an existing data dir's SQL database alone (its server may be running or stopped; they never
need a login). The password is asked for twice at the terminal, or taken from DEPOT_NEW_PASSWORD, never from an
argument: an argument would stay in the shell history and be visible to other users in the process list. Each
command is audited with the actor "cli".
"""
import getpass
import json
import os
import sys

from app.identity import database
from app.repository import datadir
from app.identity.access import Access
from app.identity.audit import Audit
from app.identity.auth import USERNAME_RULE, Identity
from app.engine.compiler import compile_schema, load_schema_file
from app.errors import DepotError
from app.repository.schema_store import SchemaStore
from app.repository.service import DEFAULT_SCHEMA
from app.stores.interfaces import CacheServerError
from app.stores.rediscache import CACHE_URL_ENV, RedisServer

PASSWORD_VARIABLE = "DEPOT_NEW_PASSWORD"
PASSWORD_SOURCE = "The password is asked for twice at the terminal, or read from %s." % PASSWORD_VARIABLE
ACTOR = "cli"


class CliError(Exception):
    pass


def add_parser(commands):
    """Register `admin reset-password` and `admin create` under the top-level ``commands``."""
    admin = commands.add_parser("admin", help="on a data dir, without a login: reset a password, create a user, "
                                "manage namespace grants and groups",
                                description="Account recovery and namespace permissions that need no login: "
                                "works on an existing data dir's SQL database, whether its server runs or not (a "
                                "running one sees the change within seconds). %s It is never an argument. Audited "
                                "as actor 'cli'." % PASSWORD_SOURCE)
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
    parsers = [reset, create] + _access_parsers(admin_commands)
    for parser in parsers:
        parser.add_argument("--data-dir", default="./data", help="an existing data dir (default ./data); "
                            "DEPOT_DATABASE_URL, when set, names the database instead")


def _access_parsers(admin_commands):
    """`admin grant|revoke|grants|group-add|group-remove`: namespace permissions (a running server sees a
    change within a few seconds)."""
    grant = admin_commands.add_parser(
        "grant", help="grant a permission on namespaces to a user, a group or anonymous callers",
        description="Give SUBJECT (user:NAME, group:NAME or anonymous) PERMISSION (read < write < delete < "
        "admin) on the namespaces PATTERN matches ('acme', 'acme-*', '*'). A grant to the same subject and "
        "pattern is replaced. Once any grant exists, routes that name a namespace need one.")
    grant.add_argument("subject", metavar="SUBJECT")
    grant.add_argument("pattern", metavar="PATTERN")
    grant.add_argument("permission", metavar="PERMISSION", choices=["read", "write", "delete", "admin"])
    grant.set_defaults(handler=cmd_grant)
    revoke = admin_commands.add_parser("revoke", help="remove a grant by its id (see `admin grants`)")
    revoke.add_argument("grant_id", metavar="ID", type=int)
    revoke.set_defaults(handler=cmd_revoke)
    grants = admin_commands.add_parser("grants", help="list the namespace grants: id, subject, pattern, "
                                       "permission")
    grants.set_defaults(handler=cmd_grants)
    group_add = admin_commands.add_parser("group-add", help="add a user to a group (created if new)")
    group_remove = admin_commands.add_parser("group-remove", help="take a user out of a group")
    for parser in (group_add, group_remove):
        parser.add_argument("group", metavar="GROUP")
        parser.add_argument("username", metavar="USERNAME")
    group_add.set_defaults(handler=cmd_group_add)
    group_remove.set_defaults(handler=cmd_group_remove)
    return [grant, revoke, grants, group_add, group_remove]


def cmd_grant(args):
    def change(identity):
        view, _ = Access(identity.sessions).grant(args.subject, args.pattern, args.permission, ACTOR)
        return view, "grant %d: %s has %s on %s" % (view["id"], view["subject"], view["permission"],
                                                    view["namespace"])
    return run(args, "admin.grants.create", change, "%s on %s (%s)" % (args.subject, args.pattern,
                                                                       args.permission))


def cmd_revoke(args):
    def change(identity):
        view = Access(identity.sessions).revoke(args.grant_id)
        return view, "grant %d removed (%s had %s on %s)" % (view["id"], view["subject"], view["permission"],
                                                             view["namespace"])
    return run(args, "admin.grants.delete", change, "grant %d" % args.grant_id)


def cmd_grants(args):
    def show(sessions):
        offset = 0
        while True:
            items, total = Access(sessions).list_grants(offset, 200)
            for item in items:
                print("%d\t%s\t%s\t%s" % (item["id"], item["subject"], item["namespace"], item["permission"]))
            offset += len(items)
            if not items or offset >= total:
                return 0
    return with_database(args, show)


def cmd_group_add(args):
    def change(identity):
        access = Access(identity.sessions)
        try:
            access.get_group(args.group)
        except DepotError:
            access.create_group(args.group)
        view, _ = access.set_member(args.group, args.username, True)
        return view, "group %s: %s" % (view["name"], ", ".join(view["members"]))
    return run(args, "admin.groups.add_member", change, "group:%s member %s" % (args.group, args.username))


def cmd_group_remove(args):
    def change(identity):
        view, changed = Access(identity.sessions).set_member(args.group, args.username, False)
        if not changed:
            raise CliError("%s is not a member of group %s" % (args.username, args.group))
        return view, "group %s: %s" % (view["name"], ", ".join(view["members"]) or "no members")
    return run(args, "admin.groups.remove_member", change, "group:%s member %s" % (args.group, args.username))


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


def run(args, action, change, target=None):
    """Open the data dir's database, make ``change`` (identity -> (audit detail, message)) and audit it as done
    to ``target`` (default: the username)."""
    return with_database(args, lambda sessions: change_and_audit(sessions, target or args.username, action, change))


def with_database(args, work):
    """``work(sessions)`` on the data dir's database; its exit status (1 when the database cannot be opened)."""
    try:
        sessions, engine = open_database(args.data_dir)
    except CliError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    try:
        return work(sessions)
    finally:
        engine.dispose()


def change_and_audit(sessions, target, action, change):
    audit = Audit(sessions)
    try:
        cache_server = open_cache_server()
    except CacheServerError as exc:  # before the change: a server relying on Redis would not see it at once
        print("error: %s" % exc, file=sys.stderr)
        return 1
    try:
        generation = None if cache_server is None else cache_server.generation()
        detail, message = change(Identity(None, sessions, auth_settings(sessions), generation))
    except (CliError, DepotError) as exc:
        code = exc.code if isinstance(exc, DepotError) else "CLI_ERROR"
        audit.record(ACTOR, action, target, "failure", detail={"code": code})
        print("error: %s" % exc, file=sys.stderr)
        return 1
    finally:
        if cache_server is not None:
            cache_server.close()
    audit.record(ACTOR, action, target, "success", detail=detail)
    print(message)
    return 0


def open_cache_server():
    """The Redis of DEPOT_CACHE_URL, when set: an account change bumps its identity generation, so that every
    running server sees the change at its next request. None when unset."""
    url = os.environ.get(CACHE_URL_ENV)
    return RedisServer(url) if url else None


def open_database(data_dir):
    """The data dir's SQL database (or DEPOT_DATABASE_URL's, when set: the data dir then plays no part), migrated
    to head: (session factory, engine). A running server may hold the data dir: these commands need only SQL, and
    the server sees an account's change within app.identity.auth.STATE_CACHE_SECONDS (at its next request when
    DEPOT_CACHE_URL names the Redis it uses: change_and_audit)."""
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
