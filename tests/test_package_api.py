"""The package API of the project schema, over HTTP through the Flask test client: publish with description and
labels, metadata, HEAD, versions (semver order, prerelease, latest with variants, pagination), tags, namespaces,
search, tombstone deletion, immutability of coordinates and the proxy feature switch."""
import copy
import hashlib
import json
import os
from datetime import datetime

import pytest

EVENT_PREFIX = b"kmeta\x00eventlog/"
ENVELOPE = {"items", "total", "page", "page_size", "next"}  # next: the cursor of the following page, or null


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def code(response):
    body = response.get_json()
    assert body is not None and "error" in body, (response.status_code, response.data[:300])
    return body["error"]["code"]


def events(depot):
    return [json.loads(raw) for _, raw in depot.service.engine.state.scan(EVENT_PREFIX)]


def listing(response):
    assert response.status_code == 200, (response.status_code, response.data[:300])
    body = response.get_json()
    assert set(body) == ENVELOPE, body
    assert isinstance(body["items"], list)
    assert isinstance(body["total"], int) and isinstance(body["page"], int) and isinstance(body["page_size"], int)
    assert body["next"] is None or isinstance(body["next"], str)
    return body


@pytest.fixture
def depot(make_depot, project_schema):
    return make_depot(project_schema)


@pytest.fixture
def read(depot):
    return depot.headers(["read"])


# --------------------------------------------------------------------------------------------------------------
# Publishing: description, labels, metadata, HEAD


def test_publish_with_description_and_labels_and_metadata(depot, read):
    data = b"artifact bytes\n" * 50
    published = depot.publish("Acme", "Hello_World", "1.2.0", "Linux-AMD64", data, headers={
        "X-Depot-Description": "The hello world tool",
        "X-Depot-Label-OS": "Linux",
        "X-Depot-Label-arch": "amd64",
        "X-Depot-Label-build.id": "b-42",
    })
    assert published.status_code == 201, published.data
    assert published.get_json() == {"ok": True, "blob_digest": sha(data), "blob_size": len(data)}

    meta = depot.client.get("/v1/acme/hello-world/1.2.0/linux-amd64", headers=read)
    assert meta.status_code == 200
    assert meta.mimetype == "application/json"
    body = meta.get_json()
    assert body["namespace"] == "acme"
    assert body["name"] == "hello-world"
    assert body["version"] == "1.2.0"
    assert body["variant"] == "linux-amd64"
    assert body["blob_digest"] == sha(data)
    assert body["blob_size"] == len(data)
    assert body["created_by"] == "tester"
    assert isinstance(body["created_at"], str) and body["created_at"].endswith("Z")
    assert body["description"] == "The hello world tool"
    assert body["labels"] == {"os": "Linux", "arch": "amd64", "build.id": "b-42"}
    # metadata only: no bytes of the artifact in the answer
    assert data[:20] not in meta.data
    assert list(body) == ["namespace", "name", "version", "variant", "blob_digest", "blob_size", "created_at",
                          "created_by", "description", "labels"]

    # the path is normalized the same way on reads
    again = depot.client.get("/v1/ACME/hello_world/1.2.0/LINUX-amd64", headers=read)
    assert again.status_code == 200 and again.get_json() == body

    versions = listing(depot.client.get("/v1/acme/hello-world/versions", headers=read))
    assert versions["total"] == 1
    row = versions["items"][0]
    assert row["version"] == "1.2.0" and row["variant"] == "linux-amd64"
    assert row["description"] == "The hello world tool"
    assert row["labels"] == {"os": "Linux", "arch": "amd64", "build.id": "b-42"}
    assert row["blob_digest"] == sha(data)
    assert row["blob_size"] == len(data)

    fetched = depot.client.get("/v1/acme/hello-world/1.2.0/linux-amd64/blob", headers=read)
    assert fetched.status_code == 200 and fetched.data == data


def test_metadata_of_missing_artifact_is_404(depot, read):
    depot.publish("acme", "pkg", "1.0.0", "x", b"one")
    for path in ("/v1/acme/pkg/1.0.1/x", "/v1/acme/pkg/1.0.0/y", "/v1/acme/other/1.0.0/x"):
        response = depot.client.get(path, headers=read)
        assert response.status_code == 404 and code(response) == "NOT_FOUND"
        blob = depot.client.get(path + "/blob", headers=read)
        assert blob.status_code == 404 and code(blob) == "NOT_FOUND"


def test_read_routes_need_credentials(depot):
    depot.publish("acme", "pkg", "1.0.0", "x", b"one")
    for path in ("/v1", "/v1/acme", "/v1/search?q=p", "/v1/acme/pkg/versions", "/v1/acme/pkg/latest",
                 "/v1/acme/pkg/1.0.0/x", "/v1/acme/pkg/1.0.0/x/blob", "/v1/acme/pkg/tags"):
        response = depot.client.get(path)
        assert response.status_code == 401, path
        assert code(response) == "UNAUTHENTICATED"
    # publishing needs write
    refused = depot.publish("acme", "pkg", "1.0.1", "x", b"two", scopes=["read"])
    assert refused.status_code == 403 and code(refused) == "FORBIDDEN"


