"""The schema-compliance validator: does this server implement this schema, and do the ops behave?

Categories: ops (every allowed op is implemented and documented), routes (every route compiles), semantics
(transactions, CAS, cache, digest verification, scope enforcement, event emission: run, not inspected) and
storage (content addressing, persistence). Semantics and storage run probe routes, added to a copy of the
schema, against real stores in a temporary data dir. `python -m app validate` and
tests/test_schema_compliance.py both run these checks.
"""
import copy
import hashlib
import os
import shutil
import tempfile

from app.tools.testing import LocalDepot, ManualClock

CHECKS = []
PROBE_STORE, PROBE_DOC, PROBE_INDEX, PROBE_EVENT = "_probe", "_probe_doc", "_probe_index", "_probe.event"


def check(category, description):
    def register(fn):
        CHECKS.append((category, description, fn))
        return fn
    return register


class ComplianceFailure(AssertionError):
    pass


def expect(condition, message):
    if not condition:
        raise ComplianceFailure(message)


# --- ops and routes -----------------------------------------------------------------------------------------

@check("ops", "every op in ops.allowed is implemented")
def _ops_implemented(env):
    from app.engine.opspec import load_vocabulary
    missing = sorted(set(env.doc["ops"]["allowed"]) - set(load_vocabulary()))
    expect(not missing, "not implemented: %s" % ", ".join(missing))


@check("ops", "every op in ops.allowed is documented with all its arguments")
def _ops_documented(env):
    from app.tools import docs
    from app.engine.opspec import load_vocabulary
    text = docs.render()
    for name in env.doc["ops"]["allowed"]:
        expect("### `%s`" % name in text, "%s has no section in OPERATIONS.md" % name)
        section = text.split("### `%s`" % name, 1)[1].split("### ", 1)[0]
        for arg in load_vocabulary()[name].args:
            expect("| `%s` |" % arg in section, "%s: argument %s is undocumented" % (name, arg))


@check("routes", "the schema passes every load-time check")
def _schema_checks(env):
    expect(env.report.ok, "the schema cannot be served:\n" + env.report.to_text())


@check("routes", "every route compiles and is served")
def _routes_served(env):
    from app.engine import packs
    from app.engine.report import Report
    served = {route.id for route in env.depot.service.engine.compiled.routes}
    declared = packs.merge(env.doc, Report())["api"]["routes"]  # the schema's routes and its packs'
    missing = [r["id"] for r in declared if r["id"] not in served]
    expect(not missing, "routes not compiled: %s" % ", ".join(missing))


# --- semantics ------------------------------------------------------------------------------------------------

@check("semantics", "a transaction commits its writes together and an abort writes nothing")
def _transactions(env):
    expect(env.put("t1", commit=True).status_code == 201, "committed write refused")
    expect(env.get("t1").status_code == 200, "committed write not readable")
    expect(env.put("t2", commit=False).status_code == 200, "aborting request failed")
    expect(env.get("t2").status_code == 404, "an aborted transaction left its write behind")
    expect(env.index_rows() == ["t1"], "index rows %s; expected only the committed one" % env.index_rows())


@check("semantics", "cas_put if_absent lets exactly one writer create a key")
def _cas(env):
    expect(env.put("c1", commit=True).status_code == 201, "first create refused")
    second = env.put("c1", commit=True)
    expect(second.status_code == 409, "second create answered %s, expected 409" % second.status_code)


@check("semantics", "cache.put then cache.get hits, and an unknown key misses")
def _cache(env):
    answer = env.client.post("/_probe/cache/k1", headers=env.auth).get_json()
    expect(answer == {"before": False, "after": True, "value": {"k": "k1"}}, "cache answered %s" % answer)


@check("semantics", "blob.verify_digest rejects a wrong declared digest and nothing is stored")
def _digest(env):
    data = b"compliance probe bytes"
    wrong = "sha256:" + "0" * 64
    bad = env.client.put("/_probe/blob?digest=" + wrong, data=data, headers=env.auth)
    expect(bad.status_code == 400 and bad.get_json()["error"]["code"] == "DIGEST_MISMATCH",
           "wrong digest answered %s" % bad.status_code)
    expect(env.blob_store().locate("sha256:" + hashlib.sha256(data).hexdigest()) is None,
           "a rejected blob was stored")
    right = "sha256:" + hashlib.sha256(data).hexdigest()
    good = env.client.put("/_probe/blob?digest=" + right, data=data, headers=env.auth)
    expect(good.status_code == 201 and good.get_json()["digest"] == right, "right digest answered %s"
           % good.status_code)


