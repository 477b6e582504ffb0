"""Answers of any media type: respond.json's content_type, respond.render's pages (Jinja2, sandboxed, escaped for
HTML, streamed) and http.negotiate's choice on Accept; through real routes, and their misuse refused at load."""
import copy
import json

import pytest
import requests
from openapi_spec_validator import validate
from werkzeug.datastructures import Headers

from app.engine.compiler import compile_schema
from app.engine.opspec import REGISTRY, Const, Output, Vocabulary
from app.engine.pages import PREFETCH
from tests.conftest import ServerProcess
from tests.test_checks import assert_error
from tests.test_ops import route, step, with_routes

SIMPLE = ["application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.v1+html", "text/html"]
NEGOTIATE = step("http.negotiate", offers=SIMPLE, out="format")
PAGE = ["<!DOCTYPE html>",
        "<title>Links for {{ fields.name }}</title>",
        "{% for file in vars.files %}<a href=\"{{ file.url }}\">{{ file.name }}</a>",
        "{% endfor %}"]
FILES = [{"name": "pkg-1.0.tar.gz", "url": "/files/pkg-1.0.tar.gz#sha256=ab"},
         {"name": "<script>", "url": "/x?a=1&b=\"2\""}]


@pytest.fixture
def own_ops():
    """Test ops registered for one test (the engine's registry is global): ``rows`` binds a lazy generator of rows
    and counts how many were taken."""
    vocabulary = Vocabulary()
    taken = []

    def rows(ctx, a):
        def generate():
            for i in range(a.count):
                taken.append(i)
                yield {"name": "file-%d" % i, "url": "/f/%d" % i}
        ctx.vars[a.out] = generate()

    def files(ctx, a):
        ctx.vars[a.out] = copy.deepcopy(FILES)

    vocabulary.op("test.rows", "rows, lazily", args={"count": Const("integer", "how many"),
                                                     "out": Output("the rows")})(rows)
    vocabulary.op("test.files", "FILES", args={"out": Output("the files")})(files)
    vocabulary.register(REGISTRY)
    yield taken
    for name in vocabulary.decls:
        del REGISTRY[name]


def schema_with(project_schema, *routes):
    schema = with_routes(project_schema, *routes)
    schema["ops"]["allowed"] = schema["ops"]["allowed"] + ["test.rows", "test.files"]
    return schema


def simple_route():
    return route("project", "GET", "/simple/{name}/",
                 step("parse.path"), NEGOTIATE, step("test.files", out="files"),
                 {"op": "respond.json", "when": {"equals": ["$format", SIMPLE[0]]},
                  "args": {"body": {"name": "{name}", "files": "$files"}, "content_type": "$format"}},
                 step("respond.render", template=PAGE, content_type="$format",
                      headers={"Cache-Control": "max-age=600"}))


@pytest.fixture(params=["on", "off"], ids=["generated", "interpreted"])
def executor(request, monkeypatch):
    """Both executors: pipelines generated as Python, and interpreted (DEPOT_CODEGEN=off)."""
    monkeypatch.setenv("DEPOT_CODEGEN", request.param)
    return request.param


@pytest.fixture
def simple(own_ops, executor, make_depot, project_schema):
    return make_depot(schema_with(project_schema, simple_route())).client


# --- http.negotiate and the answers it chooses ----------------------------------------------------------------

def test_the_offer_accepted_picks_json_or_the_page(simple):
    as_json = simple.get("/simple/pkg/", headers={"Accept": "application/vnd.pypi.simple.v1+json, "
                                                            "application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"})
    assert as_json.status_code == 200 and as_json.headers["Content-Type"] == SIMPLE[0]
    assert as_json.get_json() == {"name": "pkg", "files": FILES}
    assert as_json.headers["Vary"] == "Accept"
    page = simple.get("/simple/pkg/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Vary"] == "Accept" and page.headers["Cache-Control"] == "max-age=600"
    assert page.data.decode() == (
        '<!DOCTYPE html>\n<title>Links for pkg</title>\n'
        '<a href="/files/pkg-1.0.tar.gz#sha256=ab">pkg-1.0.tar.gz</a>\n'
        '<a href="/x?a=1&amp;b=&#34;2&#34;">&lt;script&gt;</a>\n')
    assert int(page.headers["Content-Length"]) == len(page.data)  # a small page is sent with its length
    html = simple.get("/simple/pkg/", headers={"Accept": "application/vnd.pypi.simple.v1+html"})
    assert html.headers["Content-Type"] == "application/vnd.pypi.simple.v1+html; charset=utf-8"
    assert html.data == page.data