@pytest.mark.parametrize("label", ["Bad!Key", "-leading-dash", "k" * 64, "sp ace"])
def test_invalid_label_key_is_400_and_stores_nothing(depot, read, label):
    response = depot.publish("acme", "pkg", "1.0.0", "x", b"bytes", headers={"X-Depot-Label-" + label: "v"})
    assert response.status_code == 400, (label, response.data)
    assert code(response) == "SCHEMA_VALIDATION"
    assert depot.client.get("/v1/acme/pkg/1.0.0/x", headers=read).status_code == 404
    assert depot.blob_files() == []
    assert depot.temp_files() == []


def test_longest_valid_label_key_and_32_labels_are_accepted_33_are_not(depot, read):
    ok_key = "k" * 63
    assert depot.publish("acme", "pkg", "0.1.0", "x", b"a", headers={"X-Depot-Label-" + ok_key: "v"}).status_code == 201

    labels32 = {"X-Depot-Label-l%02d" % i: "v%d" % i for i in range(32)}
    ok = depot.publish("acme", "pkg", "1.0.0", "x", b"thirty-two", headers=labels32)
    assert ok.status_code == 201, ok.data
    meta = depot.client.get("/v1/acme/pkg/1.0.0/x", headers=read).get_json()
    assert meta["labels"] == {"l%02d" % i: "v%d" % i for i in range(32)}

    labels33 = {"X-Depot-Label-l%02d" % i: "v" for i in range(33)}
    too_many = depot.publish("acme", "pkg", "1.0.1", "x", b"thirty-three", headers=labels33)
    assert too_many.status_code == 400
    assert code(too_many) == "SCHEMA_VALIDATION"
    assert depot.client.get("/v1/acme/pkg/1.0.1/x", headers=read).status_code == 404
    assert sha(b"thirty-three")[7:] not in " ".join(depot.blob_files())


def test_label_value_over_256_chars_is_400(depot):
    response = depot.publish("acme", "pkg", "1.0.0", "x", b"a", headers={"X-Depot-Label-note": "v" * 257})
    assert response.status_code == 400 and code(response) == "SCHEMA_VALIDATION"
    assert depot.publish("acme", "pkg", "1.0.0", "x", b"a",
                         headers={"X-Depot-Label-note": "v" * 256}).status_code == 201


def test_head_of_blob_gives_length_and_digest_without_body(depot, read):
    data = b"0123456789" * 321
    assert depot.publish("acme", "pkg", "1.0.0", "x", data).status_code == 201
    head = depot.client.head("/v1/acme/pkg/1.0.0/x/blob", headers=read)
    assert head.status_code == 200
    assert head.data == b""
    assert int(head.headers["Content-Length"]) == len(data)
    assert head.headers["ETag"] == '"%s"' % sha(data)
    assert head.headers["X-Depot-Digest"] == sha(data)

    get = depot.client.get("/v1/acme/pkg/1.0.0/x/blob", headers=read)
    assert get.data == data and get.headers["ETag"] == head.headers["ETag"]

    missing = depot.client.head("/v1/acme/pkg/9.9.9/x/blob", headers=read)
    assert missing.status_code == 404 and missing.data == b""


def test_a_download_is_named_by_its_coordinates_and_dated_by_its_publication(depot, read):
    assert depot.publish("acme", "pkg", "1.2.0", "linux-amd64", b"tool bytes").status_code == 201
    created = datetime.fromisoformat(depot.client.get("/v1/acme/pkg/1.2.0/linux-amd64",
                                                      headers=read).get_json()["created_at"])
    for _ in range(2):  # the second answer comes from the response cache
        get = depot.client.get("/v1/acme/pkg/1.2.0/linux-amd64/blob", headers=read)
        assert get.headers["Content-Disposition"] == 'attachment; filename="pkg-1.2.0-linux-amd64"'
        assert get.last_modified == created.replace(microsecond=0)
        unchanged = depot.client.get("/v1/acme/pkg/1.2.0/linux-amd64/blob",
                                     headers=dict(read, **{"If-Modified-Since": get.headers["Last-Modified"]}))
        assert unchanged.status_code == 304 and unchanged.data == b""


# --------------------------------------------------------------------------------------------------------------
# Versions and latest


def test_versions_semver_order_latest_excludes_prerelease(depot, read):
    for version in ("1.2.0", "1.10.0", "1.9.0", "2.0.0-rc.1"):
        assert depot.publish("acme", "tool", version, "linux-amd64", version.encode()).status_code == 201
    assert depot.publish("acme", "tool", "1.9.0", "darwin-arm64", b"1.9.0 mac").status_code == 201

    latest = depot.client.get("/v1/acme/tool/latest", headers=read)
    assert latest.status_code == 200
    assert latest.get_json() == {"namespace": "acme", "name": "tool", "version": "1.10.0",
                                 "variant": "linux-amd64", "blob_digest": sha(b"1.10.0"), "blob_size": 6}

    body = listing(depot.client.get("/v1/acme/tool/versions", headers=read))
    assert body["total"] == 5 and body["page"] == 1 and body["page_size"] == 50
    assert [(row["version"], row["variant"]) for row in body["items"]] == [
        ("2.0.0-rc.1", "linux-amd64"),
        ("1.10.0", "linux-amd64"),
        ("1.9.0", "darwin-arm64"),
        ("1.9.0", "linux-amd64"),
        ("1.2.0", "linux-amd64"),
    ]
    assert all(row["namespace"] == "acme" and row["name"] == "tool" for row in body["items"])

    missing = depot.client.get("/v1/acme/nothing-here/latest", headers=read)
    assert missing.status_code == 404 and code(missing) == "NOT_FOUND"
    empty = listing(depot.client.get("/v1/acme/nothing-here/versions", headers=read))
    assert empty["items"] == [] and empty["total"] == 0


