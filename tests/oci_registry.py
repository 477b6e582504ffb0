"""An OCI registry for tests, a client for the OCI Distribution Spec's wire protocol, and what it moves.

Not a test module: tests/test_oci_spec.py and tests/test_oci_clients.py use it.

- ``ReferenceRegistry``: the reference implementation (Debian's ``docker-registry``, distribution 2.8) on a free
  loopback port over filesystem storage in a temporary directory, deletes enabled, ready once ``/v2/`` answers.
  Its ``auth`` is ``None``, ``"htpasswd"`` (HTTP Basic) or ``"token"`` (the Bearer token flow, with a
  ``TokenServer`` here as its realm: the flow Depot uses).
- ``TokenServer``: a token realm for distribution: it checks HTTP Basic credentials and answers ``{"token",
  "access_token"}``, a JWT signed with a self-signed certificate the registry trusts (``rootcertbundle``),
  granting the scopes asked for.
- ``OciClient``: requests on one registry, with authentication handled as the spec's clients do it: a request
  answered 401 is retried once with what its ``WWW-Authenticate`` asks for (``Basic``: the credentials;
  ``Bearer realm,service,scope``: a token fetched from the realm, with Basic credentials when the client has
  them, kept per scope). Helpers push blobs by each upload method and manifests.
- ``Blob``, ``Manifest``, ``image_manifest``, ``image_index``, ``random_blob``: content and its descriptors.
- ``RegistryTarget`` and the ``registry`` fixture: one registry under test, its URL, credentials and what it
  lacks (each gap with the reason a test skips for), parametrized by implementation (``REGISTRY_STARTERS``).
"""
from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import os
import re
import secrets
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from tests.pypi_clients import free_port, stop_process

DOCKER_REGISTRY = "/usr/bin/docker-registry"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
ERROR_CODES = frozenset({  # the spec's table (API, Error Codes): a JSON error's code MUST be one of them
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED",
    "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS"})
TIMEOUT = 60


# ------------------------------------------------------------------------------------------------ content

def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return "%s:%s" % (algorithm, hashlib.new(algorithm, data).hexdigest())


def random_blob(size: int = 1024) -> bytes:
    return os.urandom(size)


