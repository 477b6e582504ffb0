"""The OCI Distribution Spec v1.1 (spec.md), section by section, on the wire: every MUST of Pull, Push, Content
Discovery and Content Management, and the SHOULDs the spec's conformance suite checks, each its own test named
after its section (``test_<section>_...``).

The ``registry`` fixture (tests/oci_registry.py) runs them against each implementation: distribution 2.8, the
reference, now. What an implementation lacks is in its ``gaps``: the tests that need it skip, saying why, and
never pass. Every test works in a repository of its own (``conformance/<test>-<random>``), so they run in any
order. Every request goes through ``OciClient``, which authenticates as the registry asks (Basic, or Bearer
tokens from its realm).

A 4xx body may be anything; when it is JSON it must be ``{"errors": [{"code", "message", "detail"}]}`` with a
code from the spec's table (``expect_error``), and where a condition has its code in the table the test expects
that code. The spec requires one code by name: ``MANIFEST_BLOB_UNKNOWN`` for a manifest refused for what it
references.
"""
from __future__ import annotations

import json
import re
import uuid
from typing import Iterable
from urllib.parse import urljoin

import pytest
import requests

from tests.oci_registry import (INDEX, MANIFEST, Blob, Manifest, OciClient, RegistryTarget,
                                artifact_manifest, config_blob, describe, digest_of, error_codes, fresh_repo,
                                image_index, image_manifest, is_json, random_blob)
from tests.oci_registry import registry  # noqa: F401  (the fixture, parametrized by implementation)

SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1"
UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
RANGE = re.compile(r"^0-([0-9]+)$")


@pytest.fixture
def client(registry: RegistryTarget) -> OciClient:
    return registry.client()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    return fresh_repo(request.node.originalname.removeprefix("test_"))


def expect_error(response: requests.Response, statuses: Iterable[int], codes: Iterable[str] = ()) -> None:
    """``response`` is one of ``statuses``; a JSON body has the spec's error format, and one of ``codes`` (when
    given) among its codes."""
    statuses = tuple(statuses)
    assert response.status_code in statuses, describe(response)
    if response.request.method != "HEAD" and response.content and is_json(response):
        found = error_codes(response)
        codes = tuple(codes)
        assert not codes or set(found) & set(codes), "expected one of %s: %s" % (codes, describe(response))


def content_digest(response: requests.Response) -> str:
    return response.headers.get("Docker-Content-Digest", "")


def assert_digest_matches(response: requests.Response, body: bytes) -> None:
    """``Docker-Content-Digest`` is there (the spec's SHOULD, which every client relies on) and is a digest of
    ``body`` (MUST): in its own algorithm, which MAY differ from the one asked for."""
    header = content_digest(response)
    assert header, "no Docker-Content-Digest: %s" % describe(response)
    algorithm = header.partition(":")[0]
    assert algorithm in ("sha256", "sha512"), describe(response)
    assert header == digest_of(body, algorithm), describe(response)


def upload_range_end(response: requests.Response) -> int:
    match = RANGE.match(response.headers.get("Range", ""))
    assert match, "Range must be 0-<end-of-range>: %s" % describe(response)
    return int(match.group(1))


def referrer_descriptors(client: OciClient, repo: str, digest: str, artifact_type: str | None = None
                         ) -> tuple[list[dict], list[requests.Response]]:
    """Every descriptor of the referrers list, following ``Link: <...>; rel="next"`` pages; and the responses."""
    answer = client.referrers(repo, digest, artifact_type)
    responses = [answer]
    descriptors: list[dict] = []
    while True:
        assert answer.status_code == 200, describe(answer)
        assert answer.headers.get("Content-Type", "").split(";")[0].strip() == INDEX, describe(answer)
        index = answer.json()
        assert index.get("schemaVersion") == 2 and index.get("mediaType") == INDEX, describe(answer)
        assert isinstance(index.get("manifests"), list), describe(answer)
        descriptors.extend(index["manifests"])
        following = answer.links.get("next", {}).get("url")
        if not following:
            return descriptors, responses
        answer = client.get(urljoin(answer.url, following))
        responses.append(answer)


# ================================================================================================ API

def test_api_determining_support_get_v2_is_200(client):
    """Determining Support: ``GET /v2/`` is 200 for a registry implementing the spec (end-1)."""
    assert client.ping().status_code == 200


def test_api_determining_support_without_credentials_is_401_with_challenge(registry):
    """end-1's failure: a registry that authenticates answers ``GET /v2/`` without credentials 401 with a
    ``WWW-Authenticate`` challenge (RFC 7235), which the clients follow."""
    if registry.username is None:
        pytest.skip("%s takes anonymous requests" % registry.name)
    answer = requests.get(registry.url + "/v2/", timeout=60)
    expect_error(answer, [401], ["UNAUTHORIZED"])
    assert answer.headers.get("WWW-Authenticate", "").split(" ")[0].lower() in ("basic", "bearer"), describe(answer)


# ================================================================================================ Pull

def test_pull_manifests_by_tag_returns_body_and_digest(client, repo):
    """Pulling manifests: GET by tag is 200 with the manifest as pushed; Docker-Content-Digest is its digest."""
    manifest = image_manifest()
    client.push(repo, manifest, "v1")
    answer = client.manifest(repo, "v1")
    assert answer.status_code == 200, describe(answer)
    assert answer.content == manifest.body
    assert_digest_matches(answer, manifest.body)
    assert content_digest(answer) == manifest.digest


def test_pull_manifests_by_digest_returns_exact_bytes(client, repo):
    manifest = image_manifest()
    client.push(repo, manifest)
    answer = client.manifest(repo, manifest.digest)
    assert answer.status_code == 200, describe(answer)
    assert answer.content == manifest.body
    assert_digest_matches(answer, manifest.body)


def test_pull_manifests_content_type_is_the_pushed_media_type(client, repo):
    """The Content-Type SHOULD match what was pushed (an image manifest and an index), without parameters."""
    manifest = image_manifest()
    index = image_index([manifest])
    client.push(repo, index, "multi")
    for reference, expected in (("multi", INDEX), (manifest.digest, MANIFEST)):
        answer = client.manifest(repo, reference)
        assert answer.status_code == 200, describe(answer)
        assert answer.headers["Content-Type"] == expected, describe(answer)
        assert answer.json()["mediaType"] == expected