def test_only_prereleases_means_no_latest(depot, read):
    assert depot.publish("acme", "beta", "1.0.0-alpha.1", "x", b"a").status_code == 201
    response = depot.client.get("/v1/acme/beta/latest", headers=read)
    assert response.status_code == 404 and code(response) == "NOT_FOUND"
    assert listing(depot.client.get("/v1/acme/beta/versions", headers=read))["total"] == 1


@pytest.mark.parametrize("version", ["1.2", "v1.2.0", "latest-build", "1.2.3.4", "01.2.3"])
def test_non_semver_version_is_400_invalid_version(depot, read, version):
    response = depot.publish("acme", "pkg", version, "x", b"bytes")
    assert response.status_code == 400, (version, response.data)
    error = response.get_json()["error"]
    assert error["code"] == "INVALID_VERSION"
    assert error["field"] == "version"
    assert depot.blob_files() == []
    assert listing(depot.client.get("/v1/acme/pkg/versions", headers=read))["total"] == 0


def test_prerelease_refused_when_not_allowed(make_depot, project_schema):
    schema = copy.deepcopy(project_schema)
    schema["entities"]["versioning"]["allow_prerelease"] = False
    depot = make_depot(schema, "no-prerelease")
    response = depot.publish("acme", "pkg", "2.0.0-rc.1", "x", b"rc")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "PRERELEASE_NOT_ALLOWED"
    assert error.get("field") == "version"
    assert depot.blob_files() == []
    assert depot.publish("acme", "pkg", "2.0.0", "x", b"release").status_code == 201


@pytest.mark.parametrize("order", [("linux-amd64", "darwin-arm64"), ("darwin-arm64", "linux-amd64")])
def test_latest_with_several_variants_is_first_variant_by_name(depot, read, order):
    assert depot.publish("acme", "multi", "2.9.0", "aaa", b"older").status_code == 201
    for variant in order:
        assert depot.publish("acme", "multi", "3.0.0", variant, variant.encode()).status_code == 201
    assert depot.publish("acme", "multi", "3.1.0-rc.1", "aaa", b"rc").status_code == 201
    for _ in range(3):
        latest = depot.client.get("/v1/acme/multi/latest", headers=read)
        assert latest.status_code == 200
        assert latest.get_json()["version"] == "3.0.0"
        assert latest.get_json()["variant"] == "darwin-arm64"
        assert latest.get_json()["blob_digest"] == sha(b"darwin-arm64")
    rows = listing(depot.client.get("/v1/acme/multi/versions", headers=read))["items"]
    assert [(r["version"], r["variant"]) for r in rows] == [
        ("3.1.0-rc.1", "aaa"), ("3.0.0", "darwin-arm64"), ("3.0.0", "linux-amd64"), ("2.9.0", "aaa")]
    depot.restart()
    latest = depot.client.get("/v1/acme/multi/latest", headers=depot.headers(["read"]))
    assert latest.get_json()["variant"] == "darwin-arm64"


# --------------------------------------------------------------------------------------------------------------
# Pagination


def walk(depot, path, page_size, headers):
    seen, page = [], 1
    while True:
        body = listing(depot.client.get("%s?page=%d&page_size=%d" % (path, page, page_size), headers=headers))
        assert body["page"] == page and body["page_size"] == page_size
        assert body["total"] == 250
        if not body["items"]:
            return seen, page
        assert len(body["items"]) <= page_size
        seen.append([(row["version"], row["variant"]) for row in body["items"]])
        page += 1


def test_pagination_of_250_versions(depot, read):
    write = depot.headers()
    for i in range(250):
        response = depot.client.put("/v1/acme/big/1.0.%d/x/blob" % i, data=b"%d" % i, headers=write)
        assert response.status_code == 201, (i, response.data)
    expected = [("1.0.%d" % i, "x") for i in range(249, -1, -1)]  # semver descending

    pages, end = walk(depot, "/v1/acme/big/versions", 100, read)
    assert [len(p) for p in pages] == [100, 100, 50]
    assert end == 4
    flat = [row for p in pages for row in p]
    assert flat == expected
    assert len(set(flat)) == 250

    pages7, end7 = walk(depot, "/v1/acme/big/versions", 7, read)
    assert len(pages7) == 36 and end7 == 37
    assert all(len(p) == 7 for p in pages7[:-1]) and len(pages7[-1]) == 250 - 35 * 7
    flat7 = [row for p in pages7 for row in p]
    assert flat7 == expected and len(set(flat7)) == 250

    # stable: the same walk again gives the same pages
    assert walk(depot, "/v1/acme/big/versions", 100, read)[0] == pages

    past = listing(depot.client.get("/v1/acme/big/versions?page=99&page_size=100", headers=read))
    assert past["items"] == [] and past["total"] == 250 and past["page"] == 99

    full = listing(depot.client.get("/v1/acme/big/versions?page=2&page_size=200", headers=read))
    assert len(full["items"]) == 50 and full["total"] == 250

    default = listing(depot.client.get("/v1/acme/big/versions", headers=read))
    assert default["page"] == 1 and default["page_size"] == 50 and len(default["items"]) == 50
    assert [(r["version"], r["variant"]) for r in default["items"]] == expected[:50]

    latest = depot.client.get("/v1/acme/big/latest", headers=read)
    assert latest.get_json()["version"] == "1.0.249"


