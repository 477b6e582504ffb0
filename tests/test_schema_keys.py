"""Keys the server accepts but does not act on are reported with their places (app/engine/schema_keys.py); gc.enabled
and the gc marks are acted on."""
import copy
import subprocess
import sys

import pytest

from app.tools import docs
from app.engine import schema_keys
from app.engine.compiler import compile_schema
from tests.conftest import ROOT

UNSUPPORTED = "accepted but not supported by this server"
NOT_READ = "accepted but not read by this server"


def key_findings(doc):
    """{place: message} of the schema_keys findings on ``doc``, which must load."""
    compiled, report = compile_schema(doc, "test-schema")
    assert compiled is not None, report.to_text()
    found = [f for f in report.findings if f.check == schema_keys.CHECK]
    assert all(f.severity == "warning" for f in found), report.to_text()
    return {f.place: f.message for f in found}


def test_the_reference_loads_and_each_key_it_holds_that_nothing_acts_on_is_reported_at_its_place(
        reference_schema):
    found = key_findings(reference_schema)
    assert sorted(found) == sorted([
        "capabilities.features[1]",  # "virtual"
        "entities.artifact.primary_key",
        "entities.versioning.latest_policy.exclude_prerelease",
        "storage.kv_stores.meta.root",
        "auth.scopes[0].actions", "auth.scopes[1].actions", "auth.scopes[2].actions",
        "caching.response_cache.vary_headers", "caching.response_cache.revalidate",
        "caching.blob_cache.pin_on_access",
        "gc.retention.immutable_after_publish", "gc.retention.keep_last_n_versions",
        "gc.sweep.schedule", "gc.sweep.mark.sources",
        "features.allow_overwrite_artifacts",
    ])
    assert found["gc.sweep.schedule"].startswith(UNSUPPORTED + ": ") and "cron" in found["gc.sweep.schedule"]
    assert found["caching.blob_cache.pin_on_access"].startswith(UNSUPPORTED + ": ")
    assert found["capabilities.features[1]"].startswith('"virtual" is ' + UNSUPPORTED)
    assert found["features.allow_overwrite_artifacts"].startswith(NOT_READ)
    # the keys that describe what the server always does, with the values it implements, are silent
    assert not {"events.types[0].durable", "replication.mode", "ops.closed_world"} & set(found)


def test_the_project_schema_holds_no_key_the_server_ignores(project_schema):
    compiled, report = compile_schema(project_schema, "schema.json")
    assert compiled is not None and report.findings == [], report.to_text()


def _set(doc, path, value):
    *parents, last = path
    for part in parents:
        doc = doc[part]
    doc[last] = value


@pytest.mark.parametrize("path,value,place,words", [
    (("gc", "sweep", "schedule"), {"rrule": "FREQ=DAILY"}, "gc.sweep.schedule", [UNSUPPORTED, "cron"]),
    (("gc", "retention", "keep_last_n_versions"), 5, "gc.retention.keep_last_n_versions",
     [UNSUPPORTED, "never removes versions"]),
    (("caching", "blob_cache", "eviction"), {"policy": "fifo"}, "caching.blob_cache.eviction.policy",
     ['"fifo" is ' + UNSUPPORTED, "least recently read"]),
    (("caching", "blob_cache", "pin_on_access"), True, "caching.blob_cache.pin_on_access", [UNSUPPORTED]),
    (("storage", "kv_stores", "meta", "root"), "/data/meta", "storage.kv_stores.meta.root", [UNSUPPORTED]),
    (("events", "types", 2, "durable"), False, "events.types[2].durable",
     ["false is " + UNSUPPORTED, "durable log", "it implements true"]),
    (("replication", "shipping", "strategy"), "exactly_once", "replication.shipping.strategy",
     ['"exactly_once" is ' + UNSUPPORTED, '"at_least_once"']),
    (("indexes", "tags", "materialization", "trigger"), "nightly", "indexes.tags.materialization.trigger",
     [UNSUPPORTED, '"on_commit"']),
    (("upstreams", "originA", "auth", "mode"), "basic", "upstreams.originA.auth.mode", [UNSUPPORTED, '"none"']),
    (("schema_version",), "2.0", "schema_version", ['"2.0" is ' + UNSUPPORTED, "1 or 1.x"]),
    (("entities", "artifact", "fields", "tag", "optional"), False, "entities.artifact.fields.tag.optional",
     [UNSUPPORTED]),
    (("features", "virtual_repositories"), True, "features.virtual_repositories", [NOT_READ, "proxy_enabled"]),
    (("gc", "sweep", "sweep_unreferenced_after_second"), 60, "gc.sweep.sweep_unreferenced_after_second",
     ["unknown key", "sweep_unreferenced_after_seconds"]),
    (("ops", "limits", "max_steps"), 5, "ops.limits.max_steps", ["unknown key", "max_pipeline_ops"]),
    (("retention",), {"days": 3}, "retention", ["unknown key", "replication"]),
])
def test_a_key_the_server_does_not_act_on_is_reported_with_its_place(project_schema, path, value, place, words):
    _set(project_schema, path, value)
    found = key_findings(project_schema)
    assert list(found) == [place]
    assert all(word in found[place] for word in words), found[place]


def test_a_capability_the_server_lacks_is_reported_as_the_list_item(project_schema):
    project_schema["capabilities"]["features"].append("virtual")
    place = "capabilities.features[%d]" % (len(project_schema["capabilities"]["features"]) - 1)
    assert list(key_findings(project_schema)) == [place]