def test_pull_manifests_index_by_tag_returns_body(client, repo):
    index = image_index([image_manifest(), image_manifest()])
    client.push(repo, index, "latest")
    answer = client.manifest(repo, "latest")
    assert answer.status_code == 200, describe(answer)
    assert answer.content == index.body
    assert content_digest(answer) == index.digest
    for child in index.children:
        assert client.manifest(repo, child.digest).content == child.body


def test_pull_manifests_unknown_tag_is_404(client, repo):
    client.push(repo, image_manifest(), "present")
    expect_error(client.manifest(repo, "absent"), [404], ["MANIFEST_UNKNOWN"])


def test_pull_manifests_unknown_digest_is_404(client, repo):
    client.push(repo, image_manifest(), "present")
    expect_error(client.manifest(repo, digest_of(random_blob(32))), [404], ["MANIFEST_UNKNOWN"])


def test_pull_manifests_in_unknown_repository_is_404(client, repo):
    """A nonexistent repository: 404 (Push: "An attempt to pull a nonexistent repository MUST return 404")."""
    expect_error(client.manifest(repo, "latest"), [404], ["NAME_UNKNOWN", "MANIFEST_UNKNOWN"])


def test_pull_manifests_of_another_repository_is_404(client, repo):
    """Content is per repository: a manifest pushed to one is not found through another."""
    manifest = image_manifest()
    client.push(repo, manifest, "v1")
    other = fresh_repo("pull-other")
    client.push(other, image_manifest(), "v1")
    expect_error(client.manifest(other, manifest.digest), [404], ["MANIFEST_UNKNOWN"])


def test_pull_manifests_tag_of_128_characters(client, repo):
    """A tag is at most 128 characters of ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}``: the longest, of every kind of
    character, is pushed and pulled."""
    tag = ("_Aa0.-" * 22)[:128]
    assert len(tag) == 128
    manifest = image_manifest()
    client.push(repo, manifest, tag)
    assert client.manifest(repo, tag).content == manifest.body
    assert tag in client.tags(repo).json()["tags"]


def test_pull_manifests_name_of_many_components_and_separators(client, repo):
    """``<name>`` is path components of ``[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*`` joined by ``/``: a name of
    four components using every separator works for blobs, manifests and tags."""
    name = repo + "/a.b_c__d---e/f0"
    manifest = image_manifest()
    client.push(name, manifest, "v1")
    assert client.manifest(name, "v1").content == manifest.body
    assert client.blob(name, manifest.blobs[0].digest).content == manifest.blobs[0].data
    assert client.tags(name).json() == {"name": name, "tags": ["v1"]}


def test_pull_blobs_returns_bytes_and_digest(client, repo):
    """Pulling blobs: GET is 200 with the bytes; Docker-Content-Digest, when present, MUST be their digest."""
    blob = Blob(random_blob(4096))
    client.push_blob(repo, blob)
    answer = client.blob(repo, blob.digest)
    assert answer.status_code == 200, describe(answer)
    assert answer.content == blob.data
    assert_digest_matches(answer, blob.data)


def test_pull_blobs_unknown_is_404(client, repo):
    client.push_blob(repo, random_blob(16))
    expect_error(client.blob(repo, digest_of(random_blob(16))), [404], ["BLOB_UNKNOWN"])


def test_pull_blobs_of_another_repository_is_404(client, repo):
    blob = Blob(random_blob(64))
    client.push_blob(repo, blob)
    other = fresh_repo("pull-other")
    client.push_blob(other, random_blob(16))
    expect_error(client.blob(other, blob.digest), [404], ["BLOB_UNKNOWN"])


def test_pull_blobs_range_request_is_206(client, repo):
    """A registry SHOULD support Range (RFC 9110): resumable pulls."""
    blob = Blob(random_blob(1000))
    client.push_blob(repo, blob)
    answer = client.blob(repo, blob.digest, headers={"Range": "bytes=100-299"})
    assert answer.status_code == 206, describe(answer)
    assert answer.content == blob.data[100:300]
    assert answer.headers.get("Content-Range") == "bytes 100-299/1000", describe(answer)


def test_pull_head_manifest_by_tag_is_200_with_digest_and_length(client, repo):
    """Checking if content exists: HEAD is 200 with Docker-Content-Digest and Content-Length (SHOULDs), no
    body; its Content-Type is a GET's (HTTP's HEAD), which clients resolving a tag read."""
    manifest = image_manifest()
    client.push(repo, manifest, "v1")
    answer = client.head("/v2/%s/manifests/v1" % repo, headers={"Accept": MANIFEST})
    assert answer.status_code == 200, describe(answer)
    assert answer.headers.get("Content-Type") == MANIFEST, describe(answer)
    assert content_digest(answer) == manifest.digest, describe(answer)
    assert int(answer.headers["Content-Length"]) == manifest.size
    assert answer.content == b""


def test_pull_head_manifest_by_digest_is_200_with_digest_and_length(client, repo):
    manifest = image_manifest()
    client.push(repo, manifest)
    answer = client.head("/v2/%s/manifests/%s" % (repo, manifest.digest), headers={"Accept": MANIFEST})
    assert answer.status_code == 200, describe(answer)
    assert answer.headers.get("Content-Type") == MANIFEST, describe(answer)
    assert content_digest(answer) == manifest.digest, describe(answer)
    assert int(answer.headers["Content-Length"]) == manifest.size
    assert answer.content == b""


def test_pull_head_blob_is_200_with_digest_and_length(client, repo):
    blob = Blob(random_blob(777))
    client.push_blob(repo, blob)
    answer = client.head("/v2/%s/blobs/%s" % (repo, blob.digest))
    assert answer.status_code == 200, describe(answer)
    assert content_digest(answer) == blob.digest, describe(answer)
    assert int(answer.headers["Content-Length"]) == 777
    assert answer.content == b""


def test_pull_head_unknown_manifest_is_404(client, repo):
    client.push(repo, image_manifest(), "present")
    assert client.head("/v2/%s/manifests/absent" % repo).status_code == 404
    assert client.head("/v2/%s/manifests/%s" % (repo, digest_of(b"absent"))).status_code == 404