def fresh_repo(label: str, namespace: str = "conformance") -> str:
    """A repository name of its own (two segments, lowercase): ``conformance/<label>-<random>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40] or "repo"
    return "%s/%s-%s" % (namespace, slug, uuid.uuid4().hex[:10])


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str = LAYER
    algorithm: str = "sha256"

    @property
    def digest(self) -> str:
        return digest_of(self.data, self.algorithm)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return dict({"mediaType": self.media_type, "digest": self.digest, "size": self.size}, **extra)


@dataclass(frozen=True)
class Manifest:
    """A manifest's exact bytes (what is pushed and must come back), its media type and what it needs pushed
    first: ``blobs`` (config, layers) and ``children`` (an index's manifests)."""
    body: bytes
    media_type: str
    blobs: tuple[Blob, ...] = ()
    children: tuple["Manifest", ...] = ()
    algorithm: str = "sha256"

    @property
    def digest(self) -> str:
        return digest_of(self.body, self.algorithm)

    @property
    def size(self) -> int:
        return len(self.body)

    @property
    def document(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return dict({"mediaType": self.media_type, "digest": self.digest, "size": self.size}, **extra)


def config_blob(**extra: Any) -> Blob:
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
              "config": {"Labels": {"nonce": uuid.uuid4().hex}}}
    config.update(extra)
    return Blob(json.dumps(config, sort_keys=True).encode(), CONFIG)


def image_manifest(config: Blob | None = None, layers: Sequence[Blob] | None = None, *,
                   subject: Manifest | Mapping[str, Any] | None = None, artifact_type: str | None = None,
                   annotations: Mapping[str, str] | None = None, algorithm: str = "sha256") -> Manifest:
    """An OCI image manifest (random config and one random layer unless given); ``subject`` a manifest or a
    descriptor."""
    config = config if config is not None else config_blob()
    layers = list(layers) if layers is not None else [Blob(random_blob(512))]
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": MANIFEST}
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    document["config"] = config.descriptor()
    document["layers"] = [layer.descriptor() for layer in layers]
    if subject is not None:
        document["subject"] = subject.descriptor() if isinstance(subject, Manifest) else dict(subject)
    if annotations:
        document["annotations"] = dict(annotations)
    return Manifest(json.dumps(document, indent=2).encode(), MANIFEST, blobs=(config, *layers),
                    algorithm=algorithm)


def artifact_manifest(artifact_type: str, subject: Manifest | Mapping[str, Any] | None = None,
                      annotations: Mapping[str, str] | None = None, payload: bytes | None = None) -> Manifest:
    """An artifact as the image spec (v1.1) describes them: an image manifest with ``artifactType``, the empty
    config and one layer of payload."""
    empty = Blob(EMPTY_JSON, EMPTY)
    layer = Blob(payload if payload is not None else random_blob(256), "application/octet-stream")
    return image_manifest(empty, [layer], subject=subject, artifact_type=artifact_type, annotations=annotations)


def image_index(manifests: Sequence[Manifest], *, subject: Manifest | None = None, artifact_type: str | None = None,
                annotations: Mapping[str, str] | None = None) -> Manifest:
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": INDEX}
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    document["manifests"] = [m.descriptor(platform={"architecture": "amd64", "os": "linux"}) for m in manifests]
    if subject is not None:
        document["subject"] = subject.descriptor()
    if annotations:
        document["annotations"] = dict(annotations)
    return Manifest(json.dumps(document, indent=2).encode(), INDEX, children=tuple(manifests))


# ------------------------------------------------------------------------------------------------ the client

_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate``'s first challenge: its scheme (lower case) and parameters."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def _repository_of(path: str) -> str:
    """The repository a /v2/ path names ('' for /v2/ itself): what a Bearer scope is kept for."""
    match = re.match(r"/v2/(.+?)/(?:blobs|manifests|tags|referrers)(?:/|$)", path)
    return match.group(1) if match else ""


class OciClient:
    """One user of one registry over plain requests. ``request`` takes a path (``/v2/...``) or a URL (a
    ``Location`` as the registry gave it, absolute or relative) and answers the final response; a 401 is retried
    once per the challenge. Bearer tokens are kept per scope, and each (repository, kind of request) remembers
    the scope its challenge named, so later requests of that kind send the token at once."""

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None,
                 timeout: float = TIMEOUT):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self.session = requests.Session()
        self.tokens: dict[str, str] = {}  # scope -> token
        self.scopes: dict[tuple[str, str], str] = {}  # (repository, method kind) -> the scope last challenged for
        self.basic = False  # the registry asked for Basic: send it on every request from now on
        self.token_requests = 0
        self.challenges: list[str] = []

    # -- plumbing

    def url(self, path_or_url: str) -> str:
        return urljoin(self.base_url + "/", path_or_url)

    def _basic_header(self) -> str:
        pair = "%s:%s" % (self.username or "", self.password or "")
        return "Basic " + base64.b64encode(pair.encode()).decode()

    @staticmethod
    def _kind(method: str) -> str:
        return {"GET": "read", "HEAD": "read", "DELETE": "delete"}.get(method.upper(), "write")

    def _authorization(self, key: tuple[str, str]) -> str | None:
        if key in self.scopes and self.scopes[key] in self.tokens:
            return "Bearer " + self.tokens[self.scopes[key]]
        if self.basic and self.username is not None:
            return self._basic_header()
        return None

    def fetch_token(self, params: Mapping[str, str]) -> str:
        realm = urljoin(self.base_url + "/", params["realm"])  # absolute, or relative to the registry
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        for scope in (params.get("scope") or "").split():
            query.append(("scope", scope))
        headers = {"Authorization": self._basic_header()} if self.username is not None else {}
        self.token_requests += 1
        answer = self.session.get(realm, params=query, headers=headers, timeout=self.timeout)
        if answer.status_code != 200:
            raise PermissionError("token request to %s answered %d: %s" % (realm, answer.status_code,
                                                                           answer.text[:500]))
        body = answer.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise PermissionError("token answer from %s names no token: %s" % (realm, answer.text[:500]))
        return str(token)

    def request(self, method: str, path_or_url: str, *, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, data: bytes | None = None,
                allow_redirects: bool | None = None) -> requests.Response:
        url = self.url(path_or_url)
        key = (_repository_of(urlsplit(url).path), self._kind(method))
        if allow_redirects is None:
            allow_redirects = method.upper() in ("GET", "HEAD")
        response = None
        for attempt in range(2):
            sent = dict(headers or {})
            authorization = self._authorization(key)
            if authorization and "Authorization" not in sent:
                sent["Authorization"] = authorization
            response = self.session.request(method, url, params=params, headers=sent, data=data,
                                            allow_redirects=allow_redirects, timeout=self.timeout)
            if response.status_code != 401 or attempt == 1 or "Authorization" in (headers or {}):
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            self.challenges.append(challenge)
            scheme, challenge_params = parse_challenge(challenge)
            if scheme == "basic":
                if self.username is None or (self.basic and authorization):
                    return response  # no credentials to give, or these were refused
                self.basic = True
            elif scheme == "bearer" and "realm" in challenge_params:
                scope = challenge_params.get("scope", "")
                if scope in self.tokens and authorization == "Bearer " + self.tokens[scope]:
                    del self.tokens[scope]  # refused (expired, revoked): fetch a new one
                if scope not in self.tokens:
                    self.tokens[scope] = self.fetch_token(challenge_params)
                self.scopes[key] = scope
            else:
                return response
        assert response is not None
        return response

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def head(self, path: str, **kw: Any) -> requests.Response:
        return self.request("HEAD", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def ping(self) -> requests.Response:
        return self.get("/v2/")

    # -- blobs

    def start_upload(self, repo: str, **params: str) -> requests.Response:
        """POST /v2/<name>/blobs/uploads/ with an empty body (Content-Length: 0): a session (202, Location)."""
        return self.request("POST", "/v2/%s/blobs/uploads/" % repo, params=params or None, data=b"",
                            headers={"Content-Length": "0"})

    def post_blob(self, repo: str, data: bytes, digest: str | None = None) -> requests.Response:
        """The single POST: ``POST /v2/<name>/blobs/uploads/?digest=<digest>`` with the bytes."""
        return self.request("POST", "/v2/%s/blobs/uploads/" % repo, params={"digest": digest or digest_of(data)},
                            data=data, headers={"Content-Type": "application/octet-stream"})

    def put_upload(self, location: str, data: bytes, digest: str, content_range: str | None = None
                   ) -> requests.Response:
        headers = {"Content-Type": "application/octet-stream"}
        if content_range is not None:
            headers["Content-Range"] = content_range
        return self.request("PUT", location, params={"digest": digest}, data=data, headers=headers)

    def patch_upload(self, location: str, chunk: bytes, start: int | None = None) -> requests.Response:
        """One chunk; ``start`` its offset (Content-Range ``start-end``, inclusive), None sends no range (a
        streamed PATCH)."""
        headers = {"Content-Type": "application/octet-stream"}
        if start is not None:
            headers["Content-Range"] = "%d-%d" % (start, start + len(chunk) - 1)
        return self.request("PATCH", location, data=chunk, headers=headers)

    def push_blob_post_put(self, repo: str, data: bytes, digest: str | None = None) -> requests.Response:
        """POST then PUT: the final PUT's response."""
        started = self.start_upload(repo)
        assert started.status_code == 202, describe(started)
        return self.put_upload(started.headers["Location"], data, digest or digest_of(data))

    def push_blob_monolithic(self, repo: str, data: bytes, digest: str | None = None) -> requests.Response:
        """The single POST, going on with a PUT when the registry answers 202 (it does not take single POSTs,
        which the spec allows): the final response."""
        answer = self.post_blob(repo, data, digest)
        if answer.status_code == 202:
            return self.put_upload(answer.headers["Location"], data, digest or digest_of(data))
        return answer

    def push_blob_chunked(self, repo: str, data: bytes, chunk_size: int, digest: str | None = None,
                          last_in_put: bool = False) -> requests.Response:
        """POST, PATCH per chunk (each at the Location the previous answer gave), PUT ?digest=; the last chunk in
        the PUT when ``last_in_put``. The final response."""
        answer = self.start_upload(repo)
        assert answer.status_code == 202, describe(answer)
        chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
        final = chunks.pop() if last_in_put else b""
        offset = 0
        for chunk in chunks:
            answer = self.patch_upload(answer.headers["Location"], chunk, offset)
            assert answer.status_code == 202, describe(answer)
            offset += len(chunk)
        content_range = "%d-%d" % (offset, offset + len(final) - 1) if final else None
        return self.put_upload(answer.headers["Location"], final, digest or digest_of(data), content_range)

    def push_blob(self, repo: str, blob: Blob | bytes) -> str:
        data = blob.data if isinstance(blob, Blob) else blob
        digest = blob.digest if isinstance(blob, Blob) else digest_of(data)
        answer = self.push_blob_post_put(repo, data, digest)
        assert answer.status_code == 201, describe(answer)
        return digest

    def blob(self, repo: str, digest: str, **kw: Any) -> requests.Response:
        return self.get("/v2/%s/blobs/%s" % (repo, digest), **kw)

    # -- manifests

    def put_manifest(self, repo: str, reference: str, manifest: Manifest,
                     content_type: str | None = None) -> requests.Response:
        return self.request("PUT", "/v2/%s/manifests/%s" % (repo, reference), data=manifest.body,
                            headers={"Content-Type": content_type or manifest.media_type})

    def push(self, repo: str, manifest: Manifest, reference: str | None = None) -> requests.Response:
        """Everything ``manifest`` needs (its blobs, an index's manifests), then the manifest itself under
        ``reference`` (its digest by default): the manifest PUT's response, asserted 201."""
        for blob in manifest.blobs:
            self.push_blob(repo, blob)
        for child in manifest.children:
            self.push(repo, child)
        answer = self.put_manifest(repo, reference or manifest.digest, manifest)
        assert answer.status_code == 201, describe(answer)
        return answer

    def manifest(self, repo: str, reference: str, accept: Sequence[str] = (MANIFEST, INDEX), **kw: Any
                 ) -> requests.Response:
        return self.get("/v2/%s/manifests/%s" % (repo, reference), headers={"Accept": ", ".join(accept)}, **kw)

    def tags(self, repo: str, **params: Any) -> requests.Response:
        return self.get("/v2/%s/tags/list" % repo, params=params or None)

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> requests.Response:
        params = {"artifactType": artifact_type} if artifact_type is not None else None
        return self.get("/v2/%s/referrers/%s" % (repo, digest), params=params)


def describe(response: requests.Response) -> str:
    """A response in one message, for assertions."""
    return "%s %s -> %d %s\n%s" % (response.request.method, response.request.url, response.status_code,
                                   dict(response.headers), response.text[:2000])


def error_codes(response: requests.Response) -> list[str]:
    """The codes of a JSON error body, checked against the spec's format: ``{"errors": [{"code", "message",
    "detail"}]}``, each code one of the spec's table, ``message`` a string when present."""
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"], describe(response)
    codes = []
    for error in body["errors"]:
        assert isinstance(error, dict) and isinstance(error.get("code"), str), describe(response)
        assert re.fullmatch(r"[A-Z_]+", error["code"]) and error["code"] in ERROR_CODES, describe(response)
        assert "message" not in error or isinstance(error["message"], str), describe(response)
        codes.append(error["code"])
    return codes


def is_json(response: requests.Response) -> bool:
    media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


# ------------------------------------------------------------------------------------------------ reference

class TokenServer:
    """A Bearer token realm for distribution's ``auth.token``: ``GET /token?service=&scope=...`` with HTTP Basic
    credentials (refused otherwise: 401) answers a JWT (RS256, its certificate in the ``x5c`` header).

    ``grant``: ``"requested"`` grants exactly the actions each scope asks for (Docker Hub's way: a client must
    fetch a new token when it needs more); ``"user"`` grants every action (pull, push, delete) on each
    repository a scope names, whatever it asked for (GHCR's way, where a token is not bound to the actions
    asked). The oras Python SDK (0.2.x) keeps the first token it got for everything after it, so its push,
    which asks HEAD (pull) before POST (push), works only with the second. ``requests`` counts the tokens
    issued."""

    def __init__(self, directory: Path, username: str, password: str, service: str = "oci-tests",
                 issuer: str = "oci-tests-issuer", grant: str = "requested"):
        assert grant in ("requested", "user"), grant
        self.grant = grant
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.username, self.password, self.service, self.issuer = username, password, service, issuer
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "oci-tests token signer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_file = directory / "token-signer.pem"
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.x5c = base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urlsplit(self.path)
                if url.path != "/token":
                    return self._answer(404, {"error": "not found"})
                expected = "Basic " + base64.b64encode(("%s:%s" % (server.username, server.password))
                                                       .encode()).decode()
                if self.headers.get("Authorization") != expected:
                    return self._answer(401, {"error": "bad credentials"})
                query = parse_qs(url.query)
                token = server.issue(query.get("scope", []), query.get("service", [""])[0])
                server.requests += 1
                self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/token" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def issue(self, scopes: Sequence[str], service: str) -> str:
        import jwt
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a]
            if self.grant == "user" and kind == "repository":
                granted = ["pull", "push", "delete"]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": self.username, "aud": service or self.service, "iat": now,
                  "nbf": now - 10, "exp": now + 300, "jti": secrets.token_hex(8), "access": access}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": [self.x5c]})

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