@check("semantics", "auth.require_scopes: 401 without a token, 403 without the scope, admin implies all")
def _scopes(env):
    expect(env.client.get("/_probe/admin-only").status_code == 401, "no token was not 401")
    expect(env.client.get("/_probe/admin-only", headers=env.auth).status_code == 403, "missing scope was not 403")
    expect(env.client.get("/_probe/admin-only", headers=env.admin).status_code == 200, "admin was refused")


@check("semantics", "emit.event appends to the durable log with the commit, and not on abort")
def _events(env):
    before = env.event_count()
    env.put("e1", commit=True)
    env.put("e2", commit=False)
    expect(env.event_count() == before + 1, "events %d -> %d; expected one more" % (before, env.event_count()))


# --- storage --------------------------------------------------------------------------------------------------

@check("storage", "blobs are content-addressed: the bytes stored under the digest are exactly those bytes")
def _content_addressing(env):
    data = b"content addressed probe"
    stored = env.client.put("/_probe/blob", data=data, headers=env.auth)
    expect(stored.status_code == 201, "the probe publish answered %s %s" % (stored.status_code, stored.get_data()))
    digest = stored.get_json()["digest"]
    expect(digest == "sha256:" + hashlib.sha256(data).hexdigest(), "digest %s is not the bytes' sha256" % digest)
    blob = env.blob_store().locate(digest)
    expect(blob is not None and blob.size == len(data), "the stored blob is missing or of another size")
    with env.blob_store().open(digest) as stored_bytes:
        expect(stored_bytes.read() == data, "the stored bytes differ")
    expect(digest in set(env.blob_store().digests()), "the store does not list the blob under its digest")


@check("storage", "documents, index rows, events and blobs survive a restart")
def _persistence(env):
    env.put("p1", commit=True)
    events = env.event_count()
    env.depot.restart()
    env.refresh()
    expect(env.get("p1").status_code == 200, "document lost on restart")
    expect("p1" in env.index_rows(), "index row lost on restart")
    expect(env.event_count() == events, "events lost on restart")


# --- the probe environment ---------------------------------------------------------------------------------

def probe_schema(doc):
    """A copy of ``doc`` with a probe KV store, document, index, event type and routes."""
    doc = copy.deepcopy(doc)
    storage = doc.setdefault("storage", {})
    storage.setdefault("kv_stores", {})[PROBE_STORE] = {"kind": "rocksdb"}
    storage.setdefault("schemas", {})["_ProbeV1"] = {"type": "object", "required": ["k"]}
    storage.setdefault("documents", {})[PROBE_DOC] = {"store": PROBE_STORE, "key_template": "probe/{k}",
                                                      "schema": "_ProbeV1"}
    doc.setdefault("indexes", {})[PROBE_INDEX] = {"source_document": PROBE_DOC, "keys": [
        {"name": "_probe_by_k", "fields": [], "sort": ["k"]}]}
    doc.setdefault("events", {}).setdefault("types", []).append({"name": PROBE_EVENT, "schema": {"type": "object"}})
    scopes = {s["name"] for s in doc.setdefault("auth", {}).setdefault("scopes", [])}
    for name in ("read", "write", "admin"):
        if name not in scopes:
            doc["auth"]["scopes"].append({"name": name})
    allowed = doc["ops"]["allowed"]
    store = next(iter(storage.get("blob_stores", {})), None)
    doc["api"]["routes"].extend(_probe_routes(store, allowed))
    return doc


def _step(op, **args):
    return {"op": op, "args": args}