@pytest.mark.parametrize("query", ["page_size=201", "page_size=1000", "page=0", "page=-1", "page_size=0",
                                   "page=abc", "page_size=x"])
@pytest.mark.parametrize("path", ["/v1/acme/pkg/versions", "/v1/acme/pkg/tags", "/v1/acme", "/v1",
                                  "/v1/search?q=pkg"])
def test_bad_paging_is_400_on_every_list_route(depot, read, path, query):
    depot.publish("acme", "pkg", "1.0.0", "x", b"one")
    response = depot.client.get(path + ("&" if "?" in path else "?") + query, headers=read)
    assert response.status_code == 400, (path, query, response.data)
    assert code(response) == "INVALID_QUERY"


@pytest.mark.parametrize("path", ["/v1/acme/pkg/versions", "/v1/acme/pkg/tags", "/v1/acme", "/v1",
                                  "/v1/search?q=pkg"])
def test_envelope_on_every_list_route(depot, read, path):
    assert depot.publish("acme", "pkg", "1.0.0", "x", b"one").status_code == 201
    assert depot.client.put("/v1/acme/pkg/tags/stable", headers=depot.headers(),
                            json={"version": "1.0.0", "variant": "x"}).status_code == 200
    body = listing(depot.client.get(path, headers=read))
    assert body["page"] == 1 and body["page_size"] == 50 and body["total"] == 1 and len(body["items"]) == 1
    sep = "&" if "?" in path else "?"
    paged = listing(depot.client.get(path + sep + "page=2&page_size=3", headers=read))
    assert paged == {"items": [], "total": 1, "page": 2, "page_size": 3, "next": None}


# --------------------------------------------------------------------------------------------------------------
# Tags


def set_tag(depot, tag, version, variant, ns="acme", name="pkg", scopes=("read", "write")):
    return depot.client.put("/v1/%s/%s/tags/%s" % (ns, name, tag), headers=depot.headers(scopes),
                            json={"version": version, "variant": variant})


def test_tags_set_list_get_download_delete(depot, read):
    one, two = b"version one bytes", b"version two bytes"
    assert depot.publish("acme", "pkg", "1.0.0", "x", one).status_code == 201
    assert depot.publish("acme", "pkg", "2.0.0", "x", two).status_code == 201

    for tag, version in (("stable", "1.0.0"), ("edge", "2.0.0"), ("beta", "2.0.0")):
        response = set_tag(depot, tag, version, "x")
        assert response.status_code == 200 and response.get_json() == {"ok": True}

    tags = listing(depot.client.get("/v1/acme/pkg/tags", headers=read))
    assert tags["total"] == 3
    assert [row["tag"] for row in tags["items"]] == ["beta", "edge", "stable"]
    by_tag = {row["tag"]: row for row in tags["items"]}
    assert by_tag["stable"]["version"] == "1.0.0" and by_tag["stable"]["variant"] == "x"
    assert by_tag["stable"]["blob_digest"] == sha(one)
    assert by_tag["edge"]["version"] == "2.0.0"

    got = depot.client.get("/v1/acme/pkg/tags/stable", headers=read)
    assert got.status_code == 200
    doc = got.get_json()
    assert doc["tag"] == "stable" and doc["namespace"] == "acme" and doc["name"] == "pkg"
    assert doc["version"] == "1.0.0" and doc["variant"] == "x" and doc["blob_digest"] == sha(one)
    assert doc == by_tag["stable"]
    assert doc["updated_by"] == "tester" and doc["updated_at"].endswith("Z")
    # tag names are normalized like the entity says
    assert depot.client.get("/v1/acme/pkg/tags/STABLE", headers=read).get_json() == doc

    download = depot.client.get("/v1/acme/pkg/tags/stable/blob", headers=read)
    assert download.status_code == 307
    location = download.headers["Location"]
    assert location.endswith("/v1/acme/pkg/1.0.0/x/blob")
    followed = depot.client.get(location, headers=read)
    assert followed.status_code == 200 and followed.data == one
    edge = depot.client.get("/v1/acme/pkg/tags/edge/blob", headers=read)
    assert edge.status_code == 307
    assert depot.client.get(edge.headers["Location"], headers=read).data == two

    # deleting needs write
    refused = depot.client.delete("/v1/acme/pkg/tags/stable", headers=read)
    assert refused.status_code == 403 and code(refused) == "FORBIDDEN"
    assert depot.client.get("/v1/acme/pkg/tags/stable", headers=read).status_code == 200

    deleted = depot.client.delete("/v1/acme/pkg/tags/stable", headers=depot.headers())
    assert deleted.status_code == 200 and deleted.get_json() == {"ok": True}
    gone = depot.client.get("/v1/acme/pkg/tags/stable", headers=read)
    assert gone.status_code == 404 and code(gone) == "TAG_NOT_FOUND"
    gone_blob = depot.client.get("/v1/acme/pkg/tags/stable/blob", headers=read)
    assert gone_blob.status_code == 404 and code(gone_blob) == "TAG_NOT_FOUND"
    again = depot.client.delete("/v1/acme/pkg/tags/stable", headers=depot.headers())
    assert again.status_code == 404 and code(again) == "TAG_NOT_FOUND"
    tags = listing(depot.client.get("/v1/acme/pkg/tags", headers=read))
    assert [row["tag"] for row in tags["items"]] == ["beta", "edge"] and tags["total"] == 2

    # the artifact itself is untouched
    assert depot.client.get("/v1/acme/pkg/1.0.0/x/blob", headers=read).data == one

    types = [event["type"] for event in events(depot)]
    assert types.count("tag.updated") == 3 and types.count("tag.deleted") == 1
    deleted_event = [e for e in events(depot) if e["type"] == "tag.deleted"][0]
    assert deleted_event["payload"]["tag"] == "stable" and deleted_event["payload"]["by"] == "tester"


