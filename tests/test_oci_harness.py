"""tests/oci_registry.py's own checks, against the reference registry: ``OciClient`` authenticates as each
challenge asks (none, Basic, Bearer tokens kept per scope from a realm that grants only what is asked), and
refused credentials fail loudly. What the OCI tests rely on before they judge any registry."""
from __future__ import annotations

import pytest
import requests

from tests.oci_registry import OciClient, ReferenceRegistry, fresh_repo, image_manifest


def round_trip(client: OciClient) -> None:
    repo = fresh_repo("harness")
    manifest = image_manifest()
    client.push(repo, manifest, "v1")
    answer = client.manifest(repo, "v1")
    assert answer.status_code == 200 and answer.content == manifest.body
    assert client.blob(repo, manifest.blobs[1].digest).content == manifest.blobs[1].data
    assert client.delete("/v2/%s/manifests/%s" % (repo, manifest.digest)).status_code == 202


def test_client_without_credentials_on_an_open_registry(tmp_path):
    with ReferenceRegistry(tmp_path / "open") as reference:
        client = reference.client()
        round_trip(client)
        assert client.challenges == [] and client.token_requests == 0


def test_client_answers_a_basic_challenge_with_its_credentials(tmp_path):
    with ReferenceRegistry(tmp_path / "basic", auth="htpasswd") as reference:
        assert requests.get(reference.url + "/v2/", timeout=60).status_code == 401
        client = reference.client()
        round_trip(client)
        assert client.basic and len(client.challenges) == 1  # Basic once asked for, sent on every request
        assert client.challenges[0].startswith("Basic ")
        wrong = OciClient(reference.url, reference.username, "not the password")
        assert wrong.ping().status_code == 401


def test_client_fetches_a_bearer_token_per_scope_and_keeps_it(tmp_path):
    """With a realm granting exactly the actions asked for, a push (pull,push) and a read (pull) of one
    repository need two tokens, and the next push and read reuse them."""
    with ReferenceRegistry(tmp_path / "token", auth="token", grant="requested") as reference:
        client = reference.client()
        repo = fresh_repo("harness")
        first, second = image_manifest(), image_manifest()
        client.push(repo, first, "one")
        assert client.manifest(repo, "one").content == first.body
        issued = client.token_requests
        assert issued == reference.token_server.requests
        client.push(repo, second, "two")
        assert client.manifest(repo, "two").content == second.body
        assert client.token_requests == issued
        actions = {frozenset(scope.rsplit(":", 1)[1].split(",")) for scope in client.tokens
                   if scope.startswith("repository:%s:" % repo)}  # distribution names them in either order
        assert actions == {frozenset({"pull"}), frozenset({"pull", "push"})}, client.tokens
        other = fresh_repo("harness-other")
        client.push(other, image_manifest(), "v1")
        assert client.token_requests > issued  # another repository, other scopes


def test_client_with_refused_credentials_fails_at_the_realm(tmp_path):
    with ReferenceRegistry(tmp_path / "token", auth="token") as reference:
        client = OciClient(reference.url, reference.username, "not the password")
        with pytest.raises(PermissionError, match="401"):
            client.ping()
