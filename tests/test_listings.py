"""Listings a protocol needs whole, and pages that hold still: index.query's keyset cursor (`after`, `next_out`)
and `all` (every row of a key, a RowStream read in batches as respond.json writes it).

Real stores in temporary dirs, through the Flask test client; rows are written with the store's own transactions
when a test needs thousands.
"""
import copy
import json

import pytest

from app.engine.compiler import compile_schema
from app.engine.rows import RowStream
from app.stores.codec import Stream, dumps, iter_json
from tests.test_ops import PATH, READ, route, step, with_routes

KEY = {"namespace": "{namespace}", "name": "{name}"}
PAGE = route("page", "GET", "/page/{namespace}/{name}", READ, *PATH,
             step("parse.query", fields={"after": {"type": "string"}, "limit": {"type": "integer", "default": 3}}),
             step("index.query", index="artifact_versions", key=KEY, limit="{limit}", after="{after?}",
                  out="rows", next_out="next", total_out="total"),
             step("respond.json", body={"items": "$rows", "next": "$next", "total": "$total"}))
FILTERED = route("filtered", "GET", "/filtered/{namespace}/{name}", READ, *PATH,
                 step("parse.query", fields={"after": {"type": "string"}}),
                 step("index.query", index="artifact_versions", key=KEY, limit=2, after="{after?}",
                      where={"equals": ["{variant}", "x"]}, out="rows", next_out="next", total_out="total"),
                 step("respond.json", body={"items": "$rows", "next": "$next", "total": "$total"}))
ALL = route("all", "GET", "/all/{namespace}/{name}", READ, *PATH,
            step("index.query", index="artifact_versions", key=KEY, all=True, out="rows", total_out="total"),
            step("respond.json", body={"name": "{name}", "versions": "$rows", "total": "$total"}))
ALL_X = route("all_x", "GET", "/all-x/{namespace}/{name}", READ, *PATH,
              step("index.query", index="artifact_versions", key=KEY, all=True, where={"equals": ["{variant}", "x"]},
                   out="rows", total_out="total"),
              step("respond.json", body={"versions": "$rows", "total": "$total"}))


@pytest.fixture
def depot(make_depot, project_schema):
    return make_depot(with_routes(project_schema, PAGE, FILTERED, ALL, ALL_X))


def add_rows(depot, versions, namespace="a", name="b", variant="x"):
    """Index rows of artifact_versions, written by one transaction of the store (thousands in a moment)."""
    engine = depot.service.engine
    index = engine.compiled.definitions["index"]["artifact_versions"]
    txn = engine.state.transaction()
    for version in versions:
        txn.index_upsert(index, {"namespace": namespace, "name": name, "version": version, "variant": variant})
    txn.commit()


def get(depot, url, status=200):
    response = depot.client.get(url, headers=depot.headers())
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def versions(rows):
    return [row["version"] for row in rows]


def walk(depot, url):
    """Every page of a keyset listing, following `next`; -> the versions in order. Each page's total is the
    listing's."""
    seen, cursor, totals = [], None, set()
    while True:
        page = get(depot, url + ("&after=" + cursor if cursor else ""))
        seen += versions(page["items"])
        totals.add(page["total"])
        assert len(totals) == 1
        cursor = page["next"]
        if cursor is None:
            return seen


# --- keyset pages ---------------------------------------------------------------------------------------------

def test_pages_follow_the_cursor_to_the_last_row(depot):
    add_rows(depot, ["1.0.%d" % i for i in range(8)])
    first = get(depot, "/page/a/b")
    assert versions(first["items"]) == ["1.0.7", "1.0.6", "1.0.5"] and first["total"] == 8
    assert isinstance(first["next"], str)
    assert walk(depot, "/page/a/b?limit=3") == ["1.0.%d" % i for i in reversed(range(8))]
    exact = get(depot, "/page/a/b?limit=8")
    assert len(exact["items"]) == 8 and exact["next"] is None  # no empty page after the last one
    assert get(depot, "/page/a/nothing") == {"items": [], "next": None, "total": 0}


def test_a_cursor_holds_its_place_while_rows_are_added_and_removed(depot):
    add_rows(depot, ["1.0.%d" % i for i in range(1, 7)])
    first = get(depot, "/page/a/b")
    assert versions(first["items"]) == ["1.0.6", "1.0.5", "1.0.4"]
    add_rows(depot, ["2.0.0", "1.0.0"])  # one before the cursor (not listed again), one after it
    engine = depot.service.engine
    txn = engine.state.transaction()
    txn.index_delete(engine.compiled.definitions["index"]["artifact_versions"],
                     {"namespace": "a", "name": "b", "version": "1.0.3", "variant": "x"})
    txn.commit()
    rest = get(depot, "/page/a/b?limit=10&after=" + first["next"])
    assert versions(rest["items"]) == ["1.0.2", "1.0.1", "1.0.0"]