def test_tags_are_immutable(depot, read):
    assert depot.publish("acme", "pkg", "1.0.0", "x", b"one").status_code == 201
    assert depot.publish("acme", "pkg", "1.0.0", "y", b"one-y").status_code == 201
    assert depot.publish("acme", "pkg", "2.0.0", "x", b"two").status_code == 201
    assert set_tag(depot, "stable", "1.0.0", "x").status_code == 200
    first = depot.client.get("/v1/acme/pkg/tags/stable", headers=read).get_json()

    for version, variant in (("2.0.0", "x"), ("1.0.0", "y")):
        moved = set_tag(depot, "stable", version, variant)
        assert moved.status_code == 409, (version, variant, moved.data)
        assert code(moved) == "TAG_IMMUTABLE"

    same = set_tag(depot, "stable", "1.0.0", "x")
    assert same.status_code == 200 and same.get_json() == {"ok": True, "unchanged": True}

    now = depot.client.get("/v1/acme/pkg/tags/stable", headers=read).get_json()
    assert now["version"] == "1.0.0" and now["variant"] == "x"
    assert now == first
    download = depot.client.get("/v1/acme/pkg/tags/stable/blob", headers=read)
    assert depot.client.get(download.headers["Location"], headers=read).data == b"one"
    assert listing(depot.client.get("/v1/acme/pkg/tags", headers=read))["total"] == 1


def test_tagging_missing_or_deleted_version_is_404(depot, read):
    assert depot.publish("acme", "pkg", "1.0.0", "x", b"one").status_code == 201
    assert depot.publish("acme", "pkg", "1.1.0", "x", b"one-one").status_code == 201
    for version, variant in (("9.9.9", "x"), ("1.0.0", "nope")):
        response = set_tag(depot, "stable", version, variant)
        assert response.status_code == 404 and code(response) == "TARGET_NOT_FOUND"
    missing_pkg = set_tag(depot, "stable", "1.0.0", "x", name="other")
    assert missing_pkg.status_code == 404 and code(missing_pkg) == "TARGET_NOT_FOUND"

    assert depot.client.delete("/v1/acme/pkg/1.1.0/x", headers=depot.headers(["admin"])).status_code == 200
    deleted = set_tag(depot, "stable", "1.1.0", "x")
    assert deleted.status_code == 404 and code(deleted) == "TARGET_NOT_FOUND"

    assert depot.client.get("/v1/acme/pkg/tags/stable", headers=read).status_code == 404
    assert listing(depot.client.get("/v1/acme/pkg/tags", headers=read))["total"] == 0
    assert not [e for e in events(depot) if e["type"] == "tag.updated"]


def test_tag_body_is_validated(depot):
    assert depot.publish("acme", "pkg", "1.0.0", "x", b"one").status_code == 201
    for body in ({"version": "1.0.0"}, {"version": "1.0.0", "variant": "x", "extra": 1},
                 {"version": "../1.0.0", "variant": "x"}):
        response = depot.client.put("/v1/acme/pkg/tags/stable", headers=depot.headers(), json=body)
        assert response.status_code == 400, body
        assert code(response) == "SCHEMA_VALIDATION"
    refused = set_tag(depot, "stable", "1.0.0", "x", scopes=["read"])
    assert refused.status_code == 403


# --------------------------------------------------------------------------------------------------------------
# Namespaces, packages and search


def test_namespaces_and_packages(depot, read):
    for ns, name, version in (("beta", "zeta-tool", "1.0.0"), ("beta", "alpha-lib", "1.0.0"),
                              ("beta", "alpha-lib", "1.1.0"), ("alpha", "one", "0.1.0"),
                              ("Gamma", "Mid_Pkg", "2.0.0")):
        assert depot.publish(ns, name, version, "x", (ns + name + version).encode()).status_code == 201

    namespaces = listing(depot.client.get("/v1", headers=read))
    assert [row["namespace"] for row in namespaces["items"]] == ["alpha", "beta", "gamma"]
    assert namespaces["total"] == 3
    page2 = listing(depot.client.get("/v1?page=2&page_size=2", headers=read))
    assert [row["namespace"] for row in page2["items"]] == ["gamma"] and page2["total"] == 3

    beta = listing(depot.client.get("/v1/beta", headers=read))
    assert [row["name"] for row in beta["items"]] == ["alpha-lib", "zeta-tool"]
    assert beta["total"] == 2
    assert all(row["namespace"] == "beta" for row in beta["items"])
    first = listing(depot.client.get("/v1/beta?page=1&page_size=1", headers=read))
    second = listing(depot.client.get("/v1/beta?page=2&page_size=1", headers=read))
    assert [r["name"] for r in first["items"] + second["items"]] == ["alpha-lib", "zeta-tool"]
    assert first["total"] == second["total"] == 2

    gamma = listing(depot.client.get("/v1/GAMMA", headers=read))
    assert [row["name"] for row in gamma["items"]] == ["mid-pkg"]

    empty = listing(depot.client.get("/v1/nobody", headers=read))
    assert empty["items"] == [] and empty["total"] == 0


