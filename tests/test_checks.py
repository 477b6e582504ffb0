"""The load-time checker (app/engine/compiler.py, app/engine/checks.py): the reference schema broken one way per test.

Route indexes in the reference: 0 publish_artifact_blob, 1 fetch_artifact_blob, 2 set_tag, 3 resolve_latest,
4 proxy_fallback_fetch_blob.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.engine.compiler import compile_schema

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = "tests/fixtures/reference_schema.json"

PUBLISH, FETCH, SET_TAG, LATEST, PROXY = range(5)


def compile_(doc):
    return compile_schema(doc, "test-schema")


def steps(doc, route):
    return doc["api"]["routes"][route]["pipeline"]


def args(doc, route, index):
    return steps(doc, route)[index].setdefault("args", {})


def at(findings, place):
    return [f for f in findings if f.place == place]


def assert_error(doc, place, *words):
    """The schema is rejected, with an error at exactly ``place`` whose message says every one of ``words``."""
    compiled, report = compile_(doc)
    assert not report.ok, report.to_text()
    assert compiled is None
    here = at(report.errors, place)
    assert here, "no error at %s; got:\n%s" % (place, report.to_text())
    matching = [f for f in here if all(w in f.message for w in words)]
    assert matching, "error at %s does not say %r: %s" % (place, words, [f.message for f in here])
    return matching[0]


def assert_loads(doc):
    _, report = compile_(doc)
    assert report.ok, report.to_text()
    return report


def assert_warning(report, place, *words, check=None):
    here = [f for f in at(report.warnings, place) if all(w in f.message for w in words)]
    assert here, "no warning at %s saying %r; got:\n%s" % (place, words, report.to_text())
    if check is not None:
        assert check in {f.check for f in here}
    return here[0]


def minimal_route(route_id, method, path):
    return {"id": route_id, "method": method, "path": path,
            "pipeline": [{"op": "respond.json", "args": {"body": {"ok": True}}}]}


# --- the unchanged reference ----------------------------------------------------------------------------------

def test_reference_schema_loads(reference_schema):
    compiled, report = compile_(reference_schema)
    assert report.ok, report.to_text()
    assert report.errors == []
    assert [r.id for r in compiled.routes] == ["publish_artifact_blob", "fetch_artifact_blob", "set_tag",
                                               "resolve_latest", "proxy_fallback_fetch_blob"]


def test_reference_warns_about_body_bound_target_version(reference_schema):
    _, report = compile_(reference_schema)
    assert_warning(report, "api.routes[2].pipeline[8].args.key", "{target_version}", "JSON body", check="bindings")
    assert_warning(report, "api.routes[2].pipeline[10].args.value", "{target_version}")


def test_reference_warns_proxy_blob_put_is_not_digest_verified(reference_schema):
    _, report = compile_(reference_schema)
    warning = assert_warning(report, "api.routes[4].pipeline[9]", "blob.put", "blob.verify_digest",
                             check="run.digest_verify_on_put")
    assert warning.severity == "warning"


def test_reference_publish_blob_put_is_verified(reference_schema):
    _, report = compile_(reference_schema)
    assert at(report.findings, "api.routes[0].pipeline[5]") == []


def test_reference_warns_apply_pipelines_mismatch_document_schemas(reference_schema):
    _, report = compile_(reference_schema)
    published = assert_warning(report, "replication.apply_pipelines.apply_artifact_published[1].args.value",
                               "artifact_meta", "created_at", check="document_schemas")
    assert "artifact.published" in published.message
    assert_warning(report, "replication.apply_pipelines.apply_tag_updated[1].args.value", "tag_map", "target_key",
                   check="document_schemas")


def test_reference_warns_latest_monotonic_invariant(reference_schema):
    _, report = compile_(reference_schema)
    warning = assert_warning(report, "invariants.global[2]", "invariant violated", check="inv.latest_monotonic")
    assert warning.check == "inv.latest_monotonic"


def test_reference_other_invariants_hold(reference_schema):
    _, report = compile_(reference_schema)
    assert at(report.findings, "invariants.global[0]") == []
    assert at(report.findings, "invariants.global[1]") == []


# --- ops ------------------------------------------------------------------------------------------------------

def test_op_not_in_ops_allowed(reference_schema):
    reference_schema["ops"]["allowed"].remove("cache.put")
    assert_error(reference_schema, "api.routes[1].pipeline[9].op", "cache.put", "ops.allowed")


def test_op_not_in_vocabulary(reference_schema):
    reference_schema["ops"]["allowed"].append("blob.frobnicate")
    steps(reference_schema, LATEST).insert(0, {"op": "blob.frobnicate", "args": {}})
    assert_error(reference_schema, "api.routes[3].pipeline[0].op", "blob.frobnicate", "vocabulary")
    assert_error(reference_schema, "ops.allowed", "blob.frobnicate", "vocabulary")


def test_unknown_argument(reference_schema):
    args(reference_schema, FETCH, 6)["cache"] = True
    assert_error(reference_schema, "api.routes[1].pipeline[6].args.cache", "unknown argument", "kv.get")


def test_missing_required_argument(reference_schema):
    del args(reference_schema, FETCH, 6)["doc"]
    assert_error(reference_schema, "api.routes[1].pipeline[6].args.doc", "missing required argument", "kv.get")


def test_missing_required_output_argument(reference_schema):
    del args(reference_schema, LATEST, 4)["out"]
    assert_error(reference_schema, "api.routes[3].pipeline[4].args.out", "missing required argument", "index.query")


def test_ill_typed_constant_argument(reference_schema):
    args(reference_schema, FETCH, 7)["status"] = "404"
    assert_error(reference_schema, "api.routes[1].pipeline[7].args.status", "integer")


# --- references to schema objects -----------------------------------------------------------------------------

def test_unknown_entity(reference_schema):
    args(reference_schema, PUBLISH, 1)["entity"] = "artefact"
    assert_error(reference_schema, "api.routes[0].pipeline[1].args.entity", "unknown entity", "'artefact'")


def test_unknown_entity_is_attributed_to_the_entity_refs_check(reference_schema):
    args(reference_schema, PUBLISH, 3)["entity"] = "ghost"
    finding = assert_error(reference_schema, "api.routes[0].pipeline[3].args.entity", "unknown entity", "'ghost'")
    assert finding.check == "val_entity_references"


def test_unknown_document(reference_schema):
    args(reference_schema, FETCH, 6)["doc"] = "artifact_metadata"
    assert_error(reference_schema, "api.routes[1].pipeline[6].args.doc", "unknown document", "'artifact_metadata'",
                 "artifact_meta")


def test_unknown_index(reference_schema):
    args(reference_schema, LATEST, 4)["index"] = "versions"
    assert_error(reference_schema, "api.routes[3].pipeline[4].args.index", "unknown index", "'versions'")


def test_unknown_blob_store(reference_schema):
    args(reference_schema, FETCH, 8)["store"] = "secondary"
    assert_error(reference_schema, "api.routes[1].pipeline[8].args.store", "unknown blob store", "'secondary'")


def test_unknown_upstream(reference_schema):
    args(reference_schema, PROXY, 6)["upstream"] = "originB"
    assert_error(reference_schema, "api.routes[4].pipeline[6].args.upstream", "unknown upstream", "'originB'")


def test_unknown_event_type(reference_schema):
    args(reference_schema, PUBLISH, 10)["type"] = "artifact.deleted"
    assert_error(reference_schema, "api.routes[0].pipeline[10].args.type", "unknown event type",
                 "'artifact.deleted'")


def test_unknown_scope(reference_schema):
    args(reference_schema, PUBLISH, 0)["scopes"] = ["write", "superuser"]
    assert_error(reference_schema, "api.routes[0].pipeline[0].args.scopes", "unknown scope", "superuser")


def test_unknown_storage_schema_on_a_document(reference_schema):
    reference_schema["storage"]["documents"]["tag_map"]["schema"] = "TagMapV2"
    assert_error(reference_schema, "storage.documents.tag_map.schema", "unknown schema", "'TagMapV2'")


def test_unknown_storage_schema_in_validate_json_schema(reference_schema):
    args(reference_schema, SET_TAG, 5)["schema"] = "SetTagBody"
    assert_error(reference_schema, "api.routes[2].pipeline[5].args.schema", "unknown schema", "'SetTagBody'")


def test_unknown_kv_store_on_a_document(reference_schema):
    reference_schema["storage"]["documents"]["tag_map"]["store"] = "metadata"
    assert_error(reference_schema, "storage.documents.tag_map.store", "unknown kv store", "'metadata'")


def test_unknown_source_document_of_an_index(reference_schema):
    reference_schema["indexes"]["tags"]["source_document"] = "tags_doc"
    assert_error(reference_schema, "indexes.tags.source_document", "unknown document", "'tags_doc'")


def test_unknown_event_type_in_replay(reference_schema):
    reference_schema["replication"]["replay"]["apply_pipelines"]["artifact.removed"] = "apply_artifact_published"
    assert_error(reference_schema, "replication.replay.apply_pipelines.artifact.removed", "unknown event type")


# --- bindings -------------------------------------------------------------------------------------------------

def test_var_no_step_binds(reference_schema):
    args(reference_schema, FETCH, 8)["digest"] = "$metadata.blob_digest"
    assert_error(reference_schema, "api.routes[1].pipeline[8].args.digest", "$metadata", "no earlier step")


def test_var_bound_only_by_a_later_step(reference_schema):
    args(reference_schema, PUBLISH, 6)["digest"] = "$now"  # time.now_iso8601 binds $now at step 7
    assert_error(reference_schema, "api.routes[0].pipeline[6].args.digest", "$now", "no earlier step")


def test_var_cannot_read_its_own_steps_output(reference_schema):
    args(reference_schema, FETCH, 6)["key"] = "artifact/$meta"
    assert_error(reference_schema, "api.routes[1].pipeline[6].args.key", "$meta", "no earlier step")


def test_var_in_when_condition_no_step_binds(reference_schema):
    args(reference_schema, FETCH, 7)["when"] = {"is_null": "$metta"}
    assert_error(reference_schema, "api.routes[1].pipeline[7].args.when", "$metta", "no earlier step")


def test_field_that_can_never_be_bound(reference_schema):
    args(reference_schema, LATEST, 6)["body"]["tag"] = "{tag}"
    assert_error(reference_schema, "api.routes[3].pipeline[6].args.body", "{tag}", "can never be bound")


def test_field_used_before_parse_path_binds_it(reference_schema):
    route = steps(reference_schema, LATEST)
    route.insert(0, {"op": "string.format", "args": {"template": "{namespace}", "out": "ns"}})
    assert_error(reference_schema, "api.routes[3].pipeline[0].args.template", "{namespace}", "can never be bound")


def test_optional_field_that_is_never_bound_is_allowed(reference_schema):
    args(reference_schema, LATEST, 6)["body"]["tag"] = "{tag?}"
    _, report = compile_(reference_schema)
    assert report.ok, report.to_text()


def test_field_in_apply_pipeline_outside_event_schema(reference_schema):
    apply = reference_schema["replication"]["apply_pipelines"]["apply_artifact_published"]
    apply[1]["args"]["key"] = "artifact/{namespace}/{name}/{version}/{flavour}"
    assert_error(reference_schema, "replication.apply_pipelines.apply_artifact_published[1].args.key", "{flavour}",
                 "can never be bound")


def test_event_reference_outside_apply_pipeline(reference_schema):
    args(reference_schema, LATEST, 6)["body"]["event"] = "{event.payload}"
    assert_error(reference_schema, "api.routes[3].pipeline[6].args.body", "{event.payload}")


def test_principal_reference_in_apply_pipeline(reference_schema):
    apply = reference_schema["replication"]["apply_pipelines"]["apply_artifact_published"]
    apply[2]["args"]["value"] = {"by": "{principal.sub}"}
    assert_error(reference_schema, "replication.apply_pipelines.apply_artifact_published[2].args.value",
                 "{principal.sub}", "principal")


# --- templates ------------------------------------------------------------------------------------------------

def test_malformed_template_in_an_argument(reference_schema):
    args(reference_schema, FETCH, 6)["key"] = "artifact/{namespace/{name}"
    assert_error(reference_schema, "api.routes[1].pipeline[6].args.key", "malformed reference")


def test_malformed_template_deep_in_an_object_argument(reference_schema):
    args(reference_schema, FETCH, 10)["headers"]["ETag"] = "\"$meta.blob_digest}\""
    assert_error(reference_schema, "api.routes[1].pipeline[10].args.headers", "'}'")


@pytest.mark.parametrize("path, template, words", [
    (("storage", "documents", "tag_map", "key_template"), "tag/{namespace}/{name}/{tag", "malformed reference"),
    (("storage", "documents", "tag_map", "key_template"), "tag/{namespace}/{name}/{tag|escape}",
     "unknown filter 'escape'"),
    (("storage", "blob_stores", "primary", "addressing", "path_template"), "sha256/{digest:0:2/{digest}",
     "malformed reference"),
    (("storage", "blob_stores", "primary", "addressing", "path_template"), "sha256/{digest:0:2}/{digest|upper}",
     "without filters"),
])
def test_store_key_and_path_templates_are_checked(reference_schema, path, template, words):
    """A document's key template and a blob store's path template: malformed, or with filters they cannot take."""
    holder = reference_schema
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = template
    assert_error(reference_schema, ".".join(path), words)


@pytest.mark.parametrize("route, index, name, value, words", [
    (FETCH, 6, "key", "artifact/{namespace}/{name|slugify}/{version}/{variant}",
     ("{name|slugify}", "unknown filter 'slugify'", "urlquote")),
    (LATEST, 6, "body", {"links": {"self": ["{name|lower|shout}"]}}, ("unknown filter 'shout'",)),
    (FETCH, 7, "when", {"is_null": "{$meta|nope}"}, ("unknown filter 'nope'",)),
    (FETCH, 6, "key", "artifact/{namespace}/{name|default}/{version}/{variant}", ("'default' needs an argument",)),
    (FETCH, 6, "key", "artifact/{namespace}/{name|lower:x}/{version}/{variant}", ("'lower' takes no argument",)),
    (LATEST, 6, "body", {"tag": "{tag|lower}"}, ("{tag|lower}", "can never be bound")),
    (FETCH, 8, "digest", "{$metadata.blob_digest|lower}", ("$metadata", "no earlier step")),
    (LATEST, 6, "body", {"from": "{request.remote_addr}"}, ("{request.remote_addr}", "base_url")),
    (LATEST, 6, "body", {"all": {"$each": "$rows", "as": "row", "emit": "$row", "sort": "version"}},
     ("$each", "'sort'")),
    (LATEST, 6, "body", {"all": {"$each": "$rowz", "as": "row", "emit": "$row"}}, ("$rowz", "no earlier step")),
    (LATEST, 6, "body", {"all": {"$each": "$rows", "as": "row", "emit": "$row.version"}, "first": "$row.version"},
     ("$row.version", "no earlier step")),  # a loop's variable is unbound outside it
    (LATEST, 6, "body", {"all": {"$each": "$rows", "as": "row", "emit": {"v": "$row.version", "t": "{tag}"}}},
     ("{tag}", "can never be bound")),  # the loop's emit is checked like any template
])
def test_misused_filters_variables_and_loops_are_load_errors(reference_schema, route, index, name, value, words):
    """Each is an error at the argument's place, naming what is wrong (a filter, a reference, a member)."""
    arguments = args(reference_schema, route, index)
    if name == "body":  # members added to the route's answer
        arguments[name].update(value)
    else:
        arguments[name] = value
    assert_error(reference_schema, "api.routes[%d].pipeline[%d].args.%s" % (route, index, name), *words)




