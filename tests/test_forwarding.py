"""{request.base_url} and the trusted proxies whose X-Forwarded-* say what it is (app/http/forwarding.py), from
the WSGI environ up to a route answering it through the Flask app, and `serve --trusted-proxies` refusing a bad
list."""
import copy
import json
import subprocess
import sys

import pytest

from app.errors import DepotError
from app.http.forwarding import base_url, is_trusted, parse_trusted_proxies
from tests.conftest import ROOT, Depot, ServerProcess

LOCAL = parse_trusted_proxies("127.0.0.1, 10.0.0.0/8, fd00::/8")


def environ(peer="127.0.0.1", host="depot.internal:5000", scheme="http", script="", **headers):
    env = {"REMOTE_ADDR": peer, "HTTP_HOST": host, "wsgi.url_scheme": scheme, "SCRIPT_NAME": script}
    env.update({"HTTP_" + name.upper(): value for name, value in headers.items()})
    return env


def refused(env, trusted=LOCAL):
    with pytest.raises(DepotError) as info:
        base_url(env, trusted)
    return info.value


# --- the list of trusted proxies ------------------------------------------------------------------------------

def test_trusted_proxies_parse_addresses_and_networks():
    assert [str(n) for n in parse_trusted_proxies(" 10.0.0.1,192.168.0.0/16  ::1 ")] == [
        "10.0.0.1/32", "192.168.0.0/16", "::1/128"]
    assert parse_trusted_proxies("") == () and parse_trusted_proxies(None) == ()


@pytest.mark.parametrize("text", ["10.0.0.1/8", "proxy.local", "10.0.0.300", "*"])
def test_trusted_proxies_refuse_what_is_not_an_address_or_network(text):
    with pytest.raises(ValueError, match="trusted proxy"):
        parse_trusted_proxies("127.0.0.1, " + text)


@pytest.mark.parametrize("peer, trusted", [
    ("127.0.0.1", True), ("10.9.8.7", True), ("11.0.0.1", False), ("fd00::5", True), ("fe80::1", False),
    ("::ffff:10.1.1.1", True), ("::ffff:11.1.1.1", False), ("", False), (None, False), ("not-an-ip", False),
])
def test_a_peer_is_trusted_by_its_address(peer, trusted):
    assert is_trusted(peer, LOCAL) is trusted


def test_nobody_is_trusted_by_default():
    assert not is_trusted("127.0.0.1", ())


# --- the base URL ---------------------------------------------------------------------------------------------

def test_without_a_proxy_the_request_says_it():
    assert base_url(environ(), ()) == "http://depot.internal:5000"
    assert base_url(environ(host="Depot.Example", scheme="https", script="/app/"), ()) == "https://depot.example/app"


def test_default_ports_are_left_out():
    assert base_url(environ(host="h:80"), ()) == "http://h"
    assert base_url(environ(host="h:443", scheme="https"), ()) == "https://h"
    assert base_url(environ(host="h:443"), ()) == "http://h:443"
    assert base_url(environ(host="[::1]:8080"), ()) == "http://[::1]:8080"


def test_without_a_host_header_the_server_name():
    env = environ()
    del env["HTTP_HOST"]
    env.update(SERVER_NAME="srv", SERVER_PORT="8000")
    assert base_url(env, ()) == "http://srv:8000"


def test_a_trusted_proxy_says_scheme_host_port_and_prefix():
    env = environ(X_FORWARDED_PROTO="https", X_FORWARDED_HOST="pkgs.example.com", X_FORWARDED_PORT="8443",
                  X_FORWARDED_PREFIX="/depot/")
    assert base_url(env, LOCAL) == "https://pkgs.example.com:8443/depot"


def test_a_trusted_proxy_may_say_only_part():
    assert base_url(environ(X_FORWARDED_PROTO="https"), LOCAL) == "https://depot.internal:5000"
    assert base_url(environ(X_FORWARDED_PROTO="HTTPS", X_FORWARDED_HOST="pkgs.example.com:443"), LOCAL) == \
        "https://pkgs.example.com"
    assert base_url(environ(X_FORWARDED_PORT="443", X_FORWARDED_PROTO="https"), LOCAL) == "https://depot.internal"
    assert base_url(environ(X_FORWARDED_PREFIX="/a/b", script="/app"), LOCAL) == "http://depot.internal:5000/a/b/app"


def test_the_last_value_of_a_forwarded_header_counts():
    env = environ(X_FORWARDED_PROTO="http, https", X_FORWARDED_HOST="evil.example, pkgs.example.com")
    assert base_url(env, LOCAL) == "https://pkgs.example.com"


def test_an_untrusted_peer_cannot_choose_the_url():
    env = environ(peer="203.0.113.9", X_FORWARDED_PROTO="https", X_FORWARDED_HOST="evil.example",
                  X_FORWARDED_PORT="1", X_FORWARDED_PREFIX="/phish")
    assert base_url(env, LOCAL) == "http://depot.internal:5000"
    assert base_url(environ(X_FORWARDED_HOST="evil.example"), ()) == "http://depot.internal:5000"