def test_search_by_prefix_and_substring(depot, read):
    for ns, name in (("acme", "hello-world"), ("acme", "help-desk"), ("other", "say-hello"),
                     ("other", "goodbye"), ("zed", "Shell_Tools")):
        assert depot.publish(ns, name, "1.0.0", "x", (ns + name).encode()).status_code == 201

    def search(query):
        body = listing(depot.client.get("/v1/search?" + query, headers=read))
        return body, [(row["namespace"], row["name"]) for row in body["items"]]

    body, found = search("q=hel")
    assert found == [("acme", "hello-world"), ("acme", "help-desk"), ("other", "say-hello"),
                     ("zed", "shell-tools")]
    assert body["total"] == 4

    # prefix
    assert search("q=hello-w")[1] == [("acme", "hello-world")]
    # substring, case-insensitive
    assert search("q=HELLO")[1] == [("acme", "hello-world"), ("other", "say-hello")]
    assert search("q=Odby")[1] == [("other", "goodbye")]
    assert search("q=tools")[1] == [("zed", "shell-tools")]
    none, nothing = search("q=nothing-like-it")
    assert nothing == [] and none["total"] == 0

    # paginated
    one, found1 = search("q=hel&page=1&page_size=3")
    two, found2 = search("q=hel&page=2&page_size=3")
    assert one["total"] == two["total"] == 4
    assert one["page"] == 1 and two["page"] == 2 and one["page_size"] == 3
    assert found1 + found2 == found and len(found1) == 3 and len(found2) == 1

    # several versions of one package give one result
    assert depot.publish("acme", "hello-world", "1.1.0", "x", b"again").status_code == 201
    assert search("q=hello-world")[0]["total"] == 1

    for query in ("", "page=1"):
        missing = depot.client.get("/v1/search" + ("?" + query if query else ""), headers=read)
        assert missing.status_code == 400, query
        assert code(missing) == "INVALID_QUERY"


# --------------------------------------------------------------------------------------------------------------
# Deletion (tombstones)


def test_delete_tombstones_version_and_latest_is_withdrawn(depot, read):
    assert depot.publish("acme", "pkg", "1.0.0", "x", b"one").status_code == 201
    second = b"one point one"
    assert depot.publish("acme", "pkg", "1.1.0", "x", second).status_code == 201
    assert depot.client.get("/v1/acme/pkg/latest", headers=read).get_json()["version"] == "1.1.0"
    blobs_before = depot.blob_files()

    for scopes in (["read"], ["read", "write"]):
        refused = depot.client.delete("/v1/acme/pkg/1.1.0/x", headers=depot.headers(scopes))
        assert refused.status_code == 403 and code(refused) == "FORBIDDEN"
    assert depot.client.delete("/v1/acme/pkg/1.1.0/x").status_code == 401
    assert depot.client.get("/v1/acme/pkg/1.1.0/x", headers=read).status_code == 200

    admin = depot.headers(["admin"])
    deleted = depot.client.delete("/v1/acme/pkg/1.1.0/x", headers=admin)
    assert deleted.status_code == 200 and deleted.get_json() == {"ok": True, "deleted": True}

    def check_tombstone():
        blob = depot.client.get("/v1/acme/pkg/1.1.0/x/blob", headers=read)
        assert blob.status_code == 410 and code(blob) == "GONE"
        meta = depot.client.get("/v1/acme/pkg/1.1.0/x", headers=read)
        assert meta.status_code == 410 and code(meta) == "GONE"
        versions = listing(depot.client.get("/v1/acme/pkg/versions", headers=read))
        assert [(r["version"], r["variant"]) for r in versions["items"]] == [("1.0.0", "x")]
        assert versions["total"] == 1
        latest = depot.client.get("/v1/acme/pkg/latest", headers=read)
        assert latest.status_code == 404 and code(latest) == "LATEST_WITHDRAWN"

    check_tombstone()
    # the lower version is still served; latest does not fall back to it
    assert depot.client.get("/v1/acme/pkg/1.0.0/x/blob", headers=read).data == b"one"

    again = depot.client.delete("/v1/acme/pkg/1.1.0/x", headers=admin)
    assert again.status_code == 410 and code(again) == "GONE"
    missing = depot.client.delete("/v1/acme/pkg/7.0.0/x", headers=admin)
    assert missing.status_code == 404 and code(missing) == "NOT_FOUND"

    # coordinates are never reusable
    for data in (b"other bytes", second):
        republished = depot.publish("acme", "pkg", "1.1.0", "x", data)
        assert republished.status_code == 409, data
        assert code(republished) == "CONFLICT"
    check_tombstone()
    assert depot.blob_files() == blobs_before  # bytes left for GC, nothing new stored
    assert depot.temp_files() == []

    deleted_events = [e for e in events(depot) if e["type"] == "artifact.deleted"]
    assert len(deleted_events) == 1
    payload = deleted_events[0]["payload"]
    assert {k: payload[k] for k in ("namespace", "name", "version", "variant", "by")} == {
        "namespace": "acme", "name": "pkg", "version": "1.1.0", "variant": "x", "by": "tester"}
    assert payload["at"].endswith("Z")

    depot.restart()
    read = depot.headers(["read"])
    check_tombstone()

    # a version between the lower one and the tombstone does not bring latest back (monotonic)
    assert depot.publish("acme", "pkg", "1.0.5", "x", b"one-oh-five").status_code == 201
    latest = depot.client.get("/v1/acme/pkg/latest", headers=read)
    assert latest.status_code == 404 and code(latest) == "LATEST_WITHDRAWN"
    # a prerelease above it does not either
    assert depot.publish("acme", "pkg", "1.2.0-rc.1", "x", b"rc").status_code == 201
    latest = depot.client.get("/v1/acme/pkg/latest", headers=read)
    assert latest.status_code == 404 and code(latest) == "LATEST_WITHDRAWN"

    # a higher release moves latest on
    assert depot.publish("acme", "pkg", "1.2.0", "x", b"one-two").status_code == 201
    latest = depot.client.get("/v1/acme/pkg/latest", headers=read)
    assert latest.status_code == 200 and latest.get_json()["version"] == "1.2.0"
    versions = listing(depot.client.get("/v1/acme/pkg/versions", headers=read))
    assert [r["version"] for r in versions["items"]] == ["1.2.0", "1.2.0-rc.1", "1.0.5", "1.0.0"]