def _probe_routes(blob_store, allowed):
    write = _step("auth.require_scopes", scopes=["write"])
    routes = [
        {"id": "_probe_put", "method": "PUT", "path": "/_probe/doc/{k}", "pipeline": [
            write, _step("parse.path"), _step("parse.query", fields={"commit": {"type": "boolean", "default": True}}),
            _step("txn.begin"),
            _step("kv.cas_put", doc=PROBE_DOC, key="probe/{k}", value={"k": "{k}"}, if_absent=True),
            _step("index.upsert", index=PROBE_INDEX, key={}, value={"k": "{k}"}),
            _step("emit.event", type=PROBE_EVENT, payload={"k": "{k}"}),
            _step("txn.abort", when={"equals": ["{commit}", False]}),
            _step("respond.json", when={"equals": ["{commit}", False]}, status=200, body={"aborted": True}),
            _step("txn.commit"), _step("respond.json", status=201, body={"ok": True})]},
        {"id": "_probe_get", "method": "GET", "path": "/_probe/doc/{k}", "pipeline": [
            write, _step("parse.path"), _step("kv.get", doc=PROBE_DOC, key="probe/{k}", out="d"),
            _step("respond.error", when={"is_null": "$d"}, status=404, code="NOT_FOUND", message="none"),
            _step("respond.json", body="$d")]},
        {"id": "_probe_rows", "method": "GET", "path": "/_probe/rows", "pipeline": [
            write, _step("index.query", index=PROBE_INDEX, key={}, limit=1000, out="rows"),
            _step("respond.json", body="$rows")]},
        {"id": "_probe_cache", "method": "POST", "path": "/_probe/cache/{k}", "pipeline": [
            write, _step("parse.path"),
            _step("cache.get", kind="response", key="probe/{k}", hit_out="before", value_out="unused"),
            _step("cache.put", kind="response", key="probe/{k}", value={"k": "{k}"}, ttl_seconds=60),
            _step("cache.get", kind="response", key="probe/{k}", hit_out="after", value_out="value"),
            _step("respond.json", body={"before": "$before", "after": "$after", "value": "$value"})]},
        {"id": "_probe_admin", "method": "GET", "path": "/_probe/admin-only", "pipeline": [
            _step("auth.require_scopes", scopes=["admin"]), _step("respond.json", body={"ok": True})]},
    ]
    if blob_store is not None:
        routes.append({"id": "_probe_blob", "method": "PUT", "path": "/_probe/blob", "pipeline": [
            write, _step("txn.begin"),
            _step("blob.put", store=blob_store, **{"from": "request.body"}, out="digest", out_size="size"),
            _step("blob.verify_digest", digest="$digest", algo="sha256"),
            _step("txn.commit"), _step("respond.json", status=201, body={"digest": "$digest", "size": "$size"})]})
    return [r for r in routes if all(s["op"] in allowed for s in r["pipeline"])]


class ProbeEnv:
    def __init__(self, doc, data_dir):
        from app.engine.compiler import compile_schema
        self.doc = doc
        _, self.report = compile_schema(doc, "schema")
        self.data_dir = data_dir
        # the probes check what ops do, not how fast this machine is: the CPU budget's clock stands still
        self.depot = LocalDepot(os.path.join(data_dir, "data"), probe_schema(doc), cpu_clock=ManualClock())
        self.refresh()

    def refresh(self):
        self.client = self.depot.client
        self.auth = {"Authorization": "Bearer " + self.depot.token(["read", "write"], "probe-writer")}
        self.admin = {"Authorization": "Bearer " + self.depot.token(["admin"], "probe-admin")}

    def put(self, key, commit):
        return self.client.put("/_probe/doc/%s?commit=%s" % (key, "true" if commit else "false"), headers=self.auth)

    def get(self, key):
        return self.client.get("/_probe/doc/" + key, headers=self.auth)

    def index_rows(self):
        return [row["k"] for row in self.client.get("/_probe/rows", headers=self.auth).get_json()]

    def event_count(self):
        return self.depot.service.engine.event_log.last_seq()

    def blob_store(self):
        engine = self.depot.service.engine
        return next(iter(engine.blob_stores.values()))

    def close(self):
        self.depot.close()


def run(doc, report_line=print):
    """Run every check on schema ``doc``; returns {category: (passed, failed)} and prints one line per check."""
    results = {}
    for category, description, fn in CHECKS:
        data_dir = tempfile.mkdtemp(prefix="depot-compliance-")
        env = None
        try:
            env = ProbeEnv(doc, data_dir)
            fn(env)
            ok, detail = True, ""
        except Exception as exc:  # report every failure, whatever raised it, and go on with the next check
            ok, detail = False, "%s: %s" % (type(exc).__name__, exc)
        finally:
            if env is not None:
                env.close()
            shutil.rmtree(data_dir, ignore_errors=True)
        passed, failed = results.get(category, (0, 0))
        results[category] = (passed + ok, failed + (not ok))
        report_line("%-5s %-9s %s%s" % ("PASS" if ok else "FAIL", category, description,
                                         "" if ok else "\n      " + detail))
    return results