def test_a_filtered_page_continues_after_its_last_match(depot):
    for i in range(6):
        add_rows(depot, ["1.0.%d" % i], variant="x" if i % 2 else "y")
    assert walk(depot, "/filtered/a/b?") == ["1.0.5", "1.0.3", "1.0.1"]


def test_a_cursor_reads_only_its_own_key(depot):
    add_rows(depot, ["1.0.%d" % i for i in range(5)], name="b")
    add_rows(depot, ["9.0.%d" % i for i in range(5)], name="c")
    cursor = get(depot, "/page/a/c?limit=2")["next"]
    listed = get(depot, "/page/a/b?limit=10&after=" + cursor)
    assert set(versions(listed["items"])) <= {"1.0.%d" % i for i in range(5)}


@pytest.mark.parametrize("cursor", ["not*base64", "a", "x" * 5000])
def test_a_malformed_cursor_is_a_clear_error(depot, cursor):
    error = get(depot, "/page/a/b?after=" + cursor, status=400)["error"]
    assert error["code"] == "INVALID_QUERY" and error["field"] == "after"


# --- every row ------------------------------------------------------------------------------------------------

def test_all_lists_every_row_streamed(depot):
    count = 5000  # more than a page (200), a limit (1,000) and the request's I/O budget (5,000 ops)
    add_rows(depot, ["1.%d.0" % i for i in range(count)])
    response = depot.client.get("/all/a/b", headers=depot.headers())
    assert response.status_code == 200 and response.is_streamed
    assert response.headers.get("Content-Length") is None and response.mimetype == "application/json"
    body = json.loads(response.get_data())
    assert body["name"] == "b" and body["total"] == count
    assert versions(body["versions"]) == ["1.%d.0" % i for i in reversed(range(count))]
    assert get(depot, "/all/a/nobody") == {"name": "nobody", "versions": [], "total": 0}


def test_all_with_a_filter_and_namespace_permissions(depot):
    for i in range(7):
        add_rows(depot, ["1.0.%d" % i], variant="x" if i % 3 else "y")
    body = get(depot, "/all-x/a/b")
    assert versions(body["versions"]) == ["1.0.5", "1.0.4", "1.0.2", "1.0.1"] and body["total"] == 4


def test_a_row_stream_reads_in_batches_and_anew_each_time(depot):
    class Small(RowStream):
        BATCH = 2

    add_rows(depot, ["1.0.%d" % i for i in range(5)])
    engine = depot.service.engine
    key = engine.compiled.definitions["index"]["artifact_versions"].keys[0]
    stream = Small(engine.indexes, key, ["a", "b"], None, None)
    seen = []
    for row in stream:
        seen.append(row["version"])
        if len(seen) == 3:  # between batches: a row before the last one read, and one after
            add_rows(depot, ["1.0.9", "0.9.0"])
    assert seen == ["1.0.4", "1.0.3", "1.0.2", "1.0.1", "1.0.0", "0.9.0"]
    assert [row["version"] for row in stream][:2] == ["1.0.9", "1.0.4"]  # a second iteration reads again
    assert dumps({"rows": stream}) == b"".join(iter_json({"rows": stream}))


def test_iter_json_writes_what_dumps_writes():
    class Three(Stream):
        def __iter__(self):
            return iter([{"a": 1}, [2, "three"], None])

    for value in ({}, [], "x", 1.5, {"k": {}, "l": []}, Three(), [Three(), {"s": Three()}], {"é": "ü"}):
        pieces = list(iter_json(value))
        assert b"".join(pieces) == dumps(value) and json.loads(b"".join(pieces)) == json.loads(dumps(value))


def test_iter_json_hands_out_bounded_pieces():
    class Many(Stream):
        def __iter__(self):
            return ({"version": "1.0.%d" % i, "pad": "x" * 100} for i in range(20000))

    pieces = list(iter_json({"rows": Many()}))
    assert len(pieces) > 10 and max(map(len, pieces)) < 2 * 64 * 1024


# --- what the checker refuses -----------------------------------------------------------------------------------

def listing_route(*after, **query):
    args = dict(index="artifact_versions", key=KEY, out="rows", **query)
    return route("r", "GET", "/r/{namespace}/{name}", READ, *PATH, step("index.query", **args), *after)