def test_deleting_a_lower_version_leaves_latest_alone(depot, read):
    for version in ("1.0.0", "2.0.0", "3.0.0-rc.1"):
        assert depot.publish("acme", "pkg", version, "x", version.encode()).status_code == 201
    admin = depot.headers(["admin"])
    for version in ("1.0.0", "3.0.0-rc.1"):
        assert depot.client.delete("/v1/acme/pkg/%s/x" % version, headers=admin).status_code == 200
    latest = depot.client.get("/v1/acme/pkg/latest", headers=read)
    assert latest.status_code == 200 and latest.get_json()["version"] == "2.0.0"
    versions = listing(depot.client.get("/v1/acme/pkg/versions", headers=read))
    assert [r["version"] for r in versions["items"]] == ["2.0.0"] and versions["total"] == 1
    # the package is still listed in its namespace
    assert [r["name"] for r in listing(depot.client.get("/v1/acme", headers=read))["items"]] == ["pkg"]


def test_deleting_one_variant_keeps_the_others(depot, read):
    for variant in ("darwin-arm64", "linux-amd64"):
        assert depot.publish("acme", "pkg", "1.0.0", variant, variant.encode()).status_code == 201
    assert depot.client.delete("/v1/acme/pkg/1.0.0/linux-amd64", headers=depot.headers(["admin"])).status_code == 200
    versions = listing(depot.client.get("/v1/acme/pkg/versions", headers=read))
    assert [(r["version"], r["variant"]) for r in versions["items"]] == [("1.0.0", "darwin-arm64")]
    assert depot.client.get("/v1/acme/pkg/1.0.0/darwin-arm64/blob", headers=read).data == b"darwin-arm64"


def test_latest_stays_on_a_release_while_one_of_its_variants_is_live(depot, read):
    for version, variant in (("1.0.0", "linux"), ("2.0.0", "linux"), ("2.0.0", "darwin")):
        assert depot.publish("acme", "pkg", version, variant, variant.encode()).status_code == 201
    admin = depot.headers(["admin"])

    def latest():
        response = depot.client.get("/v1/acme/pkg/latest", headers=read)
        return response.status_code, response.get_json()
    assert latest()[1]["variant"] == "darwin"  # the variant that sorts first
    assert depot.client.delete("/v1/acme/pkg/2.0.0/darwin", headers=admin).status_code == 200
    assert latest()[0] == 200 and (latest()[1]["version"], latest()[1]["variant"]) == ("2.0.0", "linux")
    depot.restart()
    assert (latest()[1]["version"], latest()[1]["variant"]) == ("2.0.0", "linux")
    # every variant of it deleted: withdrawn, never back to 1.0.0 (latest is monotonic)
    assert depot.client.delete("/v1/acme/pkg/2.0.0/linux", headers=depot.headers(["admin"])).status_code == 200
    status, body = latest()
    assert status == 404 and body["error"]["code"] == "LATEST_WITHDRAWN"


def test_reindex_moves_existing_rows_under_a_changed_sort(tmp_path, project_schema):
    """A data dir whose latest_release rows were written under the old sort (version only) is rewritten under
    the new one by `python -m app reindex`, and latest then finds the live variant."""
    from tests.conftest import Depot
    old = copy.deepcopy(project_schema)
    key = next(k for k in old["indexes"]["artifact_versions"]["keys"] if k["name"] == "latest_release")
    key["sort"] = ["version:desc"]
    data_dir = str(tmp_path / "data")
    depot = Depot(data_dir, old)
    for variant in ("darwin", "linux"):
        assert depot.publish("acme", "pkg", "2.0.0", variant, variant.encode()).status_code == 201
    assert depot.client.delete("/v1/acme/pkg/2.0.0/darwin", headers=depot.headers(["admin"])).status_code == 200
    read = depot.headers(["read"])
    assert depot.client.get("/v1/acme/pkg/latest", headers=read).status_code == 404  # the old sort's answer
    assert depot.client.post("/admin/schema", json=project_schema,
                             headers=depot.headers(["admin"])).status_code == 201
    depot.close()
    from app.tools.cli import main
    assert main(["reindex", "--data-dir", data_dir]) == 0
    depot = Depot(data_dir, project_schema)
    try:
        latest = depot.client.get("/v1/acme/pkg/latest", headers=depot.headers(["read"]))
        assert latest.status_code == 200 and latest.get_json()["variant"] == "linux"
        versions = listing(depot.client.get("/v1/acme/pkg/versions", headers=depot.headers(["read"])))
        assert [(r["version"], r["variant"]) for r in versions["items"]] == [("2.0.0", "linux")]
    finally:
        depot.close()