def test_pull_head_unknown_blob_is_404(client, repo):
    client.push_blob(repo, random_blob(16))
    assert client.head("/v2/%s/blobs/%s" % (repo, digest_of(b"absent"))).status_code == 404


# ================================================================================================ Push: blobs

def test_push_blob_post_then_put_is_202_then_201_with_location(client, repo):
    """POST then PUT: the POST is 202 with a Location; the PUT ``<location>?digest=`` is 201 with a Location
    that is a pullable blob URL (relative or absolute)."""
    blob = Blob(random_blob(2048))
    started = client.start_upload(repo)
    assert started.status_code == 202, describe(started)
    assert started.headers.get("Location"), describe(started)
    done = client.put_upload(started.headers["Location"], blob.data, blob.digest)
    assert done.status_code == 201, describe(done)
    assert done.headers.get("Location"), describe(done)
    pulled = client.get(done.headers["Location"])
    assert pulled.status_code == 200 and pulled.content == blob.data, describe(pulled)
    assert client.blob(repo, blob.digest).content == blob.data


def test_push_blob_post_location_contains_unique_session_uuid(client, repo):
    """The POST's ``<location>`` MUST contain a UUID naming a unique session."""
    first, second = client.start_upload(repo), client.start_upload(repo)
    assert first.status_code == second.status_code == 202
    locations = [first.headers["Location"], second.headers["Location"]]
    sessions = [UUID.search(location) for location in locations]
    assert all(sessions), locations
    assert sessions[0].group(0) != sessions[1].group(0), locations


def test_push_blob_single_post_is_201_or_202_then_put(client, repo):
    """Single POST ``?digest=`` with the bytes: 201 with a pullable Location, or (a registry that takes no
    single POST) 202 with a session that a PUT completes."""
    blob = Blob(random_blob(1500))
    answer = client.post_blob(repo, blob.data, blob.digest)
    assert answer.status_code in (201, 202), describe(answer)
    assert answer.headers.get("Location"), describe(answer)
    if answer.status_code == 202:
        answer = client.put_upload(answer.headers["Location"], blob.data, blob.digest)
        assert answer.status_code == 201, describe(answer)
    assert client.get(answer.headers["Location"]).content == blob.data
    assert client.blob(repo, blob.digest).content == blob.data


def test_push_blob_single_post_is_201_with_location(client, repo, registry):
    registry.require("single_post_upload")
    blob = Blob(random_blob(1500))
    answer = client.post_blob(repo, blob.data, blob.digest)
    assert answer.status_code == 201, describe(answer)
    assert client.get(answer.headers["Location"]).content == blob.data


def test_push_blob_single_post_with_wrong_digest_is_400(client, repo, registry):
    """end-4b's failure: the digest MUST match the bytes; a registry refuses (400) and stores nothing."""
    registry.require("single_post_upload")
    data = random_blob(100)
    wrong = digest_of(random_blob(100))
    expect_error(client.post_blob(repo, data, wrong), [400], ["DIGEST_INVALID"])
    assert client.blob(repo, wrong).status_code == 404
    assert client.blob(repo, digest_of(data)).status_code == 404


def test_push_blob_put_with_wrong_digest_is_400_digest_invalid(client, repo):
    """end-6's failure: a PUT whose ``?digest=`` is not the upload's digest is 400 (DIGEST_INVALID: "provided
    digest did not match uploaded content"), and nothing is stored under either digest."""
    data = random_blob(100)
    wrong = digest_of(random_blob(100))
    started = client.start_upload(repo)
    expect_error(client.put_upload(started.headers["Location"], data, wrong), [400], ["DIGEST_INVALID"])
    assert client.blob(repo, wrong).status_code == 404
    assert client.blob(repo, digest_of(data)).status_code == 404


def test_push_blob_sha512_digest_is_pullable_by_it(client, repo, registry):
    """A blob uploaded with a sha512 ``?digest=`` is pullable by that digest; a Docker-Content-Digest MAY name
    the registry's canonical digest (another algorithm), which MUST still match the bytes."""
    registry.require("sha512_blobs")
    blob = Blob(random_blob(3000), algorithm="sha512")
    done = client.push_blob_post_put(repo, blob.data, blob.digest)
    assert done.status_code == 201, describe(done)
    pulled = client.blob(repo, blob.digest)
    assert pulled.status_code == 200 and pulled.content == blob.data, describe(pulled)
    assert_digest_matches(pulled, blob.data)


def test_push_blob_chunked_patch_is_202_with_location_and_range(client, repo):
    """Pushing a blob in chunks: POST (Content-Length: 0) is 202; each PATCH with Content-Range is 202 with
    Location and ``Range: 0-<end-of-range>``; the closing PUT ``?digest=`` is 201 with a pullable Location."""
    data = random_blob(3 * 1024 + 100)
    started = client.start_upload(repo)
    assert started.status_code == 202, describe(started)
    location, offset = started.headers["Location"], 0
    for start in range(0, len(data), 1024):
        chunk = data[start:start + 1024]
        answer = client.patch_upload(location, chunk, start)
        assert answer.status_code == 202, describe(answer)
        assert answer.headers.get("Location"), describe(answer)
        offset = start + len(chunk)
        assert upload_range_end(answer) == offset - 1
        location = answer.headers["Location"]
    done = client.put_upload(location, b"", digest_of(data))
    assert done.status_code == 201, describe(done)
    assert client.get(done.headers["Location"]).content == data
    assert client.blob(repo, digest_of(data)).content == data


def test_push_blob_chunked_final_chunk_in_put_is_201(client, repo):
    """The final chunk MAY come in the closing PUT (with its Content-Range); the digest is the whole blob's."""
    data = random_blob(2500)
    done = client.push_blob_chunked(repo, data, 1000, last_in_put=True)
    assert done.status_code == 201, describe(done)
    assert client.blob(repo, digest_of(data)).content == data


def test_push_blob_chunked_get_upload_status_is_204_with_location_and_range(client, repo):
    """end-13: GET ``<location>`` of an active upload is 204 with Location and ``Range: 0-<end-of-range>``,
    and the upload goes on from that Location."""
    data = random_blob(1800)
    started = client.start_upload(repo)
    first = client.patch_upload(started.headers["Location"], data[:1000], 0)
    assert first.status_code == 202, describe(first)
    status = client.get(first.headers["Location"])
    assert status.status_code == 204, describe(status)
    assert status.headers.get("Location"), describe(status)
    assert upload_range_end(status) == 999
    second = client.patch_upload(status.headers["Location"], data[1000:], 1000)
    assert second.status_code == 202, describe(second)
    done = client.put_upload(second.headers["Location"], b"", digest_of(data))
    assert done.status_code == 201, describe(done)
    assert client.blob(repo, digest_of(data)).content == data