@pytest.mark.parametrize("accept, chosen", [
    (None, SIMPLE[0]),  # no Accept: the first offer
    ("", SIMPLE[0]),  # a blank one too
    ("*/*", SIMPLE[0]),  # everything equally: the server's order decides
    ("text/*", "text/html"),
    ("TEXT/HTML", "text/html"),
    ("text/html;q=0, */*;q=0.1", SIMPLE[0]),  # q=0: not acceptable at all
    ("application/*;q=0.5, text/html", "text/html"),
    ("text/html;q=0.9, application/vnd.pypi.simple.v1+html", SIMPLE[1]),
])
def test_negotiation_follows_q_values_specificity_and_the_offers_order(simple, accept, chosen):
    headers = {} if accept is None else {"Accept": accept}
    answer = simple.get("/simple/pkg/", headers=headers)
    assert answer.status_code == 200 and answer.headers["Content-Type"].split(";")[0] == chosen


def test_several_accept_headers_are_read_as_one(simple):
    answer = simple.get("/simple/pkg/", headers=Headers([("Accept", "image/png"), ("Accept", "text/html;q=0.5")]))
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/html")


def test_nothing_acceptable_is_406_naming_accept(simple):
    refused = simple.get("/simple/pkg/", headers={"Accept": "image/png, text/plain"})
    assert refused.status_code == 406 and refused.headers["Vary"] == "Accept"
    error = refused.get_json()["error"]
    assert error["code"] == "NOT_ACCEPTABLE" and error["field"] == "Accept"
    assert "text/html" in error["message"]


def test_head_of_a_page_sends_its_headers_only(simple):
    head = simple.head("/simple/pkg/", headers={"Accept": "text/html"})
    assert head.status_code == 200 and head.data == b"" and int(head.headers["Content-Length"]) > 0


def test_the_document_describes_each_media_type_and_the_accept_header(own_ops, make_depot, project_schema):
    depot = make_depot(schema_with(project_schema, simple_route(), route(
        "fixed", "GET", "/fixed", step("respond.render", template="plain {{ 1 + 1 }}",
                                       content_type="text/plain"))))
    spec = depot.client.get("/openapi.json").get_json()
    validate(spec)
    project = spec["paths"]["/simple/{name}/"]["get"]
    content = project["responses"]["200"]["content"]
    assert list(content) == SIMPLE
    assert content[SIMPLE[0]]["schema"]["properties"]["files"] == {}
    assert content["text/html"]["schema"] == {"type": "string"}
    assert project["responses"]["406"]["x-error-codes"] == ["NOT_ACCEPTABLE"]
    assert {"name": "Accept", "in": "header"}.items() <= next(
        p for p in project["parameters"] if p["name"] == "Accept").items()
    assert list(spec["paths"]["/fixed"]["get"]["responses"]["200"]["content"]) == ["text/plain"]


# --- respond.json content_type ----------------------------------------------------------------------------------

def test_respond_json_answers_with_its_content_type(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, route(
        "vendor", "GET", "/vendor", step("respond.json", body={"ok": True}, status=201,
                                         content_type="application/problem+json; charset=utf-8",
                                         headers={"X-Extra": "yes"}))))
    answer = depot.client.get("/vendor")
    assert answer.status_code == 201 and answer.get_json() == {"ok": True}
    assert answer.headers["Content-Type"] == "application/problem+json; charset=utf-8"
    assert answer.headers["X-Extra"] == "yes" and "Vary" not in answer.headers
    spec = depot.client.get("/openapi.json").get_json()
    assert list(spec["paths"]["/vendor"]["get"]["responses"]["201"]["content"]) == ["application/problem+json"]


def test_a_content_type_read_from_the_request_is_checked_per_request(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, route(
        "echo", "GET", "/echo", step("parse.query", fields={"type": {"type": "string", "required": True}}),
        step("respond.json", body={"ok": True}, content_type="{type}"))))
    good = depot.client.get("/echo", query_string={"type": "application/vnd.x+json"})
    assert good.status_code == 200 and good.headers["Content-Type"] == "application/vnd.x+json"
    for bad in ("text/html", "application/json; charset=latin-1", "nonsense", "*/*"):
        answer = depot.client.get("/echo", query_string={"type": bad})
        assert answer.status_code == 500 and answer.get_json()["error"]["code"] == "INVALID_CONTENT_TYPE", bad
        assert answer.headers["Content-Type"] == "application/json"


# --- respond.render ---------------------------------------------------------------------------------------------

def render_route(template, path="/page", **args):
    return route("page_" + path.strip("/").replace("/", "_"), "GET", path + "/{name}", step("parse.path"),
                 step("parse.query", out="query"), step("respond.render", template=template, **args))


