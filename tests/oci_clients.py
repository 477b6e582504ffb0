"""The real OCI clients (skopeo, the oras Python SDK, the docker CLI) against a registry, and the images they move.

Not a test module: tests/test_oci_clients.py uses it (the ``registry`` fixture comes from tests/oci_registry.py).
Every client is given the registry's credentials its own way, so against a registry answering with a Bearer
challenge (Depot, or the reference behind its token realm) each goes through the token flow itself:

- ``Skopeo``: ``/usr/bin/skopeo`` (Debian's, 1.9) with ``--creds``/``--src-creds``/``--dest-creds`` and
  ``--tls-verify=false`` (plain HTTP on loopback), ``--insecure-policy`` (no /etc/containers/policy.json needed),
  in a throwaway HOME and XDG_RUNTIME_DIR with an auth file of its own, so no user configuration reaches it.
- ``Oras``: the oras Python SDK (``oras.provider.Registry``, insecure: plain HTTP), logged in with ``login``
  into a docker config file of its own (never ``~/.docker``), which its pushes and pulls read back.
- ``Docker``: the docker CLI's registry side, which needs no daemon (``docker manifest inspect --insecure``),
  with ``DOCKER_CONFIG`` a directory whose config.json holds the registry's ``auths`` entry.
- ``build_image_layout`` / ``read_layout``: an OCI image layout on disk (``oci-layout``, ``index.json``,
  ``blobs/sha256/...``): a config and layers of random tar.gz content, named by a tag
  (``org.opencontainers.image.ref.name``), as ``skopeo copy oci:<dir>:<tag>`` reads and writes them.
"""
from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tests.oci_registry import CONFIG, INDEX, LAYER, MANIFEST, Blob, Manifest, RegistryTarget, digest_of

SKOPEO = "/usr/bin/skopeo"
CLIENT_TIMEOUT = 300  # seconds a client may take before the test fails instead of hanging
REF_NAME = "org.opencontainers.image.ref.name"
TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class Ran:
    """A client's run: the command, exit code and output; ``ok()`` raises with all of them unless it worked."""
    argv: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    def ok(self) -> Ran:
        if self.returncode != 0:
            raise AssertionError("%s exited %d\nstdout:\n%s\nstderr:\n%s" % (" ".join(self.argv), self.returncode,
                                                                            self.stdout[-4000:], self.stderr[-4000:]))
        return self

    def json(self) -> Any:
        return json.loads(self.stdout)


