"""The reference schema, unchanged, loads and its five routes work over HTTP."""
import hashlib

from tests.conftest import FIXTURES, ROOT, load_json

SHARED_REFERENCE = ROOT.parent / "shared" / "reference" / "schema.json"


def test_fixture_is_the_unchanged_reference():
    if SHARED_REFERENCE.exists():
        assert load_json(FIXTURES / "reference_schema.json") == load_json(SHARED_REFERENCE)
        assert (FIXTURES / "reference_schema.json").read_bytes() == SHARED_REFERENCE.read_bytes()


def test_publish_fetch_latest_tag_and_proxy_redirect(ref_depot):
    depot = ref_depot
    data = b"reference artifact bytes\n" * 100
    published = depot.publish("Acme", "Hello_World", "1.2.0", "linux-amd64", data)
    assert published.status_code == 201
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert published.get_json() == {"ok": True, "digest": digest, "size": len(data)}

    fetched = depot.client.get("/v1/acme/hello-world/1.2.0/linux-amd64/blob", headers=depot.headers(["read"]))
    assert fetched.status_code == 200
    assert fetched.data == data
    assert fetched.headers["ETag"] == '"%s"' % digest

    for version in ("1.10.0", "1.9.0"):
        assert depot.publish("acme", "hello-world", version, "linux-amd64", version.encode()).status_code == 201
    latest = depot.client.get("/v1/acme/hello-world/latest", headers=depot.headers(["read"]))
    assert latest.status_code == 200
    assert latest.get_json()["version"] == "1.10.0"

    tag = depot.client.put("/v1/acme/hello-world/tags/stable", headers=depot.headers(),
                           json={"target_version": "1.2.0", "target_variant": "linux-amd64"})
    assert tag.status_code == 200 and tag.get_json() == {"ok": True}
    stored = depot.service.engine.state.get(b"kmeta\x00tag/acme/hello-world/stable")
    assert b'"target_key":"artifact/acme/hello-world/1.2.0/linux-amd64"' in stored

    redirect = depot.client.get("/v1/proxy/acme/hello-world/1.2.0/linux-amd64/blob", headers=depot.headers(["read"]))
    assert redirect.status_code == 307
    assert redirect.headers["Location"].endswith("/v1/acme/hello-world/1.2.0/linux-amd64/blob")


def test_tag_to_missing_target_is_404_and_writes_nothing(ref_depot):
    response = ref_depot.client.put("/v1/acme/x/tags/stable", headers=ref_depot.headers(),
                                    json={"target_version": "9.9.9", "target_variant": "any"})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "TARGET_NOT_FOUND"
    assert ref_depot.service.engine.state.get(b"kmeta\x00tag/acme/x/stable") is None


def test_republishing_same_coordinates_is_409(ref_depot):
    assert ref_depot.publish("acme", "a", "1.0.0", "x", b"one").status_code == 201
    again = ref_depot.publish("acme", "a", "1.0.0", "x", b"two")
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "CONFLICT"