def test_a_field_with_a_default_that_is_never_bound_is_allowed(reference_schema):
    args(reference_schema, LATEST, 6)["body"]["tag"] = "{tag|default:latest}"
    assert_loads(reference_schema)


def test_request_base_url_in_a_route_is_allowed(reference_schema):
    args(reference_schema, LATEST, 6)["body"]["url"] = "{request.base_url}/v1/{namespace}/{name|urlquote}"
    assert_loads(reference_schema)


def test_request_base_url_in_an_apply_pipeline(reference_schema):
    apply = reference_schema["replication"]["apply_pipelines"]["apply_artifact_published"]
    apply[2]["args"]["value"] = {"url": "{request.base_url}"}
    assert_error(reference_schema, "replication.apply_pipelines.apply_artifact_published[2].args.value",
                 "{request.base_url}", "no request")


def test_each_over_rows_loads(reference_schema):
    args(reference_schema, LATEST, 6)["body"]["all"] = {"$each": "$rows", "as": "row", "key": "{$row.version}",
                                                        "emit": {"digest": "{$row.blob_digest:7:64}"}}
    assert_loads(reference_schema)


def test_string_argument_given_an_object(reference_schema):
    args(reference_schema, FETCH, 6)["key"] = {"namespace": "{namespace}"}
    assert_error(reference_schema, "api.routes[1].pipeline[6].args.key", "string")