# --------------------------------------------------------------------------------------------------------------
# Immutability of coordinates


def test_second_publish_is_409_and_leaves_no_orphan_blob(depot, read):
    first = b"the first bytes"
    assert depot.publish("acme", "pkg", "1.0.0", "x", first).status_code == 201
    assert [os.path.basename(path) for path in depot.blob_files()] == [sha(first)[7:]]

    for data in (b"different bytes entirely", first):
        second = depot.publish("acme", "pkg", "1.0.0", "x", data)
        assert second.status_code == 409, data
        assert code(second) == "CONFLICT"
        assert [os.path.basename(path) for path in depot.blob_files()] == [sha(first)[7:]]
        assert depot.temp_files() == []

    # normalized coordinates are the same coordinates
    alias = depot.publish("ACME", "pkg", " 1.0.0", "X", b"sneaky")
    assert alias.status_code == 409
    assert [os.path.basename(path) for path in depot.blob_files()] == [sha(first)[7:]]
    assert depot.temp_files() == []

    fetched = depot.client.get("/v1/acme/pkg/1.0.0/x/blob", headers=read)
    assert fetched.data == first
    assert depot.client.get("/v1/acme/pkg/1.0.0/x", headers=read).get_json()["blob_digest"] == sha(first)
    published = [e for e in events(depot) if e["type"] == "artifact.published"]
    assert len(published) == 1 and published[0]["payload"]["blob_digest"] == sha(first)


def test_same_bytes_under_two_coordinates_share_one_blob(depot, read):
    data = b"shared"
    assert depot.publish("acme", "pkg", "1.0.0", "x", data).status_code == 201
    assert depot.publish("acme", "pkg", "1.0.0", "y", data).status_code == 201
    assert [os.path.basename(path) for path in depot.blob_files()] == [sha(data)[7:]]
    assert depot.temp_files() == []


# --------------------------------------------------------------------------------------------------------------
# Proxy feature switch


def test_proxy_route_redirects_to_local_artifact(depot, read):
    assert depot.publish("acme", "pkg", "1.0.0", "x", b"local").status_code == 201
    response = depot.client.get("/v1/proxy/acme/pkg/1.0.0/x/blob", headers=read)
    assert response.status_code == 307
    assert response.headers["Location"].endswith("/v1/acme/pkg/1.0.0/x/blob")
    assert depot.client.get(response.headers["Location"], headers=read).data == b"local"


def test_proxy_unreachable_upstream_is_502(make_depot, project_schema):
    schema = copy.deepcopy(project_schema)
    schema["upstreams"]["originA"]["base_url"] = "http://127.0.0.1:9"
    schema["upstreams"]["originA"]["retry"] = {"max_attempts": 1, "backoff_ms": 1}
    depot = make_depot(schema, "unreachable")
    response = depot.client.get("/v1/proxy/acme/pkg/1.0.0/x/blob", headers=depot.headers(["read"]))
    assert response.status_code == 502 and code(response) == "UPSTREAM_ERROR"
    assert depot.temp_files() == [] and depot.blob_files() == []


def test_proxy_disabled_is_404_even_for_existing_artifact(make_depot, project_schema):
    schema = copy.deepcopy(project_schema)
    schema["features"]["proxy_enabled"] = False
    depot = make_depot(schema, "no-proxy")
    read = depot.headers(["read"])
    assert depot.publish("acme", "pkg", "1.0.0", "x", b"local").status_code == 201
    for path in ("/v1/proxy/acme/pkg/1.0.0/x/blob", "/v1/proxy/acme/missing/1.0.0/x/blob"):
        response = depot.client.get(path, headers=read)
        assert response.status_code == 404, path
        assert code(response) == "PROXY_DISABLED"
        assert "Location" not in response.headers
    # the rest of the API is unaffected
    assert depot.client.get("/v1/acme/pkg/1.0.0/x/blob", headers=read).data == b"local"
    assert depot.client.get("/v1/acme/pkg/latest", headers=read).get_json()["version"] == "1.0.0"
    assert not [e for e in events(depot) if e["type"] == "artifact.cached"]


def test_setting_a_tag_to_its_current_target_changes_nothing(make_depot, project_schema):
    depot = make_depot(project_schema)
    assert depot.publish("acme", "same", "1.0.0", "x", b"one").status_code == 201
    body = {"version": "1.0.0", "variant": "x"}
    first = depot.client.put("/v1/acme/same/tags/stable", json=body, headers=depot.headers())
    assert first.status_code == 200 and first.get_json() == {"ok": True}
    state = depot.service.engine.state
    stored = state.get(b"kmeta\x00tag/acme/same/stable")
    events = state.count(b"kmeta\x00eventlog/")
    again = depot.client.put("/v1/acme/same/tags/stable", json=body, headers=depot.headers())
    assert again.status_code == 200 and again.get_json() == {"ok": True, "unchanged": True}
    assert state.get(b"kmeta\x00tag/acme/same/stable") == stored
    assert state.count(b"kmeta\x00eventlog/") == events
