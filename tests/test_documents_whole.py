"""Vocabulary for protocols that send documents whole and name things with slashes (npm, OCI): path parameters
spanning segments ({name:path}) and the router-checked overlaps they make, value.bind, answers carrying an ETag
(If-None-Match), and auth.issue_token (a route logging a user in)."""
import copy

import pytest

from app.engine.compiler import compile_schema
from tests.conftest import ADMIN_PASSWORD

ECHO = [{"op": "parse.path", "args": {"entity": "scoped"}},
        {"op": "respond.json", "args": {"body": {"name": "{name}"}}}]
SCOPED = {"fields": {"name": {"type": "string"}, "file": {"type": "string"}},  # npm's names: [@scope/]name
          "constraints": [{"field": "name", "regex": "^(@[a-z0-9-]+/)?[a-z0-9][a-z0-9.-]*$"}]}


def with_routes(schema, *routes):
    schema = copy.deepcopy(schema)
    schema["entities"]["scoped"] = SCOPED
    schema["api"]["routes"].extend(routes)
    return schema


def route(route_id, path, pipeline=ECHO, method="GET"):
    return {"id": route_id, "method": method, "path": path, "pipeline": copy.deepcopy(pipeline)}


def errors(schema):
    compiled, report = compile_schema(schema, "test")
    return compiled, report.to_dict()["errors"]


def test_a_path_parameter_may_span_segments(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, route("spans", "/x/{name:path}"),
                                   route("spans_then", "/x/{name:path}/-/{file}", [
                                       {"op": "parse.path", "args": {"entity": "scoped"}},
                                       {"op": "respond.json", "args": {"body": {"name": "{name}", "file": "{file}"}}}])))
    assert depot.client.get("/x/@scope/tool").get_json() == {"name": "@scope/tool"}
    assert depot.client.get("/x/@scope%2ftool").get_json() == {"name": "@scope/tool"}
    assert depot.client.get("/x/@a/b/-/c.tgz").get_json() == {"name": "@a/b", "file": "c.tgz"}


@pytest.mark.parametrize("url", ["/x/a/../b", "/x/a/./b", "/x/a%5cb", "/x/a/%2e%2e/b"])
def test_a_spanning_parameter_refuses_dot_segments_and_backslashes(make_depot, project_schema, url):
    depot = make_depot(with_routes(project_schema, route("spans", "/x/{name:path}")))
    answer = depot.client.get(url)
    assert answer.status_code in (400, 404)
    if answer.status_code == 400:
        assert answer.get_json()["error"]["code"] == "INVALID_PATH_PARAMETER"


def test_openapi_names_a_spanning_parameter_plainly(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, route("spans", "/x/{name:path}")))
    paths = depot.client.get("/openapi.json").get_json()["paths"]
    [parameter] = [p for p in paths["/x/{name}"]["get"]["parameters"] if p["in"] == "path"]
    assert parameter["name"] == "name" and "several segments" in parameter["description"]


def test_an_unknown_parameter_kind_is_a_load_error(project_schema):
    compiled, found = errors(with_routes(project_schema, route("bad", "/x/{name:int}")))
    assert compiled is None and any("{name:path}" in e["message"] for e in found)


def test_a_spanning_parameter_hiding_literal_routes_needs_the_entity_to_refuse_them(project_schema):
    """/x/{name:path} would answer /x/-/ping for a name '-/ping': an error, unless the name's entity refuses it."""
    ping = route("ping", "/x/-/ping", [{"op": "respond.json", "args": {"body": {}}}])
    loose = route("spans", "/x/{name:path}", [{"op": "parse.path", "args": {}},
                                               {"op": "respond.json", "args": {"body": {"name": "{name}"}}}])
    compiled, found = errors(with_routes(project_schema, loose, ping))
    assert compiled is None
    assert any("GET /x/{name:path} is hidden by GET /x/-/ping" in e["message"] for e in found), found
    assert errors(with_routes(project_schema, route("spans", "/x/{name:path}"), ping))[0] is not None


def test_value_bind_picks_parts_of_a_body(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, route("pick", "/x/pick", [
        {"op": "parse.json", "args": {"out": "body"}},
        {"op": "value.bind", "args": {"value": "{$body.versions|keys|first}", "field": "version"}},
        {"op": "value.bind", "args": {"value": "{$body.versions|values|first}", "out": "manifest"}},
        {"op": "respond.json", "args": {"body": {"version": "{version}", "deps": "$manifest.dependencies"}}}],
        method="POST")))
    answer = depot.client.post("/x/pick", json={"versions": {"1.2.3": {"dependencies": {"a": "^1"}}}})
    assert answer.get_json() == {"version": "1.2.3", "deps": {"a": "^1"}}
    assert depot.client.post("/x/pick", json={"versions": []}).get_json()["error"]["code"] == "INVALID_FILTER_INPUT"


