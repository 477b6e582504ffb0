"""Versioning schemes per entity (app/engine/versions.py): semver (the default), pep440 and opaque.

The PEP 440 byte keys are checked against the `packaging` library, the oracle, on thousands of generated versions
(a fixed seed: the same versions every run); then the schemes at load (unknown names, indexes and conditions
naming them), in validate.entity, and over HTTP, where `latest` is the first row of a `version:desc` key.
"""
import copy
import random

import pytest
from packaging.version import Version

from app.engine.compiler import compile_schema
from app.engine.conditions import ConditionError, compile_condition
from app.engine.definitions import Versioning, compile_normalizer
from app.engine.versions import SCHEMES
from app.errors import DepotError
from app.stores.sortkeys import ORDERINGS, descending, encode_version

SEED = 440


def pep440(version):
    return encode_version(version, "pep440")


# --- the byte keys: PEP 440 order is packaging's order ---------------------------------------------------------

def random_pep440(rng):
    """A PEP 440 version as people write them: epochs, short and long releases with zeros, every pre-release
    spelling, implicit and explicit post-releases, dev releases, local labels mixing text and numbers."""
    number = lambda: rng.choice([0, 0, 1, 2, 9, 10, 11, 100, 2 ** 70])  # noqa: E731
    text = str(rng.choice([0, 1, 2, 10])) + "!" if rng.random() < 0.15 else ""
    text += ".".join(str(number()) for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.4:
        text += rng.choice(["a", "b", "rc", "alpha", "beta", "c", "pre", "preview", "-rc.", "_a", "A"])
        text += str(rng.choice([0, 1, 2, 10])) if rng.random() < 0.8 else ""
    if rng.random() < 0.3:
        text += rng.choice([".post", "post", "-", ".rev", "-r"]) + str(rng.choice([0, 1, 5, 12]))
    if rng.random() < 0.3:
        text += rng.choice([".dev", "dev", "-dev"]) + (str(rng.choice([0, 1, 3, 10])) if rng.random() < 0.8 else "")
    if rng.random() < 0.3:
        text += "+" + ".".join(rng.choice(["abc", "1", "01", "2", "10", "ubuntu", "a1", "z", "0", "Ab"])
                               for _ in range(rng.randint(1, 3)))
    return text


def generated(count, seed=SEED):
    rng = random.Random(seed)
    versions = set()
    while len(versions) < count:
        versions.add(random_pep440(rng))
    ordered = sorted(versions)
    rng.shuffle(ordered)
    return ordered


def test_random_pep440_versions_sort_by_key_exactly_as_packaging_orders_them():
    versions = generated(4000)
    by_key = sorted(versions, key=pep440)
    for lower, higher in zip(by_key, by_key[1:]):
        assert Version(lower) <= Version(higher), (lower, higher)
        # equal keys exactly for versions packaging calls equal: the order is packaging's, ties included
        assert (pep440(lower) == pep440(higher)) == (Version(lower) == Version(higher)), (lower, higher)
    assert [Version(v) for v in by_key] == sorted(Version(v) for v in versions)


def test_random_pairs_compare_by_key_as_packaging_compares_them():
    rng = random.Random(SEED + 1)
    versions = generated(500, SEED + 2)
    for _ in range(5000):
        a, b = rng.choice(versions), rng.choice(versions)
        assert (pep440(a) < pep440(b)) == (Version(a) < Version(b)), (a, b)
        assert (descending(pep440(a)) < descending(pep440(b))) == (Version(a) > Version(b)), (a, b)


def test_pep440_order_of_each_part():
    ordered = ["0.9", "1.0.dev3", "1.0a1.dev1", "1.0a1", "1.0a2", "1.0b1", "1.0rc1", "1.0rc1.post1", "1.0",
               "1.0+abc", "1.0+abc.1", "1.0+1", "1.0+2.abc", "1.0+10", "1.0.post1.dev1", "1.0.post1",
               "1.0.post2", "1.0.1", "1.1.dev1", "1.1", "2.0rc1", "2.0", "10.0", "1!0.1", "1!1.0"]
    assert sorted(ordered, key=pep440) == ordered
    assert sorted(ordered, key=Version) == ordered  # the list itself is packaging's order


@pytest.mark.parametrize("same", [("1.0", "1.0.0", "1.0.0.0", "1"), ("1.0rc1", "1.0-RC1", "1.0c1", "1.0.pre1"),
                                  ("1.0.post1", "1.0-1", "1.0.rev1"), ("1.0+01", "1.0+1"), ("0!1.0", "1.0")])
def test_versions_packaging_calls_equal_get_equal_keys(same):
    assert len({pep440(v) for v in same}) == 1


def test_numbers_past_255_bytes_keep_their_order():
    huge = "9" * 700  # 700 digits: its length in bytes no longer fits one byte
    ordered = ["1.99", "1." + "9" * 613, "1." + huge, "1." + huge + "9", "2.0"]
    assert sorted(ordered, key=pep440) == ordered == sorted(ordered, key=Version)
    assert sorted(["1.0.0-rc.%s" % huge, "1.0.0-rc.9", "1.0.0"], key=encode_version) == [
        "1.0.0-rc.9", "1.0.0-rc.%s" % huge, "1.0.0"]


def test_text_that_is_no_pep440_version_sorts_first_as_text():
    assert sorted(["2.0", "latest", "1.0", "abc"], key=pep440) == ["abc", "latest", "1.0", "2.0"]


def test_opaque_ordering_is_plain_text_order():
    values = ["1.9", "1.10", "beta", "Beta", "2.0.0-rc.1", "\u00e9t\u00e9", "z"]
    assert sorted(values, key=lambda v: encode_version(v, "opaque")) == sorted(values)


def test_every_scheme_has_an_ordering_in_the_stores():
    """A scheme's ordering is one the stores encode (or opaque, plain text), so a declared scheme always sorts."""
    assert set(ORDERINGS) | {"opaque"} == set(SCHEMES)


# --- the schemes: what is a version, what is a pre-release -------------------------------------------------------

@pytest.mark.parametrize("version", ["1.0", "1.0.post1", "2.0rc1", "1!2.0", "1.0.dev3", "1.0+abc", "v1.0",
                                     "1.0.0-rc.1"])
def test_pep440_accepts_what_packaging_parses(version):
    Versioning(SCHEMES["pep440"]).check(version)


@pytest.mark.parametrize("version", ["1.0-foo.bar", "latest", "1.0+", "1..0", "1.0_", " 1.0", "\u20031.0", "1.0\n"])
def test_pep440_refuses_the_rest_naming_the_field(version):
    with pytest.raises(DepotError) as caught:
        Versioning(SCHEMES["pep440"], where="entities.release.versioning").check(version)
    assert (caught.value.code, caught.value.status, caught.value.field) == ("INVALID_VERSION", 400, "version")
    assert "PEP 440" in caught.value.message and repr(version) in caught.value.message


def test_pep440_prereleases_are_a_b_rc_and_dev():
    versioning = Versioning(SCHEMES["pep440"], allow_prerelease=False, where="entities.release.versioning")
    for version in ("2.0rc1", "1.0a1", "1.0b2", "1.0.dev3", "1.0.post1.dev1"):
        with pytest.raises(DepotError) as caught:
            versioning.check(version)
        assert caught.value.code == "PRERELEASE_NOT_ALLOWED"
        assert "entities.release.versioning.allow_prerelease" in caught.value.message
    for version in ("1.0", "1.0.post1", "1.0+local", "1!2.0"):
        versioning.check(version)


def test_opaque_accepts_anything_and_has_no_prerelease():
    versioning = Versioning(SCHEMES["opaque"], allow_prerelease=False)
    for version in ("anything", "1.0.0-rc.1", "2.0rc1", "tags"):
        versioning.check(version)
        assert not SCHEMES["opaque"].is_prerelease(version)


def test_semver_message_is_unchanged():
    with pytest.raises(DepotError) as caught:
        Versioning().check("1.2")
    assert caught.value.message == ("version '1.2' is not a semantic version (MAJOR.MINOR.PATCH[-PRERELEASE]"
                                    "[+BUILD])")


@pytest.mark.parametrize("spelled, normal", [("1.0-RC1", "1.0rc1"), ("v1.0", "1.0"), ("1!2.0.POST3", "1!2.0.post3"),
                                              ("1.0+ABC-1", "1.0+abc.1"), ("1.0.0", "1.0.0"), ("1.0-foo", "1.0-foo"),
                                              ("\u20031.0", "\u20031.0")])
def test_pep440_normalize_rule_writes_the_normal_form_and_leaves_the_rest(spelled, normal):
    assert compile_normalizer("pep440")(spelled) == normal


# --- is_prerelease follows the scheme ---------------------------------------------------------------------------

class Row:
    def __init__(self, **fields):
        self.fields, self.vars, self.principal, self.event = fields, {}, None, None


@pytest.mark.parametrize("version, semver, pep", [("2.0rc1", False, True), ("1.0.0-rc.1", True, True),
                                                   ("1.0.dev3", False, True), ("1.0.post1", False, False),
                                                   ("1.0.0", False, False), ("garbage", False, False)])
def test_is_prerelease_reads_the_version_under_the_scheme_in_force(version, semver, pep):
    spec = {"is_prerelease": "{version}"}
    assert compile_condition(spec, "when")(Row(version=version)) is semver  # semver unless told otherwise
    assert compile_condition(spec, "when", scheme=SCHEMES["pep440"])(Row(version=version)) is pep
    assert compile_condition(spec, "when", scheme=SCHEMES["opaque"])(Row(version=version)) is False
    named = {"is_prerelease": {"version": "{version}", "scheme": "pep440"}}
    assert compile_condition(named, "when", scheme=SCHEMES["semver"])(Row(version=version)) is pep


def test_is_prerelease_without_a_scheme_in_force_asks_for_one():
    with pytest.raises(ConditionError) as caught:
        compile_condition({"not": {"is_prerelease": "{version}"}}, "api.routes[3].pipeline[2].when", scheme=None,
                          no_scheme="the reason")
    assert caught.value.place == "api.routes[3].pipeline[2].when.not.is_prerelease"
    assert "the reason" in str(caught.value) and '"scheme"' in str(caught.value)


@pytest.mark.parametrize("arg, place", [({"version": "{version}", "scheme": "calver"}, "where.is_prerelease.scheme"),
                                        ({"version": "{version}"}, "where.is_prerelease"),
                                        ({"value": "{version}", "scheme": "pep440"}, "where.is_prerelease")])
def test_is_prerelease_misuse_is_a_load_error_at_its_place(arg, place):
    with pytest.raises(ConditionError) as caught:
        compile_condition({"is_prerelease": arg}, "where")
    assert caught.value.place == place


# --- declared at load ---------------------------------------------------------------------------------------

def errors(doc):
    _, report = compile_schema(doc, "test-schema")
    return [(f.place, f.message) for f in report.findings if f.severity == "error"]


def with_release_entity(schema, scheme="pep440", index_entity="release"):
    """The project schema plus a PEP 440 entity `release` with its own document, index and routes (publish,
    versions, latest) under /py: two entities that version differently, side by side."""
    doc = copy.deepcopy(schema)
    doc["entities"]["release"] = {
        "versioning": {"scheme": scheme},
        "fields": {"namespace": {"type": "string", "normalize": ["trim", "lower"]},
                   "name": {"type": "string", "normalize": ["trim", "lower"]},
                   "version": {"type": "string", "normalize": ["trim", "pep440"]}},
        "constraints": [{"field": "namespace", "regex": "^[a-z0-9][a-z0-9._-]{0,127}$"},
                        {"field": "name", "regex": "^[a-z0-9][a-z0-9._-]{0,127}$"},
                        {"field": "version", "regex": "^[A-Za-z0-9][A-Za-z0-9._+!-]{0,127}$"}]}
    doc["storage"]["documents"]["release_meta"] = {"store": "meta",
                                                   "key_template": "release/{namespace}/{name}/{version}"}
    index = {"source_document": "release_meta",
             "keys": [{"name": "release_by_name", "fields": ["namespace", "name"], "sort": ["version:desc"]},
                      {"name": "release_latest", "fields": ["namespace", "name"], "sort": ["version:desc"],
                       "where": {"not": {"is_prerelease": "{version}"}}}]}
    if index_entity is not None:
        index["entity"] = index_entity
    doc["indexes"]["releases"] = index
    head = [{"op": "parse.path", "args": {"entity": "release"}}, {"op": "normalize.entity", "args": {"entity": "release"}},
            {"op": "validate.entity", "args": {"entity": "release"}}]
    row = {"namespace": "{namespace}", "name": "{name}", "version": "{version}"}
    key = {"namespace": "{namespace}", "name": "{name}"}
    doc["api"]["routes"] += [
        {"id": "publish_release", "method": "PUT", "path": "/py/{namespace}/{name}/{version}", "pipeline": head + [
            {"op": "txn.begin", "args": {}},
            {"op": "kv.cas_put", "args": {"doc": "release_meta", "key": "release/{namespace}/{name}/{version}",
                                          "if_absent": True, "value": row}},
            {"op": "index.upsert", "args": {"index": "releases", "key": key, "value": row}},
            {"op": "txn.commit", "args": {}},
            {"op": "respond.json", "args": {"status": 201, "body": {"ok": True}}}]},
        {"id": "list_releases", "method": "GET", "path": "/py/{namespace}/{name}/versions", "pipeline": head[:2] + [
            {"op": "index.query", "args": {"index": "releases", "using": "release_by_name", "key": key, "out": "rows"}},
            {"op": "respond.json", "args": {"body": "$rows"}}]},
        {"id": "latest_release", "method": "GET", "path": "/py/{namespace}/{name}/latest", "pipeline": head[:2] + [
            {"op": "index.query", "args": {"index": "releases", "using": "release_latest", "key": key, "limit": 1,
                                           "out": "rows"}},
            {"op": "respond.error", "args": {"when": {"is_empty": "$rows"}, "status": 404, "code": "NOT_FOUND",
                                             "message": "no release"}},
            {"op": "respond.json", "args": {"body": "$rows[0]"}}]},
    ]
    return doc


def test_two_entities_versioning_differently_load(project_schema):
    assert errors(with_release_entity(project_schema)) == []


@pytest.mark.parametrize("where", ["entities.versioning", "entities.artifact.versioning"])
def test_unknown_scheme_is_a_load_error_naming_its_place(project_schema, where):
    doc = copy.deepcopy(project_schema)
    section = doc["entities"] if where == "entities.versioning" else doc["entities"]["artifact"]
    section["versioning"] = {"scheme": "calver"}
    assert errors(doc) == [(where + ".scheme", "unknown versioning scheme 'calver'; expected one of: opaque, "
                                               "pep440, semver")]


def test_unknown_ordering_is_a_load_error_naming_its_place(project_schema):
    doc = copy.deepcopy(project_schema)
    doc["entities"]["artifact"]["versioning"] = {"scheme": "pep440", "ordering": "lexical"}
    assert [place for place, _ in errors(doc)] == ["entities.artifact.versioning.ordering"]


def test_versioning_shape_is_checked(project_schema):
    doc = copy.deepcopy(project_schema)
    doc["entities"]["artifact"]["versioning"] = {"scheme": "pep440", "allow_prerelease": "no"}
    assert [place for place, _ in errors(doc)] == ["entities.artifact.versioning.allow_prerelease"]


def test_index_naming_an_unknown_entity_is_a_load_error(project_schema):
    doc = copy.deepcopy(project_schema)
    doc["indexes"]["artifact_versions"]["entity"] = "artefact"
    doc.pop("packs")  # the finding alone, not the PyPI pack's entities with it
    [(place, message)] = errors(doc)
    assert place == "indexes.artifact_versions.entity" and "'artefact'" in message and "artifact" in message


def test_index_sorting_by_version_must_name_its_entity_when_entities_differ(project_schema):
    found = errors(with_release_entity(project_schema, index_entity=None))
    places = [place for place, _ in found]
    assert "indexes.releases.entity" in places
    assert "indexes.releases.keys[1].where.not.is_prerelease" in places  # and its is_prerelease has no scheme
    message = dict(found)["indexes.releases.entity"]
    assert "artifact: semver" in message and "release: pep440" in message


def test_index_naming_no_entity_follows_the_shared_scheme(project_schema):
    """Every entity with a version field reads it as pep440: an index naming none sorts by pep440 too. (The npm
    pack's versions are semver by their own entity, so it is left out here.)"""
    doc = copy.deepcopy(project_schema)
    doc["packs"] = [pack for pack in doc["packs"] if not pack["file"].endswith("npm.json")]
    doc["entities"]["versioning"].update(scheme="pep440", ordering="pep440")
    del doc["indexes"]["artifact_versions"]["entity"]
    compiled, report = compile_schema(doc, "test-schema")
    assert report.ok
    index = compiled.definitions["index"]["artifact_versions"]
    assert index.scheme == "pep440"
    assert {o for k in index.keys for field, _, o in k.sorts if field == "version"} == {"pep440"}


def test_step_condition_without_a_scheme_in_force_is_a_load_error(project_schema):
    doc = with_release_entity(project_schema)
    route = next(r for r in doc["api"]["routes"] if r["id"] == "publish_release")
    route["pipeline"].insert(3, {"op": "respond.error", "when": {"is_prerelease": "{version}"},
                                 "args": {"status": 400, "code": "X", "message": "x"}})
    i = doc["api"]["routes"].index(route)
    [(place, message)] = errors(doc)
    assert place == "api.routes[%d].pipeline[3].when.is_prerelease" % i
    assert "artifact: semver, release: pep440" in message
    route["pipeline"][3]["when"] = {"is_prerelease": {"version": "{version}", "scheme": "pep440"}}
    assert errors(doc) == []


def test_index_query_where_follows_the_index_scheme(project_schema):
    doc = with_release_entity(project_schema)
    route = next(r for r in doc["api"]["routes"] if r["id"] == "list_releases")
    route["pipeline"][2]["args"]["where"] = {"is_prerelease": "{version}"}
    assert errors(doc) == []
    # an index naming no entity and sorting by nothing: no scheme is in force for its rows
    del doc["indexes"]["releases"]["entity"]
    doc["indexes"]["releases"]["keys"] = [{"name": "release_by_name", "fields": ["namespace", "name"]},
                                          {"name": "release_latest", "fields": ["namespace", "name"]}]
    i = doc["api"]["routes"].index(route)
    [(place, message)] = errors(doc)
    assert place == "api.routes[%d].pipeline[2].args.where" % i and "releases names no entity" in message


# --- over HTTP: validate.entity, the listing order and latest, per entity -----------------------------------------

PUBLISHED = ["1.0", "1.0.post1", "2.0rc1", "1!0.5", "1.0.dev3", "1.0+abc", "1.10", "1.9", "2.0.dev1", "1.0a1"]


@pytest.fixture
def two_schemes(make_depot, project_schema):
    return make_depot(with_release_entity(project_schema), "two-schemes")


def test_pep440_entity_lists_in_pep440_order_and_latest_is_the_highest_release(two_schemes):
    depot, headers = two_schemes, two_schemes.headers()
    for version in PUBLISHED:
        assert depot.client.put("/py/acme/tool/%s" % version, headers=headers).status_code == 201, version
    listed = depot.client.get("/py/acme/tool/versions", headers=headers).get_json()
    assert [row["version"] for row in listed] == sorted(PUBLISHED, key=Version, reverse=True)
    latest = depot.client.get("/py/acme/tool/latest", headers=headers).get_json()
    assert latest["version"] == "1!0.5"  # the epoch wins; 2.0rc1 and 2.0.dev1 are pre-releases


def test_latest_pep440_release_skips_prereleases_and_counts_post_releases(two_schemes):
    depot, headers = two_schemes, two_schemes.headers()
    for version in ("1.0", "1.1rc1", "1.0.post2", "1.1.dev0"):
        assert depot.client.put("/py/acme/lib/%s" % version, headers=headers).status_code == 201
    assert depot.client.get("/py/acme/lib/latest", headers=headers).get_json()["version"] == "1.0.post2"
    assert depot.client.get("/py/acme/only-pre/latest", headers=headers).status_code == 404


def test_pep440_spellings_of_one_version_are_one_release(two_schemes):
    depot, headers = two_schemes, two_schemes.headers()
    assert depot.client.put("/py/acme/tool/1.0-RC1", headers=headers).status_code == 201
    assert depot.client.put("/py/acme/tool/1.0rc1", headers=headers).status_code == 409  # the same key
    assert depot.client.put("/py/acme/tool/v1.0c1", headers=headers).status_code == 409
    listed = depot.client.get("/py/acme/tool/versions", headers=headers).get_json()
    assert [row["version"] for row in listed] == ["1.0rc1"]


@pytest.mark.parametrize("version", ["1.0-foo.bar", "one", "1.0+"])
def test_invalid_pep440_version_is_400_naming_the_field(two_schemes, version):
    response = two_schemes.client.put("/py/acme/tool/%s" % version, headers=two_schemes.headers())
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_VERSION", "version") and "PEP 440" in error["message"]


def test_the_semver_entity_beside_it_is_untouched(two_schemes):
    depot, headers = two_schemes, two_schemes.headers()
    for version in ("1.2.0", "1.10.0", "1.9.0", "2.0.0-rc.1"):
        assert depot.publish("acme", "tool", version, "x", version.encode()).status_code == 201
    assert depot.publish("acme", "tool", "2.0rc1", "x", b"pep").get_json()["error"]["code"] == "INVALID_VERSION"
    assert depot.client.get("/v1/acme/tool/latest", headers=headers).get_json()["version"] == "1.10.0"
    rows = depot.client.get("/v1/acme/tool/versions", headers=headers).get_json()["items"]
    assert [row["version"] for row in rows] == ["2.0.0-rc.1", "1.10.0", "1.9.0", "1.2.0"]


def opaque_artifacts(project_schema, reserved):
    doc = copy.deepcopy(project_schema)
    doc["entities"]["artifact"]["versioning"] = {"scheme": "opaque"}
    version = next(c for c in doc["entities"]["artifact"]["constraints"] if c["field"] == "version")
    version["reserved"] = reserved
    return doc


def test_opaque_versions_need_reserved_route_literals(project_schema):
    """Any string is an opaque version, `tags` too: the checker asks for it to be reserved."""
    found = errors(opaque_artifacts(project_schema, []))
    assert found and all('"reserved": ["tags"]' in message for _, message in found)
    assert errors(opaque_artifacts(project_schema, ["tags"])) == []


def test_opaque_versions_list_in_text_order(make_depot, project_schema):
    depot = make_depot(opaque_artifacts(project_schema, ["tags"]), "opaque")
    headers = depot.headers()
    for version in ("1.9", "1.10", "nightly-2026-01-02", "2.0.0-rc.1", "Beta"):
        assert depot.publish("acme", "tool", version, "x", version.encode()).status_code == 201, version
    rows = depot.client.get("/v1/acme/tool/versions", headers=headers).get_json()["items"]
    assert [row["version"] for row in rows] == ["nightly-2026-01-02", "Beta", "2.0.0-rc.1", "1.9", "1.10"]
    # nothing is a pre-release under opaque: latest is the first row in text order
    assert depot.client.get("/v1/acme/tool/latest", headers=headers).get_json()["version"] == "nightly-2026-01-02"
    assert depot.publish("acme", "tool", "tags", "x", b"t").get_json()["error"]["code"] == "INVALID_FIELD"
