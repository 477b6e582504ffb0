#!/usr/bin/env python3
"""Fill a new data dir with many packages and many versions of one package, fast, before a server starts on it.

Publishing through the route costs a few milliseconds each (a blob fsynced, an audit row committed, the pipeline
run), so 100,000 publishes take about ten minutes on a two-core machine. This loader publishes one artifact of
each shape through the real publish route (in-process, app.tools.testing.LocalDepot with sync=False), records
what that publish's transaction wrote (documents, index upserts, events), and commits copies of it with the name
or the version substituted, a thousand to a write batch, through the state store's own Transaction, so every
index entry is made by the code a publish runs. The copies share the template's blob (the same one-byte content)
and its timestamps; each event gets its own id. What is loaded is checked over HTTP by bench/run.py before
anything is timed (the totals of the listings, the order of the versions). While loading, the state store keeps
its SST index blocks out of its block cache (index_blocks_held: the reason is there), and Depot's own options are
stored back at the end, so a server started on the data dir runs as on one it made itself. 100,000 packages and
100,000 versions take about 35 s.

    python3 bench/bulk_load.py DATA_DIR --namespace bulk --packages 100000 --versions 100000

makes namespace `bulk` with packages `pkg-000000` ... and `many` (``--versions`` versions) so that the namespace,
and the whole repository, holds exactly ``--packages`` packages. The admin's password is DEPOT_ADMIN_PASSWORD
(bench/server.py's, so a BenchServer started on the data dir logs in).
"""
import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server import PASSWORD  # noqa: E402

BATCH = 1000
MANY = "many"  # the package with many versions
FIRST_NAME = "pkg-000000"  # the first of the plain packages, the template the others copy
FIRST_VERSION = "0.0.0"  # the first version of MANY, the template the others copy


def package_names(count):
    """``count`` names of one-version packages (the template first)."""
    return ["pkg-%06d" % i for i in range(count)]