# --- pipeline and route shape ---------------------------------------------------------------------------------

def test_pipeline_longer_than_max_pipeline_ops(reference_schema):
    reference_schema["ops"]["limits"]["max_pipeline_ops"] = 12
    assert_error(reference_schema, "api.routes[0].pipeline", "13", "max_pipeline_ops", "12")


def test_pipeline_at_max_pipeline_ops_is_allowed(reference_schema):
    reference_schema["ops"]["limits"]["max_pipeline_ops"] = 13
    _, report = compile_(reference_schema)
    assert at(report.errors, "api.routes[0].pipeline") == []
    assert at(report.errors, "api.routes[2].pipeline")  # set_tag has 15 ops


def test_duplicate_route_ids(reference_schema):
    reference_schema["api"]["routes"][LATEST]["id"] = "set_tag"
    assert_error(reference_schema, "api.routes[3].id", "duplicate route id", "'set_tag'", "api.routes[2]")


def test_duplicate_method_and_path(reference_schema):
    reference_schema["api"]["routes"].append(minimal_route("latest_again", "GET", "/v1/{namespace}/{name}/latest"))
    assert_error(reference_schema, "api.routes[5].path", "duplicates", "api.routes[3]")


def test_duplicate_path_shape_with_different_param_names(reference_schema):
    reference_schema["api"]["routes"].append(minimal_route("latest_alias", "GET", "/v1/{ns}/{pkg}/latest"))
    assert_error(reference_schema, "api.routes[5].path", "duplicates", "api.routes[3]")


