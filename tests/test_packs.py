"""Route packs (app/engine/packs.py): schema fragments a schema includes (`packs`), embedded at load, merged
before checking, their routes mounted and served; every finding inside a pack names the pack and its place.

The demo pack tests/fixtures/packs/hello.json: greetings per namespace (an entity, a document and its JSON schema,
an index, an event type with its apply pipeline, three routes tagged as the project schema's policies expect).
"""
import copy
import json
import shutil
import subprocess
import sys

import pytest

from app.engine import packs
from app.engine.compiler import compile_schema, load_schema_file, schema_digest
from app.repository.service import Service
from app.tools.testing import LocalDepot
from tests.conftest import FIXTURES, ROOT, Depot

HELLO = FIXTURES / "packs" / "hello.json"
HELLO_PLACE = "packs[0] (packs/hello.json)"


def write_schema(directory, schema, pack=None, mount="/hello/{namespace}"):
    """schema.json in ``directory`` including packs/hello.json (``pack``: its content; default the demo pack)."""
    (directory / "packs").mkdir(exist_ok=True)
    content = pack if pack is not None else json.loads(HELLO.read_text())
    (directory / "packs" / "hello.json").write_text(json.dumps(content))
    schema = dict(schema, packs=[{"file": "packs/hello.json", "mount": mount}])
    path = directory / "schema.json"
    path.write_text(json.dumps(schema))
    return path


def hello_pack():
    return json.loads(HELLO.read_text())


def with_pack(schema, content=None, **entry):
    """``schema`` including the demo pack (or ``content``), embedded as load_schema_file embeds it."""
    entry = dict({"file": "packs/hello.json", "mount": "/hello/{namespace}",
                  "content": content if content is not None else hello_pack()}, **entry)
    return dict(copy.deepcopy(schema), packs=[entry])


def errors_at(report, where):
    return [f.message for f in report.errors if f.place == where]


# --- loading ------------------------------------------------------------------------------------------------

def test_the_project_schema_mounts_the_pypi_npm_and_oci_packs_with_their_content(project_schema):
    pypi, npm, oci = project_schema["packs"]
    assert (pypi["file"], pypi["mount"]) == ("packs/pypi.json", "/pypi/{namespace}")
    assert (npm["file"], npm["mount"]) == ("packs/npm.json", "/npm/{namespace}")
    assert (oci["file"], oci["mount"]) == ("packs/oci.json", "/v2")
    assert all(pack["content"]["api"]["routes"] for pack in (pypi, npm, oci))  # embedded, as a version keeps it


def test_a_pack_file_is_read_relative_to_the_schema_file_and_embedded(tmp_path, project_schema):
    path = write_schema(tmp_path, project_schema)
    doc = load_schema_file(str(path))
    assert doc["packs"][0]["content"] == hello_pack()
    assert doc["packs"][0]["file"] == "packs/hello.json"  # still says where it came from
    assert "content" not in load_schema_file(str(path), embed_packs=False)["packs"][0]
    compiled, report = compile_schema(doc)
    assert report.ok, report.to_text()
    routes = {route.id: route.path for route in compiled.routes}
    assert routes["hello.list_greetings"] == "/hello/{namespace}/greetings"
    assert routes["hello.put_greeting"] == "/hello/{namespace}/greetings/{name}"
    assert "hello_greeting" in compiled.definitions["document"] and "hello_greetings" in compiled.definitions["index"]
    assert "hello.greeted" in compiled.apply_pipelines
    assert compiled.sha256 == schema_digest(doc)  # the schema as written, its packs embedded


def test_an_unreadable_pack_file_is_refused_naming_its_place(tmp_path, project_schema):
    path = write_schema(tmp_path, project_schema)
    (tmp_path / "packs" / "hello.json").write_text("{not json")
    with pytest.raises(packs.PackFileError, match=r"packs\[0\]\.file: .*hello\.json is not JSON"):
        load_schema_file(str(path))
    (tmp_path / "packs" / "hello.json").unlink()
    with pytest.raises(packs.PackFileError, match=r"packs\[0\]\.file: cannot read .*hello\.json"):
        load_schema_file(str(path))


def test_a_pack_without_its_content_is_refused(project_schema):
    doc = dict(project_schema, packs=[{"file": "packs/hello.json", "mount": "/hello/{namespace}"}])
    _, report = compile_schema(doc)
    assert any("content is not in the schema" in m for m in errors_at(report, "packs[0]"))


