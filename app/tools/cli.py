"""python -m app: serve, check, validate, add, routes add, gc, reindex, replicate, db, docs."""
import argparse
import json
import os
import sys

from app.repository import datadir
from app.engine import packs
from app.engine.compiler import compile_schema, load_schema_file
from app.errors import DepotError
from app.repository.service import DEFAULT_SCHEMA


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m app", description="Depot: a declarative package repository "
                                     "server. Routes are compiled from a schema at start-up.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the repository over HTTP",
                                description="Serve the repository. Environment: DEPOT_ADMIN_PASSWORD (first start), "
                                "DEPOT_SECRET_KEY (JWT key; else generated into the data dir), DEPOT_DATABASE_URL "
                                "(default: SQLite in the data dir), DEPOT_CPU_BUDGET=off (requests are charged no CPU "
                                "time: ops.limits.max_cpu_ms_per_request is not enforced; for test suites on "
                                "loaded machines), DEPOT_CODEGEN=off (pipelines and templates run interpreted: no "
                                "Python is generated for them; the same answers, slower), DEPOT_TRUSTED_PROXIES (the "
                                "default of --trusted-proxies), DEPOT_CACHE_URL (redis://host:port/db[?prefix=NAME]: "
                                "response caches, login rate limits and token revocation shared by every process "
                                "through Redis; default: in process), DEPOT_BLOB_URL (s3://bucket[/prefix][?endpoint_url=...&region=...]: every "
                                "filesystem blob store keeps its objects in that bucket instead, under the prefix and "
                                "its root; default: file://, as the schema declares), DEPOT_STATE_URL "
                                "(postgresql://[user@]host[:port]/database[?table=NAME]: documents, indexes, the event "
                                "log and the response cache of every rocksdb kv store in that database, shared by "
                                "every process serving it; default: the data dir's RocksDB).")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    serve.add_argument("--data-dir", default="./data", help="blobs, KV/index database, SQL database, keys "
                       "(default ./data)")
    serve.add_argument("--schema", metavar="FILE", help="the schema a new data dir starts with (default: the "
                       "project's schema.json); a data dir that has an active schema serves that one, and says so "
                       "when FILE differs from it")
    serve.add_argument("--load-schema", action="store_true", help="load --schema FILE (default schema.json) as a "
                       "new schema version when it differs from the active one, and serve it")
    serve.add_argument("--workers", type=int, default=1, help="server processes sharing the port (default 1); "
                       "more than one needs every store shared: DEPOT_STATE_URL, DEPOT_BLOB_URL and DEPOT_CACHE_URL "
                       "(the data dir's embedded stores serve one process, and serve refuses otherwise). Each worker "
                       "runs --threads threads and keeps its lease and temporary files under DATA_DIR/workers/N")
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # a worker's inherited socket
    serve.add_argument("--threads", type=int, default=16, help="threads running requests (default 16); slow "
                       "clients take none: one I/O thread reads and writes every connection")
    serve.add_argument("--max-connections", type=int, default=1000, help="open connections accepted at once "
                       "(default 1000); beyond it new ones wait in the listen backlog")
    serve.add_argument("--header-timeout", type=float, default=20.0, help="seconds a client has to send a "
                       "request's line and headers, however it trickles them (default 20)")
    serve.add_argument("--idle-timeout", type=float, default=60.0, help="seconds without progress after which a "
                       "connection is closed: idle keep-alive, a stalled body, a reader taking nothing (default 60)")
    serve.add_argument("--min-body-rate", type=int, default=1024, help="bytes/s a request body must average once "
                       "the header timeout has passed, or the connection is closed (default 1024)")
    serve.add_argument("--read-only", action="store_true", help="serve as a read-only replica: route steps that "
                       "change the repository answer 403 READ_ONLY; replication (python -m app replicate) still "
                       "applies the primary's events")
    serve.add_argument("--trusted-proxies", metavar="LIST", help="IP addresses and CIDR networks (comma or space "
                       "separated) of the reverse proxies whose X-Forwarded-Proto, -Host, -Port and -Prefix headers "
                       "say what URL clients use ({request.base_url}); they are believed only from a direct peer "
                       "listed here (default: $DEPOT_TRUSTED_PROXIES, else none)")
    serve.add_argument("--metrics-address", metavar="HOST:PORT", help="also serve the Prometheus metrics, without "
                       "credentials, on this address of their own (bind it where only the scraper reaches; "
                       "default: $DEPOT_METRICS_ADDRESS, else none: GET /metrics on the main port, for admins)")
    serve.set_defaults(handler=cmd_serve)

    check = commands.add_parser("check", help="check a schema and print the report (exit 0: servable, 1: not)")
    check.add_argument("path", nargs="?", default=DEFAULT_SCHEMA, help="schema file (default: schema.json)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(handler=cmd_check)
    validate = commands.add_parser("validate", help="schema compliance: ops, routes, op and storage semantics "
                                   "(run against real stores in a temporary dir); exit 1 on any failure")
    validate.add_argument("path", nargs="?", default=DEFAULT_SCHEMA, help="schema file (default: schema.json)")
    validate.set_defaults(handler=cmd_validate)

    gc = commands.add_parser("gc", help="remove blobs no live document references (the schema's gc section); "
                             "the server must be stopped (a running one: POST /admin/gc)")
    gc.add_argument("--data-dir", default="./data", help="an existing data dir (default ./data)")
    gc.add_argument("--dry-run", action="store_true", help="report what would be removed, remove nothing")
    gc.add_argument("--grace-seconds", type=int, help="override gc.sweep.sweep_unreferenced_after_seconds")
    gc.set_defaults(handler=cmd_gc)

    reindex = commands.add_parser("reindex", help="rewrite every index's entries under the active schema's index "
                                  "keys, as a change of an index's fields, sort or where needs; the server must be "
                                  "stopped")
    reindex.add_argument("--data-dir", default="./data", help="data dir (default ./data)")
    reindex.set_defaults(handler=cmd_reindex)

    migrate = commands.add_parser("migrate-store", help="copy the repository's state and blobs from where they are "
                                  "(as DEPOT_STATE_URL and DEPOT_BLOB_URL place them) to other stores, verifying "
                                  "every blob's digest and the copied state; the server must be stopped")
    migrate.add_argument("--data-dir", default="./data", help="an existing data dir (default ./data)")
    migrate.add_argument("--to-state", metavar="URL", help="postgresql://[user@]host[:port]/database[?table=NAME], "
                         "or `embedded` (the data dir's RocksDB); it must hold no repository yet. Default: the "
                         "state stays where it is")
    migrate.add_argument("--to-blobs", metavar="URL", help="s3://bucket[/prefix][?endpoint_url=...&region=...], or "
                         "file:// (the schema's own stores); blobs already there are kept. Default: the blobs stay "
                         "where they are")
    migrate.set_defaults(handler=cmd_migrate_store)

    replicate = commands.add_parser(
        "replicate", help="copy what a primary has published to a replica (both running), blobs before events",
        description="Feed a replica from a primary through their /admin/replication APIs: blob bytes first, then "
        "the events, each applied once through the replica's apply pipelines. Tokens (admin scope) come from "
        "--source-token/--target-token or the environment: DEPOT_SOURCE_TOKEN, DEPOT_TARGET_TOKEN.")
    replicate.add_argument("--source", required=True, help="the primary's base URL")
    replicate.add_argument("--target", required=True, help="the replica's base URL")
    replicate.add_argument("--source-token", help="admin token on the primary (default: $DEPOT_SOURCE_TOKEN)")
    replicate.add_argument("--target-token", help="admin token on the replica (default: $DEPOT_TARGET_TOKEN)")
    replicate.add_argument("--follow", action="store_true", help="keep polling for new events until interrupted, "
                           "retrying (with a growing wait) while either server is down")
    replicate.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --follow (2)")
    replicate.set_defaults(handler=cmd_replicate)

    db = commands.add_parser("db", help="database migrations (Alembic)")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    upgrade = db_commands.add_parser("upgrade", help="apply migrations up to head (serve does this at start); "
                                     "the server must be stopped")
    upgrade.add_argument("--data-dir", default="./data", help="the data dir holding the default SQLite database "
                         "(default ./data); DEPOT_DATABASE_URL, when set, names the database instead")
    upgrade.add_argument("--revision", default="head", help="target revision (default head)")
    upgrade.set_defaults(handler=cmd_db_upgrade)

    add = commands.add_parser("add", help="add a template (templates/*.json) to the schema, checked as a whole",
                              description="Add a template's route, pipeline, entity, blob store, scope or upstream "
                              "to the schema. The result is checked exactly as `check` does; nothing changes if it "
                              "fails. Target: a running server (--url, --token), a schema file (--schema-file), or "
                              "a stopped server's data dir (default; refused while a server runs on it: use --url).")
    _add_template_args(add)
    routes = commands.add_parser("routes", help="routes: add one from a template")
    routes_commands = routes.add_subparsers(dest="routes_command", required=True, metavar="ROUTES_COMMAND")
    routes_add = routes_commands.add_parser("add", help="add a route (route or pipeline template)")
    _add_template_args(routes_add, kinds=("route", "pipeline"))

    docs = commands.add_parser("docs", help="print OPERATIONS.md generated from the op registry (--write: update "
                               "the file)")
    docs.add_argument("--write", action="store_true", help="write OPERATIONS.md instead of printing it")
    docs.set_defaults(handler=cmd_docs)

    from app.tools import admin_cli
    admin_cli.add_parser(commands)
    return parser


def _add_template_args(parser, kinds=None):
    parser.add_argument("template", help="template file, e.g. templates/route_template.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fill a placeholder")
    parser.add_argument("--url", help="a running server's base URL (with --token: applied through its admin API)")
    parser.add_argument("--token", help="an admin token for --url")
    parser.add_argument("--schema-file", help="edit this schema file instead")
    parser.add_argument("--data-dir", default="./data", help="data dir whose active schema to change, with its "
                        "server stopped (the default target, ./data)")
    parser.set_defaults(handler=cmd_add, kinds=kinds)


def cmd_add(args):
    from app.tools import templates
    try:
        template = templates.load(args.template)
        kind = template["$template"]["kind"]
        if args.kinds and kind not in args.kinds:
            raise templates.TemplateError("%s is a %s template; this command takes %s"
                                          % (args.template, kind, " or ".join(args.kinds)))
        body = templates.instantiate(template, templates.parse_assignments(args.set))
        if args.url:
            return _add_remote(args, kind, body)
        if args.schema_file:
            return _add_checked(args, load_schema_file(args.schema_file, embed_packs=False), kind, body)
        with datadir.exclusive(args.data_dir, "use --url and --token to change its schema") as data_dir:
            return _add_checked(args, _active_schema(data_dir), kind, body, data_dir)
    except (OSError, ValueError) as exc:
        print("cannot add %s: %s" % (args.template, exc), file=sys.stderr)
        return 1


def _add_checked(args, doc, kind, body, data_dir=None):
    """Add ``body`` to ``doc`` and store the result (in the schema file, or as the data dir's new active version)
    if it can be served."""
    from app.tools import templates
    new_doc, added = templates.apply(doc, kind, body)
    checked = new_doc
    if data_dir is None:  # the file keeps naming its packs' files; the check reads them
        checked = packs.embed(new_doc, os.path.dirname(os.path.abspath(args.schema_file)))
    _, report = compile_schema(checked, args.schema_file or "the schema with %s" % added)
    if not report.ok:
        print(report.to_text(), file=sys.stderr)
        print("not added: the schema with %s cannot be served" % added, file=sys.stderr)
        return 1
    if data_dir is None:
        _write_json(args.schema_file, new_doc)
        print("added %s to %s" % (added, args.schema_file))
    else:
        row = _schema_store(data_dir).add(new_doc, "cli", "added %s" % added)
        print("added %s: schema version %d is active in %s (served from the server's next start)"
              % (added, row.version, args.data_dir))
    return 0


def _add_remote(args, kind, body):
    import requests

    from app.tools import templates
    headers = {"Authorization": "Bearer %s" % args.token}
    base = args.url.rstrip("/")
    try:
        current = requests.get(base + "/admin/schema", headers=headers, timeout=30)
        if current.status_code != 200:
            print("cannot read the schema: %s %s" % (current.status_code, current.text), file=sys.stderr)
            return 1
        new_doc, added = templates.apply(current.json()["schema"], kind, body)
        answer = requests.post(base + "/admin/schema", params={"comment": "added %s" % added}, json=new_doc,
                               headers=headers, timeout=60)
    except requests.RequestException as exc:
        print("cannot reach %s: %s" % (base, exc), file=sys.stderr)
        return 1
    if answer.status_code not in (200, 201):
        print("not added (%s): %s" % (answer.status_code, json.dumps(answer.json(), indent=2)), file=sys.stderr)
        return 1
    print("added %s: schema version %d is active and served%s" % (added, answer.json()["version"],
                                                                   " (unchanged)" if answer.json()["unchanged"]
                                                                   else ""))
    return 0


def _schema_store(data_dir):
    from app.identity import database
    from app.repository.schema_store import SchemaStore
    url = database.database_url(data_dir)
    database.upgrade(url)
    return SchemaStore(database.connect(url)[1])


def _active_schema(data_dir):
    active = _schema_store(data_dir).active()
    if active is None:
        return load_schema_file(DEFAULT_SCHEMA)
    return json.loads(active.document)


def _write_json(path, doc):
    import os
    import tempfile
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".schema-")
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)