def test_same_path_with_another_method_is_not_a_duplicate(reference_schema):
    reference_schema["api"]["routes"].append(minimal_route("latest_post", "POST", "/v1/{namespace}/{name}/latest"))
    _, report = compile_(reference_schema)
    assert report.ok, report.to_text()


def test_repeated_path_parameter(reference_schema):
    reference_schema["api"]["routes"].append(minimal_route("twice", "GET", "/v2/{name}/{name}"))
    assert_error(reference_schema, "api.routes[5].path", "distinct")


def test_unknown_when_keyword(reference_schema):
    args(reference_schema, FETCH, 7)["when"] = {"is_nul": "$meta"}
    assert_error(reference_schema, "api.routes[1].pipeline[7].args.when.is_nul", "unknown condition", "'is_nul'")


def test_unknown_when_keyword_nested(reference_schema):
    args(reference_schema, FETCH, 7)["when"] = {"any": [{"is_null": "$meta"}, {"missing": "$meta"}]}
    assert_error(reference_schema, "api.routes[1].pipeline[7].args.when.any[1].missing", "unknown condition")


def step_level_when(doc, route, index, condition):
    step = steps(doc, route)[index]
    step["args"].pop("when", None)
    step["when"] = condition


def test_unknown_step_level_when_keyword(reference_schema):
    step_level_when(reference_schema, FETCH, 7, {"is_nul": "$meta"})
    assert_error(reference_schema, "api.routes[1].pipeline[7].when.is_nul", "unknown condition")