def check(project_schema, *after, **query):
    doc = with_routes(project_schema, listing_route(*after, **query))
    _, report = compile_schema(doc)
    where = "api.routes[%d]" % (len(doc["api"]["routes"]) - 1)
    return report, where


def errors(report, where):
    return [f.message for f in report.errors if f.place == where]


RESPOND = step("respond.json", body={"ok": True})


@pytest.mark.parametrize("misuse, arg", [
    (step("respond.json", body={"first": "$rows[0]"}), "body"),
    (step("respond.json", body={"text": "rows: $rows"}), "body"),
    (step("respond.json", body="$rows", headers={"X-Rows": "$rows"}), "headers"),
    (step("string.format", template="$rows", out="text"), "template"),
])
def test_a_streamed_listing_is_passed_whole_to_a_streaming_argument_only(project_schema, misuse, arg):
    report, where = check(project_schema, misuse, RESPOND, all=True)
    assert any("can only be passed whole" in m for m in errors(report, where + ".pipeline[5].args." + arg)), \
        report.to_text()


def test_a_streamed_listing_cannot_be_tested(project_schema):
    test = step("respond.error", status=404, code="NONE", message="none")
    test["args"]["when"] = {"is_empty": "$rows"}
    report, where = check(project_schema, test, RESPOND, all=True)
    assert any("can only be passed whole" in m for m in errors(report, where + ".pipeline[5].args.when"))


def test_a_streamed_listing_in_a_body_is_accepted(project_schema):
    report, _ = check(project_schema, step("respond.json", body={"rows": "$rows", "also": ["$rows"]}), all=True)
    assert report.ok, report.to_text()


@pytest.mark.parametrize("query, arg, words", [
    ({"all": True, "limit": 5}, "all", "takes no limit"),
    ({"all": True, "page_size": 5}, "all", "takes no page_size"),
    ({"all": True, "next_out": "next"}, "all", "takes no next_out"),
    ({"after_row": {"tag": "x"}, "page": 2}, "after_row", "page and offset count from the first row"),
    ({"after": "{after?}", "limit": 2, "offset": 1}, "after", "offset counts from the first row"),
    ({"all": "yes"}, "all", "expected boolean"),
])
def test_keyset_and_all_misuse_is_found_at_load(project_schema, query, arg, words):
    report, where = check(project_schema, RESPOND, **query)
    messages = errors(report, where + ".pipeline[4].args." + arg)
    assert any(words in m for m in messages), report.to_text()


def test_the_default_schema_is_unchanged_by_listings(project_schema):
    schema = copy.deepcopy(project_schema)
    compiled, report = compile_schema(schema)
    assert report.ok and not any(step.args.streamed for route in compiled.routes for step in route.pipeline.steps
                                 if step.op == "respond.json")


def test_the_api_describes_listings(depot):
    paths = depot.client.get("/openapi.json").get_json()["paths"]
    page = paths["/page/{namespace}/{name}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert page["properties"]["next"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert page["properties"]["items"]["type"] == "array"
    whole = paths["/all/{namespace}/{name}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert whole["properties"]["versions"]["type"] == "array"


# --- the native listings: page numbers and cursors ------------------------------------------------------------

def test_native_listings_page_by_number_or_by_cursor_alike(depot):
    add_rows(depot, ["1.0.%d" % i for i in range(7)])
    by_number = [get(depot, "/v1/a/b/versions?page_size=3&page=%d" % page) for page in (1, 2, 3)]
    assert [page["total"] for page in by_number] == [7, 7, 7]
    assert walk(depot, "/v1/a/b/versions?page_size=3") == versions(sum((p["items"] for p in by_number), []))
    assert by_number[2]["next"] is None and isinstance(by_number[1]["next"], str)
    # the cursor a numbered page gives reads on as the next number would
    assert get(depot, "/v1/a/b/versions?page_size=3&after=" + by_number[0]["next"])["items"] == by_number[1]["items"]


def test_a_cursor_with_a_page_past_the_first_is_a_clear_error(depot):
    add_rows(depot, ["1.0.%d" % i for i in range(4)])
    cursor = get(depot, "/v1/a/b/versions?page_size=2")["next"]
    error = get(depot, "/v1/a/b/versions?page_size=2&page=2&after=" + cursor, status=400)["error"]
    assert error["code"] == "INVALID_QUERY" and error["field"] == "page"
    assert len(get(depot, "/v1/a/b/versions?page_size=2&page=1&after=" + cursor)["items"]) == 2