def test_push_blob_chunked_out_of_order_range_is_416(client, repo, registry):
    """A chunk whose first byte is not the last ``<end-of-range>`` plus one MUST be refused with 416; the
    first chunk's range MUST begin with 0."""
    registry.require("chunk_order")
    data = random_blob(2000)
    started = client.start_upload(repo)
    assert client.patch_upload(started.headers["Location"], data[1000:], 1000).status_code == 416
    first = client.patch_upload(started.headers["Location"], data[:1000], 0)
    assert first.status_code == 202, describe(first)
    skipping = client.patch_upload(first.headers["Location"], data[1500:], 1500)
    assert skipping.status_code == 416, describe(skipping)


def test_push_blob_chunked_retried_chunk_is_416_and_upload_resumes(client, repo, registry):
    """Sending the previous chunk again is out of order (416); GET gives the offset, and the upload resumes
    from it to a blob with the right digest."""
    registry.require("chunk_order")
    data = random_blob(2000)
    started = client.start_upload(repo)
    first = client.patch_upload(started.headers["Location"], data[:1000], 0)
    assert first.status_code == 202, describe(first)
    again = client.patch_upload(first.headers["Location"], data[:1000], 0)
    assert again.status_code == 416, describe(again)
    status = client.get(first.headers["Location"])
    assert status.status_code == 204 and upload_range_end(status) == 999, describe(status)
    rest = client.patch_upload(status.headers["Location"], data[1000:], 1000)
    assert rest.status_code == 202, describe(rest)
    done = client.put_upload(rest.headers["Location"], b"", digest_of(data))
    assert done.status_code == 201, describe(done)
    assert client.blob(repo, digest_of(data)).content == data


def test_push_blob_streamed_patch_without_content_range_is_202(client, repo):
    """The conformance suite's streamed upload, which docker and skopeo send: a PATCH with the whole blob and
    no Content-Range is 202, and the PUT ``?digest=`` without a body closes it (201)."""
    data = random_blob(5000)
    started = client.start_upload(repo)
    streamed = client.patch_upload(started.headers["Location"], data)
    assert streamed.status_code == 202, describe(streamed)
    assert upload_range_end(streamed) == len(data) - 1
    done = client.put_upload(streamed.headers["Location"], b"", digest_of(data))
    assert done.status_code == 201, describe(done)
    assert client.blob(repo, digest_of(data)).content == data


def test_push_blob_upload_unknown_session_is_404(client, repo):
    """end-5 and end-13's failure: an upload the registry does not know is 404."""
    client.push_blob(repo, random_blob(8))
    unknown = "/v2/%s/blobs/uploads/%s" % (repo, uuid.uuid4())
    codes = ["BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"]
    expect_error(client.patch_upload(unknown, b"abc", 0), [404], codes)
    expect_error(client.get(unknown), [404], codes)


def test_push_blob_chunked_post_min_length_header_is_a_size(client, repo):
    """OCI-Chunk-Min-Length, when a registry has a minimum chunk size, is a size in bytes."""
    started = client.start_upload(repo)
    assert started.status_code == 202, describe(started)
    minimum = started.headers.get("OCI-Chunk-Min-Length")
    if minimum is None:
        pytest.skip("the registry states no minimum chunk size (OCI-Chunk-Min-Length is optional)")
    assert minimum.isdigit(), describe(started)


# ================================================================================================ Push: mount

def test_push_blob_mount_from_other_repository_is_201_or_202(client, repo):
    """Mounting a blob from another repository: 201 with a Location (and the blob now pullable here), or, from
    a registry that does not mount, 202 with an upload session."""
    source = fresh_repo("mount-source")
    blob = Blob(random_blob(1200))
    client.push_blob(source, blob)
    answer = client.start_upload(repo, mount=blob.digest, **{"from": source})
    assert answer.status_code in (201, 202), describe(answer)
    assert answer.headers.get("Location"), describe(answer)
    if answer.status_code == 202:
        done = client.put_upload(answer.headers["Location"], blob.data, blob.digest)
        assert done.status_code == 201, describe(done)
    else:
        if content_digest(answer):  # the canonical digest, which MAY be of another algorithm
            assert_digest_matches(answer, blob.data)
        assert client.get(answer.headers["Location"]).content == blob.data
    assert client.blob(repo, blob.digest).content == blob.data
    assert client.blob(source, blob.digest).content == blob.data


def test_push_blob_mount_of_unknown_blob_is_202_session(client, repo):
    """A registry unable to mount the blob SHOULD answer 202: an upload session the client may use."""
    source = fresh_repo("mount-source")
    client.push_blob(source, random_blob(10))
    blob = Blob(random_blob(300))
    answer = client.start_upload(repo, mount=blob.digest, **{"from": source})
    assert answer.status_code == 202, describe(answer)
    done = client.put_upload(answer.headers["Location"], blob.data, blob.digest)
    assert done.status_code == 201, describe(done)
    assert client.blob(repo, blob.digest).content == blob.data


def test_push_blob_mount_without_from_is_201_or_202(client, repo):
    """The registry MAY treat ``from`` as optional: 201 if it mounts, else 202 and a session."""
    source = fresh_repo("mount-source")
    blob = Blob(random_blob(400))
    client.push_blob(source, blob)
    answer = client.start_upload(repo, mount=blob.digest)
    assert answer.status_code in (201, 202), describe(answer)
    if answer.status_code == 202:
        answer = client.put_upload(answer.headers["Location"], blob.data, blob.digest)
        assert answer.status_code == 201, describe(answer)
    assert client.blob(repo, blob.digest).content == blob.data


# ================================================================================================ Push: manifests

