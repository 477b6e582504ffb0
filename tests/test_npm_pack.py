"""The npm route pack (packs/npm.json) over plain HTTP, on a real server process: what npm and pnpm send, checked
answer by answer (tests/test_npm_clients.py drives the real clients). One server serves the module; each test
publishes packages of its own.

Callers: ``uploader`` (read, write), ``reader`` (read), ``admin``; namespace ``acme``.
"""
import base64
import hashlib
import io
import json
import tarfile
from urllib.parse import quote

import pytest
import requests

from tests.conftest import ServerProcess
from tests.pypi_clients import DepotAccounts

PASSWORD = "npm pack test password"
NAMESPACE = "acme"
ABBREVIATED = "application/vnd.npm.install-v1+json"


def tarball(name, version, extra=b""):
    """A package tarball as npm packs one: package/package.json and a file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, data in (("package/package.json", json.dumps({"name": name, "version": version}).encode()),
                           ("package/index.js", b"module.exports = 42;\n" + extra)):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def publish_document(name, version, data, tag="latest", dependencies=None, **manifest_extra):
    """The document `npm publish` PUTs (libnpmpublish's shape)."""
    manifest = {"name": name, "version": version, "description": "test package", "main": "index.js",
                "dependencies": dependencies or {}, "scripts": {"test": "true"}, "_id": "%s@%s" % (name, version),
                "dist": {"shasum": hashlib.sha1(data).hexdigest(),
                         "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
                         "tarball": "http://elsewhere.invalid/%s/-/%s-%s.tgz" % (name, name, version)}}
    manifest.update(manifest_extra)
    return {"_id": name, "name": name, "description": "test package", "dist-tags": {tag: version},
            "versions": {version: manifest}, "access": "public",
            "_attachments": {"%s-%s.tgz" % (name, version): {"content_type": "application/octet-stream",
                                                             "data": base64.b64encode(data).decode(),
                                                             "length": len(data)}}}


class NpmDepot:
    def __init__(self, url, accounts):
        self.url, self.accounts = url, accounts
        self.registry = "%s/npm/%s" % (url, NAMESPACE)

    def headers(self, who):
        return {"Authorization": "Bearer " + self.accounts[who]} if who else {}

    def request(self, method, path, who="reader", **kw):
        headers = dict(self.headers(who), **kw.pop("headers", {}))
        return requests.request(method, self.registry + path, headers=headers, timeout=60, **kw)

    def publish(self, name, version, who="uploader", data=None, **kw):
        data = data if data is not None else tarball(name, version)
        document = publish_document(name, version, data, **kw)
        return self.request("PUT", "/" + quote(name, safe="@"), who, json=document), data

    def packument(self, name, accept="application/json", who="reader"):
        answer = self.request("GET", "/" + quote(name, safe="@"), who, headers={"Accept": accept})
        assert answer.status_code == 200, answer.text
        return answer


@pytest.fixture(scope="module")
def npm(tmp_path_factory):
    directory = tmp_path_factory.mktemp("npm")
    server = ServerProcess(directory / "data", env={"DEPOT_ADMIN_PASSWORD": PASSWORD},
                           args=("--trusted-proxies", "127.0.0.1"))
    try:
        yield NpmDepot(server.url, DepotAccounts(server.url, PASSWORD))
    finally:
        server.stop()


def test_publish_then_the_packument_lists_the_version_with_verified_digests(npm):
    published, data = npm.publish("left-pad", "1.0.0")
    assert published.status_code == 201, published.text
    packument = npm.packument("left-pad").json()
    assert packument["name"] == "left-pad" and packument["dist-tags"] == {"latest": "1.0.0"}
    dist = packument["versions"]["1.0.0"]["dist"]
    assert dist["tarball"] == npm.registry + "/left-pad/-/left-pad-1.0.0.tgz"
    assert dist["shasum"] == hashlib.sha1(data).hexdigest()
    assert dist["integrity"] == "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    assert set(packument["time"]) == {"created", "modified", "1.0.0"}
    download = requests.get(dist["tarball"], headers=npm.headers("reader"), timeout=60)
    assert download.status_code == 200 and download.content == data


def test_the_abbreviated_packument_keeps_what_installs_need(npm):
    npm.publish("abbrev-me", "2.1.0", dependencies={"left-pad": "^1.0.0"}, readme="long text")
    answer = npm.packument("abbrev-me", accept=ABBREVIATED)
    assert answer.headers["Content-Type"].startswith(ABBREVIATED)
    version = answer.json()["versions"]["2.1.0"]
    assert version["dependencies"] == {"left-pad": "^1.0.0"} and "dist" in version
    assert "readme" not in version and "scripts" not in version and "main" not in version
    assert "Accept" in answer.headers["Vary"]


def test_packuments_answer_if_none_match_until_the_package_changes(npm):
    npm.publish("etagged", "1.0.0")
    first = npm.packument("etagged")
    tag = first.headers["ETag"]
    same = npm.request("GET", "/etagged", headers={"If-None-Match": tag})
    assert same.status_code == 304 and same.content == b""
    npm.publish("etagged", "1.1.0")
    changed = npm.request("GET", "/etagged", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and "1.1.0" in changed.json()["versions"]
    assert npm.packument("etagged", accept=ABBREVIATED).headers["ETag"] != changed.headers["ETag"]


def test_a_version_is_published_once(npm):
    assert npm.publish("once", "1.0.0")[0].status_code == 201
    again, _ = npm.publish("once", "1.0.0", data=tarball("once", "1.0.0", b"// other bytes"))
    assert again.status_code == 409 and again.json()["code"] == "VERSION_EXISTS"
    assert npm.packument("once").json()["versions"]["1.0.0"]["dist"]["shasum"] == \
        hashlib.sha1(tarball("once", "1.0.0")).hexdigest()


@pytest.mark.parametrize("change, code", [
    (lambda d: d["versions"]["1.0.0"]["dist"].update(shasum="0" * 40), "DIGEST_MISMATCH"),
    (lambda d: d["versions"]["1.0.0"]["dist"].update(integrity="sha512-" + "A" * 86 + "=="), "DIGEST_MISMATCH"),
    (lambda d: d["_attachments"]["bad-1.0.0.tgz"].update(length=1), "ATTACHMENT_LENGTH_MISMATCH"),
    (lambda d: d["versions"]["1.0.0"].update(name="other"), "NAME_MISMATCH"),
    (lambda d: d.update({"dist-tags": {"latest": "9.9.9"}}), "TAG_MISMATCH"),
    (lambda d: d["_attachments"]["bad-1.0.0.tgz"].update(data="not base64!"), None),
])
def test_a_document_contradicting_its_bytes_is_refused_and_nothing_is_stored(npm, change, code):
    data = tarball("bad", "1.0.0")
    document = publish_document("bad", "1.0.0", data)
    change(document)
    answer = npm.request("PUT", "/bad", "uploader", json=document)
    assert answer.status_code == 400, answer.text
    if code:
        assert answer.json()["code"] == code
    assert npm.request("GET", "/bad").status_code == 404


def test_scoped_names_answer_with_an_encoded_or_a_plain_slash(npm):
    assert npm.publish("@acme/widget", "0.1.0")[0].status_code == 201
    encoded = npm.request("GET", "/@acme%2fwidget")
    plain = npm.request("GET", "/@acme/widget")
    assert encoded.status_code == plain.status_code == 200
    assert encoded.json()["name"] == "@acme/widget" == plain.json()["name"]
    tarball_url = plain.json()["versions"]["0.1.0"]["dist"]["tarball"]
    assert tarball_url == npm.registry + "/@acme/widget/-/widget-0.1.0.tgz"
    assert requests.get(tarball_url, headers=npm.headers("reader"), timeout=60).status_code == 200


def test_tarball_urls_follow_a_trusted_reverse_proxy(npm):
    npm.publish("proxied", "1.0.0")
    answer = npm.request("GET", "/proxied", headers={"X-Forwarded-Proto": "https",
                                                      "X-Forwarded-Host": "registry.example.com"})
    assert answer.json()["versions"]["1.0.0"]["dist"]["tarball"] == \
        "https://registry.example.com/npm/acme/proxied/-/proxied-1.0.0.tgz"


def test_dist_tags_are_listed_set_and_removed(npm):
    npm.publish("tagged", "1.0.0")
    npm.publish("tagged", "2.0.0-beta.1", tag="beta")
    assert npm.request("GET", "/-/package/tagged/dist-tags").json() == {"beta": "2.0.0-beta.1", "latest": "1.0.0"}
    assert npm.request("PUT", "/-/package/tagged/dist-tags/next", "uploader", json="2.0.0-beta.1").status_code == 201
    missing = npm.request("PUT", "/-/package/tagged/dist-tags/next", "uploader", json="7.0.0")
    assert missing.status_code == 404
    assert npm.request("DELETE", "/-/package/tagged/dist-tags/beta", "uploader").status_code == 200
    assert npm.request("DELETE", "/-/package/tagged/dist-tags/latest", "uploader").status_code == 400
    assert npm.packument("tagged").json()["dist-tags"] == {"latest": "1.0.0", "next": "2.0.0-beta.1"}
    assert npm.request("PUT", "/-/package/tagged/dist-tags/x", "reader", json="1.0.0").status_code == 403


def test_deprecate_sets_and_clears_messages(npm):
    npm.publish("old", "1.0.0")
    npm.publish("old", "1.1.0")
    packument = npm.packument("old").json()
    packument["versions"]["1.0.0"]["deprecated"] = "use 1.1.0"
    assert npm.request("PUT", "/old", "uploader", json=packument).status_code == 200
    versions = npm.packument("old").json()["versions"]
    assert versions["1.0.0"]["deprecated"] == "use 1.1.0" and "deprecated" not in versions["1.1.0"]
    assert npm.packument("old", accept=ABBREVIATED).json()["versions"]["1.0.0"]["deprecated"] == "use 1.1.0"
    packument["versions"]["1.0.0"]["deprecated"] = ""
    npm.request("PUT", "/old", "uploader", json=packument)
    assert "deprecated" not in npm.packument("old").json()["versions"]["1.0.0"]


def test_unpublish_is_for_admins_and_leaves_a_tombstone(npm):
    npm.publish("gone", "1.0.0")
    npm.publish("gone", "1.1.0")
    path = "/gone/-/gone-1.1.0.tgz/-rev/anything"
    assert npm.request("DELETE", path, "uploader").status_code == 403
    assert npm.request("PUT", "/gone/-rev/anything", "admin", json={}).status_code == 200
    assert npm.request("DELETE", path, "admin").status_code == 200
    packument = npm.packument("gone").json()
    assert list(packument["versions"]) == ["1.0.0"] and packument["dist-tags"]["latest"] == "1.0.0"
    assert npm.request("GET", "/gone/-/gone-1.1.0.tgz").status_code == 404
    assert npm.publish("gone", "1.1.0")[0].status_code == 409


def test_login_issues_a_token_that_whoami_names(npm):
    answer = requests.put(npm.registry + "/-/user/org.couchdb.user:uploader", timeout=60, json={
        "_id": "org.couchdb.user:uploader", "name": "uploader", "password": "password of the uploader",
        "type": "user", "roles": [], "date": "2026-11-28T00:00:00.000Z"})
    assert answer.status_code == 201, answer.text
    token = answer.json()["token"]
    whoami = requests.get(npm.registry + "/-/whoami", headers={"Authorization": "Bearer " + token}, timeout=60)
    assert whoami.json() == {"username": "uploader"}
    wrong = requests.put(npm.registry + "/-/user/org.couchdb.user:uploader", timeout=60,
                         json={"name": "uploader", "password": "wrong"})
    assert wrong.status_code == 401
    assert requests.post(npm.registry + "/-/v1/login", json={}, timeout=60).status_code == 405  # npm falls back


def test_ping_and_audit_answer(npm):
    assert requests.get(npm.registry + "/-/ping", timeout=60).json() == {}
    assert npm.request("POST", "/-/npm/v1/security/advisories/bulk", json={"left-pad": ["1.0.0"]}).json() == {}


def test_reads_need_credentials(npm):
    npm.publish("private", "1.0.0")
    answer = npm.request("GET", "/private", None)
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Basic")


def test_one_version_by_number_or_dist_tag(npm):
    npm.publish("single", "1.0.0")
    npm.publish("single", "1.1.0", tag="next")
    assert npm.request("GET", "/single/latest").json()["version"] == "1.0.0"
    by_tag = npm.request("GET", "/single/next").json()
    assert by_tag["version"] == "1.1.0" and by_tag["dist"]["tarball"].endswith("/single/-/single-1.1.0.tgz")
    assert npm.request("GET", "/single/1.1.0").json()["version"] == "1.1.0"
    assert npm.request("GET", "/single/9.9.9").status_code == 404
    npm.publish("@acme/single", "2.0.0")
    assert npm.request("GET", "/@acme/single/latest").json()["name"] == "@acme/single"


def test_the_abbreviated_packument_carries_publish_times_for_pnpm(npm):
    npm.publish("timed", "1.0.0")
    assert set(npm.packument("timed", accept=ABBREVIATED).json()["time"]) == {"created", "modified", "1.0.0"}


def test_unpublish_removes_the_tags_naming_the_version(npm):
    npm.publish("retag", "1.0.0")
    npm.publish("retag", "1.1.0", tag="next")
    npm.request("PUT", "/-/package/retag/dist-tags/canary", "uploader", json="1.1.0")
    assert npm.request("DELETE", "/retag/-/retag-1.1.0.tgz/-rev/x", "admin").status_code == 200
    assert npm.request("GET", "/-/package/retag/dist-tags").json() == {"latest": "1.0.0"}
    assert npm.request("GET", "/retag/next").status_code == 404