def test_step_level_when_reads_unbound_var(reference_schema):
    step_level_when(reference_schema, FETCH, 7, {"is_null": "$metta"})
    assert_error(reference_schema, "api.routes[1].pipeline[7].when", "$metta", "no earlier step")


def test_when_reads_field_that_can_never_be_bound(reference_schema):
    args(reference_schema, LATEST, 5)["when"] = {"is_empty": "{bogus}"}
    assert_error(reference_schema, "api.routes[3].pipeline[5].args.when", "{bogus}", "can never be bound")


def test_malformed_template_in_when(reference_schema):
    args(reference_schema, LATEST, 5)["when"] = {"is_empty": "{rows"}
    assert_error(reference_schema, "api.routes[3].pipeline[5].args.when", "malformed reference")


def test_txn_commit_without_begin(reference_schema):
    steps(reference_schema, PUBLISH)[4] = {"op": "time.now_iso8601", "args": {"out": "started"}}
    assert_error(reference_schema, "api.routes[0].pipeline[11]", "txn.commit", "open transaction")


def test_nested_txn_begin(reference_schema):
    steps(reference_schema, PUBLISH).insert(5, {"op": "txn.begin", "args": {}})
    assert_error(reference_schema, "api.routes[0].pipeline[5]", "txn.begin", "api.routes[0].pipeline[4]")


def test_transaction_never_committed(reference_schema):
    del steps(reference_schema, PUBLISH)[11]  # txn.commit
    assert_error(reference_schema, "api.routes[0].pipeline", "never committed")


def test_unconditional_respond_inside_open_transaction(reference_schema):
    steps(reference_schema, PUBLISH).insert(11, {"op": "respond.json", "args": {"body": {"ok": True}}})
    assert_error(reference_schema, "api.routes[0].pipeline[11]", "transaction", "api.routes[0].pipeline[4]")


def test_txn_commit_without_begin_in_apply_pipeline(reference_schema):
    reference_schema["replication"]["apply_pipelines"]["apply_tag_updated"].insert(0, {"op": "txn.commit"})
    assert_error(reference_schema, "replication.apply_pipelines.apply_tag_updated[0]", "txn.commit",
                 "open transaction")


def test_apply_pipeline_longer_than_max_pipeline_ops(reference_schema):
    reference_schema["ops"]["limits"]["max_pipeline_ops"] = 3
    assert_error(reference_schema, "replication.apply_pipelines.apply_tag_updated", "4", "max_pipeline_ops")


def test_route_must_end_with_respond(reference_schema):
    steps(reference_schema, LATEST).pop()
    assert_error(reference_schema, "api.routes[3].pipeline", "unconditional respond")


def test_route_must_end_with_unconditional_respond(reference_schema):
    args(reference_schema, LATEST, 6)["when"] = {"is_not_empty": "$rows"}
    assert_error(reference_schema, "api.routes[3].pipeline", "unconditional respond")


def test_route_ending_with_a_non_respond_op(reference_schema):
    steps(reference_schema, LATEST).append({"op": "time.now_iso8601", "args": {"out": "t"}})
    assert_error(reference_schema, "api.routes[3].pipeline", "unconditional respond")


def test_kv_put_literal_value_lacks_required_field(reference_schema):
    del args(reference_schema, SET_TAG, 10)["value"]["updated_at"]
    assert_error(reference_schema, "api.routes[2].pipeline[10].args.value", "tag_map", "updated_at")