@pytest.mark.parametrize("header, value", [
    ("X_FORWARDED_PROTO", "javascript"), ("X_FORWARDED_PROTO", ""), ("X_FORWARDED_HOST", "evil.example/path"),
    ("X_FORWARDED_HOST", "user@evil.example"), ("X_FORWARDED_HOST", "a b"), ("X_FORWARDED_HOST", "h:99999999"),
    ("X_FORWARDED_PORT", "0"), ("X_FORWARDED_PORT", "65536"), ("X_FORWARDED_PORT", "80a"),
    ("X_FORWARDED_PREFIX", "//evil.example"), ("X_FORWARDED_PREFIX", "depot"), ("X_FORWARDED_PREFIX", "/a?b"),
    ("X_FORWARDED_PREFIX", "/a\"><script>"),
])
def test_a_forwarded_value_that_is_not_what_it_says_is_refused(header, value):
    error = refused(environ(**{header: value}))
    assert (error.code, error.status) == ("INVALID_FORWARDED_HEADER", 400)
    assert error.field == header.replace("_", "-").title().replace("X-Forwarded", "X-Forwarded")


@pytest.mark.parametrize("host", ["evil.example/x", "a b", "h:p", "<h>", "", "h:123456"])
def test_a_host_header_that_is_not_a_host_is_refused(host):
    error = refused(environ(host=host), ())
    assert (error.code, error.status, error.field) == ("INVALID_HOST", 400, "Host")


# --- through a route ------------------------------------------------------------------------------------------

def schema_with_links(project_schema, tags=("public",)):
    schema = copy.deepcopy(project_schema)
    schema["api"]["routes"].append({
        "id": "links", "method": "GET", "path": "/links/{namespace}/{name}", "tags": list(tags), "pipeline": [
            {"op": "parse.path", "args": {"entity": "artifact"}},
            {"op": "respond.json", "args": {"body": {
                "self": "{request.base_url}/links/{namespace}/{name|urlquote}", "base": "{request.base_url}"}}}]})
    return schema


@pytest.fixture
def depots(tmp_path, project_schema):
    made = []

    def make(**options):
        depot = Depot(str(tmp_path / ("d%d" % len(made))), schema_with_links(project_schema), **options)
        made.append(depot)
        return depot
    yield make
    for depot in made:
        depot.close()


def links(depot, peer="127.0.0.1", **headers):
    response = depot.client.get("/links/acme/hello", headers=dict(headers, **depot.headers(("read",))),
                                environ_base={"REMOTE_ADDR": peer})
    return response.status_code, response.get_json()


def test_a_route_answers_its_own_url(depots):
    status, body = links(depots())
    assert status == 200
    assert body == {"self": "http://localhost/links/acme/hello", "base": "http://localhost"}


def test_forwarded_headers_are_ignored_unless_the_peer_is_trusted(depots):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pkgs.example.com",
                 "X-Forwarded-Prefix": "/depot"}
    assert links(depots(), **forwarded)[1]["base"] == "http://localhost"
    trusting = depots(trusted_proxies="10.0.0.7")
    assert links(trusting, "10.0.0.7", **forwarded)[1]["self"] == "https://pkgs.example.com/depot/links/acme/hello"
    assert links(trusting, "10.0.0.8", **forwarded)[1]["base"] == "http://localhost"


def test_trusted_proxies_come_from_the_environment_by_default(depots, monkeypatch):
    monkeypatch.setenv("DEPOT_TRUSTED_PROXIES", "10.0.0.0/24")
    assert links(depots(), "10.0.0.9", **{"X-Forwarded-Host": "pkgs.example.com"})[1]["base"] == \
        "http://pkgs.example.com"


def test_a_bad_forwarded_header_is_a_400_from_the_route(depots):
    status, body = links(depots(trusted_proxies="127.0.0.1"), **{"X-Forwarded-Host": "a/b"})
    assert status == 400
    assert body["error"]["code"] == "INVALID_FORWARDED_HEADER" and body["error"]["field"] == "X-Forwarded-Host"


def test_routes_that_do_not_read_the_base_url_ignore_bad_forwarded_headers(depots):
    depot = depots(trusted_proxies="127.0.0.1")
    response = depot.client.get("/v1/acme/hello/latest", headers=dict({"X-Forwarded-Host": "a/b"},
                                                                      **depot.headers(("read",))))
    assert response.status_code == 404  # no versions: the route ran without reading the headers


def test_a_bad_trusted_proxies_setting_stops_the_app_before_the_data_dir_is_opened(tmp_path, project_schema):
    from app import create_app
    with pytest.raises(ValueError, match="proxy.example"):
        create_app(str(tmp_path / "data"), schema=project_schema, announce=lambda *_: None,
                   trusted_proxies="proxy.example")
    assert not (tmp_path / "data").exists()


def test_serve_refuses_a_bad_trusted_proxies_list(tmp_path):
    result = subprocess.run([sys.executable, "-m", "app", "serve", "--data-dir", str(tmp_path / "data"),
                             "--trusted-proxies", "10.0.0.1/8"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "10.0.0.1/8" in result.stderr and "--trusted-proxies" in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_real_server_answers_with_the_url_its_trusted_proxy_gives(tmp_path, project_schema):
    import requests
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(schema_with_links(project_schema, tags=())))
    server = ServerProcess(tmp_path / "data", args=("--schema", str(schema_file), "--trusted-proxies", "127.0.0.1"))
    try:
        url = server.url + "/links/acme/hello"
        assert requests.get(url, timeout=30).json()["base"] == server.url
        forwarded = requests.get(url, timeout=30, headers={
            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "pkgs.example.com", "X-Forwarded-Prefix": "/depot"})
        assert forwarded.json()["self"] == "https://pkgs.example.com/depot/links/acme/hello"
    finally:
        server.stop()