REGISTRY_CONFIG = """\
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
{auth}"""


class ReferenceRegistry:
    """distribution (``/usr/bin/docker-registry``) on a free loopback port over a new filesystem storage in
    ``directory`` (a temporary directory when None), deletes enabled. ``auth``: None (anyone does anything),
    ``"htpasswd"`` (HTTP Basic with ``username``/``password``) or ``"token"`` (Bearer tokens from a
    ``TokenServer`` that takes those credentials and grants as ``grant`` says). A context manager; ready when
    ``/v2/`` answers."""

    def __init__(self, directory: Path | str | None = None, auth: str | None = None,
                 username: str = "oci-tester", password: str = "oci tests password 1", grant: str = "requested"):
        if not os.path.exists(DOCKER_REGISTRY):
            raise RuntimeError("%s is missing: `bash scripts/install.sh` installs Debian's docker-registry"
                               % DOCKER_REGISTRY)
        self._tempdir = tempfile.TemporaryDirectory(prefix="oci-reference-") if directory is None else None
        self.directory = Path(directory if directory is not None else self._tempdir.name)  # type: ignore[union-attr]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.grant = grant
        self.username = username if auth else None
        self.password = password if auth else None
        self.token_server: TokenServer | None = None
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.host = "127.0.0.1:%d" % self.port
        self.config = self.directory / "config.yml"
        self.config.write_text(REGISTRY_CONFIG.format(storage=self.directory / "storage", port=self.port,
                                                      secret=secrets.token_hex(16), auth=self._auth_config()),
                               encoding="utf-8")
        self.log_path = self.directory / "registry.log"
        self.log = open(self.log_path, "w+", encoding="utf-8")
        self.proc = subprocess.Popen([DOCKER_REGISTRY, "serve", str(self.config)], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                          "HOME": str(self.directory)})
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _auth_config(self) -> str:
        if self.auth is None:
            return ""
        assert self.username is not None and self.password is not None
        if self.auth == "htpasswd":
            import bcrypt
            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(4)).decode()
            htpasswd = self.directory / "htpasswd"
            htpasswd.write_text("%s:%s\n" % (self.username, hashed), encoding="utf-8")
            return "auth:\n  htpasswd:\n    realm: oci-tests\n    path: %s\n" % htpasswd
        if self.auth == "token":
            self.token_server = TokenServer(self.directory, self.username, self.password, grant=self.grant)
            return ("auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n"
                    % (self.token_server.url, self.token_server.service, self.token_server.issuer,
                       self.token_server.cert_file))
        raise ValueError("auth is None, 'htpasswd' or 'token', not %r" % (self.auth,))

    def _wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                answer = requests.get(self.url + "/v2/", timeout=5)
                if answer.status_code in (200, 401):
                    return
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not start (exit code %s):\n%s"
                                   % (self.proc.poll(), self.output[-4000:]))
            time.sleep(0.05)

    @property
    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def client(self) -> OciClient:
        return OciClient(self.url, self.username, self.password)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()
        if self.token_server is not None:
            self.token_server.stop()
        if self._tempdir is not None:
            self._tempdir.cleanup()

    def __enter__(self) -> ReferenceRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------ under test