def test_kv_cas_put_constant_value_lacks_required_fields(reference_schema):
    args(reference_schema, PUBLISH, 8)["value"] = {"namespace": "n", "name": "x", "version": "1.0.0"}
    assert_error(reference_schema, "api.routes[0].pipeline[8].args.value", "artifact_meta", "blob_digest",
                 "created_at")


# --- validation.load_time_checks ------------------------------------------------------------------------------

def test_closed_world_false_fails_val_ops_closed_world(reference_schema):
    reference_schema["ops"]["closed_world"] = False
    finding = assert_error(reference_schema, "ops.closed_world", "True", "False")
    assert finding.check == "val.ops_closed_world"


def test_pipelines_only_use_ops_in_a_list(reference_schema):
    reference_schema["validation"]["load_time_checks"][1]["require"] = {
        "pipelines_only_use_ops_in": [op for op in reference_schema["ops"]["allowed"] if op != "index.query"]}
    finding = assert_error(reference_schema, "api.routes[3].pipeline[4].op", "index.query")
    assert finding.check == "val.pipeline_ops_allowed"


def test_pipelines_only_use_ops_in_covers_apply_pipelines(reference_schema):
    reference_schema["validation"]["load_time_checks"][1]["require"] = {
        "pipelines_only_use_ops_in": [op for op in reference_schema["ops"]["allowed"] if op != "index.upsert"]}
    finding = assert_error(reference_schema, "replication.apply_pipelines.apply_tag_updated[2].op", "index.upsert")
    assert finding.check == "val.pipeline_ops_allowed"


def test_pipelines_only_use_ops_in_a_path_that_is_not_a_list(reference_schema):
    reference_schema["validation"]["load_time_checks"][1]["require"] = {"pipelines_only_use_ops_in": "ops.limits"}
    assert_error(reference_schema, "validation.load_time_checks[1].require.pipelines_only_use_ops_in", "list")


def test_duplicate_route_ids_fail_val_unique_routes(reference_schema):
    reference_schema["api"]["routes"][LATEST]["id"] = "set_tag"
    for place in ("api.routes[2].id", "api.routes[3].id"):
        finding = assert_error(reference_schema, place, "not unique", "api.routes[].id")
        assert finding.check == "val_unique_routes"


def test_duplicate_index_key_names_fail_val_unique_index_keys(reference_schema):
    reference_schema["indexes"]["tags"]["keys"][0]["name"] = "by_name"
    for place in ("indexes.artifact_versions.keys[0].name", "indexes.tags.keys[0].name"):
        finding = assert_error(reference_schema, place, "'by_name'", "not unique")
        assert finding.check == "val_unique_index_keys"


def test_proxy_upstream_without_read_timeout(reference_schema):
    del reference_schema["upstreams"]["originA"]["timeouts_ms"]["read"]
    finding = assert_error(reference_schema, "upstreams.originA.timeouts_ms", "timeouts_ms.read",
                           "api.routes[4].pipeline[6]")
    assert finding.check == "val_no_unbounded_proxy"


def test_proxy_upstream_without_timeouts(reference_schema):
    del reference_schema["upstreams"]["originA"]["timeouts_ms"]
    assert_error(reference_schema, "upstreams.originA.timeouts_ms", "timeouts_ms.connect")


def test_proxy_upstream_with_unbounded_retries(reference_schema):
    reference_schema["upstreams"]["originA"]["retry"]["max_attempts"] = 1000
    finding = assert_error(reference_schema, "upstreams.originA.retry", "retry.max_attempts")
    assert finding.check == "val_no_unbounded_proxy"


def test_proxy_upstream_without_backoff(reference_schema):
    del reference_schema["upstreams"]["originA"]["retry"]["backoff_ms"]
    assert_error(reference_schema, "upstreams.originA.retry", "retry.backoff_ms")


def test_failing_load_check_with_warn_is_a_warning(reference_schema):
    reference_schema["ops"]["closed_world"] = False
    reference_schema["validation"]["load_time_checks"][0]["on_fail"] = "warn"
    _, report = compile_(reference_schema)
    assert report.ok, report.to_text()
    assert_warning(report, "ops.closed_world", "False", check="val.ops_closed_world")


@pytest.mark.parametrize("checks, on_fail, predicate, place, fragments", [
    ("load_time_checks", "reject_config", "all_routes_are_fast", "load_time_checks[6]", ("'all_routes_are_fast'",)),
    ("load_time_checks", "warn", "all_routes_are_fast", "load_time_checks[6]", ()),  # warn: still an error
    ("runtime_checks", "abort_request", "all_blobs_are_small", "runtime_checks[2]", ("'all_blobs_are_small'",)),
])
def test_unknown_predicate_is_an_error(reference_schema, checks, on_fail, predicate, place, fragments):
    reference_schema["validation"][checks].append({"id": "custom", "require": {predicate: True}, "on_fail": on_fail})
    assert_error(reference_schema, "validation.%s.require.%s" % (place, predicate), "unknown predicate", *fragments)