def test_push_manifest_by_tag_is_201_with_location_and_digest(client, repo):
    """Pushing manifests: PUT is 201 with a Location that is a pullable manifest URL; Docker-Content-Digest is
    the manifest's digest."""
    manifest = image_manifest()
    for blob in manifest.blobs:
        client.push_blob(repo, blob)
    answer = client.put_manifest(repo, "v1", manifest)
    assert answer.status_code == 201, describe(answer)
    assert answer.headers.get("Location"), describe(answer)
    assert content_digest(answer) == manifest.digest, describe(answer)
    pulled = client.request("GET", answer.headers["Location"], headers={"Accept": MANIFEST})
    assert pulled.status_code == 200 and pulled.content == manifest.body, describe(pulled)


def test_push_manifest_by_digest_docker_content_digest_equals_it(client, repo):
    """Pushed by digest, Docker-Content-Digest MUST equal the digest the client gave."""
    manifest = image_manifest()
    answer = client.push(repo, manifest, manifest.digest)
    assert content_digest(answer) == manifest.digest, describe(answer)
    assert client.manifest(repo, manifest.digest).content == manifest.body


def test_push_manifest_stored_byte_for_byte(client, repo):
    """The registry MUST store the manifest in the exact bytes given: odd whitespace, key order and a
    trailing newline come back as they went."""
    config, layer = config_blob(), Blob(random_blob(100))
    document = ('{\n    "layers" : [ %s ],\t"schemaVersion":2,\n"config":%s,  "mediaType": "%s",'
                '"annotations": {"z": "1", "a": "\\u00e9t\\u00e9"}}\n'
                % (json.dumps(layer.descriptor()), json.dumps(config.descriptor(), indent=5), MANIFEST))
    manifest = Manifest(document.encode(), MANIFEST, blobs=(config, layer))
    client.push(repo, manifest, "odd")
    assert client.manifest(repo, "odd").content == manifest.body
    assert client.manifest(repo, manifest.digest).content == manifest.body


def test_push_manifest_with_no_layers_is_accepted(client, repo):
    """The list of blobs MAY be empty: a manifest without layers is taken (the conformance suite's)."""
    manifest = image_manifest(layers=[])
    client.push(repo, manifest, "empty")
    assert client.manifest(repo, "empty").content == manifest.body


def test_push_manifest_index_is_201_and_pullable(client, repo):
    index = image_index([image_manifest(), image_manifest()], annotations={"org.example.note": "two"})
    answer = client.push(repo, index, "multi")
    assert content_digest(answer) == index.digest
    assert client.manifest(repo, index.digest).content == index.body


def test_push_manifest_with_missing_blobs_is_manifest_blob_unknown(client, repo):
    """A registry MAY refuse a manifest whose descriptors name blobs it does not have; when it does, the
    answer MUST carry one or more MANIFEST_BLOB_UNKNOWN errors. Nothing is stored."""
    manifest = image_manifest()
    client.push_blob(repo, manifest.blobs[0])  # the config is there, the layer is not
    answer = client.put_manifest(repo, "broken", manifest)
    if answer.status_code == 201:
        pytest.skip("the registry accepts manifests with missing blobs (the spec allows it)")
    assert 400 <= answer.status_code < 500, describe(answer)
    assert "MANIFEST_BLOB_UNKNOWN" in error_codes(answer), describe(answer)
    assert client.manifest(repo, "broken").status_code == 404


def test_push_manifest_index_with_missing_manifests_is_manifest_blob_unknown(client, repo):
    """The same for an index naming manifests the repository does not have."""
    index = image_index([image_manifest()])
    answer = client.put_manifest(repo, "broken", index)
    if answer.status_code == 201:
        pytest.skip("the registry accepts indexes with missing manifests (the spec allows it)")
    assert 400 <= answer.status_code < 500, describe(answer)
    assert "MANIFEST_BLOB_UNKNOWN" in error_codes(answer), describe(answer)


def test_push_manifest_with_subject_to_missing_manifest_is_accepted(client, repo):
    """A registry MUST initially accept an otherwise valid manifest whose ``subject`` names a manifest that
    does not exist, so referrers may be pushed before their subject."""
    subject = image_manifest()
    referrer = artifact_manifest(SIGNATURE, subject=subject)
    answer = client.push(repo, referrer, "sig")
    assert content_digest(answer) == referrer.digest
    assert client.manifest(repo, referrer.digest).content == referrer.body


def test_push_manifest_with_subject_returns_oci_subject_header(client, repo, registry):
    """A registry supporting the referrers API MUST answer a manifest PUT with ``subject`` with ``OCI-Subject:
    <subject digest>``."""
    registry.require("referrers")
    subject = image_manifest()
    client.push(repo, subject, "v1")
    referrer = artifact_manifest(SBOM, subject=subject)
    answer = client.push(repo, referrer)
    assert answer.headers.get("OCI-Subject") == subject.digest, describe(answer)


def test_push_manifest_index_with_subject_returns_oci_subject_header(client, repo, registry):
    registry.require("referrers")
    subject = image_manifest()
    client.push(repo, subject, "v1")
    index = image_index([image_manifest()], subject=subject, artifact_type=SBOM)
    answer = client.push(repo, index)
    assert answer.headers.get("OCI-Subject") == subject.digest, describe(answer)


def test_push_manifest_retag_moves_tag(client, repo):
    first, second = image_manifest(), image_manifest()
    client.push(repo, first, "moving")
    client.push(repo, second, "moving")
    assert client.manifest(repo, "moving").content == second.body
    assert client.manifest(repo, first.digest).content == first.body


def test_push_manifest_content_type_parameters_are_ignored(client, repo):
    """The registry SHOULD ignore parameters on the PUT's Content-Type, and SHOULD NOT send any back."""
    manifest = image_manifest()
    for blob in manifest.blobs:
        client.push_blob(repo, blob)
    answer = client.put_manifest(repo, "v1", manifest, content_type=MANIFEST + "; charset=utf-8")
    assert answer.status_code == 201, describe(answer)
    assert client.manifest(repo, "v1").headers["Content-Type"] == MANIFEST


def test_push_manifest_of_4_megabytes_is_accepted(client, repo):
    """Registries SHOULD expect to take manifest pushes of at least 4 megabytes."""
    config, layer = config_blob(), Blob(random_blob(100))
    short = image_manifest(config, [layer], annotations={"org.example.padding": ""})
    manifest = image_manifest(config, [layer], annotations={"org.example.padding": "x" * (4_000_000 - short.size)})
    assert manifest.size == 4_000_000
    client.push(repo, manifest, "big")
    assert client.manifest(repo, "big").content == manifest.body