def cmd_validate(args):
    import os

    from app.tools import compliance
    try:
        doc = load_schema_file(args.path)
    except (OSError, ValueError) as exc:
        print("cannot read %s: %s" % (args.path, exc), file=sys.stderr)
        return 1
    os.environ.setdefault("DEPOT_ADMIN_PASSWORD", "compliance-probe-password")
    results = compliance.run(doc)
    print("\nsummary:")
    for category, (passed, failed) in results.items():
        print("  %-9s %d passed, %d failed" % (category, passed, failed))
    total_failed = sum(failed for _, failed in results.values())
    total_passed = sum(passed for passed, _ in results.values())
    print("%d passed, %d failed" % (total_passed, total_failed))
    return 1 if total_failed else 0


def stopped_service(args, instead):
    """A Service over the data dir of ``args``, which no running server may hold (DataDirError naming
    ``instead``, what to do while one runs)."""
    from app.repository.service import Service
    from app.stores.interfaces import StoreLocked
    data_dir = datadir.require(args.data_dir)
    try:
        return Service(data_dir, announce=lambda *_: None)
    except StoreLocked:
        raise datadir.in_use(args.data_dir, instead) from None


def cmd_gc(args):
    from app.repository import gc
    service = stopped_service(args, "use POST /admin/gc")
    try:
        result = gc.collect(service.engine, dry_run=args.dry_run, grace_seconds=args.grace_seconds)
        service.audit.record("cli", "admin.gc", gc.audit_target(result), "success", detail=gc.audit_detail(result))
    except DepotError as exc:  # gc.enabled is false
        print("error: %s" % exc.message, file=sys.stderr)
        return 1
    finally:
        service.close()
    print(json.dumps(result, indent=2))
    return 0