def test_malformed_equals_predicate_argument(reference_schema):
    reference_schema["validation"]["load_time_checks"][0]["require"] = {"equals": ["ops.closed_world"]}
    assert_error(reference_schema, "validation.load_time_checks[0].require.equals", "schema path")


def test_empty_require(reference_schema):
    reference_schema["validation"]["load_time_checks"][3]["require"] = {}
    assert_error(reference_schema, "validation.load_time_checks[3].require", "object of predicates")


def test_runtime_checks_with_abort_request_are_enforced(reference_schema):
    compiled, _ = compile_(reference_schema)
    assert compiled.runtime.digest_verify is True
    assert compiled.runtime.txn_for_writes is True


def test_runtime_checks_with_warn_are_not_enforced(reference_schema):
    for check in reference_schema["validation"]["runtime_checks"]:
        check["on_fail"] = "warn"
    compiled, report = compile_(reference_schema)
    assert report.ok
    assert compiled.runtime.digest_verify is False
    assert compiled.runtime.txn_for_writes is False
    assert_warning(report, "api.routes[4].pipeline[9]", "blob.verify_digest", check="run.digest_verify_on_put")


def test_write_outside_transaction_is_reported(reference_schema):
    steps(reference_schema, SET_TAG)[6] = {"op": "time.now_iso8601", "args": {"out": "started"}}  # was txn.begin
    del steps(reference_schema, SET_TAG)[13]  # txn.commit
    _, report = compile_(reference_schema)
    assert report.ok, report.to_text()
    assert_warning(report, "api.routes[2].pipeline[10]", "kv.put", "outside a transaction",
                   check="run.txn_for_writes")


def test_unknown_on_fail(reference_schema):
    reference_schema["validation"]["load_time_checks"][0]["on_fail"] = "explode"
    assert_error(reference_schema, "validation.load_time_checks[0].on_fail", "unknown on_fail", "'explode'")


def test_unknown_runtime_on_fail(reference_schema):
    reference_schema["validation"]["runtime_checks"][1]["on_fail"] = "shrug"
    assert_error(reference_schema, "validation.runtime_checks[1].on_fail", "unknown on_fail", "'shrug'")


# --- invariants -----------------------------------------------------------------------------------------------

def test_invariant_with_reject_config_is_an_error(reference_schema):
    reference_schema["invariants"]["global"][2]["on_fail"] = "reject_config"
    finding = assert_error(reference_schema, "invariants.global[2]", "invariant violated")
    assert finding.check == "inv.latest_monotonic"


def test_invariant_satisfied_once_tags_are_immutable(reference_schema):
    reference_schema["features"]["mutable_tags"] = False
    reference_schema["invariants"]["global"][2]["on_fail"] = "reject_config"
    _, report = compile_(reference_schema)
    assert report.ok, report.to_text()
    assert at(report.findings, "invariants.global[2]") == []


def test_invariant_with_unknown_on_fail_is_an_error(reference_schema):
    reference_schema["invariants"]["global"][2]["on_fail"] = "reject_confg"
    assert_error(reference_schema, "invariants.global[2].on_fail", "unknown on_fail", "'reject_confg'")


def test_route_requires_fails_when_cas_put_loses_if_absent(reference_schema):
    del args(reference_schema, PUBLISH, 8)["if_absent"]
    _, report = compile_(reference_schema)
    finding = assert_warning(report, "invariants.global[1]", "invariant violated", check="inv.immutability")
    assert "write-once" in finding.message


def test_route_requires_fails_when_if_absent_is_false(reference_schema):
    args(reference_schema, PUBLISH, 8)["if_absent"] = False
    reference_schema["invariants"]["global"][1]["on_fail"] = "reject_config"
    finding = assert_error(reference_schema, "invariants.global[1]", "invariant violated")
    assert finding.check == "inv.immutability"


def test_route_requires_fails_for_a_missing_route(reference_schema):
    reference_schema["api"]["routes"][PUBLISH]["id"] = "publish"
    reference_schema["invariants"]["global"][1]["on_fail"] = "reject_config"
    assert_error(reference_schema, "invariants.global[1]", "invariant violated")


def test_invariant_equals_reads_schema_paths(reference_schema):
    reference_schema["storage"]["blob_stores"]["primary"]["addressing"]["digest"] = "sha512"
    reference_schema["invariants"]["global"][0]["on_fail"] = "reject_config"
    finding = assert_error(reference_schema, "invariants.global[0]", "invariant violated")
    assert finding.check == "inv.cas_identity"