def test_push_manifest_invalid_is_400_manifest_invalid(client, repo):
    """A body that is not a manifest is refused: 400 with MANIFEST_INVALID (the conformance suite's error-code
    check)."""
    answer = client.request("PUT", "/v2/%s/manifests/bad" % repo, data=b"{this is not json",
                            headers={"Content-Type": MANIFEST})
    expect_error(answer, [400], ["MANIFEST_INVALID"])
    assert is_json(answer), describe(answer)
    assert client.manifest(repo, "bad").status_code == 404


def test_push_manifest_by_sha512_digest(client, repo, registry):
    """A manifest pushed by a sha512 digest: Docker-Content-Digest MUST equal that digest, and it is pullable
    by it."""
    registry.require("sha512_manifests")
    base = image_manifest()
    manifest = Manifest(base.body, MANIFEST, blobs=base.blobs, algorithm="sha512")
    answer = client.push(repo, manifest, manifest.digest)
    assert content_digest(answer) == manifest.digest, describe(answer)
    pulled = client.manifest(repo, manifest.digest)
    assert pulled.status_code == 200 and pulled.content == manifest.body, describe(pulled)


# ================================================================================================ Content Discovery

def test_content_discovery_tags_list_is_200_with_name_and_tags(client, repo):
    manifest = image_manifest()
    client.push(repo, manifest, "one")
    client.push(repo, manifest, "two")
    answer = client.tags(repo)
    assert answer.status_code == 200, describe(answer)
    body = answer.json()
    assert body["name"] == repo
    assert sorted(body["tags"]) == ["one", "two"]


def test_content_discovery_tags_list_is_in_lexical_order(client, repo, registry):
    registry.require("tags_order")
    manifest = image_manifest()
    tags = ["zeta", "alpha", "1.10", "1.9", "beta_2", "beta-1", "beta.3", "0", "a"]
    for tag in tags:
        client.push(repo, manifest, tag)
    assert client.tags(repo).json()["tags"] == sorted(tags)


def test_content_discovery_tags_list_of_unknown_repository_is_404(client, repo):
    expect_error(client.tags(repo), [404], ["NAME_UNKNOWN"])


def test_content_discovery_tags_list_of_untagged_repository_is_200_empty(client, repo, registry):
    """The list MAY be empty: a repository whose manifests have no tag answers 200 with no tags."""
    registry.require("tags_list_untagged")
    client.push(repo, image_manifest())
    answer = client.tags(repo)
    assert answer.status_code == 200, describe(answer)
    assert answer.json()["tags"] in ([], None)


def test_content_discovery_tags_list_n_limits_results(client, repo, registry):
    """``?n=`` returns n tags unless fewer exist or a Link header says there are more; the first ones, in
    lexical order."""
    registry.require("tags_pagination")
    manifest = image_manifest()
    tags = ["t%02d" % i for i in range(7)]
    for tag in tags:
        client.push(repo, manifest, tag)
    answer = client.tags(repo, n=3)
    assert answer.status_code == 200, describe(answer)
    got = answer.json()["tags"]
    assert got == tags[:len(got)], describe(answer)
    assert len(got) == 3 or (len(got) < 3 and "next" in answer.links), describe(answer)
    everything = client.tags(repo, n=100)
    assert everything.json()["tags"] == tags and "next" not in everything.links, describe(everything)


def test_content_discovery_tags_list_n_and_last_paginate_with_link(client, repo, registry):
    """Following ``Link: <...>; rel="next"`` (RFC 5988) from ``?n=`` pages through every tag once, in order."""
    registry.require("tags_pagination")
    manifest = image_manifest()
    tags = sorted("tag-%d" % i for i in range(11))
    for tag in tags:
        client.push(repo, manifest, tag)
    answer = client.tags(repo, n=4)
    seen: list[str] = []
    pages = 0
    while True:
        assert answer.status_code == 200, describe(answer)
        seen.extend(answer.json()["tags"] or [])
        pages += 1
        following = answer.links.get("next", {}).get("url")
        if not following:
            break
        assert pages < 20, "Link headers do not end"
        answer = client.get(urljoin(answer.url, following))
    assert seen == tags
    assert pages >= 3


def test_content_discovery_tags_list_last_starts_after_tag(client, repo, registry):
    """``?n=&last=<tag>``: up to n tags after ``<tag>``, not including it; n is optional with last."""
    registry.require("tags_pagination")
    manifest = image_manifest()
    tags = ["a1", "b2", "c3", "d4", "e5"]
    for tag in tags:
        client.push(repo, manifest, tag)
    answer = client.tags(repo, n=2, last="b2")
    assert answer.status_code == 200, describe(answer)
    got = answer.json()["tags"]
    assert got == ["c3", "d4"] or (got == ["c3"] and "next" in answer.links), describe(answer)
    rest = client.tags(repo, last="c3")
    assert rest.status_code == 200, describe(rest)
    assert rest.json()["tags"][:1] == ["d4"] and "c3" not in rest.json()["tags"], describe(rest)


def test_content_discovery_tags_list_n_zero_is_empty_without_link(client, repo, registry):
    """When n is zero the list MUST be empty and MUST NOT come with a Link header."""
    registry.require("tags_pagination")
    client.push(repo, image_manifest(), "only")
    answer = client.tags(repo, n=0)
    assert answer.status_code == 200, describe(answer)
    assert answer.json()["tags"] in ([], None)
    assert "Link" not in answer.headers, describe(answer)


def test_content_discovery_referrers_lists_manifests_with_subject(client, repo, registry):
    """Listing referrers: 200, an image index (Content-Type application/vnd.oci.image.index.v1+json) of
    descriptors of the manifests whose subject is the digest, each with the manifest's artifactType and
    annotations."""
    registry.require("referrers")
    subject = image_manifest()
    client.push(repo, subject, "v1")
    sbom = artifact_manifest(SBOM, subject, annotations={"org.example.sbom.format": "json"})
    signature = artifact_manifest(SIGNATURE, subject, annotations={"org.example.signature.fingerprint": "abcd"})
    unrelated = artifact_manifest(SBOM, image_manifest())
    for manifest in (sbom, signature, unrelated):
        client.push(repo, manifest)
    descriptors, _ = referrer_descriptors(client, repo, subject.digest)
    by_digest = {d["digest"]: d for d in descriptors}
    assert set(by_digest) == {sbom.digest, signature.digest}, descriptors
    for manifest, kind, annotations in ((sbom, SBOM, {"org.example.sbom.format": "json"}),
                                        (signature, SIGNATURE, {"org.example.signature.fingerprint": "abcd"})):
        descriptor = by_digest[manifest.digest]
        assert descriptor["mediaType"] == MANIFEST
        assert descriptor["size"] == manifest.size
        assert descriptor["artifactType"] == kind
        assert descriptor.get("annotations") == annotations