def test_a_text_page_is_not_escaped_and_an_html_page_is(executor, make_depot, project_schema):
    template = "{{ fields.name }} {{ vars.query.q }}"
    depot = make_depot(with_routes(project_schema, render_route(template, "/text", content_type="text/plain"),
                                   render_route(template, "/html"),
                                   render_route(template, "/xml", content_type="application/atom+xml")))
    query = {"q": "<&'\">"}
    text = depot.client.get("/text/n", query_string=query)
    assert text.data == b"n <&'\">" and text.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert depot.client.get("/html/n", query_string=query).data == b"n &lt;&amp;&#39;&#34;&gt;"
    assert depot.client.get("/xml/n", query_string=query).data == b"n &lt;&amp;&#39;&#34;&gt;"


def test_status_and_unicode(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, render_route("héllo {{ vars.query.q }}\n", status=404,
                                                                content_type="text/plain")))
    answer = depot.client.get("/page/n", query_string={"q": "✓"})
    assert answer.status_code == 404 and answer.data.decode("utf-8") == "héllo ✓\n"
    assert int(answer.headers["Content-Length"]) == len("héllo ✓\n".encode())


def test_a_page_reads_the_principal_only_when_it_names_it(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, route(
        "me", "GET", "/me", step("auth.require_scopes", scopes=["read"]),
        step("respond.render", template="{{ principal.sub }}: {{ principal.scopes|sort|join(',') }}",
             content_type="text/plain"))))
    answer = depot.client.get("/me", headers=depot.headers(["read"]))
    assert answer.data == b"tester: read"


@pytest.mark.parametrize("template, says", [
    ("{{ fields.name.nope }}", "UndefinedError"),
    ("{{ fields.__class__ }}", "SecurityError"),
    ("{{ vars.query.update({'a': 1}) }}", "SecurityError"),
    ("line one\n{{ 1 // vars.query|length }}", "ZeroDivisionError"),
])
def test_a_page_failing_early_is_a_clean_500(make_depot, project_schema, template, says):
    depot = make_depot(with_routes(project_schema, render_route(template)))
    answer = depot.client.get("/page/n")
    assert answer.status_code == 500 and answer.headers["Content-Type"] == "application/json"
    error = answer.get_json()["error"]
    assert error["code"] == "RENDER_FAILED" and says in error["message"]
    assert "Traceback" not in error["message"] and "template line" in error["message"]
    if template.startswith("line one"):
        assert "template line 2" in error["message"]


def test_a_page_streams_rows_as_it_renders_them(own_ops, executor, make_depot, project_schema):
    """A lazy sequence of rows is walked as the page is sent: taken a chunk's worth at a time, never whole."""
    count = 50000
    depot = make_depot(schema_with(project_schema, route(
        "big", "GET", "/big", step("test.rows", count=count, out="rows"),
        step("respond.render", template="{% for row in vars.rows %}<a href=\"{{ row.url }}\">{{ row.name }}</a>\n"
                                        "{% endfor %}"))))
    answer = depot.client.get("/big", buffered=False)
    assert answer.status_code == 200 and "Content-Length" not in answer.headers
    assert 0 < len(own_ops) < count / 10  # the first chunk's rows only
    body, progress = [], []
    for chunk in answer.response:
        body.append(chunk)
        progress.append(len(own_ops))
    answer.close()
    assert len(progress) > 5 and progress == sorted(progress) and progress[-1] == count
    assert all(len(chunk) <= 2 * PREFETCH for chunk in body)
    page = b"".join(body).decode()
    assert page.count("<a href=") == count and page.endswith('<a href="/f/49999">file-49999</a>\n')


def test_a_page_failing_late_is_cut_short_not_completed(make_depot, project_schema):
    template = "{% for i in range(20000) %}{{ 'row %05d' % i }}\n{% endfor %}{{ fields.name.nope }}"
    depot = make_depot(with_routes(project_schema, render_route(template)))
    answer = depot.client.get("/page/n", buffered=False)
    assert answer.status_code == 200  # already sent: the failure can only end the body early
    chunks = iter(answer.response)
    assert next(chunks).startswith(b"row 00000\n")
    with pytest.raises(Exception, match="RENDER_FAILED|could not be rendered"):
        for _ in chunks:
            pass
    answer.close()


def test_over_the_wire_a_late_failure_leaves_the_chunked_body_unterminated(tmp_path, project_schema):
    template = "{% for i in range(20000) %}{{ 'row %05d' % i }}\n{% endfor %}{{ fields.name.nope }}"
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(with_routes(project_schema, render_route(template))))
    server = ServerProcess(tmp_path / "data", args=("--schema", str(schema_file)))
    try:
        answer = requests.get(server.url + "/page/n", stream=True, timeout=60)
        assert answer.status_code == 200 and answer.headers.get("Transfer-Encoding") == "chunked"
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for _ in answer.iter_content(65536):
                pass
        assert requests.get(server.url + "/health", timeout=60).status_code == 200  # the server goes on
    finally:
        server.stop()
    assert "the body is cut short" in server.output