@dataclass
class RegistryTarget:
    """One registry the tests run against: its URL, credentials and the features it lacks (``gaps``: feature ->
    why), each a test's reason to skip, never to pass. ``host`` is ``host:port`` as the clients name it."""
    name: str
    url: str
    username: str | None = None
    password: str | None = None
    gaps: Mapping[str, str] = field(default_factory=dict)

    FEATURES = ("referrers", "referrers_filter", "tags_pagination", "tags_order", "tags_list_untagged",
                "chunk_order", "sha512_blobs", "sha512_manifests", "tag_delete", "single_post_upload")

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    def has(self, feature: str) -> bool:
        assert feature in self.FEATURES, feature
        return feature not in self.gaps

    def require(self, feature: str) -> None:
        """Skip the calling test, with the reason, when the registry lacks ``feature``."""
        if not self.has(feature):
            pytest.skip("%s lacks %s: %s" % (self.name, feature, self.gaps[feature]))

    @property
    def referrers(self) -> bool:
        return self.has("referrers")

    def client(self) -> OciClient:
        return OciClient(self.url, self.username, self.password)


DISTRIBUTION_GAPS = {
    "referrers": "distribution 2.8 has no referrers API (GET /v2/<name>/referrers/<digest> is 404) and sends no "
                 "OCI-Subject header: both came with distribution 3",
    "referrers_filter": "distribution 2.8 has no referrers API to filter",
    "tags_pagination": "distribution 2.8 answers the whole tag list whatever n and last say (no Link header); "
                       "tag pagination came with distribution 3",
    "tags_order": "distribution 2.8 lists tags in the storage directory's order, not in lexical order",
    "chunk_order": "distribution 2.8 ignores a PATCH's Content-Range and appends every chunk: an out-of-order "
                   "chunk is 202, not 416",
    "sha512_manifests": "distribution 2.8 digests every manifest with sha256: a PUT to /manifests/sha512:... is "
                        "400 DIGEST_INVALID",
    "tag_delete": "distribution 2.8 deletes manifests by digest only: DELETE /manifests/<tag> is refused (the "
                  "spec's answer for a registry that disables tag deletion)",
    "tags_list_untagged": "distribution 2.8 answers 404 NAME_UNKNOWN for the tags of a repository that has "
                          "manifests but no tag, where the spec says 200 with an empty list",
    "single_post_upload": "distribution 2.8 does not take a blob in a single POST: it answers 202 and a session "
                          "(the spec's fallback)",
}


