"""GET /v1/search: the `packages` index's text search (index.search over `indexes.packages.text`), through the
Flask test client over a real Service in a temporary data dir: names by substring, short terms by prefix, words of
descriptions and labels, several terms, pages and cursors, totals, namespace permissions, updates, and rows
written before `text` was declared (made searchable by `python -m app reindex`)."""
import copy

import pytest

from tests.conftest import Depot
from tests.test_identity import admin, depot  # noqa: F401  (fixtures)
from tests.test_namespace_permissions import alice, grant  # noqa: F401  (a fixture, a helper)

ENVELOPE = ["items", "total", "page", "page_size", "next"]


def publish(depot, namespace, name, version="1.0.0", description=None, labels=None):
    headers = depot.headers(["read", "write"])
    if description is not None:
        headers["X-Depot-Description"] = description
    for key, value in (labels or {}).items():
        headers["X-Depot-Label-" + key] = value
    answer = depot.client.put("/v1/%s/%s/%s/any/blob" % (namespace, name, version), headers=headers,
                              data=("%s/%s/%s" % (namespace, name, version)).encode())
    assert answer.status_code == 201, answer.get_json()


def search(depot, headers=None, **query):
    answer = depot.client.get("/v1/search", query_string=query, headers=headers or depot.headers(["read"]))
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert sorted(body) == sorted(ENVELOPE), body
    return body


def found(depot, q, headers=None, **more):
    return ["%s/%s" % (row["namespace"], row["name"]) for row in search(depot, headers, q=q, **more)["items"]]


@pytest.fixture
def catalog(depot):
    publish(depot, "acme", "hello-world", description="Greets the World politely", labels={"team": "Platform"})
    publish(depot, "acme", "image-tools", description="Resize and crop pictures", labels={"lang": "rust"})
    publish(depot, "other", "say-hello", description="prints hello", labels={"os": "linux"})
    publish(depot, "other", "parser")
    return depot


def test_names_by_substring_and_short_terms_by_prefix(catalog):
    assert found(catalog, "ello") == ["acme/hello-world", "other/say-hello"]  # anywhere in a name or description
    assert found(catalog, "o-w") == ["acme/hello-world"]
    assert found(catalog, "pl") == ["acme/hello-world"]  # a short term starts a word: "Platform", "politely"
    assert found(catalog, "Cr") == ["acme/image-tools"]  # "crop"
    assert found(catalog, "pa") == ["other/parser"]  # a name's start
    assert found(catalog, "rs") == []  # ... and nothing else: "parser" holds "rs" inside only
    assert found(catalog, "t") == ["acme/hello-world", "acme/image-tools"]  # "the", "team"; "tools"
    assert found(catalog, "nothing-like-it") == []


def test_words_of_descriptions_and_labels_any_case_every_term(catalog):
    assert found(catalog, "POLITELY") == ["acme/hello-world"]
    assert found(catalog, "pictures") == ["acme/image-tools"]
    assert found(catalog, "platform") == ["acme/hello-world"]  # a label's value
    assert found(catalog, "lang") == ["acme/image-tools"]  # a label's key
    assert found(catalog, "hello linux") == ["other/say-hello"]  # every term, each in some field
    assert found(catalog, "  HELLO   world ") == ["acme/hello-world"]
    assert found(catalog, "hello rust") == []


def test_pages_cursors_and_totals(depot):
    for i in range(7):
        publish(depot, "ns%d" % (i % 2), "tool-%d" % i)
    everything = found(depot, "tool", page_size=200)
    assert len(everything) == 7 and everything == sorted(everything)  # row id order: namespace, then name
    first, second = (search(depot, q="tool", page=p, page_size=4) for p in (1, 2))
    assert [r["name"] for r in first["items"] + second["items"]] == [e.split("/")[1] for e in everything]
    assert first["total"] == second["total"] == 7 and (second["page"], second["page_size"]) == (2, 4)
    pages, after = [], None
    while True:
        body = search(depot, q="tool", page_size=3, **({"after": after} if after else {}))
        assert body["total"] == 7  # every match, whatever the cursor
        pages.append(["%s/%s" % (r["namespace"], r["name"]) for r in body["items"]])
        if body["next"] is None:
            break
        after = body["next"]
    assert [len(page) for page in pages] == [3, 3, 1] and sum(pages, []) == everything


@pytest.mark.parametrize("query", [{"q": ""}, {"q": "   "}, {"q": "x" * 201}, {"q": " ".join("abcdefghijk")},
                                   {"q": "a", "after": "not a cursor!"}, {"q": "a", "after": "AAAA", "page": 2}, {}])
def test_a_bad_query_is_400(depot, query):
    answer = depot.client.get("/v1/search", query_string=query, headers=depot.headers(["read"]))
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "INVALID_QUERY", answer.get_json()


def test_a_namespace_the_caller_may_not_read_is_neither_listed_nor_counted(depot, admin, alice):  # noqa: F811
    publish(depot, "acme", "tool-a")
    publish(depot, "secret", "tool-b")
    publish(depot, "secret", "tool-c")
    grant(depot, admin, "user:alice", "acme", "read")
    body = search(depot, alice, q="tool")
    assert [r["name"] for r in body["items"]] == ["tool-a"] and body["total"] == 1 and body["next"] is None
    assert search(depot, admin, q="tool")["total"] == 3


def test_a_new_publish_replaces_the_description_and_labels_searched(depot):
    publish(depot, "acme", "tool", "1.0.0", description="converts images", labels={"kind": "gui"})
    publish(depot, "acme", "tool", "2.0.0", description="renders fonts", labels={"kind": "cli"})
    assert found(depot, "images") == [] and found(depot, "gui") == []
    assert found(depot, "fonts cli") == ["acme/tool"] and search(depot, q="tool")["total"] == 1


def without_text(schema):
    """The project schema as it was before search had a text index: an index.query filtering every row."""
    old = copy.deepcopy(schema)
    del old["indexes"]["packages"]["text"]
    route = next(r for r in old["api"]["routes"] if r["id"] == "search_packages")
    step = next(s for s in route["pipeline"] if s["op"] == "index.search")
    step["op"] = "index.query"
    args = step["args"]
    del args["q"], args["after"], args["next_out"]
    args.update({"using": "all_packages", "key": {}, "where": {"contains": ["{name}", "$query.q"]}})
    next(s for s in route["pipeline"] if s["op"] == "parse.query")["args"]["out"] = "query"
    route["pipeline"][-1]["args"]["body"]["next"] = None
    return old


def test_rows_written_before_text_was_declared_are_found_after_a_reindex(tmp_path, project_schema):
    data_dir = str(tmp_path / "data")
    depot = Depot(data_dir, without_text(project_schema))
    try:
        publish(depot, "acme", "older-tool", description="from before")
        assert found(depot, "older") == ["acme/older-tool"]
        assert depot.client.post("/admin/schema", json=project_schema,
                                 headers=depot.headers(["admin"])).status_code == 201
    finally:
        depot.close()
    from app.tools.cli import main
    assert main(["reindex", "--data-dir", data_dir]) == 0
    depot = Depot(data_dir, project_schema)
    try:
        assert found(depot, "older") == ["acme/older-tool"] and found(depot, "before") == ["acme/older-tool"]
        publish(depot, "acme", "older-tool", "2.0.0", description="from after")
        assert found(depot, "after") == ["acme/older-tool"]
    finally:
        depot.close()