# --- misuse, refused at load --------------------------------------------------------------------------------------

def one_route(project_schema, *steps):
    schema = copy.deepcopy(project_schema)
    schema["api"]["routes"] = [route("r", "GET", "/r/{name}", step("parse.path"), *steps)]
    for section in ("validation", "invariants"):  # the project's own checks name the routes it declares
        schema.pop(section, None)
    return schema


HERE = "api.routes[0].pipeline[1].args."


@pytest.mark.parametrize("content_type, words", [
    ("html", ["not a media type"]),
    ("text/html; charset=latin-1", ["UTF-8"]),
    ("text/*", ["media range"]),
    ("text/html; q", ["malformed parameters"]),
    (42, ["expected a string template"]),
    ("{nope}", ["{nope}", "never be bound"]),
])
def test_a_bad_content_type_is_a_load_error(project_schema, content_type, words):
    for op in ("respond.json", "respond.render"):
        args = {"body": {}} if op == "respond.json" else {"template": "x"}
        assert_error(one_route(project_schema, step(op, content_type=content_type, **args)), HERE + "content_type",
                     *words)


def test_respond_json_needs_a_json_media_type(project_schema):
    assert_error(one_route(project_schema, step("respond.json", body={}, content_type="text/html")),
                 HERE + "content_type", "no JSON media type")


@pytest.mark.parametrize("op, args", [("respond.json", {"body": {}}), ("respond.render", {"template": "x"})])
def test_content_type_is_no_header(project_schema, op, args):
    assert_error(one_route(project_schema, step(op, headers={"content-type": "text/plain"}, **args)),
                 HERE + "headers", "content_type")
    assert_error(one_route(project_schema, step(op, headers={"Content-Type": "{name}"}, **args)),
                 HERE + "headers", "content_type")


@pytest.mark.parametrize("template, words", [
    ("{% for x in %}", ["template line 1", "Expected an expression"]),
    (["ok", "{{ fields.name }", "ok"], ["template line 2"]),
    ("{% if true %}", ["template line 1", "endif"]),
    ("{{ name }}", ["unknown name 'name'", "fields, vars, principal"]),
    ("{{ fields.name|pep440 }}", ["unknown filter 'pep440'", "urlencode"]),
    ("line\n{% if fields.name is palindrome %}{% endif %}", ["template line 2", "unknown test 'palindrome'"]),
    ("{% block a %}{% endblock %}{% block a %}{% endblock %}", ["template line 1", "defined twice"]),
    ("{% include 'other.html' %}", ["cannot extend, include or import"]),
    ("{% extends 'base.html' %}", ["cannot extend, include or import"]),
    ("{% set vars = 1 %}", ["'vars'", "cannot be set"]),
    ("{% for fields in [1] %}{% endfor %}", ["'fields'", "cannot be set"]),
    ("{{ vars.rows }}", ["vars.rows can never be bound here"]),
    ("{{ vars['rows'] }}", ["vars.rows can never be bound here"]),
    ("{{ fields.version }}", ["fields.version can never be bound"]),
    (42, ["a string, or a list of lines"]),
    (["a", 1], ["a string, or a list of lines"]),
])
def test_a_bad_template_is_a_load_error(project_schema, template, words):
    assert_error(one_route(project_schema, step("respond.render", template=template)), HERE + "template", *words)


def test_a_template_reading_what_earlier_steps_bind_loads(project_schema):
    schema = one_route(project_schema, step("parse.query", out="query"),
                       step("respond.render", template="{{ fields.name }}{{ vars.query }}{{ vars[fields.name] }}"
                                                       "{% set x = 1 %}{{ x }}{{ range(2)|list }}"))
    compiled, report = compile_schema(schema)
    assert compiled is not None, report.to_text()


def test_respond_render_needs_its_template(project_schema):
    assert_error(one_route(project_schema, step("respond.render")), HERE + "template", "missing required argument")


@pytest.mark.parametrize("offers, words", [
    ([], ["at least one"]),
    (["text/html", "TEXT/HTML"], ["offered twice"]),
    (["text/html; charset=utf-8"], ["without parameters"]),
    (["text/*"], ["media range"]),
    (["html"], ["not a media type"]),
    ("text/html", ["expected string list"]),
])
def test_bad_offers_are_a_load_error(project_schema, offers, words):
    schema = one_route(project_schema, step("http.negotiate", offers=offers, out="format"),
                       step("respond.json", body={}))
    assert_error(schema, HERE + "offers", *words)


def test_negotiate_needs_offers_and_out(project_schema):
    schema = one_route(project_schema, step("http.negotiate"), step("respond.json", body={}))
    assert_error(schema, HERE + "offers", "missing required argument")
    assert_error(schema, HERE + "out", "missing required argument")
