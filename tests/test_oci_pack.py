"""The OCI pack (packs/oci.json) over HTTP, on Depot's own stores: what is Depot's to decide beside the
specification (tests/test_oci_spec.py checks the spec's requirements, tests/test_oci_clients.py the real clients):
namespaces and their permissions, repositories kept apart, uploads that survive a restart, errors in OCI's
format, digests in sha512, and garbage collection that keeps what any manifest needs.
"""
import hashlib
import json
import os
import threading

import pytest

from tests.conftest import join_all

NAMESPACE = "acme"
INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE = "application/vnd.oci.image.manifest.v1+json"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data):
    return "sha512:" + hashlib.sha512(data).hexdigest()


@pytest.fixture
def depot(make_depot, project_schema):
    return make_depot(project_schema)


@pytest.fixture
def writer(depot):
    return depot.headers(["read", "write"])


@pytest.fixture
def admin(depot):
    return depot.headers(["admin"])


def push_blob(depot, headers, name, data, digest=None):
    response = depot.client.post("/v2/%s/blobs/uploads/?digest=%s" % (name, digest or sha256(data)), data=data,
                                 headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response


def image(depot, headers, name, layers=(b"layer one", b"layer two"), subject=None, artifact_type=None,
          annotations=None):
    """Push a config and ``layers`` to ``name``; -> the manifest's bytes (not pushed)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "layers": len(layers)}).encode()
    for data in (config,) + tuple(layers):
        push_blob(depot, headers, name, data)
    manifest = {"schemaVersion": 2, "mediaType": IMAGE,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config),
                           "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(data),
                            "size": len(data)} for data in layers]}
    if subject is not None:
        manifest["subject"] = {"mediaType": IMAGE, "digest": sha256(subject), "size": len(subject)}
    if artifact_type is not None:
        manifest["artifactType"] = artifact_type
    if annotations is not None:
        manifest["annotations"] = annotations
    return json.dumps(manifest, indent=3).encode()  # byte-exact storage: spacing a re-encoding would lose


def put_manifest(depot, headers, name, reference, body, media_type=IMAGE):
    return depot.client.put("/v2/%s/manifests/%s" % (name, reference), data=body,
                            headers=dict(headers, **{"Content-Type": media_type}))


def oci_error(response):
    body = response.get_json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1, body
    return body["errors"][0]["code"]


def test_a_repository_lives_in_the_namespace_its_first_segment_names(depot, writer):
    name = NAMESPACE + "/tools/builder"
    push_blob(depot, writer, name, b"bytes")
    assert depot.client.get("/v2/%s/blobs/%s" % (name, sha256(b"bytes")), headers=writer).data == b"bytes"
    one_segment = depot.client.get("/v2/%s/blobs/%s" % (NAMESPACE, sha256(b"bytes")), headers=writer)
    assert one_segment.status_code == 404  # a repository needs a namespace and a name: no route takes one segment
    shouting = depot.client.get("/v2/ACME/tools/blobs/%s" % sha256(b"bytes"), headers=writer)
    assert shouting.status_code == 400 and oci_error(shouting) == "NAME_INVALID"


def test_namespace_permissions_apply_to_pulls_pushes_and_mounts(depot, admin):
    """Once grants exist, a user reaches only the namespaces granted: a pull elsewhere is DENIED, and mounting a
    blob from a namespace it may not read starts an upload instead, as if the blob were not there."""
    owner = depot.headers(["read", "write"], **{})
    push_blob(depot, owner, "secret/app", b"private layer")
    depot.ensure_user("mallory", ["read", "write"])
    mallory = {"Authorization": "Bearer " + depot.service.identity.issue("mallory", ["read", "write"])[0]}
    for namespace in ("secret", "open"):
        subject = "user:tester" if namespace == "secret" else "user:mallory"
        granted = depot.client.post("/admin/grants", headers=admin,
                                    json={"subject": subject, "namespace": namespace, "permission": "write"})
        assert granted.status_code == 201, granted.get_data(as_text=True)
    pulled = depot.client.get("/v2/secret/app/blobs/%s" % sha256(b"private layer"), headers=mallory)
    assert pulled.status_code == 403 and oci_error(pulled) == "DENIED"
    mount = depot.client.post("/v2/open/app/blobs/uploads/?mount=%s&from=secret/app" % sha256(b"private layer"),
                              headers=mallory)
    assert mount.status_code == 202  # no mount from what it may not read: an upload instead, as for a blob unknown
    assert depot.client.get("/v2/open/app/blobs/%s" % sha256(b"private layer"), headers=mallory).status_code == 404


def test_blobs_belong_to_repositories_until_mounted(depot, writer):
    data = b"a layer pushed once"
    push_blob(depot, writer, "acme/first", data)
    elsewhere = depot.client.get("/v2/acme/second/blobs/%s" % sha256(data), headers=writer)
    assert elsewhere.status_code == 404 and oci_error(elsewhere) == "BLOB_UNKNOWN"
    mounted = depot.client.post("/v2/acme/second/blobs/uploads/?mount=%s&from=acme/first" % sha256(data),
                                headers=writer)
    assert mounted.status_code == 201 and mounted.headers["Location"] == "/v2/acme/second/blobs/" + sha256(data)
    assert depot.client.get("/v2/acme/second/blobs/%s" % sha256(data), headers=writer).data == data
    missing = depot.client.post("/v2/acme/third/blobs/uploads/?mount=%s&from=acme/first" % sha256(b"nothing"),
                                headers=writer)
    assert missing.status_code == 202 and "/v2/acme/third/blobs/uploads/" in missing.headers["Location"]


def test_chunks_must_arrive_in_order_and_a_refused_chunk_changes_nothing(depot, writer):
    started = depot.client.post("/v2/acme/chunks/blobs/uploads/", headers=writer)
    assert started.status_code == 202 and started.headers["Range"] == "0-0"
    location = started.headers["Location"]
    first = depot.client.patch(location, data=b"0123", headers=dict(writer, **{"Content-Range": "0-3"}))
    assert first.status_code == 202 and first.headers["Range"] == "0-3"
    for wrong in ("2-5", "8-11", "0-3"):
        refused = depot.client.patch(location, data=b"4567", headers=dict(writer, **{"Content-Range": wrong}))
        assert refused.status_code == 416 and oci_error(refused) == "BLOB_UPLOAD_INVALID", wrong
    status = depot.client.get(location, headers=writer)
    assert status.status_code == 204 and status.headers["Range"] == "0-3" and status.data == b""
    assert depot.client.patch(location, data=b"4567", headers=dict(writer, **{"Content-Range": "4-7"})) \
        .headers["Range"] == "0-7"
    done = depot.client.put(location + "?digest=" + sha256(b"01234567ab"), data=b"ab",
                            headers=dict(writer, **{"Content-Range": "8-9"}))
    assert done.status_code == 201, done.get_data(as_text=True)
    assert depot.client.get("/v2/acme/chunks/blobs/" + sha256(b"01234567ab"), headers=writer).data == b"01234567ab"
    gone = depot.client.get(location, headers=writer)
    assert gone.status_code == 404 and oci_error(gone) == "BLOB_UPLOAD_UNKNOWN"


def test_concurrent_chunks_at_one_offset_append_once(depot, writer):
    location = depot.client.post("/v2/acme/race/blobs/uploads/", headers=writer).headers["Location"]
    statuses, errors = [], []

    def send(data):
        try:
            statuses.append(depot.client.patch(location, data=data,
                                               headers=dict(writer, **{"Content-Range": "0-%d" % (len(data) - 1)}))
                            .status_code)
        except Exception as exc:  # noqa: BLE001 - reported by join_all
            errors.append(exc)
    threads = [threading.Thread(target=send, args=(bytes([65 + i]) * 100000,)) for i in range(8)]
    for thread in threads:
        thread.start()
    join_all(threads, errors)
    assert sorted(statuses) == [202] + [416] * 7
    assert depot.client.get(location, headers=writer).headers["Range"] == "0-99999"


def test_a_wrong_digest_stores_nothing_and_sha512_digests_work(depot, writer):
    data = b"digest checked bytes"
    wrong = depot.client.post("/v2/acme/digests/blobs/uploads/?digest=" + sha256(b"other"), data=data,
                              headers=writer)
    assert wrong.status_code == 400 and oci_error(wrong) == "DIGEST_INVALID"
    assert depot.client.head("/v2/acme/digests/blobs/" + sha256(data), headers=writer).status_code == 404
    push_blob(depot, writer, "acme/digests", data, digest=sha512(data))
    fetched = depot.client.get("/v2/acme/digests/blobs/" + sha512(data), headers=writer)
    assert fetched.data == data and fetched.headers["Docker-Content-Digest"] == sha512(data)
    location = depot.client.post("/v2/acme/digests/blobs/uploads/", headers=writer).headers["Location"]
    depot.client.patch(location, data=data, headers=writer)
    assert depot.client.put(location + "?digest=" + sha512(data + b"!"), headers=writer).status_code == 400


def test_an_upload_survives_a_restart(depot, writer):
    location = depot.client.post("/v2/acme/restart/blobs/uploads/", headers=writer).headers["Location"]
    depot.client.patch(location, data=b"before ", headers=dict(writer, **{"Content-Range": "0-6"}))
    depot.restart()
    writer = depot.headers(["read", "write"])
    assert depot.client.get(location, headers=writer).headers["Range"] == "0-6"
    depot.client.patch(location, data=b"after", headers=dict(writer, **{"Content-Range": "7-11"}))
    done = depot.client.put(location + "?digest=" + sha256(b"before after"), headers=writer)
    assert done.status_code == 201  # the digest is worked out again from the session's bytes


def test_manifests_are_stored_byte_for_byte_and_refused_with_blobs_missing(depot, writer):
    body = image(depot, writer, "acme/app")
    stranger = depot.client.put("/v2/acme/stranger/manifests/v1", data=body,
                                headers=dict(writer, **{"Content-Type": IMAGE}))
    assert stranger.status_code == 400 and oci_error(stranger) == "MANIFEST_BLOB_UNKNOWN"
    pushed = put_manifest(depot, writer, "acme/app", "v1", body)
    assert pushed.status_code == 201 and pushed.headers["Docker-Content-Digest"] == sha256(body)
    for reference in ("v1", sha256(body)):
        fetched = depot.client.get("/v2/acme/app/manifests/" + reference, headers=writer)
        assert fetched.data == body and fetched.headers["Content-Type"] == IMAGE
        assert fetched.headers["Docker-Content-Digest"] == sha256(body)
    invalid = put_manifest(depot, writer, "acme/app", "v2", b'{"schemaVersion": 1}')
    assert invalid.status_code == 400 and oci_error(invalid) == "MANIFEST_INVALID"
    mismatch = put_manifest(depot, writer, "acme/app", sha256(b"something else"), body)
    assert mismatch.status_code == 400 and oci_error(mismatch) == "DIGEST_INVALID"


def test_an_index_needs_its_manifests_and_deleting_a_manifest_removes_its_tags(depot, writer):
    child = image(depot, writer, "acme/multi")
    index = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": IMAGE, "digest": sha256(child), "size": len(child),
         "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    early = put_manifest(depot, writer, "acme/multi", "latest", index, INDEX)
    assert early.status_code == 400 and oci_error(early) == "MANIFEST_BLOB_UNKNOWN"
    assert put_manifest(depot, writer, "acme/multi", sha256(child), child).status_code == 201
    for tag in ("latest", "stable"):
        assert put_manifest(depot, writer, "acme/multi", tag, index, INDEX).status_code == 201
    tags = depot.client.get("/v2/acme/multi/tags/list", headers=writer).get_json()
    assert tags == {"name": "acme/multi", "tags": ["latest", "stable"]}
    untag = depot.client.delete("/v2/acme/multi/manifests/stable", headers=depot.headers(["admin"]))
    assert untag.status_code == 202
    assert depot.client.get("/v2/acme/multi/tags/list", headers=writer).get_json()["tags"] == ["latest"]
    deleted = depot.client.delete("/v2/acme/multi/manifests/" + sha256(index), headers=depot.headers(["admin"]))
    assert deleted.status_code == 202
    assert depot.client.get("/v2/acme/multi/tags/list", headers=writer).get_json()["tags"] == []
    gone = depot.client.get("/v2/acme/multi/manifests/latest", headers=writer)
    assert gone.status_code == 404 and oci_error(gone) == "MANIFEST_UNKNOWN"


def test_tags_page_in_lexical_order_with_a_link_to_the_next(depot, writer):
    body = image(depot, writer, "acme/tagged")
    names = ["v%02d" % i for i in range(7)] + ["alpha", "Beta"]
    for tag in names:
        assert put_manifest(depot, writer, "acme/tagged", tag, body).status_code == 201
    seen, url = [], "/v2/acme/tagged/tags/list?n=4"
    while url:
        page = depot.client.get(url, headers=writer)
        seen.extend(page.get_json()["tags"])
        link = page.headers.get("Link")
        url = link[1:link.index(">")] if link else None
        assert not link or link.endswith('rel="next"')
    assert seen == sorted(names)
    after = depot.client.get("/v2/acme/tagged/tags/list?last=v03", headers=writer).get_json()["tags"]
    assert after == ["v04", "v05", "v06"]
    unknown = depot.client.get("/v2/acme/never/tags/list", headers=writer)
    assert unknown.status_code == 404 and oci_error(unknown) == "NAME_UNKNOWN"


def test_referrers_list_the_manifests_whose_subject_a_digest_is(depot, writer):
    subject = image(depot, writer, "acme/signed")
    assert put_manifest(depot, writer, "acme/signed", "v1", subject).status_code == 201
    for kind in ("application/vnd.example.signature", "application/vnd.example.sbom"):
        referrer = image(depot, writer, "acme/signed", layers=(kind.encode(),), subject=subject, artifact_type=kind,
                         annotations={"org.example.kind": kind})
        pushed = put_manifest(depot, writer, "acme/signed", sha256(referrer), referrer)
        assert pushed.status_code == 201 and pushed.headers["OCI-Subject"] == sha256(subject)
    listed = depot.client.get("/v2/acme/signed/referrers/" + sha256(subject), headers=writer)
    assert listed.headers["Content-Type"] == INDEX and "OCI-Filters-Applied" not in listed.headers
    body = listed.get_json()
    assert body["schemaVersion"] == 2 and body["mediaType"] == INDEX
    assert sorted(m["artifactType"] for m in body["manifests"]) == ["application/vnd.example.sbom",
                                                                    "application/vnd.example.signature"]
    assert all(m["annotations"]["org.example.kind"] == m["artifactType"] for m in body["manifests"])
    filtered = depot.client.get("/v2/acme/signed/referrers/%s?artifactType=application/vnd.example.sbom"
                                % sha256(subject), headers=writer)
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["artifactType"] for m in filtered.get_json()["manifests"]] == ["application/vnd.example.sbom"]
    none = depot.client.get("/v2/acme/signed/referrers/" + sha256(b"unknown"), headers=writer)
    assert none.status_code == 200 and none.get_json()["manifests"] == []


def test_garbage_collection_keeps_what_any_manifest_needs(depot, writer, admin):
    body = image(depot, writer, "acme/kept", layers=(b"needed layer",))
    assert put_manifest(depot, writer, "acme/kept", "v1", body).status_code == 201
    push_blob(depot, writer, "acme/kept", b"dropped layer")
    for data in (b"needed layer", b"dropped layer"):  # the repository lets go of both blobs
        assert depot.client.delete("/v2/acme/kept/blobs/" + sha256(data), headers=admin).status_code == 202
    report = depot.client.post("/admin/gc", json={"grace_seconds": 0}, headers=admin).get_json()
    assert report["removed"] == [sha256(b"dropped layer")]  # the manifest still names the other
    assert depot.client.get("/v2/acme/kept/manifests/v1", headers=writer).data == body
    assert depot.client.delete("/v2/acme/kept/manifests/" + sha256(body), headers=admin).status_code == 202
    report = depot.client.post("/admin/gc", json={"grace_seconds": 0}, headers=admin).get_json()
    assert sha256(b"needed layer") in report["removed"] and sha256(body) in report["removed"]


def test_garbage_collection_removes_upload_sessions_idle_past_their_time_to_live(depot, writer, admin):
    idle = depot.client.post("/v2/acme/idle/blobs/uploads/", headers=writer).headers["Location"]
    live = depot.client.post("/v2/acme/idle/blobs/uploads/", headers=writer).headers["Location"]
    depot.client.patch(idle, data=b"abandoned", headers=writer)
    sessions = depot.service.engine.upload_sessions["oci_uploads"]
    long_ago = os.stat(os.path.join(sessions.directory, idle.rsplit("/", 1)[1])).st_mtime - 2 * 86400
    os.utime(os.path.join(sessions.directory, idle.rsplit("/", 1)[1]), (long_ago, long_ago))
    expired = depot.client.get(idle, headers=writer)
    assert expired.status_code == 404 and oci_error(expired) == "BLOB_UPLOAD_UNKNOWN"
    report = depot.client.post("/admin/gc", json={"grace_seconds": 0}, headers=admin).get_json()
    assert report["upload_sessions"] == {"expired_removed": 1, "expired_removed_bytes": len(b"abandoned")}
    assert depot.client.get(live, headers=writer).status_code == 204


def test_errors_are_in_the_oci_format_with_the_spec_codes(depot, writer):
    nobody = depot.client.get("/v2/acme/app/tags/list")
    assert nobody.status_code == 401 and oci_error(nobody) == "UNAUTHORIZED"
    bad_digest = depot.client.get("/v2/acme/app/blobs/sha256:nothex", headers=writer)
    assert bad_digest.status_code == 400 and oci_error(bad_digest) == "DIGEST_INVALID"
    unknown_upload = depot.client.patch("/v2/acme/app/blobs/uploads/" + "0" * 32, data=b"x", headers=writer)
    assert unknown_upload.status_code == 404 and oci_error(unknown_upload) == "BLOB_UPLOAD_UNKNOWN"


# --- the Bearer token flow ------------------------------------------------------------------------------------

def token_for(depot, credentials, *scopes):
    query = "&".join("scope=" + scope for scope in scopes)
    response = depot.client.get("/v2/token?service=depot&" + query, headers=credentials)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300
    return {"Authorization": "Bearer " + body["token"]}, body["granted"]


def test_a_401_names_the_token_endpoint_and_the_scope_the_route_needs(depot):
    for method, path, scope in (("GET", "/v2/acme/app/tags/list", "acme/app:pull"),
                                ("POST", "/v2/acme/tools/app/blobs/uploads/", "acme/tools/app:pull,push"),
                                ("DELETE", "/v2/acme/app/manifests/v1", "acme/app:delete")):
        refused = depot.client.open(path, method=method)
        assert refused.status_code == 401 and oci_error(refused) == "UNAUTHORIZED"
        assert refused.headers["WWW-Authenticate"] == \
            'Bearer realm="http://localhost/v2/token",service="depot",scope="repository:%s"' % scope
    base = depot.client.get("/v2/")
    assert base.headers["WWW-Authenticate"] == 'Bearer realm="http://localhost/v2/token",service="depot"'
    assert depot.client.get("/v2/token?scope=repository:acme/app:pull").status_code == 401


def test_a_token_reaches_only_the_repositories_and_actions_it_was_issued_for(depot, writer):
    push_blob(depot, writer, "acme/app", b"app layer")
    push_blob(depot, writer, "acme/other", b"other layer")
    pull, granted = token_for(depot, writer, "repository:acme/app:pull")
    assert granted == ["repository:acme/app:pull"]
    assert depot.client.get("/v2/acme/app/blobs/" + sha256(b"app layer"), headers=pull).data == b"app layer"
    other = depot.client.get("/v2/acme/other/blobs/" + sha256(b"other layer"), headers=pull)
    assert other.status_code == 403 and oci_error(other) == "DENIED"
    push = depot.client.post("/v2/acme/app/blobs/uploads/", headers=pull)
    assert push.status_code == 403 and oci_error(push) == "DENIED"
    # the refusal says which token would do (oras asks its token endpoint again on a 403 that names a scope)
    assert push.headers["WWW-Authenticate"].endswith('scope="repository:acme/app:pull,push"')
    assert depot.client.get("/v1/acme", headers=pull).status_code == 403  # a namespace route names no repository
    assert depot.client.post("/auth/tokens", json={"name": "escalate", "scopes": ["read"]},
                             headers=pull).status_code == 403  # no login session
    assert depot.client.get("/v2/token?scope=repository:acme/other:pull", headers=pull).status_code == 403
    both, granted = token_for(depot, writer, "repository:acme/app:pull,push", "repository:acme/other:pull")
    assert granted == ["repository:acme/app:pull,push", "repository:acme/other:pull"]
    assert depot.client.post("/v2/acme/app/blobs/uploads/", headers=both).status_code == 202
    mount = depot.client.post("/v2/acme/app/blobs/uploads/?mount=%s&from=acme/other" % sha256(b"other layer"),
                              headers=both)
    assert mount.status_code == 201
    unmountable = depot.client.post("/v2/acme/app/blobs/uploads/?mount=%s&from=acme/app" % sha256(b"app layer"),
                                    headers=pull)
    assert unmountable.status_code == 403  # a pull token cannot push, mount or not
    elsewhere = depot.client.post("/v2/acme/other/blobs/uploads/?mount=%s&from=acme/app" % sha256(b"app layer"),
                                  headers=both)
    assert elsewhere.status_code == 403  # nor push where it may only pull


def test_a_token_grants_what_the_account_may_do_now(depot, admin):
    reader_credentials = depot.headers(["read"])
    _, granted = token_for(depot, reader_credentials, "repository:acme/app:pull,push,delete")
    assert granted == ["repository:acme/app:pull"]  # without grants, the account's scopes decide
    writer_credentials = depot.headers(["read", "write"])
    _, granted = token_for(depot, writer_credentials, "repository:acme/app:pull,push", "registry:catalog:*")
    assert granted == ["repository:acme/app:pull,push"]  # another scope type is left out
    assert depot.client.post("/admin/grants", headers=admin, json={
        "subject": "user:tester", "namespace": "acme", "permission": "read"}).status_code == 201
    _, granted = token_for(depot, writer_credentials, "repository:acme/app:pull,push", "repository:beta/app:pull")
    assert granted == ["repository:acme/app:pull"]  # once grants exist, they decide


def test_a_token_ends_with_its_accounts_password(depot):
    depot.ensure_user("carol", ["read", "write"])
    login = {"Authorization": "Bearer " + depot.service.identity.issue("carol", ["read", "write"])[0]}
    token, _ = token_for(depot, login, "repository:acme/app:pull")
    assert depot.client.get("/v2/acme/app/tags/list", headers=token).status_code == 404  # accepted: no such repo
    depot.service.identity.reset_password("carol", "a brand new password 12")
    revoked = depot.client.get("/v2/acme/app/tags/list", headers=token)
    assert revoked.status_code == 401 and oci_error(revoked) == "UNAUTHORIZED"


# --- replication --------------------------------------------------------------------------------------------

def test_a_replica_serves_the_registry_as_the_primary_does(make_depot, project_schema):
    from tests.test_replication import apply, copy_blobs, shipped
    primary, replica = make_depot(project_schema, "primary"), make_depot(project_schema, "replica")
    writer, deleter = primary.headers(["read", "write"]), primary.headers(["admin"])
    subject = image(primary, writer, "acme/app", layers=(b"base layer", b"app layer"))
    assert put_manifest(primary, writer, "acme/app", "v1", subject).status_code == 201
    assert put_manifest(primary, writer, "acme/app", "old", subject).status_code == 201
    signature = image(primary, writer, "acme/app", layers=(b"signature",), subject=subject,
                      artifact_type="application/vnd.example.signature", annotations={"signed": "yes"})
    assert put_manifest(primary, writer, "acme/app", sha256(signature), signature).status_code == 201
    assert primary.client.post("/v2/acme/mirror/blobs/uploads/?mount=%s&from=acme/app" % sha256(b"base layer"),
                               headers=writer).status_code == 201
    doomed = image(primary, writer, "acme/app", layers=(b"doomed layer",))
    assert put_manifest(primary, writer, "acme/app", "doomed", doomed).status_code == 201
    assert primary.client.delete("/v2/acme/app/manifests/" + sha256(doomed), headers=deleter).status_code == 202
    assert primary.client.delete("/v2/acme/app/manifests/old", headers=deleter).status_code == 202
    assert primary.client.delete("/v2/acme/app/blobs/" + sha256(b"doomed layer"), headers=deleter).status_code == 202
    events = shipped(primary)["events"]
    assert {e["type"] for e in events} == {"oci.blob_linked", "oci.manifest_pushed", "oci.manifest_deleted",
                                           "oci.tag_deleted", "oci.blob_unlinked"}
    copy_blobs(primary, replica, events)
    applied = apply(replica, events)
    assert applied.status_code == 200, applied.get_json()
    reads = ["/v2/_catalog", "/v2/acme/app/tags/list", "/v2/acme/app/manifests/v1", "/v2/acme/app/manifests/" + sha256(signature),
             "/v2/acme/app/referrers/" + sha256(subject), "/v2/acme/app/blobs/" + sha256(b"app layer"),
             "/v2/acme/mirror/blobs/" + sha256(b"base layer"), "/v2/acme/app/manifests/doomed",
             "/v2/acme/app/blobs/" + sha256(b"doomed layer")]
    for path in reads:
        here = primary.client.get(path, headers=primary.headers(["read"]))
        there = replica.client.get(path, headers=replica.headers(["read"]))
        assert (here.status_code, here.data) == (there.status_code, there.data), path
    assert replica.client.get("/v2/acme/app/tags/list", headers=replica.headers(["read"])).get_json()["tags"] == ["v1"]


def test_a_malformed_digest_is_refused_before_an_upload_ends(depot, writer):
    location = depot.client.post("/v2/acme/typo/blobs/uploads/", headers=writer).headers["Location"]
    depot.client.patch(location, data=b"kept bytes", headers=writer)
    for digest in ("sha256:abc", "md5:" + "0" * 32, "SHA256:" + "0" * 64):
        refused = depot.client.put(location + "?digest=" + digest, headers=writer)
        assert refused.status_code == 400 and oci_error(refused) == "DIGEST_INVALID", digest
    assert depot.client.get(location, headers=writer).headers["Range"] == "0-9"  # the upload goes on
    done = depot.client.put(location + "?digest=" + sha256(b"kept bytes"), headers=writer)
    assert done.status_code == 201


def test_the_catalog_pages_repositories_from_an_index_and_shows_only_what_the_caller_may_read(depot, writer, admin):
    names = ["acme/zeta", "acme/alpha/one", "acme/alpha", "beta/tool", "beta/tool/sub"]
    for name in names:
        push_blob(depot, writer, name, name.encode())
    seen, url = [], "/v2/_catalog?n=2"
    while url:
        page = depot.client.get(url, headers=writer)
        assert page.status_code == 200 and len(page.get_json()["repositories"]) <= 2
        seen.extend(page.get_json()["repositories"])
        link = page.headers.get("Link")
        url = link[1:link.index(">")] if link else None
    assert seen == sorted(names)
    assert depot.client.get("/v2/_catalog?last=acme/zeta", headers=writer).get_json()["repositories"] == \
        ["beta/tool", "beta/tool/sub"]
    token, _ = token_for(depot, writer, "repository:beta/tool:pull")
    assert depot.client.get("/v2/_catalog", headers=token).get_json()["repositories"] == ["beta/tool",
                                                                                          "beta/tool/sub"]
    assert depot.client.post("/admin/grants", headers=admin, json={
        "subject": "user:tester", "namespace": "acme", "permission": "read"}).status_code == 201
    assert depot.client.get("/v2/_catalog", headers=writer).get_json()["repositories"] == \
        ["acme/alpha", "acme/alpha/one", "acme/zeta"]
