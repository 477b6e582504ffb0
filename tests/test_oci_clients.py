"""Real OCI clients against the registry under test (tests/oci_registry.py's ``registry`` fixture): skopeo copies a
multi-layer image from an OCI layout on disk to the registry and back, inspects it and lists its tags; the oras
Python SDK pushes an artifact with an annotation, pulls it back, attaches a signature-like referrer and finds it
through the referrers API; the docker CLI inspects the manifest. Every client gets the registry's credentials
its own way (tests/oci_clients.py), so against a Bearer registry each runs the token flow itself."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.oci_clients import Docker, Oras, Skopeo, build_image_layout, layout_blob, read_layout
from tests.oci_registry import INDEX, MANIFEST, digest_of, fresh_repo
from tests.oci_registry import registry  # noqa: F401  (the fixture, parametrized by implementation)

pytestmark = pytest.mark.clients

SIGNATURE_CONFIG = "application/vnd.example.signature.config.v1+json"


def test_skopeo_copies_an_oci_layout_to_the_registry_and_back(registry, tmp_path):
    """``skopeo copy oci:<dir>:v1 docker://host/ns/repo:v1`` and back into a new layout: the same manifest
    digest and bytes, the same config and three layers."""
    image = build_image_layout(tmp_path / "source", tag="v1")
    skopeo = Skopeo(tmp_path / "home", registry)
    repo = fresh_repo("skopeo")
    skopeo.copy(image.reference, skopeo.ref(repo, "v1")).ok()

    client = registry.client()
    pushed = client.manifest(repo, "v1")
    assert pushed.status_code == 200 and pushed.content == image.manifest.body
    for blob in (image.config, *image.layers):
        assert client.blob(repo, blob.digest).content == blob.data

    skopeo.copy(skopeo.ref(repo, "v1"), "oci:%s:copied" % (tmp_path / "back")).ok()
    descriptor, body = read_layout(tmp_path / "back", "copied")
    assert descriptor["digest"] == image.manifest.digest
    assert body == image.manifest.body
    for blob in (image.config, *image.layers):
        assert layout_blob(tmp_path / "back", blob.digest) == blob.data


def test_skopeo_inspect_and_list_tags(registry, tmp_path):
    image = build_image_layout(tmp_path / "source", tag="v1")
    skopeo = Skopeo(tmp_path / "home", registry)
    repo = fresh_repo("skopeo-inspect")
    skopeo.copy(image.reference, skopeo.ref(repo, "v1")).ok()
    skopeo.copy(image.reference, skopeo.ref(repo, "stable")).ok()

    inspected = skopeo.inspect(skopeo.ref(repo, "v1")).ok().json()
    assert inspected["Digest"] == image.manifest.digest
    assert inspected["Layers"] == [layer.digest for layer in image.layers]
    assert inspected["Architecture"] == "amd64" and inspected["Os"] == "linux"
    assert sorted(inspected["RepoTags"]) == ["stable", "v1"]
    raw = skopeo.inspect(skopeo.ref(repo, "stable"), raw=True).ok()
    assert raw.stdout.encode() == image.manifest.body

    tags = skopeo.list_tags(skopeo.ref(repo)).ok().json()
    assert sorted(tags["Tags"]) == ["stable", "v1"]
    assert tags["Repository"].endswith(repo)


def test_oras_pushes_an_annotated_artifact_and_pulls_it_back(registry, tmp_path):
    oras = Oras(tmp_path / "home", registry)
    (oras.home / "notes.txt").write_bytes(b"artifact payload\n" * 100)
    (oras.home / "data.bin").write_bytes(bytes(range(256)) * 40)
    repo = fresh_repo("oras")
    pushed = oras.push(repo, "v1", ["notes.txt:text/plain", "data.bin:application/octet-stream"],
                       annotations={"org.example.purpose": "oci client test"})
    assert pushed.status_code == 201, pushed.text

    manifest = oras.get_manifest(repo, "v1")
    assert manifest["annotations"]["org.example.purpose"] == "oci client test"
    assert [layer["annotations"]["org.opencontainers.image.title"] for layer in manifest["layers"]] == [
        "notes.txt", "data.bin"]
    answer = registry.client().manifest(repo, "v1")
    assert answer.status_code == 200 and answer.json() == manifest

    out = tmp_path / "pulled"
    files = oras.pull(repo, "v1", out)
    assert sorted(p.rsplit("/", 1)[-1] for p in files) == ["data.bin", "notes.txt"]
    assert (out / "notes.txt").read_bytes() == b"artifact payload\n" * 100
    assert (out / "data.bin").read_bytes() == bytes(range(256)) * 40


def test_oras_attaches_a_referrer_found_through_the_referrers_api(registry, tmp_path):
    """A signature-like artifact (its config's media type the artifact type) with ``subject`` the first
    artifact, pushed by oras (a registry MUST take it), then found by oras through ``GET
    /v2/<name>/referrers/<digest>`` (that part skips where the registry has no referrers API)."""
    oras = Oras(tmp_path / "home", registry)
    (oras.home / "payload.txt").write_text("signed content\n", encoding="utf-8")
    (oras.home / "signature.sig").write_bytes(b"\x30\x82" + bytes(64))
    (oras.home / "sig-config.json").write_text("{}", encoding="utf-8")
    repo = fresh_repo("oras-referrers")
    assert oras.push(repo, "v1", ["payload.txt:text/plain"]).status_code == 201
    subject = registry.client().manifest(repo, "v1")
    subject_descriptor = {"mediaType": MANIFEST, "digest": digest_of(subject.content), "size": len(subject.content)}

    pushed = oras.push(repo, "signature", ["signature.sig:application/vnd.example.signature.v1"],
                       annotations={"org.example.signed-by": "oci-tests"},
                       manifest_config="sig-config.json:%s" % SIGNATURE_CONFIG, subject=subject_descriptor)
    assert pushed.status_code == 201, pushed.text
    signature_digest = pushed.headers["Docker-Content-Digest"]
    signature = oras.get_manifest(repo, signature_digest)
    assert signature["subject"] == subject_descriptor
    assert signature["config"]["mediaType"] == SIGNATURE_CONFIG

    registry.require("referrers")
    assert pushed.headers.get("OCI-Subject") == subject_descriptor["digest"]
    answer = oras.referrers(repo, subject_descriptor["digest"])
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].split(";")[0] == INDEX
    descriptors = answer.json()["manifests"]
    assert [(d["digest"], d["artifactType"], d["annotations"]["org.example.signed-by"]) for d in descriptors] == [
        (signature_digest, SIGNATURE_CONFIG, "oci-tests")]
    filtered = oras.referrers(repo, subject_descriptor["digest"], artifact_type="application/vnd.example.other")
    assert filtered.status_code == 200 and filtered.json()["manifests"] == []


def test_docker_manifest_inspect(registry, tmp_path):
    """``docker manifest inspect --insecure`` (the CLI alone, no daemon) reads the manifest, with the
    credentials from a DOCKER_CONFIG directory."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI on PATH")
    image = build_image_layout(tmp_path / "source", tag="v1")
    skopeo = Skopeo(tmp_path / "home", registry)
    repo = fresh_repo("docker")
    skopeo.copy(image.reference, skopeo.ref(repo, "v1")).ok()

    docker = Docker(tmp_path / "docker-home", registry)
    by_tag = docker.manifest_inspect(repo, "v1").ok().json()
    assert by_tag == json.loads(image.manifest.body)
    by_digest = docker.manifest_inspect(repo, image.manifest.digest).ok().json()
    assert by_digest == by_tag
    verbose = docker.manifest_inspect(repo, "v1", verbose=True).ok().json()
    assert verbose["Descriptor"]["digest"] == image.manifest.digest