@pytest.mark.parametrize("bind_args, words", [
    ({"value": "x"}, "needs `out`"),
    ({"value": "x", "field": "namespace"}, "path parameter"),
    ({"value": "x", "field": "not a name"}, "identifier"),
])
def test_value_bind_targets_are_checked_at_load(project_schema, bind_args, words):
    compiled, found = errors(with_routes(project_schema, route("bind", "/x/{namespace}/bind", [
        {"op": "parse.path", "args": {}}, {"op": "value.bind", "args": bind_args},
        {"op": "respond.json", "args": {"body": {}}}])))
    assert compiled is None and any(words in e["message"] for e in found), found


def test_an_answer_carrying_an_etag_answers_if_none_match(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, route("tagged", "/x/tagged", [
        {"op": "respond.json", "args": {"body": {"v": 1}, "headers": {"ETag": "rev-7"}}}])))
    first = depot.client.get("/x/tagged")
    assert first.headers["ETag"] == '"rev-7"'
    again = depot.client.get("/x/tagged", headers={"If-None-Match": 'W/"rev-7", "other"'})
    assert again.status_code == 304 and again.data == b""
    assert depot.client.get("/x/tagged", headers={"If-None-Match": '"rev-6"'}).status_code == 200


LOGIN = [{"op": "parse.json", "args": {"out": "body"}},
         {"op": "auth.issue_token", "args": {"username": "$body.name", "password": "$body.password",
                                             "scopes": ["read", "write"], "name": "route login", "out": "login"}},
         {"op": "respond.json", "args": {"status": 201, "body": {"token": "$login.token",
                                                                 "scopes": "$login.scopes"}}}]


def test_a_route_logs_a_user_in_and_the_token_works(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, route("login", "/x/login", LOGIN, method="PUT")))
    answer = depot.client.put("/x/login", json={"name": "admin", "password": ADMIN_PASSWORD})
    assert answer.status_code == 201, answer.get_json()
    token = answer.get_json()["token"]
    assert answer.get_json()["scopes"] == ["read", "write"]
    me = depot.client.get("/auth/me", headers={"Authorization": "Bearer " + token})
    assert me.status_code == 200 and me.get_json()["username"] == "admin"
    wrong = depot.client.put("/x/login", json={"name": "admin", "password": "nope"})
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "INVALID_CREDENTIALS"
    assert depot.client.put("/x/login", json={"name": "", "password": "x"}).status_code == 400


def test_a_route_answers_errors_in_its_own_format(make_depot, project_schema):
    failing = route("npmish", "/x/fail/{name}", [
        {"op": "parse.path", "args": {}},
        {"op": "respond.error", "args": {"status": 409, "code": "TAKEN", "message": "{name} is taken",
                                         "field": "name"}}])
    failing["error_body"] = {"error": "{error.message}", "errors": [{"code": "{error.code}",
                                                                      "detail": "{error.field?}"}],
                             "status": "{error.status}"}
    depot = make_depot(with_routes(project_schema, failing))
    answer = depot.client.get("/x/fail/thing")
    assert answer.status_code == 409
    assert answer.get_json() == {"error": "thing is taken", "errors": [{"code": "TAKEN", "detail": "name"}],
                                 "status": 409}
    assert depot.client.get("/x/fail/a..b").get_json()["errors"][0]["code"] == "INVALID_PATH_PARAMETER"


@pytest.mark.parametrize("body, words", [({"e": "{principal.sub}"}, "only"), ({"e": "{error.field}"}, "error.field?"),
                                         ({"e": "{error.nope}"}, "only")])
def test_an_error_body_reads_the_error_only(project_schema, body, words):
    bad = route("bad", "/x/bad", [{"op": "respond.json", "args": {"body": {}}}])
    bad["error_body"] = body
    compiled, found = errors(with_routes(project_schema, bad))
    assert compiled is None and any(words in e["message"] and e["place"].endswith(".error_body") for e in found)


def test_a_page_with_a_cache_key_is_rendered_once_per_key(make_depot, project_schema):
    """The page is kept whole under its key: a request with the same key gets it as it was rendered, even though
    what the page would read changed (so a key must name everything the page depends on); a new key renders."""
    page = route("cached", "/x/cached/{name}", [
        {"op": "parse.path", "args": {"entity": "scoped"}},
        {"op": "parse.query", "args": {"fields": {"say": {"type": "string", "default": "-"},
                                                   "rev": {"type": "string", "default": "1"}}}},
        {"op": "respond.render", "args": {"content_type": "text/plain", "cache_key": "k/{name}/{rev}",
                                          "template": "{{ fields.name }} says {{ fields.say }}"}}])
    depot = make_depot(with_routes(project_schema, page))
    assert depot.client.get("/x/cached/ann?say=hello").data == b"ann says hello"
    assert depot.client.get("/x/cached/ann?say=bye").data == b"ann says hello"  # kept under k/ann/1
    assert depot.client.get("/x/cached/ann?say=bye&rev=2").data == b"ann says bye"
    assert depot.client.get("/x/cached/bob?say=hi").data == b"bob says hi"