def test_invariant_with_unknown_keyword_names_its_place(reference_schema):
    reference_schema["invariants"]["global"][0]["assert"] = {"every": []}
    assert_error(reference_schema, "invariants.global[0].assert.every", "unknown condition")


# --- structure, entities --------------------------------------------------------------------------------------

def test_metaschema_error_names_its_place(reference_schema):
    reference_schema["api"]["routes"][FETCH]["method"] = "FETCH"
    finding = assert_error(reference_schema, "api.routes[1].method", "'FETCH'")
    assert "schema shape" in finding.message


def test_metaschema_error_for_a_step_without_op(reference_schema):
    del steps(reference_schema, LATEST)[5]["op"]
    assert_error(reference_schema, "api.routes[3].pipeline[5]", "'op'")


def test_metaschema_error_for_a_missing_section(reference_schema):
    del reference_schema["ops"]
    assert_error(reference_schema, "", "'ops'")


def test_invalid_regex_in_entity_constraint(reference_schema):
    reference_schema["entities"]["artifact"]["constraints"][1]["regex"] = "^[a-z0-9][a-z0-9._-{0,127}$"
    assert_error(reference_schema, "entities.artifact.constraints[1].regex", "invalid regular expression")


def test_constraint_on_unknown_field(reference_schema):
    reference_schema["entities"]["artifact"]["constraints"][0]["field"] = "namespaces"
    assert_error(reference_schema, "entities.artifact.constraints[0].field", "'namespaces'")


def test_unknown_normalize_rule(reference_schema):
    reference_schema["entities"]["artifact"]["fields"]["name"]["normalize"][1] = "lowercase"
    assert_error(reference_schema, "entities.artifact.fields.name.normalize[1]", "unknown normalize rule",
                 "'lowercase'")


def test_normalize_rule_with_wrong_parameters(reference_schema):
    reference_schema["entities"]["artifact"]["fields"]["name"]["normalize"][2] = "replace:_"
    assert_error(reference_schema, "entities.artifact.fields.name.normalize[2]", "replace:_")


def test_unknown_primary_key_field(reference_schema):
    reference_schema["entities"]["artifact"]["primary_key"][3] = "flavour"
    assert_error(reference_schema, "entities.artifact.primary_key[3]", "'flavour'")


def test_invalid_storage_json_schema(reference_schema):
    reference_schema["storage"]["schemas"]["TagMapV1"]["type"] = "dictionary"
    assert_error(reference_schema, "storage.schemas.TagMapV1", "not a valid JSON Schema")


# --- CLI ------------------------------------------------------------------------------------------------------

def run_check(*argv):
    return subprocess.run([sys.executable, "-m", "app", "check", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_cli_check_reference_exits_0_and_prints_warnings():
    result = run_check(REFERENCE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "api.routes[4].pipeline[9]" in result.stdout
    assert "inv.latest_monotonic" in result.stdout
    assert "{target_version}" in result.stdout
    assert "WARNING" in result.stdout and "ERROR" not in result.stdout
    assert "0 error(s)" in result.stdout


def test_cli_check_broken_schema_exits_1(tmp_path, reference_schema):
    reference_schema["ops"]["allowed"].remove("cache.put")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(reference_schema))
    result = run_check(str(broken))
    assert result.returncode == 1
    assert "ERROR" in result.stdout
    assert "api.routes[1].pipeline[9].op" in result.stdout
    assert "cannot be served" in result.stdout


def test_cli_check_json_reports_warnings():
    result = run_check(REFERENCE, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["errors"] == []
    places = {w["place"] for w in report["warnings"]}
    assert {"api.routes[4].pipeline[9]", "invariants.global[2]",
            "replication.apply_pipelines.apply_artifact_published[1].args.value"} <= places


def test_cli_check_json_reports_errors(tmp_path, reference_schema):
    reference_schema["ops"]["closed_world"] = False
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(reference_schema))
    result = run_check(str(broken), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert {"severity": "error", "place": "ops.closed_world", "message": "expected True, found False",
            "check": "val.ops_closed_world"} in report["errors"]


def test_cli_check_unparseable_file_exits_1(tmp_path):
    broken = tmp_path / "not-json.json"
    broken.write_text("{ not json")
    result = run_check(str(broken))
    assert result.returncode == 1
    assert "cannot read" in result.stderr


def test_duplicate_scope_names_are_an_error(reference_schema):
    reference_schema["auth"]["scopes"].append({"name": "write", "actions": []})
    _, report = compile_schema(reference_schema, "dup-scope")
    assert not report.ok
    assert any(f.place == "auth.scopes[3].name" and "duplicate scope" in f.message for f in report.errors)