def run(argv: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> Ran:
    done = subprocess.run(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=CLIENT_TIMEOUT)
    return Ran(list(argv), done.returncode, done.stdout, done.stderr)


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """PATH and the locale, and nothing else of this process: HOME and XDG_RUNTIME_DIR in ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    runtime = home / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime),
           "LANG": "C.UTF-8", "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    env.update(extra)
    return env


def credentials(registry: RegistryTarget) -> str | None:
    return "%s:%s" % (registry.username, registry.password) if registry.username is not None else None


# ------------------------------------------------------------------------------------------------ image layouts

def tar_gz_layer(files: dict[str, bytes]) -> tuple[Blob, str]:
    """A gzip-compressed tar of ``files`` (fixed times and owners): the layer blob and its diff_id (the digest
    of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size, member.mtime, member.mode = len(data), 499162500, 0o644
            archive.addfile(member, io.BytesIO(data))
    compressed = gzip.compress(raw.getvalue(), mtime=0)
    return Blob(compressed, LAYER), digest_of(raw.getvalue())


@dataclass(frozen=True)
class ImageLayout:
    path: Path
    tag: str
    manifest: Manifest
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def reference(self) -> str:
        """What skopeo calls it: ``oci:<dir>:<tag>``."""
        return "oci:%s:%s" % (self.path, self.tag)


def write_blob(layout: Path, data: bytes) -> str:
    digest = digest_of(data)
    target = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return digest


def build_image_layout(path: Path, tag: str = "v1", layer_count: int = 3) -> ImageLayout:
    """An OCI image layout at ``path``: ``layer_count`` layers of random files (tar.gz), a config whose rootfs
    names their diff_ids, the manifest, and index.json naming it by ``tag``."""
    path.mkdir(parents=True, exist_ok=True)
    layers, diff_ids = [], []
    for i in range(layer_count):
        layer, diff_id = tar_gz_layer({"layer-%d/data.bin" % i: os.urandom(2048 + 1024 * i),
                                       "layer-%d/README" % i: b"layer %d\n" % i})
        layers.append(layer)
        diff_ids.append(diff_id)
    config = Blob(json.dumps({"architecture": "amd64", "os": "linux", "created": "2026-11-28T00:00:00Z",
                              "config": {"Cmd": ["/bin/true"], "Labels": {"nonce": os.urandom(8).hex()}},
                              "rootfs": {"type": "layers", "diff_ids": diff_ids}}, sort_keys=True).encode(), CONFIG)
    document = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config.descriptor(),
                "layers": [layer.descriptor() for layer in layers]}
    manifest = Manifest(json.dumps(document, indent=2).encode(), MANIFEST, blobs=(config, *layers))
    for blob in (config, *layers):
        write_blob(path, blob.data)
    write_blob(path, manifest.body)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}), encoding="utf-8")
    index = {"schemaVersion": 2, "mediaType": INDEX,
             "manifests": [manifest.descriptor(annotations={REF_NAME: tag})]}
    (path / "index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return ImageLayout(path, tag, manifest, config, tuple(layers))


def read_layout(path: Path, tag: str) -> tuple[dict[str, Any], bytes]:
    """The descriptor index.json gives ``tag`` in the layout at ``path``, and the manifest's bytes (checked
    against its digest)."""
    index = json.loads((path / "index.json").read_text(encoding="utf-8"))
    found = [d for d in index["manifests"] if (d.get("annotations") or {}).get(REF_NAME) == tag]
    assert len(found) == 1, index
    algorithm, hex_digest = found[0]["digest"].split(":", 1)
    body = (path / "blobs" / algorithm / hex_digest).read_bytes()
    assert digest_of(body, algorithm) == found[0]["digest"]
    return found[0], body


def layout_blob(path: Path, digest: str) -> bytes:
    algorithm, hex_digest = digest.split(":", 1)
    return (path / "blobs" / algorithm / hex_digest).read_bytes()


# ------------------------------------------------------------------------------------------------ skopeo

class Skopeo:
    """skopeo in its own HOME, for one registry: ``docker://`` references name ``registry.host``."""

    def __init__(self, home: Path, registry: RegistryTarget):
        if not os.path.exists(SKOPEO):
            raise RuntimeError("%s is missing: `bash scripts/install.sh` installs Debian's skopeo" % SKOPEO)
        self.registry = registry
        self.env = isolated_env(home)
        self.authfile = home / "auth.json"
        self.authfile.write_text('{"auths": {}}', encoding="utf-8")

    def ref(self, repository: str, tag: str | None = None) -> str:
        return "docker://%s/%s%s" % (self.registry.host, repository, ":" + tag if tag else "")

    def _run(self, *args: str) -> Ran:
        return run([SKOPEO, "--insecure-policy", *args], self.env)

    def _creds(self, option: str) -> list[str]:
        creds = credentials(self.registry)
        return [option, creds] if creds else []

    def copy(self, source: str, destination: str) -> Ran:
        """``skopeo copy``: to the registry with ``--dest-creds``, from it with ``--src-creds`` (whichever
        side is a ``docker://`` reference)."""
        args = ["copy", "--authfile", str(self.authfile)]
        if source.startswith("docker://"):
            args += ["--src-tls-verify=false", *self._creds("--src-creds")]
        if destination.startswith("docker://"):
            args += ["--dest-tls-verify=false", *self._creds("--dest-creds")]
        return self._run(*args, source, destination)

    def inspect(self, reference: str, raw: bool = False) -> Ran:
        return self._run("inspect", "--authfile", str(self.authfile), "--tls-verify=false", *self._creds("--creds"),
                         *(["--raw"] if raw else []), reference)

    def list_tags(self, reference: str) -> Ran:
        return self._run("list-tags", "--authfile", str(self.authfile), "--tls-verify=false",
                         *self._creds("--creds"), reference)


# ------------------------------------------------------------------------------------------------ docker CLI

class Docker:
    """The docker CLI (no daemon: ``docker manifest inspect`` talks to the registry itself) with ``DOCKER_CONFIG``
    a directory of its own whose config.json holds the registry's credentials."""

    def __init__(self, home: Path, registry: RegistryTarget, binary: str | None = None):
        self.binary = binary or shutil.which("docker")
        if self.binary is None:
            raise RuntimeError("no docker CLI on PATH")
        self.registry = registry
        self.config_dir = home / "docker-config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        auths = {}
        creds = credentials(registry)
        if creds:
            auths[registry.host] = {"auth": base64.b64encode(creds.encode()).decode()}
        (self.config_dir / "config.json").write_text(json.dumps({"auths": auths}), encoding="utf-8")
        self.env = isolated_env(home, DOCKER_CONFIG=str(self.config_dir), DOCKER_CLI_HINTS="false")

    def manifest_inspect(self, repository: str, reference: str, verbose: bool = False) -> Ran:
        separator = "@" if ":" in reference else ":"
        return run([self.binary, "manifest", "inspect", "--insecure", *(["--verbose"] if verbose else []),
                    "%s/%s%s%s" % (self.registry.host, repository, separator, reference)], self.env)


# ------------------------------------------------------------------------------------------------ oras SDK

class Oras:
    """The oras Python SDK on one registry over plain HTTP, logged in (``login``) into ``home``'s docker config
    file, which each push and pull is told to read. Paths it pushes are relative to ``home`` (oras-py refuses
    files outside the working directory unless told otherwise), so calls run with ``home`` as cwd."""

    def __init__(self, home: Path, registry: RegistryTarget):
        import oras.provider
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self.config_path = home / "oras-docker-config.json"
        self.client = oras.provider.Registry(hostname=registry.host, insecure=True)
        if registry.username is not None:
            answer = self.client.login(registry.username, registry.password or "", hostname=registry.host,
                                       config_path=str(self.config_path))
            assert "Succeeded" in json.dumps(answer), answer

    def target(self, repository: str, reference: str) -> str:
        separator = "@" if ":" in reference else ":"
        return "%s/%s%s%s" % (self.registry.host, repository, separator, reference)

    def _config(self) -> str | None:
        return str(self.config_path) if self.config_path.exists() else None

    def push(self, repository: str, reference: str, files: Sequence[str], *,
             annotations: dict[str, str] | None = None, manifest_config: str | None = None,
             subject: Manifest | dict[str, Any] | None = None) -> Any:
        """``oras push`` of ``files`` (``path`` or ``path:media/type``, relative to ``home``): the manifest
        PUT's response."""
        import oras.oci
        oci_subject = None
        if subject is not None:
            descriptor = subject.descriptor() if isinstance(subject, Manifest) else subject
            oci_subject = oras.oci.Subject(mediaType=descriptor["mediaType"], digest=descriptor["digest"],
                                           size=descriptor["size"])
        with contextlib.chdir(self.home):
            return self.client.push(self.target(repository, reference), config_path=self._config(),
                                    files=list(files), manifest_annotations=annotations,
                                    manifest_config=manifest_config, subject=oci_subject, quiet=True)

    def pull(self, repository: str, reference: str, outdir: Path) -> list[str]:
        with contextlib.chdir(self.home):
            pulled: list[str] = self.client.pull(self.target(repository, reference), config_path=self._config(),
                                                 outdir=str(outdir))
            return pulled

    def get_manifest(self, repository: str, reference: str) -> dict[str, Any]:
        manifest: dict[str, Any] = self.client.get_manifest(self.target(repository, reference))
        return manifest

    def referrers(self, repository: str, digest: str, artifact_type: str | None = None) -> Any:
        """GET /v2/<name>/referrers/<digest> through oras's own session and authentication (the SDK has no
        discover call of its own)."""
        url = "http://%s/v2/%s/referrers/%s" % (self.registry.host, repository, digest)
        if artifact_type:
            url += "?artifactType=" + artifact_type
        return self.client.do_request(url, "GET", headers={"Accept": INDEX})