@pytest.mark.parametrize("mount", ["/hello/", "hello", "/hello//x", "/hello/{name space}", ""])
def test_a_mount_is_path_segments_without_a_trailing_slash(project_schema, mount):
    _, report = compile_schema(with_pack(project_schema, mount=mount))
    assert errors_at(report, "packs[0].mount"), report.to_text()


def test_a_pack_name_prefixes_route_ids_and_must_be_unique(project_schema):
    doc = with_pack(project_schema, name="greet")
    compiled, report = compile_schema(doc)
    assert report.ok and "greet.get_greeting" in {r.id for r in compiled.routes}
    doc["packs"].append(dict(doc["packs"][0], mount="/other"))
    _, report = compile_schema(doc)
    assert any("also packs[0]'s" in m for m in errors_at(report, "packs[1].name"))
    nameless = dict(doc["packs"][0], file="packs/1st.json")
    del nameless["name"]
    _, report = compile_schema(dict(doc, packs=[nameless]))
    assert any("give one matching" in m for m in errors_at(report, "packs[0].name"))


# --- findings name the pack -----------------------------------------------------------------------------------

def test_a_finding_inside_a_pack_names_the_pack_and_its_place(project_schema):
    pack = hello_pack()
    get = pack["api"]["routes"][1]["pipeline"]
    kv_get = next(i for i, s in enumerate(get) if s["op"] == "kv.get")
    get[kv_get]["args"]["doc"] = "no_such_document"
    pack["storage"]["documents"]["hello_greeting"]["store"] = "nowhere"
    _, report = compile_schema(with_pack(project_schema, pack))
    assert errors_at(report, "%s: api.routes[1].pipeline[%d].args.doc" % (HELLO_PLACE, kv_get))
    assert errors_at(report, "%s: storage.documents.hello_greeting.store" % HELLO_PLACE)
    assert all(f.place.startswith(HELLO_PLACE) for f in report.errors), report.to_text()


def test_a_pack_shape_error_names_the_pack(project_schema):
    pack = dict(hello_pack(), ops={"allowed": ["respond.json"]})
    pack["api"]["routes"][0]["method"] = "FETCH"
    _, report = compile_schema(with_pack(project_schema, pack))
    assert any("'ops' was unexpected" in m for m in errors_at(report, HELLO_PLACE))
    assert any("pack shape" in m for m in errors_at(report, HELLO_PLACE + ": api.routes[0].method"))
    pack = dict(hello_pack(), entities={"versioning": {"scheme": "semver"}})
    _, report = compile_schema(with_pack(project_schema, pack))
    assert errors_at(report, HELLO_PLACE + ": entities.versioning")


def test_a_transaction_finding_names_the_pack_in_its_message(project_schema):
    pack = hello_pack()
    put = pack["api"]["routes"][0]["pipeline"]
    put[:] = [s for s in put if s["op"] != "txn.commit"]
    _, report = compile_schema(with_pack(project_schema, pack))
    messages = errors_at(report, HELLO_PLACE + ": api.routes[0].pipeline")
    assert any("opened at %s: api.routes[0].pipeline[" % HELLO_PLACE in m for m in messages), report.to_text()


# --- conflicts ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("section, name, where", [
    (("entities",), "artifact", "entities.artifact"),
    (("storage", "documents"), "tag_map", "storage.documents.tag_map"),
    (("indexes",), "tags", "indexes.tags"),
])
def test_a_name_defined_by_the_schema_and_a_pack_is_an_error_naming_both(project_schema, section, name, where):
    pack = hello_pack()
    members = pack
    for key in section:
        members = members[key]
    members[name] = next(iter(members.values()))
    _, report = compile_schema(with_pack(project_schema, pack))
    assert any("defined twice: also at %s" % where in m for m in errors_at(report, "%s: %s" % (HELLO_PLACE, where)))


def test_route_ids_policies_and_event_types_conflict_by_name(project_schema):
    schema = copy.deepcopy(project_schema)
    schema["api"]["routes"][0]["id"] = "hello.get_greeting"
    pack = hello_pack()
    pack["auth"] = {"policies": [dict(project_schema["auth"]["policies"][0])]}
    pack["events"]["types"].append({"name": "artifact.published"})
    _, report = compile_schema(with_pack(schema, pack))
    assert any("also at api.routes[0]" in m for m in errors_at(report, HELLO_PLACE + ": api.routes[1].id"))
    assert any("also at auth.policies[0]" in m for m in errors_at(report, HELLO_PLACE + ": auth.policies[0].name"))
    assert errors_at(report, HELLO_PLACE + ": events.types[1].name")


