"""Hostile input answered in-process: every such request gets a JSON 4xx naming what is wrong, and nothing is
stored. (The socket-level corpus, for what a server sees before the app does, is in test_hostile_wire.py.)"""
import io

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from tests.test_replication import admin

DEEP = b"[" * 30_000 + b"]" * 30_000  # within every endpoint's size limit
NESTED_65 = b'{"a":' * 65 + b"1" + b"}" * 65

JSON_ENDPOINTS = [("POST", "/auth/login", None), ("POST", "/auth/tokens", "read"),
                  ("POST", "/auth/change-password", "read"), ("POST", "/admin/users", "admin"),
                  ("PATCH", "/admin/users/admin", "admin"), ("POST", "/admin/gc", "admin"),
                  ("POST", "/admin/schema", "admin"), ("POST", "/admin/schema/rollback", "admin"),
                  ("POST", "/admin/routes", "admin"), ("POST", "/admin/replication/apply", "admin"),
                  ("PUT", "/v1/acme/tool/tags/stable", "write")]


def headers_for(depot, scope):
    base = {"Content-Type": "application/json"}
    if scope is None:
        return base
    return dict(base, **(admin(depot) if scope == "admin" else depot.headers((scope,))))


def stored(depot):
    """Everything the repository holds: documents, index rows, events, blob files."""
    return list(depot.service.engine.state.scan(b"")), depot.blob_files()


@pytest.mark.parametrize("body", [DEEP, NESTED_65], ids=["30000-deep", "65-deep"])
@pytest.mark.parametrize("method, path, scope", JSON_ENDPOINTS, ids=[p for _, p, _ in JSON_ENDPOINTS])
def test_deeply_nested_json_is_400_on_every_json_endpoint(make_depot, project_schema, method, path, scope, body):
    depot = make_depot(project_schema)
    headers = headers_for(depot, scope)
    before = stored(depot)
    response = depot.client.open(path, method=method, data=body, headers=headers)
    assert response.status_code == 400, response.get_data()[:300]
    assert response.get_json()["error"]["code"] == "INVALID_JSON" and "X-Request-Id" in response.headers
    assert stored(depot) == before


@pytest.mark.parametrize("namespace", ["%E2%84%AAube",  # the Kelvin sign, which lower-cases to ASCII k
                                       "%C5%BFecret",  # U+017F long s, which upper-cases to ASCII S
                                       "%D0%B0cme",  # Cyrillic a
                                       "%E3%80%80acme",  # an ideographic space, which Unicode trims
                                       "acme%E2%80%8B"])  # a zero-width space
def test_look_alike_names_are_refused_not_folded_into_ascii(make_depot, project_schema, namespace):
    depot = make_depot(project_schema)
    response = depot.client.put("/v1/%s/tool/1.0.0/x/blob" % namespace, data=b"bytes", headers=depot.headers())
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == {"code": "INVALID_FIELD", "field": "namespace",
                                            "message": response.get_json()["error"]["message"]}
    assert stored(depot) == ([], [])


def test_ascii_case_and_spaces_are_still_normalized(make_depot, project_schema):
    depot = make_depot(project_schema)
    assert depot.publish("ACME", "My_Tool", "1.0.0", "Linux", b"bytes").status_code == 201
    assert depot.client.get("/v1/acme/my-tool/1.0.0/linux", headers=depot.headers(("read",))).status_code == 200


@pytest.mark.parametrize("path", ["/admin/schema/versions/99999999999999999999999",
                                  "/admin/users?page=99999999999999999999999",
                                  "/admin/audit?page=99999999999999999999",
                                  "/admin/schema/versions?page=9999999999999999999999",
                                  "/v1/acme/tool/versions?page=99999999999999999999999999",
                                  "/v1/acme/tool/versions?page_size=99999999999999999999999999",
                                  "/v1/search?q=a&page=99999999999999999999999"])
def test_integers_too_large_for_the_databases_are_4xx(make_depot, project_schema, path):
    depot = make_depot(project_schema)
    response = depot.client.get(path, headers=admin(depot))
    assert 400 <= response.status_code < 500 and response.is_json, response.get_data()[:200]


class ShortStream(io.BytesIO):
    """A server's body stream that simply ends early, without an error, as gunicorn's did."""


def test_a_body_ending_before_its_content_length_is_refused_under_any_server(make_depot, project_schema):
    depot = make_depot(project_schema)
    environ = EnvironBuilder(path="/v1/acme/short/1.0.0/x/blob", method="PUT", headers=depot.headers(),
                             input_stream=ShortStream(b"a" * 1000)).get_environ()
    environ["CONTENT_LENGTH"] = str(10 * 1024 * 1024)
    environ["wsgi.input_terminated"] = True  # werkzeug hands the stream over as it is, short reads and all
    response = depot.client.open(Request(environ))
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "BODY_INCOMPLETE"
    assert stored(depot) == ([], [])