def test_content_discovery_referrers_artifact_type_falls_back_to_config_media_type(client, repo, registry):
    """A referrer image manifest without artifactType is listed with its config's mediaType as
    artifactType."""
    registry.require("referrers")
    subject = image_manifest()
    client.push(repo, subject)
    config = Blob(b'{"kind": "attestation"}', "application/vnd.example.attestation.config.v1+json")
    referrer = image_manifest(config, [Blob(random_blob(64), "application/octet-stream")], subject=subject)
    client.push(repo, referrer)
    descriptors, _ = referrer_descriptors(client, repo, subject.digest)
    assert [(d["digest"], d.get("artifactType")) for d in descriptors] == [
        (referrer.digest, "application/vnd.example.attestation.config.v1+json")]


def test_content_discovery_referrers_index_without_artifact_type_omits_it(client, repo, registry):
    """An index referrer is listed (mediaType the index's); without artifactType, none is given; its
    annotations are."""
    registry.require("referrers")
    subject = image_manifest()
    client.push(repo, subject)
    index = image_index([image_manifest()], subject=subject, annotations={"org.example.kind": "bundle"})
    client.push(repo, index)
    descriptors, _ = referrer_descriptors(client, repo, subject.digest)
    assert len(descriptors) == 1, descriptors
    assert descriptors[0]["digest"] == index.digest and descriptors[0]["mediaType"] == INDEX
    assert "artifactType" not in descriptors[0] or descriptors[0]["artifactType"] in ("", None), descriptors
    assert descriptors[0].get("annotations") == {"org.example.kind": "bundle"}


def test_content_discovery_referrers_of_unknown_subject_is_200_empty(client, repo, registry):
    """No referrers: 200 and an empty manifest list. A registry with the referrers API MUST NOT answer
    404."""
    registry.require("referrers")
    client.push(repo, image_manifest(), "v1")
    descriptors, responses = referrer_descriptors(client, repo, digest_of(random_blob(32)))
    assert descriptors == []
    assert responses[0].status_code == 200


def test_content_discovery_referrers_pushed_before_subject_are_listed(client, repo, registry):
    """A referrer pushed before its subject is listed for it; the subject's later push changes nothing."""
    registry.require("referrers")
    subject = image_manifest()
    referrer = artifact_manifest(SIGNATURE, subject)
    client.push(repo, referrer)
    assert [d["digest"] for d in referrer_descriptors(client, repo, subject.digest)[0]] == [referrer.digest]
    client.push(repo, subject, "v1")
    assert [d["digest"] for d in referrer_descriptors(client, repo, subject.digest)[0]] == [referrer.digest]


def test_content_discovery_referrers_invalid_digest_is_400(client, repo, registry):
    """An invalid request, such as a digest of invalid syntax, MUST be 400."""
    registry.require("referrers")
    client.push(repo, image_manifest(), "v1")
    answer = client.get("/v2/%s/referrers/%s" % (repo, "sha256:not-a-digest"))
    expect_error(answer, [400], ["DIGEST_INVALID"])


def test_content_discovery_referrers_artifact_type_filter_sets_oci_filters_applied(client, repo, registry):
    """``?artifactType=`` (SHOULD be supported): only that type's referrers, and ``OCI-Filters-Applied:
    artifactType`` saying the filter was applied (MUST when applied)."""
    registry.require("referrers")
    registry.require("referrers_filter")
    subject = image_manifest()
    client.push(repo, subject)
    sbom = artifact_manifest(SBOM, subject)
    signature = artifact_manifest(SIGNATURE, subject)
    client.push(repo, sbom)
    client.push(repo, signature)
    descriptors, responses = referrer_descriptors(client, repo, subject.digest, artifact_type=SBOM)
    applied = [f.strip() for f in responses[0].headers.get("OCI-Filters-Applied", "").split(",")]
    assert "artifactType" in applied, describe(responses[0])
    assert [d["digest"] for d in descriptors] == [sbom.digest]
    unfiltered, responses = referrer_descriptors(client, repo, subject.digest)
    assert {d["digest"] for d in unfiltered} == {sbom.digest, signature.digest}
    assert "OCI-Filters-Applied" not in responses[0].headers, describe(responses[0])


def test_content_discovery_referrers_are_per_repository(client, repo, registry):
    """Each descriptor is of a manifest in the same ``<name>``: another repository's referrers of the same
    digest are not listed."""
    registry.require("referrers")
    subject = image_manifest()
    other = fresh_repo("referrers-other")
    client.push(repo, subject)
    client.push(other, subject)
    here, there = artifact_manifest(SBOM, subject), artifact_manifest(SIGNATURE, subject)
    client.push(repo, here)
    client.push(other, there)
    assert [d["digest"] for d in referrer_descriptors(client, repo, subject.digest)[0]] == [here.digest]
    assert [d["digest"] for d in referrer_descriptors(client, other, subject.digest)[0]] == [there.digest]


def test_content_discovery_referrers_pages_follow_link_to_all(client, repo, registry):
    """A list too long for one answer MUST come with ``Link: <...>; rel="next"``: following the links gives
    every referrer exactly once."""
    registry.require("referrers")
    subject = image_manifest()
    client.push(repo, subject)
    pushed = set()
    for i in range(40):
        referrer = artifact_manifest(SBOM, subject, annotations={"org.example.n": str(i)})
        client.push(repo, referrer)
        pushed.add(referrer.digest)
    descriptors, _ = referrer_descriptors(client, repo, subject.digest)
    digests = [d["digest"] for d in descriptors]
    assert len(digests) == len(set(digests)) == 40
    assert set(digests) == pushed


