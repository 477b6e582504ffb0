"""The real Python packaging clients against a package index, and the files they move.

Not a test module: tests/test_pypi_pack.py (Depot's PyPI route pack), tests/test_pypi_clients.py (the same
harness against pypiserver) and bench/bench_pypi.py use it.

- Builders: ``build_wheel`` and ``build_sdist`` make valid distributions in a directory, byte for byte the same
  for the same arguments (fixed timestamps, owners and payload), so tests can know their digests.
- Clients: ``twine_upload``, ``pip_install``, ``pip_download`` and ``uv_pip_install`` run twine, pip and uv as
  subprocesses, as a user would, with nothing of this machine's configuration (pip.conf's extra indexes,
  PIP_*/UV_* variables, keyrings, caches) and nothing of PyPI: only the index they are given. Each returns the
  completed process, so a test asserts on its return code and output.
- ``legacy_upload``: the upload twine makes (the legacy API's multipart form), streamed from the file, for plain
  HTTP checks and for loading a benchmark's index quickly.
- ``PypiServer``: pypiserver on a free port over a directory, the reference the harness is proven against.
- ``DepotAccounts``: on a running Depot, the users, API tokens and grants a PyPI test needs.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import random
import re
import secrets
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

import requests

# what pip sends when asking for a simple page: it takes JSON (PEP 691) when offered
PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
SIMPLE_HTML = "application/vnd.pypi.simple.v1+html"
TOKEN_USER = "__token__"  # the user name pip, uv and twine send beside an API token
CLIENT_TIMEOUT = 600  # seconds a client subprocess may take before the test fails instead of hanging
NETWORK_TIMEOUT = "60"  # seconds pip waits on one socket operation
FIXED_TIME = (2020, 2, 2, 0, 0, 0)  # every member's timestamp: the same bytes on every run
FIXED_EPOCH = 1580601600  # FIXED_TIME as a Unix time, for tar members
CHUNK = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def normalize(name: str) -> str:
    """A project name as indexes compare and serve it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def escaped(name: str) -> str:
    """A project name as distribution filenames spell it (the binary distribution format's escaping)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- the files

@dataclass(frozen=True)
class Dist:
    """A distribution file built here, with what an index should say about it."""
    path: Path
    name: str
    version: str
    filetype: str  # "bdist_wheel" or "sdist", as the legacy upload API names them
    pyversion: str  # "py3" or "source"
    metadata: bytes  # the core metadata (a wheel's METADATA, an sdist's PKG-INFO): what PEP 658 serves
    summary: str = ""
    requires_python: str | None = None
    requires: tuple[str, ...] = ()
    sha256: str = ""
    size: int = 0

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def project(self) -> str:
        return normalize(self.name)

    @property
    def metadata_sha256(self) -> str:
        return sha256_hex(self.metadata)

    def requirement(self) -> str:
        """The pinned, hash-checked line a requirements file gives this file."""
        return "%s==%s --hash=sha256:%s" % (self.name, self.version, self.sha256)


def core_metadata(name: str, version: str, summary: str, requires_python: str | None,
                  requires: Sequence[str]) -> bytes:
    lines = ["Metadata-Version: 2.1", "Name: " + name, "Version: " + version, "Summary: " + summary]
    if requires_python:
        lines.append("Requires-Python: " + requires_python)
    lines += ["Requires-Dist: " + requirement for requirement in requires]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def payload_chunks(seed: str, size: int) -> Iterable[bytes]:
    """``size`` bytes that look random (so no compression shrinks them) and are the same for the same seed."""
    generator = random.Random(seed)
    while size > 0:
        step = min(size, CHUNK)
        yield generator.randbytes(step)
        size -= step


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def zip_member(path: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(path, FIXED_TIME)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def build_wheel(directory: Path | str, name: str, version: str, requires: Sequence[str] = (),
                requires_python: str | None = None, summary: str | None = None, payload_size: int = 0) -> Dist:
    """A pure-Python wheel ``{name}-{version}-py3-none-any.whl`` in ``directory``: a module that imports (its
    ``__version__`` is ``version``), ``payload_size`` bytes of stored data beside it (for large or many distinct
    files), and its dist-info: METADATA, WHEEL and a RECORD whose sha256 entries pip checks on install."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = summary if summary is not None else "%s, built by Depot's tests" % name
    module, stem = escaped(name), "%s-%s" % (escaped(name), version)
    dist_info = stem + ".dist-info"
    metadata = core_metadata(name, version, summary, requires_python, requires)
    files = {
        module + "/__init__.py": ("__version__ = %r\n" % version).encode("utf-8"),
        dist_info + "/METADATA": metadata,
        dist_info + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: depot-tests\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n\n",
    }
    path = directory / (stem + "-py3-none-any.whl")
    record = []
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(zip_member(member), data)
            record.append("%s,%s,%d" % (member, record_hash(data), len(data)))
        if payload_size:
            member, digest = module + "/payload.bin", hashlib.sha256()
            info = zip_member(member)
            info.compress_type = zipfile.ZIP_STORED  # random bytes do not compress: spare the time
            with archive.open(info, "w", force_zip64=payload_size > 1 << 30) as handle:
                for block in payload_chunks(stem, payload_size):
                    digest.update(block)
                    handle.write(block)
            encoded = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
            record.append("%s,sha256=%s,%d" % (member, encoded, payload_size))
        record.append(dist_info + "/RECORD,,")
        archive.writestr(zip_member(dist_info + "/RECORD"), ("\n".join(record) + "\n").encode("utf-8"))
    return Dist(path, name, version, "bdist_wheel", "py3", metadata, summary, requires_python, tuple(requires),
                file_sha256(path), path.stat().st_size)