def test_a_pack_route_on_a_path_the_schema_serves_is_a_duplicate(project_schema):
    pack = hello_pack()
    pack["api"]["routes"][2]["path"] = "/latest"
    _, report = compile_schema(with_pack(project_schema, pack, mount="/v1/{namespace}/{name}"))
    messages = errors_at(report, HELLO_PLACE + ": api.routes[2].path")
    assert any("duplicates api.routes[3]" in m for m in messages), report.to_text()


def test_two_packs_conflict_with_each_other(project_schema):
    doc = with_pack(project_schema, name="one")
    doc["packs"].append(dict(doc["packs"][0], name="two", mount="/two/{namespace}"))
    _, report = compile_schema(doc)
    assert any("also at packs[0] (packs/hello.json): entities.hello_greeting" in m
               for m in errors_at(report, "packs[1] (packs/hello.json): entities.hello_greeting"))


def test_gc_marks_and_policies_of_a_pack_are_merged(project_schema):
    pack = hello_pack()
    pack["gc"] = {"sweep": {"mark": {"mark_blobs_by": ["artifact_meta.blob_digest", "hello_greeting.blob"]}}}
    pack["auth"] = {"policies": [{"name": "hello_admin", "effect": "deny", "when": {"route.tags": ["hello_admin"]}}]}
    compiled, report = compile_schema(with_pack(project_schema, pack))
    assert report.ok, report.to_text()
    assert compiled.doc["gc"]["sweep"]["mark"]["mark_blobs_by"] == ["artifact_meta.blob_digest",
                                                                    "hello_greeting.blob"]
    assert compiled.doc["auth"]["policies"][-1]["name"] == "hello_admin"
    pack["gc"]["sweep"]["mark"]["mark_blobs_by"] = ["nothing.blob"]
    _, report = compile_schema(with_pack(project_schema, pack))
    assert errors_at(report, HELLO_PLACE + ": gc.sweep.mark.mark_blobs_by[0]")


# --- served -----------------------------------------------------------------------------------------------------

def test_pack_routes_are_served_under_their_mount(make_depot, project_schema, tmp_path):
    depot = make_depot(load_schema_file(str(write_schema(tmp_path, project_schema))))
    put = depot.client.put("/hello/acme/greetings/World", json={"text": "hi"}, headers=depot.headers())
    assert put.status_code == 201, put.get_data(as_text=True)
    assert put.get_json()["name"] == "world"  # the pack's entity normalizes
    got = depot.client.get("/hello/acme/greetings/world", headers=depot.headers())
    assert got.status_code == 200 and got.get_json()["text"] == "hi"
    missing = depot.client.get("/hello/acme/greetings/nobody", headers=depot.headers())
    assert missing.get_json()["error"]["code"] == "GREETING_NOT_FOUND"
    listed = depot.client.get("/hello/acme/greetings", headers=depot.headers()).get_json()["items"]
    assert [row["name"] for row in listed] == ["world"]
    assert depot.client.get("/hello/acme/greetings/world").status_code == 401  # the schema's policies apply
    paths = depot.client.get("/openapi.json").get_json()["paths"]
    assert paths["/hello/{namespace}/greetings/{name}"]["put"]["operationId"] == "hello.put_greeting"
    assert depot.service.engine.event_log.last_seq() == 1


def test_namespace_permissions_apply_to_pack_routes(make_depot, project_schema):
    depot = make_depot(with_pack(project_schema))
    writer = depot.headers(["read", "write"])
    depot.service.access.grant("user:tester", "acme", "write", "test")
    assert depot.client.put("/hello/acme/greetings/a", json={"text": "x"}, headers=writer).status_code == 201
    refused = depot.client.put("/hello/other/greetings/a", json={"text": "x"}, headers=writer)
    assert refused.status_code == 403 and "other" in refused.get_json()["error"]["message"]
    assert depot.client.get("/hello/other/greetings", headers=writer).status_code == 403


