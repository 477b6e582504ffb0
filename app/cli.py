"""python -m app: serve, check, db, docs."""
import argparse
import json
import sys

from app.compiler import compile_schema, load_schema_file
from app.service import DEFAULT_SCHEMA


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m app", description="Depot: a declarative package repository "
                                     "server. Routes are compiled from a schema at start-up.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the repository over HTTP",
                                description="Serve the repository. Environment: DEPOT_ADMIN_PASSWORD (first start), "
                                "DEPOT_SECRET_KEY (JWT key; else generated into the data dir), DEPOT_DATABASE_URL "
                                "(default: SQLite in the data dir).")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    serve.add_argument("--data-dir", default="./data", help="blobs, KV/index database, SQL database, keys "
                       "(default ./data)")
    serve.add_argument("--schema", default=DEFAULT_SCHEMA, help="schema to serve (default: the project's "
                       "schema.json)")
    serve.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    serve.set_defaults(handler=cmd_serve)

    check = commands.add_parser("check", help="check a schema and print the report (exit 0: servable, 1: not)")
    check.add_argument("path", nargs="?", default=DEFAULT_SCHEMA, help="schema file (default: schema.json)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(handler=cmd_check)
    db = commands.add_parser("db", help="database migrations (Alembic)")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    upgrade = db_commands.add_parser("upgrade", help="apply migrations up to head (serve does this at start)")
    upgrade.add_argument("--data-dir", default="./data", help="data dir holding the default SQLite database")
    upgrade.add_argument("--revision", default="head", help="target revision (default head)")
    upgrade.set_defaults(handler=cmd_db_upgrade)

    docs = commands.add_parser("docs", help="print OPERATIONS.md generated from the op registry (--write: update "
                               "the file)")
    docs.add_argument("--write", action="store_true", help="write OPERATIONS.md instead of printing it")
    docs.set_defaults(handler=cmd_docs)
    return parser


def cmd_db_upgrade(args):
    import os

    from app import database
    os.makedirs(args.data_dir, exist_ok=True)
    url = database.database_url(args.data_dir)
    database.upgrade(url, args.revision)
    print("database at %s is at revision %s" % (url, args.revision))
    return 0


def cmd_docs(args):
    from app import docs
    if args.write:
        docs.write()
    else:
        sys.stdout.write(docs.render())
    return 0


def _check_file(path):
    """(schema dict, report), or (None, None) after saying why the file cannot be read."""
    try:
        doc = load_schema_file(path)
    except (OSError, ValueError) as exc:
        print("cannot read %s: %s" % (path, exc), file=sys.stderr)
        return None, None
    return doc, compile_schema(doc, path)[1]


def cmd_check(args):
    doc, report = _check_file(args.path)
    if doc is None:
        return 1
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0 if report.ok else 1


def cmd_serve(args):
    """Check the schema in this process, then serve with gunicorn: one worker process (rocksdict allows one
    writer process per database) with --threads threads. Request bodies stream to the app as they arrive."""
    from gunicorn.app.base import BaseApplication

    doc, report = _check_file(args.schema)
    if doc is None:
        return 1
    if not report.ok:
        print(report.to_text(), file=sys.stderr)
        print("refusing to start: the schema cannot be served", file=sys.stderr)
        return 1

    class DepotServer(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", "%s:%d" % (args.host, args.port))
            self.cfg.set("workers", 1)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", args.threads)
            self.cfg.set("timeout", 0)  # long uploads and downloads are not worker hangs
            self.cfg.set("accesslog", "-")
            self.cfg.set("control_socket_disable", True)

        def load(self):
            from app import create_app
            return create_app(args.data_dir, schema=doc)

    print("Depot serving %s on http://%s:%d (data dir %s)" % (args.schema, args.host, args.port, args.data_dir),
          flush=True)
    DepotServer().run()
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.handler(args)