def test_content_discovery_referrers_of_deleted_referrer_are_gone(client, repo, registry):
    registry.require("referrers")
    subject = image_manifest()
    client.push(repo, subject)
    keep, drop = artifact_manifest(SBOM, subject), artifact_manifest(SIGNATURE, subject)
    client.push(repo, keep)
    client.push(repo, drop)
    assert client.delete("/v2/%s/manifests/%s" % (repo, drop.digest)).status_code == 202
    assert [d["digest"] for d in referrer_descriptors(client, repo, subject.digest)[0]] == [keep.digest]


def test_content_discovery_referrers_sha512_subject_digest(client, repo, registry):
    """The referrers path takes any registered digest algorithm: a subject named by sha512 has none yet (200,
    empty list)."""
    registry.require("referrers")
    client.push(repo, image_manifest(), "v1")
    descriptors, responses = referrer_descriptors(client, repo, digest_of(random_blob(32), "sha512"))
    assert descriptors == [] and responses[0].status_code == 200


# ================================================================================================ Content Management

def test_content_management_delete_tag_is_202_then_get_tag_is_404(client, repo, registry):
    """Deleting tags: DELETE /manifests/<tag> is 202; the tag is then 404, the manifest stays by digest."""
    registry.require("tag_delete")
    manifest = image_manifest()
    client.push(repo, manifest, "gone")
    client.push(repo, manifest, "kept")
    answer = client.delete("/v2/%s/manifests/gone" % repo)
    assert answer.status_code == 202, describe(answer)
    expect_error(client.manifest(repo, "gone"), [404], ["MANIFEST_UNKNOWN"])
    assert client.manifest(repo, "kept").status_code == 200
    assert client.manifest(repo, manifest.digest).content == manifest.body
    tags = client.tags(repo)
    assert tags.status_code == 200 and tags.json()["tags"] == ["kept"], describe(tags)


def test_content_management_delete_tag_when_disabled_is_400_or_405(client, repo, registry):
    """A registry that disables tag deletion MUST answer 400 or 405, and the tag stays."""
    if registry.has("tag_delete"):
        pytest.skip("%s deletes tags (test_content_management_delete_tag_is_202_then_get_tag_is_404)"
                    % registry.name)
    manifest = image_manifest()
    client.push(repo, manifest, "stays")
    expect_error(client.delete("/v2/%s/manifests/stays" % repo), [400, 405])
    assert client.manifest(repo, "stays").content == manifest.body


def test_content_management_delete_manifest_then_get_is_404(client, repo):
    """Deleting manifests: DELETE by digest is 202; GET and HEAD by the digest and by any tag naming it are
    then 404."""
    manifest = image_manifest()
    client.push(repo, manifest, "v1")
    client.put_manifest(repo, "v1-alias", manifest)
    answer = client.delete("/v2/%s/manifests/%s" % (repo, manifest.digest))
    assert answer.status_code == 202, describe(answer)
    expect_error(client.manifest(repo, manifest.digest), [404], ["MANIFEST_UNKNOWN"])
    assert client.head("/v2/%s/manifests/%s" % (repo, manifest.digest)).status_code == 404
    for tag in ("v1", "v1-alias"):
        expect_error(client.manifest(repo, tag), [404], ["MANIFEST_UNKNOWN"])


def test_content_management_delete_manifest_is_reflected_in_tags_list(client, repo):
    """The tags list no longer names the deleted manifest's tags, and still names the others (the conformance
    suite's check)."""
    doomed, kept = image_manifest(), image_manifest()
    client.push(repo, doomed, "doomed")
    client.push(repo, kept, "kept")
    assert client.delete("/v2/%s/manifests/%s" % (repo, doomed.digest)).status_code == 202
    answer = client.tags(repo)
    assert answer.status_code == 200, describe(answer)
    assert answer.json()["tags"] == ["kept"]


def test_content_management_delete_manifest_keeps_other_manifests(client, repo):
    doomed, kept = image_manifest(), image_manifest()
    client.push(repo, doomed, "doomed")
    client.push(repo, kept, "kept")
    assert client.delete("/v2/%s/manifests/%s" % (repo, doomed.digest)).status_code == 202
    assert client.manifest(repo, "kept").content == kept.body
    assert client.manifest(repo, kept.digest).content == kept.body


def test_content_management_delete_unknown_manifest_is_404(client, repo):
    client.push(repo, image_manifest(), "v1")
    expect_error(client.delete("/v2/%s/manifests/%s" % (repo, digest_of(random_blob(16)))), [404],
                 ["MANIFEST_UNKNOWN"])


def test_content_management_delete_manifest_in_unknown_repository_is_404(client, repo):
    """If the repository does not exist, the response MUST be 404."""
    expect_error(client.delete("/v2/%s/manifests/%s" % (repo, digest_of(random_blob(16)))), [404],
                 ["NAME_UNKNOWN", "MANIFEST_UNKNOWN"])


def test_content_management_delete_blob_then_get_is_404(client, repo):
    """Deleting blobs: DELETE is 202; GET and HEAD are then 404."""
    blob = Blob(random_blob(500))
    client.push_blob(repo, blob)
    answer = client.delete("/v2/%s/blobs/%s" % (repo, blob.digest))
    assert answer.status_code == 202, describe(answer)
    expect_error(client.blob(repo, blob.digest), [404], ["BLOB_UNKNOWN"])
    assert client.head("/v2/%s/blobs/%s" % (repo, blob.digest)).status_code == 404


def test_content_management_delete_unknown_blob_is_404(client, repo):
    """If the blob is not found, 404 MUST be returned."""
    client.push_blob(repo, random_blob(8))
    expect_error(client.delete("/v2/%s/blobs/%s" % (repo, digest_of(random_blob(16)))), [404], ["BLOB_UNKNOWN"])


def test_content_management_delete_blob_of_other_repository_is_404_there(client, repo):
    """A blob is deleted from one repository only: another holding the same bytes keeps them."""
    blob = Blob(random_blob(256))
    other = fresh_repo("delete-other")
    client.push_blob(repo, blob)
    client.push_blob(other, blob)
    assert client.delete("/v2/%s/blobs/%s" % (repo, blob.digest)).status_code == 202
    assert client.blob(repo, blob.digest).status_code == 404
    assert client.blob(other, blob.digest).content == blob.data