def cmd_reindex(args):
    service = stopped_service(args, "stop it first")
    try:
        counts = {name: service.engine.state.reindex(index)
                  for name, index in service.engine.compiled.definitions["index"].items()}
    finally:
        service.close()
    print(json.dumps({"rows_rewritten": counts}, indent=2))
    return 0


def cmd_migrate_store(args):
    from app.stores import migrate
    from app.stores.pgstate import STATE_URL_ENV
    from app.stores.registry import BLOB_URL_ENV

    if not args.to_state and not args.to_blobs:
        print("error: nothing to move: give --to-state, --to-blobs or both", file=sys.stderr)
        return 2
    service = stopped_service(args, "stop it first")
    try:
        target = service.stores.relocated(
            os.environ.get(STATE_URL_ENV) if args.to_state is None else
            None if args.to_state == "embedded" else args.to_state,
            os.environ.get(BLOB_URL_ENV) if args.to_blobs is None else args.to_blobs)
        try:
            report = _migrate(service, target, args)
        finally:
            target.close()
    except migrate.MigrationError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    finally:
        service.close()
    print(json.dumps(report, indent=2))
    return 0


def _migrate(service, target, args):
    """Copy what ``args`` moves from the service's stores to ``target`` (Stores.relocated) -> the report."""
    from app.stores import migrate
    definitions = service.engine.compiled.definitions
    report = {}
    if args.to_state:
        state = target.state(definitions["kv_store"])
        if state is service.engine.state:
            raise migrate.MigrationError("the state is there already")
        report["state"] = {"keys_copied": migrate.copy_state(service.engine.state, state)}
    if args.to_blobs:
        report["blobs"] = {}
        for name, definition in definitions["blob_store"].items():
            if target.placed(definition).spec == service.stores.placed(definition).spec:
                report["blobs"][name] = "there already"
                continue
            report["blobs"][name] = migrate.copy_blobs(service.engine.blob_stores[name],
                                                       target.blob_store(definition)).to_json()
    return report