def many_versions(count):
    """``count`` distinct semver versions whose string order differs from their precedence (the template's
    first): 0.0.0, 0.0.1 ... 0.0.9, 0.1.0 ... 0.99.9, 1.0.0 ..."""
    return ["%d.%d.%d" % (i // 1000, (i // 10) % 100, i % 10) for i in range(count)]


class Recorder:
    """Records the transactions committed while it is active (app.stores.state.Transaction.commit wrapped in
    this process only)."""

    def __init__(self):
        from app.stores import state
        self.state_module, self.commit = state, state.Transaction.commit
        self.recorded = []

    def __enter__(self):
        recorded, commit = self.recorded, self.commit

        def recording_commit(transaction):
            recorded.append((transaction.state, dict(transaction.writes), dict(transaction.absent),
                             list(transaction.index_ops),
                             [(prefix, dict(record)) for prefix, record in transaction.events]))
            return commit(transaction)
        self.state_module.Transaction.commit = recording_commit
        return self

    def __exit__(self, *exc):
        self.state_module.Transaction.commit = self.commit


class Template:
    """One publish's transaction, as JSON text in which ``token`` (a name or a version) is replaced per copy."""

    def __init__(self, recorded, token):
        if len(recorded) != 1:
            raise SystemExit("a publish committed %d transactions, not one: the loader must learn the new shape"
                             % len(recorded))
        self.state, writes, absent, index_ops, events = recorded[0]
        self.indexes = {index.name: index for index, _, _ in index_ops}
        self.token = token
        self.text = json.dumps({
            "writes": [[key.decode("utf-8"), None if value is None else value.decode("utf-8")]
                       for key, value in writes.items()],
            "absent": [[key.decode("utf-8"), label] for key, label in absent.items()],
            "index_ops": [[index.name, row, upsert] for index, row, upsert in index_ops],
            "events": [[prefix.decode("utf-8"), {k: v for k, v in record.items() if k not in ("seq", "event_id")}]
                       for prefix, record in events]})
        if token not in self.text:
            raise SystemExit("the template's transaction does not mention %r" % token)

    def add_copy(self, transaction, value):
        """Add the template's writes with ``value`` in place of the token to ``transaction``."""
        copy = json.loads(self.text.replace(self.token, value))
        for key, encoded in copy["writes"]:
            if encoded is None:
                transaction.kv_delete(key.encode("utf-8"))
            else:
                transaction.kv_put(key.encode("utf-8"), encoded.encode("utf-8"))
        for key, label in copy["absent"]:
            transaction.absent[key.encode("utf-8")] = label
        for name, row, upsert in copy["index_ops"]:
            (transaction.index_upsert if upsert else transaction.index_delete)(self.indexes[name], row)
        for prefix, record in copy["events"]:
            transaction.emit(prefix.encode("utf-8"), dict(record, event_id=uuid.uuid4().hex))


def publish_template(depot, headers, namespace, name, version):
    """Publish one artifact through the route, recording its transaction."""
    with Recorder() as recorder:
        answer = depot.client.put("/v1/%s/%s/%s/any/blob" % (namespace, name, version), data=b"x",
                                  headers=headers)
    if answer.status_code != 201:
        raise SystemExit("the template publish answered %d %s" % (answer.status_code, answer.get_data(True)))
    return recorder.recorded


def replay(template, values):
    """Commit a copy of ``template`` per value, BATCH to a transaction, on the store it was committed to."""
    for start in range(0, len(values), BATCH):
        transaction = template.state.transaction()
        for value in values[start:start + BATCH]:
            template.add_copy(transaction, value)
        transaction.commit()


@contextlib.contextmanager
def index_blocks_held():
    """While loading, in this process only: the state store's options with the SST index blocks held by their
    table readers rather than in the 16 MiB block cache. An index block larger than a shard of that cache
    (RocksDB splits it into shards of 512 KiB) is dropped as soon as it has been used, so once the files are a
    few tens of MiB every read reads and decompresses one again (hundreds of microseconds), and this load takes
    minutes instead of seconds (with a 256 MiB cache, whose shards hold such a block, it is as fast as here).
    The files written are the same; this is a read-side setting.

    rocksdict keeps the options a database was created with: reopened, its column family runs on those (with
    a new 8 MiB cache), whatever options are passed. So the database is opened once more at the end with
    Depot's own options given for the column family explicitly, which stores them: a server started on the
    data dir then runs as it would on a data dir it made itself and was restarted on."""
    from rocksdict import BlockBasedOptions, Cache
    from app.stores import state
    bounded = state._bounded_options

    def options():
        chosen = bounded()
        table = BlockBasedOptions()
        table.set_block_cache(Cache(state.BLOCK_CACHE_BYTES))
        table.set_cache_index_and_filter_blocks(False)
        chosen.set_block_based_table_factory(table)
        return chosen
    state._bounded_options = options
    try:
        yield
    finally:
        state._bounded_options = bounded


def store_depot_options(state_dir):
    """Open the state database once with Depot's own options for its column family, so they are the ones
    stored (see index_blocks_held)."""
    from rocksdict import Rdict
    from app.stores.state import _bounded_options
    Rdict(state_dir, options=_bounded_options(), column_families={"default": _bounded_options()}).close()


def load(data_dir, namespace, packages, versions):
    """A new data dir holding ``packages`` packages in ``namespace``, one of them MANY with ``versions``
    versions: -> seconds taken."""
    os.environ["DEPOT_ADMIN_PASSWORD"] = PASSWORD
    os.environ.setdefault("DEPOT_BCRYPT_ROUNDS", "4")
    from app.stores.registry import STATE_DIR
    from app.tools.testing import LocalDepot
    started = time.perf_counter()
    with index_blocks_held():
        depot = LocalDepot(data_dir, sync=False)
        try:
            headers = {"Authorization": "Bearer " + depot.token(["read", "write"], "bench-loader")}
            names = package_names(packages - 1)
            plain = Template(publish_template(depot, headers, namespace, FIRST_NAME, "1.0.0"), FIRST_NAME)
            replay(plain, names[1:])
            many = Template(publish_template(depot, headers, namespace, MANY, FIRST_VERSION), FIRST_VERSION)
            replay(many, many_versions(versions)[1:])
        finally:
            depot.close()
    store_depot_options(os.path.join(data_dir, STATE_DIR))
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="a new (empty or absent) data dir")
    parser.add_argument("--namespace", default="bulk")
    parser.add_argument("--packages", type=int, required=True, help="packages in all, `many` included (>= 2)")
    parser.add_argument("--versions", type=int, required=True, help="versions of `many` (>= 1)")
    args = parser.parse_args()
    if args.packages < 2 or args.versions < 1:
        raise SystemExit("at least 2 packages and 1 version")
    seconds = load(args.data_dir, args.namespace, args.packages, args.versions)
    print("%s: %d packages, %s with %d versions, loaded in %.1f s" % (args.data_dir, args.packages, MANY,
                                                                      args.versions, seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