def test_a_key_describing_the_routes_is_silent_only_while_an_invariant_names_it(project_schema):
    invariants = project_schema["invariants"]["global"]
    invariants[:] = [i for i in invariants if i["id"] != "inv.latest_monotonic"]  # it names mutable_tags
    found = key_findings(project_schema)
    assert sorted(found) == ["entities.versioning.latest_policy.enabled",
                             "entities.versioning.latest_policy.monotonic", "features.mutable_tags"]
    assert "no invariant or validation check names it" in found["features.mutable_tags"]


def test_a_misspelt_gc_mark_is_refused_at_load(project_schema):
    project_schema.pop("packs")  # the schema's own documents only
    project_schema["gc"]["sweep"]["mark"]["mark_blobs_by"] = ["artifact_meta.blob_digest", "artefact_meta.blob"]
    compiled, report = compile_schema(project_schema)
    assert compiled is None
    assert [(e.place, e.message) for e in report.errors] == [
        ("gc.sweep.mark.mark_blobs_by[1]", "unknown document 'artefact_meta'; expected one of: artifact_meta, "
                                           "namespace, package, tag_map")]
    project_schema["gc"]["sweep"]["mark"]["mark_blobs_by"] = ["artifact_meta"]  # no field
    compiled, report = compile_schema(project_schema)
    assert compiled is None and [e.place for e in report.errors] == ["gc.sweep.mark.mark_blobs_by[0]"]


def test_the_invariants_tie_the_declarations_the_project_keeps_to_its_routes(project_schema):
    broken = copy.deepcopy(project_schema)
    latest = next(r for r in broken["api"]["routes"] if r["id"] == "resolve_latest")
    next(s for s in latest["pipeline"] if s["op"] == "index.query")["args"]["using"] = "by_name"
    _, report = compile_schema(broken)
    assert [w.check for w in report.warnings] == ["inv.latest_excludes_prerelease"]

    broken = copy.deepcopy(project_schema)
    publish = next(r for r in broken["api"]["routes"] if r["id"] == "publish_artifact_blob")
    next(s for s in publish["pipeline"] if s["op"] == "kv.cas_put")["args"]["if_absent"] = False
    _, report = compile_schema(broken)
    assert [w.check for w in report.warnings] == ["inv.immutability"]
    broken["gc"]["retention"]["immutable_after_publish"] = False
    broken["features"]["allow_overwrite_artifacts"] = True
    _, report = compile_schema(broken)
    assert report.warnings == []


# --- gc.enabled -------------------------------------------------------------------------------------------------

def test_gc_enabled_false_refuses_collections_and_still_answers_dry_runs(make_depot, project_schema):
    project_schema["gc"]["enabled"] = False
    depot = make_depot(project_schema)
    admin = depot.headers(["admin"])
    refused = depot.client.post("/admin/gc", json={"grace_seconds": 0}, headers=admin)
    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "GC_DISABLED"
    assert "gc.enabled" in refused.get_json()["error"]["message"]
    dry = depot.client.post("/admin/gc", json={"dry_run": True}, headers=admin)
    assert dry.status_code == 200 and dry.get_json()["dry_run"] is True

    depot.close()
    command = [sys.executable, "-m", "app", "gc", "--data-dir", depot.data_dir]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: garbage collection is disabled (gc.enabled is false)"
    assert subprocess.run(command + ["--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120).returncode == 0


def test_gc_enabled_must_be_a_boolean(project_schema):
    project_schema["gc"]["enabled"] = "no"
    compiled, report = compile_schema(project_schema)
    assert compiled is None and [e.place for e in report.errors] == ["gc.enabled"]


# --- the documentation ------------------------------------------------------------------------------------------

def test_operations_md_lists_every_key_the_server_does_not_plainly_read():
    rendered = docs.render()
    section = rendered[rendered.index("## Schema keys read and ignored"):rendered.index("## Deviations")]
    for key in ("gc.sweep.schedule", "gc.retention.keep_last_n_versions", "caching.blob_cache.pin_on_access",
                "caching.blob_cache.eviction.policy", "events.types[].durable", "features.*", "gc.enabled",
                "entities.*.primary_key", "auth.scopes[].actions"):
        assert "| `%s` |" % key in section
    assert len([line for line in section.splitlines() if line.startswith("| `")]) == len(schema_keys.documented())


def test_a_schema_with_no_gc_marks_refuses_collections_that_would_remove_every_blob(make_depot, project_schema):
    """With nothing marked live, a sweep would take every blob, the published ones included."""
    del project_schema["gc"]["sweep"]["mark"]
    project_schema.pop("packs")  # the PyPI pack marks its files
    depot = make_depot(project_schema)
    assert depot.publish("acme", "tool", "1.0.0", "linux", b"live bytes").status_code == 201
    admin = depot.headers(["admin"])
    refused = depot.client.post("/admin/gc", json={"grace_seconds": 0}, headers=admin)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "GC_NO_MARKS"
    dry = depot.client.post("/admin/gc", json={"dry_run": True, "grace_seconds": 0}, headers=admin)
    assert dry.status_code == 200 and dry.get_json()["orphans"]["count"] == 1  # what it would have removed
    blob = depot.client.get("/v1/acme/tool/1.0.0/linux/blob", headers=depot.headers(["read"]))
    assert blob.status_code == 200 and blob.get_data() == b"live bytes"