def cmd_replicate(args):
    import os

    from app.repository import replication
    tokens = {"source": args.source_token or os.environ.get("DEPOT_SOURCE_TOKEN"),
              "target": args.target_token or os.environ.get("DEPOT_TARGET_TOKEN")}
    missing = [name for name, token in tokens.items() if not token]
    if missing:
        print("no token for the %s: pass --%s-token or set DEPOT_%s_TOKEN" % (missing[0], missing[0],
                                                                            missing[0].upper()), file=sys.stderr)
        return 2
    source = replication.Endpoint(args.source, tokens["source"])
    target = replication.Endpoint(args.target, tokens["target"])
    try:
        total = replication.pump(source, target, follow=args.follow, interval=args.interval)
    except (replication.PumpError, OSError) as exc:
        print("replication stopped: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    print("replica up to date: %d event(s) applied" % total)
    return 0


def cmd_db_upgrade(args):
    import os

    from app.identity import database
    if os.environ.get("DEPOT_DATABASE_URL"):  # the database is elsewhere: the data dir plays no part
        return _upgrade(database.database_url(args.data_dir), args.revision)
    with datadir.exclusive(args.data_dir, "stop it first (serve applies the migrations at start)") as data_dir:
        return _upgrade(database.database_url(data_dir), args.revision)


def _upgrade(url, revision):
    from app.identity import database
    database.upgrade(url, revision)
    print("database at %s is at revision %s" % (url, revision))
    return 0


def cmd_docs(args):
    from app.tools import docs
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


def _cpu_clock():
    """DEPOT_CPU_BUDGET=off stops the CPU budget's clock (a test suite's servers must not depend on machine load)."""
    from app.engine.budget import stopped_clock
    return stopped_clock if os.environ.get("DEPOT_CPU_BUDGET", "").lower() == "off" else None


def cmd_serve(args):
    """Check the schema, open the data dir and serve it (app/http/server.py): one process, whose --threads threads
    run requests while one I/O thread reads and writes every connection."""
    from app import create_app
    from app.http.server import ServerSettings, serve
    from app.repository.service import open_data_dir
    from app.stores.interfaces import StoreLocked
    from app.http.forwarding import trusted_proxies

    try:
        trusted_proxies(args.trusted_proxies)
    except ValueError as exc:
        print("error: %s (--trusted-proxies or DEPOT_TRUSTED_PROXIES)" % exc, file=sys.stderr)
        return 2
    metrics_address = _metrics_address(args.metrics_address or os.environ.get("DEPOT_METRICS_ADDRESS"))
    if metrics_address is False:
        print("error: --metrics-address (or DEPOT_METRICS_ADDRESS) is HOST:PORT", file=sys.stderr)
        return 2
    path = args.schema or DEFAULT_SCHEMA
    doc, report = _check_file(path)
    if doc is None:
        return 1
    if not report.ok:
        print(report.to_text(), file=sys.stderr)
        print("refusing to start: the schema cannot be served", file=sys.stderr)
        return 1
    if args.workers > 1:
        return _serve_workers(args, doc, path)
    try:
        app = create_app(open_data_dir(args.data_dir), schema=doc, schema_path=path, read_only=args.read_only,
                         load_schema=args.load_schema, cpu_clock=_cpu_clock(), trusted_proxies=args.trusted_proxies)
    except StoreLocked:
        raise datadir.in_use(args.data_dir, "stop it first, or give this one another --data-dir") from None
    service = app.extensions["depot"]
    settings = ServerSettings(host=args.host, port=args.port, threads=args.threads,
                              connection_limit=args.max_connections, header_timeout=args.header_timeout,
                              idle_timeout=args.idle_timeout, min_body_rate=args.min_body_rate,
                              max_body_bytes=service.engine.limits.max_request_body_bytes, listen_fd=args.listen_fd)
    if metrics_address is not None:
        from app.metrics import start_listener
        start_listener(*metrics_address)
        print("Metrics at http://%s:%d/metrics" % metrics_address, flush=True)
    print("Depot serving %s on http://%s:%d (data dir %s%s)" % (
        _served_schema(service, doc, path, args.schema is not None), args.host, args.port, args.data_dir,
        ", read-only replica" if args.read_only else ""), flush=True)
    serve(app, settings, on_stop=service.close)
    return 0


def _serve_workers(args, doc, path):
    """--workers N: open the data dir once (its first start, the schema's version), then serve it from N worker
    processes on one socket, over the shared stores (app/http/workers.py)."""
    from app.http import workers
    from app.identity import database
    from app.identity.auth import load_or_create_secret
    from app.repository.service import Service, open_data_dir
    from app.stores.interfaces import StoreLocked
    from app.stores.registry import lease

    missing = workers.missing_shared_stores(os.environ)
    if missing:
        print("error: %s" % workers.refusal(args.workers, missing), file=sys.stderr)
        return 2
    if args.metrics_address or os.environ.get("DEPOT_METRICS_ADDRESS"):
        print("error: --metrics-address serves one process's metrics; with --workers, scrape GET /metrics",
              file=sys.stderr)
        return 2
    data_dir = open_data_dir(args.data_dir)
    try:
        Service(data_dir, schema=doc, schema_path=path, load_schema=args.load_schema).close()
        held = lease(data_dir)  # the data dir is in use while the workers serve it
    except StoreLocked:
        raise datadir.in_use(args.data_dir, "stop it first, or give this one another --data-dir") from None
    try:
        sock = workers.listening_socket(args.host, args.port)
        env = dict(os.environ, DEPOT_SECRET_KEY=load_or_create_secret(data_dir),
                   DEPOT_DATABASE_URL=database.database_url(data_dir))
        team = [workers.Worker(number, _worker_argv(args, os.path.join(data_dir, workers.WORKERS_DIR, str(number)),
                                                    path, sock.fileno()))
                for number in range(1, args.workers + 1)]
        host, port = sock.getsockname()[:2]
        print("Listening at http://%s:%d (%d workers, %d threads each)" % (host, port, args.workers, args.threads),
              flush=True)
        return workers.Supervisor(team, env, sock).run()
    finally:
        held.close()


def _worker_argv(args, data_dir, schema_path, fd):
    """One worker's command line: the same serving options, its own data dir, the inherited socket."""
    argv = [sys.executable, "-m", "app", "serve", "--data-dir", data_dir, "--schema", schema_path,
            "--listen-fd", str(fd), "--host", args.host, "--threads", str(args.threads),
            "--max-connections", str(args.max_connections), "--header-timeout", str(args.header_timeout),
            "--idle-timeout", str(args.idle_timeout), "--min-body-rate", str(args.min_body_rate)]
    if args.read_only:
        argv.append("--read-only")
    if args.trusted_proxies:
        argv += ["--trusted-proxies", args.trusted_proxies]
    return argv


def _metrics_address(text):
    """(host, port) of --metrics-address; None when not given; False when it is not HOST:PORT."""
    if not text:
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return False
    return host.strip("[]"), int(port)


def _served_schema(service, doc, path, named):
    """How the start-up line names the schema served: its version and digest, and the file only when the file
    is what is served. A named file that differs from the data dir's active schema gets a note on stderr."""
    from app.engine.compiler import schema_digest
    served = service.schemas.active()
    same = schema_digest(doc) == served.sha256
    if named and not same:
        print("note: %s differs from the data dir's active schema (version %d), which is served; to serve %s, "
              "restart with --load-schema (it becomes a new version) or POST it to /admin/schema"
              % (path, served.version, path), file=sys.stderr, flush=True)
    return "schema version %d (sha256 %s, %s)" % (served.version, served.sha256[:12],
                                                  "from %s" % path if same else "the data dir's active schema")


def main(argv=None):
    from app.stores.interfaces import BlobLocationError, CacheServerError, StateLocationError
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (datadir.DataDirError, CacheServerError, BlobLocationError, StateLocationError) as exc:  # a data dir in
        # use, DEPOT_CACHE_URL or DEPOT_STATE_URL not answering, DEPOT_BLOB_URL or DEPOT_STATE_URL malformed
        print("error: %s" % exc, file=sys.stderr)
        return datadir.EXIT_CODE