def test_a_stored_schema_version_carries_its_packs(project_schema, tmp_path):
    path = write_schema(tmp_path, project_schema)
    depot = Depot(str(tmp_path / "data"), schema_path=str(path))
    try:
        stored = json.loads(depot.service.schemas.active().document)
        assert stored["packs"][0]["content"] == hello_pack()
        assert depot.client.put("/hello/a/greetings/b", json={"text": "x"}, headers=depot.headers()).status_code == 201
        shutil.rmtree(tmp_path / "packs")  # a data dir serves its stored version: the files are not read again
        depot.restart()
        assert depot.client.get("/hello/a/greetings/b", headers=depot.headers()).status_code == 200
        admin = depot.headers(["admin"])
        document = depot.client.get("/admin/schema", headers=admin).get_json()["schema"]
        changed = copy.deepcopy(document)
        changed["packs"][0]["mount"] = "/greet/{namespace}"
        answer = depot.client.post("/admin/schema", json=changed, headers=admin)
        assert answer.status_code == 201, answer.get_data(as_text=True)
        assert depot.client.get("/greet/a/greetings/b", headers=depot.headers()).status_code == 200
        del changed["packs"][0]["content"]
        refused = depot.client.post("/admin/schema", json=changed, headers=admin)
        assert refused.status_code == 422
        assert any(e["place"] == "packs[0]" for e in refused.get_json()["error"]["details"])
    finally:
        depot.close()


def test_a_changed_pack_file_is_a_changed_schema(project_schema, tmp_path):
    path = write_schema(tmp_path, project_schema)
    depot = Depot(str(tmp_path / "data"), schema_path=str(path))
    first = depot.service.schemas.active().sha256
    depot.close()
    pack = hello_pack()
    pack["api"]["routes"][2]["description"] = "changed"
    write_schema(tmp_path, project_schema, pack)
    service = Service(str(tmp_path / "data"), schema_path=str(path), load_schema=True, announce=lambda *_: None)
    try:
        assert service.schemas.active().sha256 != first and service.schemas.active().version == 2
    finally:
        service.close()


# --- the command line -------------------------------------------------------------------------------------------

def test_check_and_add_read_packs_relative_to_the_schema_file(tmp_path, project_schema):
    pack = hello_pack()
    pack["api"]["routes"][2]["pipeline"][-1]["args"]["body"] = "$nothing"
    path = write_schema(tmp_path, project_schema, pack)
    check = subprocess.run([sys.executable, "-m", "app", "check", str(path)], cwd=ROOT, capture_output=True,
                           text=True)
    assert check.returncode == 1
    assert HELLO_PLACE + ": api.routes[2].pipeline[5].args.body" in check.stdout, check.stdout
    write_schema(tmp_path, project_schema)
    add = subprocess.run([sys.executable, "-m", "app", "add", "templates/route_template.json", "--set",
                          "route_id=hello_extra", "--schema-file", str(path)], cwd=ROOT, capture_output=True,
                         text=True)
    assert add.returncode == 0, add.stderr
    written = json.loads(path.read_text())
    assert written["packs"] == [{"file": "packs/hello.json", "mount": "/hello/{namespace}"}]  # not embedded
    assert written["api"]["routes"][-1]["id"] == "hello_extra"


def test_pypi_replay_writes_a_new_project_revision_for_every_change(tmp_path):
    """On a replica the PyPI pack's apply pipelines write the project's revision (the replayed event's id) for an
    upload, a yank and a delete, so a replica's cached project pages change with its data."""
    from tests.pypi_clients import schema_with_the_pack

    replica = LocalDepot(str(tmp_path / "data"), schema_path=str(schema_with_the_pack(tmp_path)), read_only=True)
    try:
        engine = replica.service.engine
        uploaded = {"namespace": "acme", "project": "probe", "version": "1.0", "filename": "probe-1.0.tar.gz",
                    "kind": "dist", "filetype": "sdist", "blob_digest": "sha256:" + "ab" * 32, "size": 3,
                    "sha256": "ab" * 32, "requires_python": "", "summary": "", "upload_time": "2026-11-29T00:00:00Z",
                    "uploaded_by": "uploader", "metadata_sha256": "", "metadata_digest": None, "metadata_size": None}
        events = [("pypi.file_uploaded", uploaded),
                  ("pypi.yanked", {"namespace": "acme", "project": "probe", "version": "1.0", "reason": "bad",
                                   "at": "2026-11-29T00:00:01Z", "by": "admin"}),
                  ("pypi.file_deleted", {"namespace": "acme", "project": "probe", "filename": "probe-1.0.tar.gz",
                                         "at": "2026-11-29T00:00:02Z", "by": "admin"})]
        for seq, (kind, payload) in enumerate(events, 1):
            event_id = "%032x" % seq
            engine.apply_event({"event_id": event_id, "type": kind, "at": payload.get("at", ""),
                                "payload": payload}, (seq, event_id))
            project = engine.documents.get("meta", "pypi/project/acme/probe")
            assert project == {"namespace": "acme", "project": "probe", "updated_at": "2026-11-29T00:00:00Z",
                               "revision": event_id}, kind
    finally:
        replica.service.close()