@contextlib.contextmanager
def start_distribution(directory: Path) -> Iterator[RegistryTarget]:
    """The reference registry behind the Bearer token flow (the flow Depot answers with), its realm granting
    each repository's every action (``TokenServer``'s ``"user"``: the oras SDK needs it), as a target."""
    with ReferenceRegistry(directory, auth="token", grant="user") as reference:
        yield RegistryTarget("distribution", reference.url, reference.username, reference.password,
                             DISTRIBUTION_GAPS)


DEPOT_ADMIN_PASSWORD = "oci tests admin password"
DEPOT_USER, DEPOT_PASSWORD = "ociuser", "oci user password 42"


@contextlib.contextmanager
def start_depot(directory: Path) -> Iterator[RegistryTarget]:
    """Depot (`python -m app serve`, the project's schema and its OCI pack at /v2/) with a user that may push
    and delete everywhere: the clients reach it through its Bearer token flow."""
    from tests.conftest import ServerProcess
    from tests.pypi_clients import DepotAccounts
    server = ServerProcess(directory / "data", env={"DEPOT_ADMIN_PASSWORD": DEPOT_ADMIN_PASSWORD})
    try:
        DepotAccounts(server.url, DEPOT_ADMIN_PASSWORD).post("/admin/users", {
            "username": DEPOT_USER, "password": DEPOT_PASSWORD, "scopes": ["read", "write", "admin"]})
        yield RegistryTarget("depot", server.url, DEPOT_USER, DEPOT_PASSWORD, {})
    finally:
        server.stop()


REGISTRY_STARTERS: dict[str, Callable[[Path], ContextManager[RegistryTarget]]] = {
    "distribution": start_distribution,
    "depot": start_depot,
}


@pytest.fixture(scope="module", params=list(REGISTRY_STARTERS))
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryTarget]:
    """The registry under test, once per module and implementation (``REGISTRY_STARTERS``)."""
    directory = tmp_path_factory.mktemp("oci-%s" % request.param)
    with REGISTRY_STARTERS[request.param](directory) as target:
        yield target