def build_sdist(directory: Path | str, name: str, version: str, requires: Sequence[str] = (),
                requires_python: str | None = None, summary: str | None = None) -> Dist:
    """A source distribution ``{name}-{version}.tar.gz`` in ``directory``: PKG-INFO, a pyproject.toml and the
    module, under ``{name}-{version}/``, with fixed owners and times (gzip's too)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = summary if summary is not None else "%s, built by Depot's tests" % name
    module, stem = escaped(name), "%s-%s" % (escaped(name), version)
    metadata = core_metadata(name, version, summary, requires_python, requires)
    pyproject = ('[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
                 '[project]\nname = %r\nversion = %r\n' % (name, version)).encode("utf-8")
    files = {"PKG-INFO": metadata, "pyproject.toml": pyproject,
             module + "/__init__.py": ("__version__ = %r\n" % version).encode("utf-8")}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member, data in files.items():
            info = tarfile.TarInfo("%s/%s" % (stem, member))
            info.size, info.mtime, info.mode = len(data), FIXED_EPOCH, 0o644
            archive.addfile(info, io.BytesIO(data))
    path = directory / (stem + ".tar.gz")
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed:
        packed.write(buffer.getvalue())
    return Dist(path, name, version, "sdist", "source", metadata, summary, requires_python, tuple(requires),
                file_sha256(path), path.stat().st_size)


# ---------------------------------------------------------------------------------------------------- the clients

def client_env(**extra: str) -> dict[str, str]:
    """The environment the clients run in: this one less every setting that would send them elsewhere or make
    them remember (PIP_*, UV_*, TWINE_* variables, pip.conf, uv.toml, keyrings, .netrc), plus ``extra``."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PIP_", "UV_", "TWINE_", "PYTHON_KEYRING"))}
    env.update(PIP_CONFIG_FILE=os.devnull,  # pip then reads no configuration file at all
               PIP_ROOT_USER_ACTION="ignore",  # CI runs as root: no warning about it in every pip output
               UV_NO_CONFIG="1", UV_NO_CACHE="1", UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1",
               PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring", NETRC=os.devnull, NO_COLOR="1", TERM="dumb")
    env.update(extra)
    return env


def run_client(args: Sequence[str | Path], cwd: Path | str | None = None, timeout: float = CLIENT_TIMEOUT,
               **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(arg) for arg in args], cwd=cwd, env=client_env(**env), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def with_credentials(url: str, password: str | None, username: str = TOKEN_USER) -> str:
    """``url`` with ``username:password@`` in it, as pip and uv take credentials for an index (None: as is)."""
    if password is None:
        return url
    parts = urlsplit(url)
    netloc = "%s:%s@%s" % (quote(username, safe=""), quote(password, safe=""), parts.hostname)
    if parts.port:
        netloc += ":%d" % parts.port
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def twine_upload(repository_url: str, files: Iterable[Dist | Path | str], *extra: str, password: str | None = None,
                 username: str = TOKEN_USER) -> subprocess.CompletedProcess[str]:
    """``twine upload`` of ``files`` to ``repository_url`` (a legacy upload URL, ending in ``/``)."""
    paths = [str(f.path if isinstance(f, Dist) else f) for f in files]
    credentials = ["-u", username, "-p", password] if password is not None else []
    return run_client([sys.executable, "-m", "twine", "upload", "--repository-url", repository_url, *credentials,
                       "--non-interactive", "--disable-progress-bar", "--verbose", *extra, *paths])


def pip_args(index_url: str) -> list[str]:
    return ["--index-url", index_url, "--no-cache-dir", "--disable-pip-version-check", "--no-input",
            "--timeout", NETWORK_TIMEOUT, "--retries", "0", "--progress-bar", "off"]


def pip_install(index_url: str, packages: Sequence[str], target: Path | str, *extra: str,
                password: str | None = None) -> subprocess.CompletedProcess[str]:
    """``pip install --target target packages`` from ``index_url`` alone (``password``: an API token sent as
    ``__token__``'s password, in the URL as pip users write it)."""
    return run_client([sys.executable, "-m", "pip", "install", *pip_args(with_credentials(index_url, password)),
                       "--target", target, *extra, *packages])


def write_requirements(path: Path | str, lines: Iterable[str | Dist]) -> Path:
    path = Path(path)
    path.write_text("".join((line.requirement() if isinstance(line, Dist) else line) + "\n" for line in lines),
                    encoding="utf-8")
    return path


def pip_download(index_url: str, requirements: Iterable[str | Dist], dest: Path | str, *extra: str,
                 password: str | None = None) -> subprocess.CompletedProcess[str]:
    """``pip download --require-hashes -r req.txt -d dest``: ``requirements`` are lines or Dists (pinned with
    their sha256); every file pip fetches must match a hash the file names."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    listed = write_requirements(dest.parent / (dest.name + "-requirements.txt"), requirements)
    return run_client([sys.executable, "-m", "pip", "download", *pip_args(with_credentials(index_url, password)),
                       "--require-hashes", "-r", listed, "-d", dest, *extra])


def uv_pip_install(index_url: str, packages: Sequence[str], target: Path | str, *extra: str,
                   password: str | None = None) -> subprocess.CompletedProcess[str]:
    """``uv pip install --target target packages`` from ``index_url`` alone, for this interpreter's tags and
    markers, with no configuration, cache or Python download."""
    return run_client([sys.executable, "-m", "uv", "pip", "install", "--no-config", "--no-cache",
                       "--no-python-downloads", "--no-progress", "--python", sys.executable,
                       "--index-url", with_credentials(index_url, password), "--target", target, *extra, *packages])


def installed(target: Path | str) -> dict[str, str]:
    """{normalized project name: version} of what a ``--target`` install put in ``target``, read from the
    METADATA files it installed."""
    found = {}
    for metadata in Path(target).glob("*.dist-info/METADATA"):
        fields = dict(line.split(": ", 1) for line in metadata.read_text("utf-8").splitlines() if ": " in line)
        found[normalize(fields["Name"])] = fields["Version"]
    return found


class MultipartBody:
    """A multipart/form-data body of text ``fields`` and one file, read from disk as it is sent: requests sends
    ``len`` as its Content-Length and the blocks ``read`` returns (a megabyte, not the 8 KiB asked: http.client
    sends what it gets) as they come, so a large upload is neither held in memory nor slowed down by the client."""

    def __init__(self, fields: Sequence[tuple[str, str]], name: str, path: Path):
        boundary = secrets.token_hex(16)
        self.content_type = "multipart/form-data; boundary=" + boundary
        head = "".join('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (boundary, key, value)
                       for key, value in fields)
        head += ('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                 'Content-Type: application/octet-stream\r\n\r\n' % (boundary, name, path.name))
        self.head, self.tail = head.encode("utf-8"), ("\r\n--%s--\r\n" % boundary).encode("ascii")
        self.path = path
        self.len = len(self.head) + path.stat().st_size + len(self.tail)
        self.blocks = self.generate()

    def generate(self) -> Iterator[bytes]:
        yield self.head
        with open(self.path, "rb") as handle:
            yield from iter(lambda: handle.read(CHUNK), b"")
        yield self.tail

    def read(self, size: int = -1) -> bytes:
        return next(self.blocks, b"")


def legacy_upload(upload_url: str, dist: Dist, password: str | None = None, username: str = TOKEN_USER,
                  headers: dict[str, str] | None = None, timeout: float = 600, **fields: str) -> requests.Response:
    """POST ``dist`` to a legacy upload URL as twine does (multipart/form-data, Basic auth), streaming the file
    from disk; ``fields`` add or replace form fields."""
    form = {":action": "file_upload", "protocol_version": "1", "name": dist.name, "version": dist.version,
            "metadata_version": "2.1", "filetype": dist.filetype, "pyversion": dist.pyversion,
            "summary": dist.summary, "requires_python": dist.requires_python or "", "sha256_digest": dist.sha256}
    form.update(fields)
    body = MultipartBody(list(form.items()) + [("requires_dist", requirement) for requirement in dist.requires],
                         "content", dist.path)
    return requests.post(upload_url, data=body, auth=(username, password) if password is not None else None,
                         headers=dict(headers or {}, **{"Content-Type": body.content_type}), timeout=timeout)


class Anchors(HTMLParser):
    """The anchors of a simple page (PEP 503): for each, its attributes (values unescaped, as pip reads them)
    and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []
        self.meta: dict[str, str | None] = {}
        self.open: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.open = dict(attrs, text="")
            self.anchors.append(self.open)
        elif tag == "meta":
            found = dict(attrs)
            if found.get("name"):
                self.meta[str(found["name"])] = found.get("content")

    def handle_data(self, data: str) -> None:
        if self.open is not None:
            self.open["text"] = (self.open["text"] or "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self.open = None


def simple_anchors(html: str) -> Anchors:
    parser = Anchors()
    parser.feed(html)
    parser.close()
    return parser


# ---------------------------------------------------------------------------------------------------- the servers

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """Wait until something accepts connections on ``port``: a child server's start-up, outside anything a
    test or benchmark measures."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server on port %d did not start (exit code %s)" % (port, process.poll()))
            time.sleep(0.05)


def start_listening(argv: Sequence[str], port: int, log: IO[str],
                    env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A server process ``argv`` writing to ``log``, once it accepts connections on ``port`` (ended if it never
    does)."""
    process = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        wait_listening(port, process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def stop_process(process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    """End a child server: SIGTERM, then SIGKILL if it is still there after ``seconds``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PypiServer:
    """pypiserver serving ``directory`` on a free port, uploads open to anyone (``-a . -P .``) and no fallback to
    any other index. A context manager; ``url`` is its root (the legacy upload URL), ``simple`` its index."""

    def __init__(self, directory: Path | str, *args: str):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d/" % self.port
        self.simple = self.url + "simple/"
        self.log = open(self.directory.parent / ("pypiserver-%d.log" % self.port), "w+")
        try:
            self.proc = start_listening([sys.executable, "-m", "pypiserver", "run", "-p", str(self.port),
                                         "-i", "127.0.0.1", "-a", ".", "-P", ".", "--disable-fallback",
                                         "--server", "auto", *args, str(self.directory)], self.port, self.log)
        except BaseException:
            self.log.close()
            raise

    @property
    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()

    def __enter__(self) -> PypiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def schema_with_the_pack(directory: Path, pack: str = "packs/pypi.json", mount: str = "/pypi/{namespace}") -> Path:
    """A copy in ``directory`` of the project's schema.json with the route pack ``pack`` (default the PyPI pack)
    mounted at ``mount``, whether or not it mounts it already (pack files named by absolute paths, as the copy
    lives elsewhere): what a test or benchmark serves with `serve --schema`."""
    schema = json.loads((ROOT / "schema.json").read_text(encoding="utf-8"))
    packs = schema.setdefault("packs", [])
    if not any(os.path.basename(entry.get("file", "")) == os.path.basename(pack) for entry in packs):
        packs.append({"file": pack, "mount": mount})
    for entry in packs:
        if "file" in entry:
            entry["file"] = str(ROOT / entry["file"])
    path = directory / "schema.json"
    path.write_text(json.dumps(schema), encoding="utf-8")
    return path


@dataclass
class DepotAccounts:
    """On a running Depot at ``url``: the admin, an ``uploader`` (read, write) and a ``reader`` (read), each with
    an API token (what twine, pip and uv send as ``__token__``'s password), and the grants given."""
    url: str
    admin_password: str
    grants: Sequence[tuple[str, str, str]] = ()  # (subject, namespace pattern, permission)
    tokens: dict[str, str] = field(default_factory=dict)
    login: str = ""

    USERS = {"uploader": ["read", "write"], "reader": ["read"]}

    def __post_init__(self) -> None:
        self.login = self.post("/auth/login", {"username": "admin", "password": self.admin_password},
                               bearer=None)["token"]
        self.tokens["admin"] = self.post("/auth/tokens", {"name": "pypi-admin",
                                                          "scopes": ["read", "write", "admin"]})["token"]
        for user, scopes in self.USERS.items():
            self.post("/admin/users", {"username": user, "password": "password of the %s" % user,
                                       "scopes": scopes})
            self.tokens[user] = self.post("/admin/users/%s/tokens" % user, {"name": "pypi", "scopes": scopes})["token"]
        for subject, pattern, permission in self.grants:
            self.post("/admin/grants", {"subject": subject, "namespace": pattern, "permission": permission})

    def post(self, path: str, body: dict[str, Any], bearer: str | None = "login") -> dict[str, Any]:
        headers = {"Authorization": "Bearer " + self.login} if bearer else {}
        response = requests.post(self.url + path, json=body, headers=headers, timeout=60)
        assert response.status_code in (200, 201), (path, response.status_code, response.text)
        answer: dict[str, Any] = response.json()
        return answer

    def __getitem__(self, who: str) -> str:
        """The API token of ``who`` (admin, uploader, reader)."""
        return self.tokens[who]
