"""The real npm clients (npm and pnpm) against an npm registry, and the packages they move.

Not a test module: the tests of Depot's npm route pack and bench/bench_npm.py use it; ``python -m
tests.npm_clients`` proves it against Verdaccio (``--registry URL --token T`` runs the same scenario against any
registry, e.g. Depot's ``http://HOST/npm/{namespace}/``). A registry is a URL and credentials, nothing more.

- ``NpmClient``: one user of one registry: a throwaway HOME (its ``.npmrc`` names the registry and holds the
  ``//host/path/:_authToken`` line), npm's cache and pnpm's store inside it, and an environment built from
  nothing but PATH and the locale, so no user or global configuration, no CI detection and no other registry
  reaches the clients. Every other address goes to a proxy that is not there (``http_proxy`` on a closed
  loopback port, ``no_proxy`` the registry's host): a client that strays fails instead of reaching the Internet.
  Audit, fund and the update notifier are off unless a call asks for ``audit=True`` (the pack answers the audit
  endpoints). Its methods run ``npm login`` (through a pty, as a person types), ``whoami``, ``publish``,
  ``install`` (npm and pnpm, each in a fresh project), ``view``, ``dist-tag``, ``deprecate`` and ``unpublish`` and
  return a ``Ran``: the command, its exit code and output, with ``ok()`` raising a message that shows them all.
- ``make_package``: a package directory (package.json, index.js, README.md, more files), scoped or not.
- ``npm_tarball`` / ``publish_document``: a package tarball made here, byte for byte the same each time, and the
  JSON document npm PUTs to publish it, for loading a registry over plain HTTP (the benchmark's 2,000 versions).
- ``Verdaccio``: the reference registry on a loopback port over a temporary storage.
- ``WireRecorder``: a logging proxy in front of a registry, which recorded what the comments below say.

What npm 11.19 and pnpm 12.4 send, and what they need back, recorded through ``WireRecorder`` in front of
Verdaccio 6.8 and read in npm's own source (/usr/lib/node_modules/npm: lib/utils/auth.js, npm-profile,
libnpmpublish, lib/commands/*.js). ``REG`` is the registry URL with
its path (``http://h/npm/acme/``); every path below is relative to it (npm joins it, so a path prefix works).
A scoped name is one path segment: npm writes ``@scope%2fname`` (lower-case ``%2f``), pnpm ``@scope%2Fname``,
both leave the ``@`` alone. Tarball URLs are fetched exactly as the packument wrote them, with the token when
they lie under the registry's URL. Every request of a client with a token carries ``Authorization: Bearer
<token>`` (pnpm's too); npm adds ``npm-command: <command>``, ``npm-auth-type: web`` and ``user-agent: npm/11.19.1
node/v20.x linux x64 workspaces/false`` (no ``npm-session`` any more), and on packument and tarball reads
``pacote-req-type``, ``pacote-pkg-id`` and ``pacote-integrity`` (informational); its cache sends
``If-None-Match`` with an ETag it was given. pnpm sends ``user-agent: pnpm/12.4.2 npm/? node/? linux x64``.

The request-by-request account sits in each ``NpmClient`` method's docstring.
"""
from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.client
import io
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence
from urllib.parse import quote, urlsplit

from tests.pypi_clients import free_port, start_listening, stop_process

ROOT = Path(__file__).resolve().parent.parent
NPM_TOOLS = ROOT / "tests" / "npm" / "node_modules"  # `npm ci` in tests/npm (scripts/install.sh) puts them here
PNPM = NPM_TOOLS / ".bin" / "pnpm"
VERDACCIO = NPM_TOOLS / "verdaccio" / "bin" / "verdaccio"
INSTALL_V1 = "application/vnd.npm.install-v1+json"  # the abbreviated packument ("corgi") installers ask for
CLIENT_TIMEOUT = 300  # seconds a client may take before the test fails instead of hanging
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port, never listened on here: requests sent there fail at once
FIXED_MTIME = 499162500  # 1985-10-26T08:15:00Z, the time npm itself gives every member of a tarball it packs
CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------------- the files

@dataclass(frozen=True)
class PackageDir:
    """A package directory made by ``make_package``: what ``npm publish`` is run in."""
    path: Path
    name: str
    version: str
    dependencies: Mapping[str, str]

    @property
    def spec(self) -> str:
        return "%s@%s" % (self.name, self.version)


def make_package(parent: Path | str, name: str, version: str, dependencies: Mapping[str, str] | None = None,
                 files: Mapping[str, str] | None = None, description: str | None = None) -> PackageDir:
    """A publishable package ``name`` (``@scope/name`` or plain) at ``version`` in a new directory under
    ``parent``: package.json, an index.js that exports the name and version (and requires each dependency, so an
    install that misses one fails when it is required), a README.md, and ``files`` ({relative path: text})."""
    dependencies = dict(dependencies or {})
    path = Path(parent) / ("%s-%s" % (name.replace("@", "").replace("/", "-"), version))
    path.mkdir(parents=True)
    manifest = {"name": name, "version": version, "description": description or "%s, made by Depot's tests" % name,
                "main": "index.js", "license": "MIT", "dependencies": dependencies,
                "publishConfig": {"access": "public"}}  # a scoped package is public, as on a private registry
    requires = "".join("  %s: require(%s),\n" % (json.dumps(dep), json.dumps(dep)) for dep in sorted(dependencies))
    sources = {"package.json": json.dumps(manifest, indent=2) + "\n",
               "index.js": "module.exports = {\n  name: %s,\n  version: %s,\n  dependencies: {\n%s  },\n};\n"
                           % (json.dumps(name), json.dumps(version), requires),
               "README.md": "# %s\n\nVersion %s, made by Depot's tests.\n" % (name, version)}
    sources.update(files or {})
    for relative, text in sources.items():
        target = path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return PackageDir(path, name, version, dependencies)


def integrity(data: bytes, algorithm: str = "sha512") -> str:
    """Subresource Integrity of ``data`` (``sha512-<base64>``), as npm writes ``dist.integrity``."""
    return "%s-%s" % (algorithm, base64.b64encode(hashlib.new(algorithm, data).digest()).decode("ascii"))


def tarball_name(name: str, version: str) -> str:
    """The file name of a version's tarball in registry URLs: the name without its scope (``name-1.0.0.tgz``)."""
    return "%s-%s.tgz" % (name.rsplit("/", 1)[-1], version)


def escaped_name(name: str) -> str:
    """A package name as one path segment, the way npm writes it in URLs: ``@scope%2fname`` (``@`` kept)."""
    return quote(name, safe="@").replace("%2F", "%2f")


def npm_tarball(name: str, version: str, dependencies: Mapping[str, str] | None = None,
                payload_size: int = 0) -> bytes:
    """A package tarball as npm packs one (gzip of a tar whose members sit under ``package/``), byte for byte
    the same for the same arguments; ``payload_size`` random-looking bytes in ``package/payload.bin`` make it
    large (held in memory: meant for a benchmark's one big file, not for thousands)."""
    manifest = {"name": name, "version": version, "description": "%s, made by Depot's tests" % name,
                "main": "index.js", "license": "MIT", "dependencies": dict(dependencies or {})}
    members = {"package/package.json": (json.dumps(manifest, indent=2) + "\n").encode("utf-8"),
               "package/index.js": ("module.exports = %s;\n" % json.dumps(version)).encode("utf-8")}
    if payload_size:
        seed = hashlib.sha256(("%s@%s" % (name, version)).encode("utf-8")).digest()
        members["package/payload.bin"] = b"".join(_payload_blocks(seed, payload_size))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size, info.mtime, info.mode = len(data), FIXED_MTIME, 0o644
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0)


def _payload_blocks(seed: bytes, size: int) -> Iterator[bytes]:
    """``size`` bytes that do not compress (so the tarball is as large as asked), the same for the same seed."""
    counter = 0
    while size > 0:
        block = hashlib.shake_256(seed + counter.to_bytes(8, "big")).digest(min(size, CHUNK))
        yield block
        size -= len(block)
        counter += 1


def publish_document(registry: str, name: str, version: str, tarball: bytes, tag: str = "latest",
                     dependencies: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The body of ``PUT {registry}{escaped name}`` that publishes ``tarball`` as ``name@version``, shaped as
    libnpmpublish shapes it (npm 11): the version's manifest with ``dist`` (sha512 integrity, sha1 shasum, a
    tarball URL the registry may rewrite), the tag, and the tarball base64-encoded in ``_attachments`` under the
    key ``{name}-{version}.tgz`` (the full name, scope included)."""
    manifest = {"name": name, "version": version, "description": "%s, made by Depot's tests" % name,
                "main": "index.js", "license": "MIT", "dependencies": dict(dependencies or {}),
                "_id": "%s@%s" % (name, version), "_nodeVersion": "20.0.0", "_npmVersion": "11.0.0",
                "dist": {"integrity": integrity(tarball), "shasum": hashlib.sha1(tarball).hexdigest(),
                         "tarball": "%s%s/-/%s-%s.tgz" % (registry, name, name, version)}}
    return {"_id": name, "name": name, "description": manifest["description"], "dist-tags": {tag: version},
            "versions": {version: manifest}, "access": None,
            "_attachments": {"%s-%s.tgz" % (name, version): {"content_type": "application/octet-stream",
                                                            "data": base64.b64encode(tarball).decode("ascii"),
                                                            "length": len(tarball)}}}


# ---------------------------------------------------------------------------------------------------- the clients

@dataclass
class Ran:
    """A finished client command: what ran, where, its exit code and output."""
    args: list[str]
    cwd: Path
    returncode: int
    stdout: str
    stderr: str
    log: str = ""  # the tail of npm's debug log of the run, when it failed (npm names it on stderr)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        text = "`%s` in %s exited %d\n--- stdout\n%s\n--- stderr\n%s" % (
            " ".join(self.args), self.cwd, self.returncode, self.stdout[-4000:], self.stderr[-4000:])
        if self.log:
            text += "\n--- npm's debug log (tail)\n" + self.log
        return text

    def ok(self) -> Ran:
        """This run, if it exited 0; else an AssertionError that shows the command, its output and its log."""
        if self.returncode != 0:
            raise AssertionError(self.describe())
        return self

    def failed(self, *codes: str) -> Ran:
        """This run, if it failed and its output names one of ``codes`` (``E409``, ``E403``, ``cannot publish over``
        ...; any failure when none is given); else an AssertionError that shows it."""
        if self.returncode == 0 or (codes and not any(code in self.output for code in codes)):
            raise AssertionError("expected a failure naming %s, got:\n%s" % (" or ".join(codes) or "anything",
                                                                            self.describe()))
        return self

    def json(self) -> Any:
        """stdout read as JSON (``--json`` commands), after ``ok()``."""
        return json.loads(self.ok().stdout)


@dataclass
class NpmClient:
    """One user of the registry at ``registry`` (a URL ending in ``/``), with an API token (``token``) or
    none yet (``login`` gets one), living in ``home`` (made if missing; the caller's temporary directory)."""
    home: Path
    registry: str
    token: str | None = None
    username: str | None = None
    extra_config: Mapping[str, str] = field(default_factory=dict)  # more .npmrc lines (key=value)

    def __post_init__(self) -> None:
        if not self.registry.endswith("/"):
            raise ValueError("the registry URL must end in /: %r" % self.registry)
        self.home = Path(self.home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.write_npmrc()

    # ---- configuration

    @property
    def auth_key(self) -> str:
        """The registry URL without its scheme, as .npmrc keys credentials: ``//host:port/path/``."""
        return "//" + self.registry.split("://", 1)[1]

    @property
    def npmrc(self) -> Path:
        return self.home / ".npmrc"

    def write_npmrc(self) -> None:
        """The user config: the registry for every package (scoped ones too: no ``@scope:registry`` line, so
        npm picks the default), the token if any, and ``extra_config``."""
        lines = ["registry=" + self.registry]
        if self.token:
            lines.append("%s:_authToken=%s" % (self.auth_key, self.token))
        lines += ["%s=%s" % item for item in self.extra_config.items()]
        self.npmrc.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def saved_token(self) -> str | None:
        """The token ``npm login`` wrote into the .npmrc for this registry."""
        for line in self.npmrc.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == self.auth_key + ":_authToken":
                return value.strip()
        return None

    def env(self, audit: bool = False) -> dict[str, str]:
        """An environment from nothing: PATH (node, npm and the pinned pnpm), the locale, HOME and the XDG
        directories in ``home`` (npm's cache, pnpm's store and config), no global config, the dead proxy for
        every host but the registry's, and npm's chatter off. No CI variable passes, so npm and pnpm behave as
        on a developer's machine (pnpm would otherwise insist on a frozen lockfile)."""
        host = urlsplit(self.registry).hostname or "127.0.0.1"
        env = {key: os.environ[key] for key in ("LANG", "LC_ALL", "TZ") if key in os.environ}
        home = str(self.home)
        (self.home / "global-npmrc").touch()
        env.update(
            PATH=os.pathsep.join([str(NPM_TOOLS / ".bin"), "/usr/local/bin", "/usr/bin", "/bin"]),
            HOME=home, USERPROFILE=home, TMPDIR=str(self.home / "tmp"),
            XDG_CONFIG_HOME=str(self.home / "config"), XDG_CACHE_HOME=str(self.home / "cache"),
            XDG_DATA_HOME=str(self.home / "data"), XDG_STATE_HOME=str(self.home / "state"),
            npm_config_userconfig=str(self.npmrc), npm_config_globalconfig=str(self.home / "global-npmrc"),
            npm_config_cache=str(self.home / "npm-cache"),
            http_proxy=DEAD_PROXY, https_proxy=DEAD_PROXY, HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY,
            no_proxy=host, NO_PROXY=host, npm_config_noproxy=host,
            npm_config_audit="true" if audit else "false", npm_config_fund="false",
            npm_config_update_notifier="false", npm_config_progress="false", NO_COLOR="1", TERM="dumb",
            # pnpm reads its settings from pnpm_config_* (npm would warn about them as npm_config_*); without
            # the first it asks the registry for GET /pnpm, to tell of newer pnpm releases
            pnpm_config_update_notifier="false", pnpm_config_store_dir=str(self.home / "pnpm-store"))
        (self.home / "tmp").mkdir(exist_ok=True)
        return env

    # ---- running

    def run(self, args: Sequence[str | Path], cwd: Path | str | None = None, audit: bool = False,
            timeout: float = CLIENT_TIMEOUT, env: Mapping[str, str] | None = None) -> Ran:
        """``args`` (``["npm", ...]`` or ``["pnpm", ...]``) in ``cwd`` (default: home), stdin closed, in
        ``self.env(audit)`` with ``env`` added."""
        argv = [str(arg) for arg in args]
        where = Path(cwd) if cwd is not None else self.home
        done = subprocess.run(argv, cwd=where, env=dict(self.env(audit), **(env or {})), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return Ran(argv, where, done.returncode, done.stdout, done.stderr,
                   _debug_log_tail(done.stderr) if done.returncode else "")

    def npm(self, *args: str | Path, cwd: Path | str | None = None, audit: bool = False) -> Ran:
        return self.run(["npm", *args], cwd=cwd, audit=audit)

    def pnpm(self, *args: str | Path, cwd: Path | str | None = None, env: Mapping[str, str] | None = None) -> Ran:
        return self.run([PNPM, *args], cwd=cwd, env=env)

    # ---- accounts

    def login(self, username: str, password: str, auth_type: str = "web", adduser: bool = False,
              email: str = "npm-tests@example.invalid") -> Ran:
        """``npm login`` (``adduser``: ``npm adduser``) typed into a pty, as a person does; on success the
        client keeps the token npm saved.

        npm 11 starts with web login: ``POST /-/v1/login`` (body ``{}``; ``{"create": true}`` for adduser).
        Any 4xx or a 500 there means "web login not supported" (npm-profile's ENYI) and npm falls back to the
        CouchDB flow; a 200 must carry valid ``loginUrl`` and ``doneUrl`` (http/https), else npm fails ("Invalid
        response from web login endpoint") without falling back. ``auth_type="legacy"`` skips the POST.
        The fallback prompts for the username and password (and, for adduser, an email), then sends
        ``PUT /-/user/org.couchdb.user:<name>`` (name URI-encoded) with ``{"_id": "org.couchdb.user:<name>",
        "name", "password", "type": "user", "roles": [], "date"}`` (+ ``email`` for adduser), without any
        Authorization header. A 2xx with ``{"token": "..."}`` is success (npm writes
        ``//host/path/:_authToken=<token>``). On login (not adduser), a 409 makes npm fetch
        ``GET /-/user/org.couchdb.user:<name>?write=true`` and retry ``PUT .../-rev/<_rev>`` with Basic
        credentials; a 400 is reported as "no user with the username"; 401 and others fail the command."""
        argv = ["npm", "adduser" if adduser else "login", "--auth-type=" + auth_type]
        answers = [("Username:", username), ("Password:", password)] + ([("Email", email)] if adduser else [])
        ran = _run_in_pty(argv, self.home, self.env(), answers)
        if ran.returncode == 0:
            self.token, self.username = self.saved_token(), username
        return ran

    def whoami(self) -> Ran:
        """``npm whoami``: ``GET /-/whoami`` with the token; the registry answers ``{"username": "<name>"}``
        (npm prints it; 401 fails with E401). Nothing is sent when the .npmrc holds no credentials
        (ENEEDAUTH)."""
        return self.npm("whoami")

    # ---- publishing

    def publish(self, package: PackageDir, tag: str | None = None, force: bool = False) -> Ran:
        """``npm publish [--tag tag]`` in the package's directory.

        1. ``GET /<escaped name>`` (Accept ``application/json``, full packument, cache bypassed) to refuse
           client-side a version already listed ("You cannot publish over the previously published versions")
           or an implicit ``latest`` below the highest version; a 404 means a new package. ``--force`` skips it.
        2. ``PUT /<escaped name>`` with Content-Type ``application/json`` and the document ``publish_document``
           builds: ``_id``, ``name``, ``description``, ``dist-tags: {tag: version}``, ``versions: {version:
           manifest + _id + dist{integrity (sha512), shasum (sha1 hex), tarball}}``, ``access`` (``"public"``
           from publishConfig here, else null), ``_attachments: {"<name>-<version>.tgz": {content_type,
           data (base64), length}}`` (the full name, scope included, in the attachment's key). Any 2xx is
           success (the body is ignored); 409 (or 403) over an existing version is the failure npm shows as
           ``E409``/``E403``."""
        return self.npm("publish", *(["--tag", tag] if tag else []), *(["--force"] if force else []),
                        cwd=package.path)

    # ---- installing

    def project(self, name: str = "probe-project") -> Path:
        """A fresh, empty project directory (a private package.json) under home."""
        path = Path(tempfile.mkdtemp(prefix=name + "-", dir=self.home))
        (path / "package.json").write_text(json.dumps({"name": name, "version": "1.0.0", "private": True}),
                                           encoding="utf-8")
        return path

    def install(self, *specs: str, cwd: Path | None = None, audit: bool = False) -> Ran:
        """``npm install specs`` in ``cwd`` (a fresh project by default; ``ran.cwd`` is where it ran).

        For each package: ``GET /<escaped name>`` (the packument), then ``GET`` of each ``dist.tarball`` URL
        exactly as the packument wrote it (with the token when the URL is under the registry's host and path).
        npm checks the tarball against ``dist.integrity`` (else EINTEGRITY) and writes ``resolved`` (that URL)
        and ``integrity`` into package-lock.json.

        npm 11 builds its tree from full packuments: ``GET /<escaped name>`` with Accept ``application/json``
        (the abbreviated form, Accept ``application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8,
        */*``, is asked only where npm inflates an existing lock, and by ``publish``; a 404 to it makes npm
        ask again for the full document). With audit on (``audit=True``), npm then sends ``POST
        /-/npm/v1/security/advisories/bulk`` with ``Content-Encoding: gzip`` and the JSON ``{name: [versions
        installed]}``; the answer is ``{name: [advisory, ...]}``, ``{}`` for none. npm 11 has no other audit
        request, and a failure there is only reported: the install still succeeds."""
        where = cwd if cwd is not None else self.project()
        return self.npm("install", *specs, cwd=where, audit=audit)

    def pnpm_install(self, *specs: str, cwd: Path | None = None, minimum_release_age: int | None = 0) -> Ran:
        """``pnpm add specs`` in ``cwd`` (a fresh project by default); pnpm-lock.yaml records each version's
        ``integrity``. Its Accept is ``application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8,
        */*``, its token the same .npmrc line, and it writes ``@scope%2Fname`` (upper-case ``%2F``).

        ``minimum_release_age`` (minutes; pnpm 12's ``minimumReleaseAge``) decides the requests. At 0, as here
        by default (so that what was just published installs, and at once), ``pnpm add name`` with no range
        first asks ``GET /<escaped name>/latest`` (one version's manifest, a tag or a version in the last
        segment; a 404 there is fatal: ERR_PNPM_PACKAGE_MANAGER_ADD_RESOLVE_LATEST), then the abbreviated
        packument, then the tarballs. With None (pnpm's own default, a minimum age), it asks the abbreviated
        packument, reads the versions' publish times from its ``time`` field and, when that field is missing,
        asks again for the full packument (Accept ``application/json; q=1.0, */*``); a version younger than
        the minimum is still installed when nothing older matches, and pnpm then writes it into a
        pnpm-workspace.yaml's ``minimumReleaseAgeExclude`` beside the project."""
        where = cwd if cwd is not None else self.project()
        age = {} if minimum_release_age is None else {"pnpm_config_minimum_release_age": str(minimum_release_age)}
        return self.pnpm("add", "--reporter=append-only", *specs, cwd=where, env=age)

    # ---- reading and changing metadata

    def view(self, spec: str, *fields: str) -> Ran:
        """``npm view spec [fields] --json``: ``GET /<escaped name>`` with Accept ``application/json`` (the full
        packument: ``time``, ``readme``, ``users``..., which the abbreviated one lacks); a 404 is E404."""
        return self.npm("view", spec, *fields, "--json")

    def dist_tag_add(self, spec: str, tag: str) -> Ran:
        """``npm dist-tag add name@version tag``: ``GET /-/package/<escaped name>/dist-tags`` (``{tag: version}``),
        then ``PUT /-/package/<escaped name>/dist-tags/<tag>`` with the JSON string ``"<version>"`` as body
        (Content-Type application/json); any 2xx is success. npm does not check that the version exists: the
        registry must."""
        return self.npm("dist-tag", "add", spec, tag)

    def dist_tag_ls(self, name: str) -> Ran:
        """``npm dist-tag ls name``: ``GET /-/package/<escaped name>/dist-tags``; prints ``tag: version`` lines."""
        return self.npm("dist-tag", "ls", name)

    def dist_tag_rm(self, name: str, tag: str) -> Ran:
        """``npm dist-tag rm name tag``: ``GET /-/package/<escaped name>/dist-tags`` (npm fails client-side if
        the tag is not there), then ``DELETE /-/package/<escaped name>/dist-tags/<tag>``; any 2xx is success."""
        return self.npm("dist-tag", "rm", name, tag)

    def deprecate(self, spec: str, message: str) -> Ran:
        """``npm deprecate name@range message``: ``GET /<escaped name>?write=true`` (Accept ``*/*``; the full
        packument), then ``PUT /<escaped name>`` (no ``-rev``) with that whole packument back, every version
        in the range given ``deprecated: message`` (an empty message clears it: npm sends ``deprecated: ""``)
        and nothing else changed (``_attachments`` as the registry gave it, ``{}`` from Verdaccio). Any 2xx
        is success. A registry tells this PUT from a publish by its lack of new versions with attachments."""
        return self.npm("deprecate", spec, message)

    def unpublish(self, spec: str, force: bool = False) -> Ran:
        """``npm unpublish name@version`` (``force``: also the last version, or ``name`` alone for the whole
        package; npm refuses those client-side without it).

        1. ``GET /<escaped name>?write=true`` with the abbreviated Accept (npm's command lists the versions).
        2. One version of several: ``GET /<escaped name>?write=true``; ``PUT /<escaped name>/-rev/<_rev>``
           with that packument less the version, less every dist-tag naming it (``latest`` moved to the
           highest version left), without ``_attachments`` and ``_revisions``; then ``GET ?write=true`` again
           for the new ``_rev`` and ``DELETE /<tarball path>/-rev/<_rev>``, the tarball path being the
           version's ``dist.tarball`` URL's path with the registry URL's path cut off *by length* (so tarball
           URLs must lie under the registry URL), e.g. ``DELETE /@scope/name/-/name-1.1.0.tgz/-rev/9-...``.
        3. The only version, or the whole package: ``DELETE /<escaped name>/-rev/<_rev>``.
        ``<_rev>`` is the packument's ``_rev`` as given (``undefined`` when it has none: a registry without
        revisions can ignore the segment). Any 2xx is success; a 404 to the first GET is E404."""
        return self.npm("unpublish", spec, *(["--force"] if force else []))


def _debug_log_tail(stderr: str, lines: int = 60) -> str:
    """The last ``lines`` of the debug log npm names on stderr after a failure."""
    found = re.findall(r"A complete log of this run can be found in: (\S+)", stderr)
    if not found:
        return ""
    try:
        return "\n".join(Path(found[-1]).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _run_in_pty(argv: list[str], cwd: Path, env: dict[str, str], answers: Sequence[tuple[str, str]],
                timeout: float = CLIENT_TIMEOUT) -> Ran:
    """``argv`` with a pty as its terminal, answering each prompt of ``answers`` (text seen -> line typed) once
    it appears; what it printed is ``stdout`` (a terminal mixes both streams)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin, stdout and stderr are the pty
        try:
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    seen, fresh, pending, deadline = b"", b"", list(answers), time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError("`%s` gave no output for %d s:\n%s" % (" ".join(argv), timeout,
                                                                          seen.decode(errors="replace")))
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen, fresh = seen + chunk, fresh + chunk
            if pending and pending[0][0].encode() in fresh:  # the prompts come one at a time, in order
                os.write(fd, (pending.pop(0)[1] + "\r").encode())
                fresh = b""
    finally:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = seen.decode("utf-8", errors="replace").replace("\r\n", "\n")
    code = os.waitstatus_to_exitcode(status)
    return Ran(argv, cwd, code, text, "", _debug_log_tail(text) if code else "")


# ---------------------------------------------------------------------------------------------------- the servers

VERDACCIO_CONFIG = """\
storage: {storage}
auth:
  htpasswd:
    file: {directory}/htpasswd
    max_users: 1000
    algorithm: bcrypt
    rounds: 4
uplinks: {{}}
packages:
  '@*/*':
    access: $all
    publish: $authenticated
    unpublish: $authenticated
  '**':
    access: $all
    publish: $authenticated
    unpublish: $authenticated
server:
  keepAliveTimeout: 60
security:
  api:
    legacy: true
web:
  enable: false
middlewares:
  audit:
    enabled: false
max_body_size: 1gb
log:
  type: stdout
  format: json
  level: http
"""


class Verdaccio:
    """Verdaccio (tests/npm's pinned one) on a free loopback port over a new storage in ``directory``: no
    uplink (it proxies nothing, so it reaches no other registry), anyone reads, users it creates itself at
    ``npm adduser`` (htpasswd, bcrypt at 4 rounds: tests need no slow hashing) publish and unpublish, audit off,
    bodies up to 1 GiB. A context manager; ``registry`` is the URL to give npm; ``log`` its JSON log lines."""

    def __init__(self, directory: Path | str):
        if not VERDACCIO.exists():
            raise RuntimeError("%s is missing: `bash scripts/install.sh` installs it (npm ci in tests/npm)"
                               % VERDACCIO)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.registry = "http://127.0.0.1:%d/" % self.port
        config = self.directory / "config.yaml"
        config.write_text(VERDACCIO_CONFIG.format(storage=self.directory / "storage", directory=self.directory),
                          encoding="utf-8")
        self.log_file = open(self.directory / "verdaccio.log", "w+", encoding="utf-8")
        try:
            self.proc = start_listening(["node", str(VERDACCIO), "--config", str(config),
                                         "--listen", "127.0.0.1:%d" % self.port], self.port, self.log_file,
                                        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                             "HOME": str(self.directory)})
        except BaseException:
            self.log_file.close()
            raise

    @property
    def output(self) -> str:
        self.log_file.flush()
        return (self.directory / "verdaccio.log").read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        self.log_file.close()

    def __enter__(self) -> Verdaccio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Exchange:
    """One request through the ``WireRecorder`` and its answer (bodies shortened: base64 tarballs elided)."""
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    response_headers: dict[str, str]
    response_body: Any

    def line(self) -> str:
        accept = self.headers.get("accept", "")
        return "%s %s%s -> %d" % (self.method, self.path, "  [Accept: %s]" % accept if accept else "", self.status)


class WireRecorder:
    """A logging proxy: listens on a free loopback port and forwards each request to ``upstream`` (a URL whose
    path prefix it keeps), recording every exchange. Requests and answers are held whole (it is a tool for
    seeing what clients send, not for large traffic). ``url`` replaces the upstream's URL for clients; answers
    that name the upstream's URL (tarball links) are rewritten to name the recorder, so clients keep coming
    back through it."""

    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                  "proxy-authorization", "proxy-authenticate", "content-length", "content-encoding"}

    def __init__(self, upstream: str, refuse: Callable[[str, str], int | None] | None = None,
                 rewrite: Callable[[str, str, bytes], bytes] | None = None, forwarded: bool = False):
        """``refuse(method, path)``: a status to answer in the upstream's place (an empty JSON error), or None
        to forward; ``rewrite(method, path, answer)``: the answer's body as clients get it (both for seeing
        what clients do when a registry lacks something). ``forwarded``: behave as a reverse proxy does, saying
        in X-Forwarded-Proto and X-Forwarded-Host the URL clients used, and leave answers as they are (so the
        upstream's own URLs must already name the proxy)."""
        self.refuse, self.rewrite, self.forwarded = refuse, rewrite, forwarded
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.upstream_origin = "%s://%s" % (parts.scheme, parts.netloc)
        self.exchanges: list[Exchange] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

            def forward(self) -> None:
                recorder.forward(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.origin = "http://127.0.0.1:%d" % self.port
        self.url = self.origin + parts.path
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        body = _read_request_body(handler)
        headers = {key.lower(): value for key, value in handler.headers.items()}
        refused = self.refuse(handler.command, handler.path) if self.refuse else None
        if refused is not None:
            handler.send_response(refused)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"{}")
            self.exchanges.append(Exchange(handler.command, handler.path, headers, _shorten(body, headers), refused,
                                           {}, "(refused by the recorder)"))
            return
        sent = {key: value for key, value in handler.headers.items()
                if key.lower() not in self.HOP_BY_HOP and key.lower() != "host"}
        sent["Host"] = "%s:%d" % (self.upstream_host, self.upstream_port)
        if self.forwarded:
            sent.update({"X-Forwarded-Proto": "http", "X-Forwarded-Host": "127.0.0.1:%d" % self.port})
        sent["Content-Length"] = str(len(body))
        sent.pop("Accept-Encoding", None)  # answers come back plain, so they can be read and rewritten
        sent.pop("accept-encoding", None)
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=600)
        try:
            connection.request(handler.command, handler.path, body=body if body or handler.command != "GET" else None,
                               headers=sent)
            answer = connection.getresponse()
            data = answer.read()
            answer_headers = {key.lower(): value for key, value in answer.getheaders()}
        finally:
            connection.close()
        if not self.forwarded:
            data = data.replace(self.upstream_origin.encode(), self.origin.encode())
        if self.rewrite is not None:
            data = self.rewrite(handler.command, handler.path, data)
        handler.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in self.HOP_BY_HOP:
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)
        self.exchanges.append(Exchange(handler.command, handler.path, headers, _shorten(body, headers),
                                       answer.status, answer_headers, _shorten(data, answer_headers)))

    def take(self) -> list[Exchange]:
        """The exchanges recorded since the last ``take``."""
        taken, self.exchanges = self.exchanges, []
        return taken

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> WireRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_request_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _shorten(data: bytes, headers: Mapping[str, str]) -> Any:
    """A body as recorded: JSON parsed (base64 attachment data and long strings cut short), binary as its
    size and digest, text cut at 2,000 characters."""
    if not data:
        return None
    if headers.get("content-encoding") == "gzip" or data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except OSError:
            pass
    try:
        return _cut(json.loads(data))
    except ValueError:
        pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "<%d bytes, sha512 %s>" % (len(data), integrity(data))
    return text if len(text) <= 2000 else text[:2000] + "...(%d characters)" % len(text)


def _cut(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _cut(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_cut(item) for item in value[:20]] + (["...(%d items)" % len(value)] if len(value) > 20 else [])
    if isinstance(value, str) and len(value) > 200:
        return value[:60] + "...(%d characters)" % len(value)
    return value


# ---------------------------------------------------------------------------------------------------- checks

def lock_entries(project: Path) -> dict[str, dict[str, Any]]:
    """{package name: its entry} of ``project``'s package-lock.json (lockfileVersion 3: ``packages`` keyed by
    ``node_modules/<name>`` paths; nested ones are left out)."""
    lock = json.loads((Path(project) / "package-lock.json").read_text(encoding="utf-8"))
    found = {}
    for path, entry in lock.get("packages", {}).items():
        if path.startswith("node_modules/") and "/node_modules/" not in path:
            found[path[len("node_modules/"):]] = entry
    return found


def check_npm_lock(project: Path, expected: Mapping[str, tuple[str, str]], registry: str) -> None:
    """``project``'s package-lock.json holds each ``name: (version, integrity)`` of ``expected``, with a
    ``resolved`` URL on ``registry``'s host naming the version's tarball; an AssertionError says what differs."""
    entries = lock_entries(project)
    origin = "%s://%s" % (urlsplit(registry).scheme, urlsplit(registry).netloc)
    for name, (version, digest) in expected.items():
        entry = entries.get(name)
        assert entry is not None, "package-lock.json has no node_modules/%s: %s" % (name, sorted(entries))
        assert entry.get("version") == version, "%s: locked %s, expected %s" % (name, entry.get("version"), version)
        assert entry.get("integrity") == digest, "%s: integrity %r, expected %r" % (name, entry.get("integrity"),
                                                                                    digest)
        resolved = entry.get("resolved", "")
        assert resolved.startswith(origin + "/") and resolved.endswith("/" + tarball_name(name, version)), (
            "%s: resolved %r is not a tarball URL of %s" % (name, resolved, origin))


def installed_version(project: Path, name: str) -> str | None:
    """The version of ``name`` under ``project``'s node_modules (npm's tree or pnpm's links), None if absent."""
    manifest = Path(project) / "node_modules" / name / "package.json"
    if not manifest.exists():
        return None
    version: str = json.loads(manifest.read_text(encoding="utf-8"))["version"]
    return version


def check_pnpm_lock(project: Path, expected: Mapping[str, tuple[str, str]]) -> None:
    """``project``'s pnpm-lock.yaml names each ``name@version`` of ``expected`` with its integrity (read as
    text: the lock's ``packages:`` section holds ``'name@version':`` then ``resolution: {integrity: ...}``)."""
    text = (Path(project) / "pnpm-lock.yaml").read_text(encoding="utf-8")
    for name, (version, digest) in expected.items():
        at = re.search(r"^  '?%s@%s'?:\n\s+resolution: \{integrity: ([^,}]+)" % (re.escape(name), re.escape(version)),
                       text, re.MULTILINE)
        assert at is not None, "pnpm-lock.yaml has no %s@%s with an integrity:\n%s" % (name, version, text[:3000])
        assert at.group(1).strip() == digest, "%s@%s: pnpm locked integrity %s, expected %s" % (
            name, version, at.group(1), digest)


def check_requires(client: NpmClient, project: Path, name: str) -> None:
    """``node -e require(name)`` in ``project`` loads the package and, through it, its dependencies."""
    ran = client.run(["node", "-e", "console.log(JSON.stringify(require(%s)))" % json.dumps(name)], cwd=project)
    loaded = json.loads(ran.ok().stdout)
    assert loaded["name"] == name, ran.describe()


# ---------------------------------------------------------------------------------------------------- the scenario

SCOPED_LIB = "@probe-scope/probe-lib"
APP = "probe-app"


@dataclass
class Credentials:
    """How the scenario's user gets its token: ``token`` (an API token, e.g. Depot's), or a username and
    password with which ``npm login`` runs (``adduser``: ``npm adduser``, which creates the account where the
    registry allows it, as Verdaccio does)."""
    token: str | None = None
    username: str | None = None
    password: str | None = None
    adduser: bool = False


def run_scenario(registry: str, credentials: Credentials, work: Path, say: Callable[[str], None] = print,
                 recorder: WireRecorder | None = None, republish_codes: Sequence[str] = ("E409", "E403")) -> None:
    """Everything the npm pack must serve, through the real npm and pnpm, against ``registry``: log in (or take
    the token), whoami, publish a scoped library (1.0.0, then 1.1.0 with ``--tag next``) and an unscoped app
    depending on ``^1.0.0`` of it, install the app into fresh projects with npm (the lock's integrity and
    resolved URLs checked, the tree loaded by node) and pnpm, view, dist-tag add/ls/rm, deprecate, a re-publish
    of an existing version (refused by npm itself, then, with --force, by the registry: one of
    ``republish_codes``), unpublish of one version, and an install with audit on. Raises AssertionError at the
    first step that goes wrong, with the command's output; ``say`` reports each step done (and, with
    ``recorder`` between the clients and the registry, the requests it made)."""
    work = Path(work)

    def done(step: str) -> None:
        say("ok   " + step)
        if recorder is not None:
            for exchange in recorder.take():
                say("       " + exchange.line())

    user = NpmClient(work / "user", registry, token=credentials.token)
    if credentials.token is None:
        assert credentials.username and credentials.password, "credentials: a token or a username and password"
        user.login(credentials.username, credentials.password, adduser=credentials.adduser).ok()
        assert user.token, "npm login saved no token in %s:\n%s" % (user.npmrc, user.npmrc.read_text())
        done("npm %s as %s: token saved" % ("adduser" if credentials.adduser else "login", credentials.username))
    whoami = user.whoami().ok().stdout.strip()
    assert whoami and (credentials.username is None or whoami == credentials.username), whoami
    done("npm whoami: %s" % whoami)

    packages = work / "packages"
    lib = make_package(packages, SCOPED_LIB, "1.0.0", files={"lib/extra.js": "module.exports = 1;\n"})
    lib_next = make_package(packages, SCOPED_LIB, "1.1.0")
    app = make_package(packages, APP, "1.0.0", dependencies={SCOPED_LIB: "^1.0.0"})
    user.publish(lib).ok()
    user.publish(lib_next, tag="next").ok()
    user.publish(app).ok()
    done("npm publish %s, %s --tag next, %s" % (lib.spec, lib_next.spec, app.spec))

    viewed = user.view(SCOPED_LIB).json()
    assert viewed["versions"] == ["1.0.0", "1.1.0"], viewed["versions"]
    assert viewed["dist-tags"] == {"latest": "1.0.0", "next": "1.1.0"}, viewed["dist-tags"]
    assert viewed["dist"]["tarball"].endswith("/" + tarball_name(SCOPED_LIB, "1.0.0")), viewed["dist"]
    digests = {SCOPED_LIB: ("1.0.0", viewed["dist"]["integrity"]),
               APP: ("1.0.0", user.view(APP, "dist.integrity").json())}
    done("npm view: versions, dist-tags, tarball URL, integrity")

    reader = NpmClient(work / "reader", registry, token=user.token)  # a fresh cache: nothing known beforehand
    installed = reader.install(APP).ok()
    assert installed_version(installed.cwd, APP) == "1.0.0"
    assert installed_version(installed.cwd, SCOPED_LIB) == "1.0.0", "npm took %s" % installed_version(
        installed.cwd, SCOPED_LIB)  # ^1.0.0 is met by latest (1.0.0): npm prefers it to next's 1.1.0
    check_npm_lock(installed.cwd, digests, registry)
    check_requires(reader, installed.cwd, APP)
    done("npm install %s: the lock's integrity and resolved URLs, the tree loads" % APP)

    for age in (0, None):  # the two ways pnpm resolves (see NpmClient.pnpm_install), each with a fresh cache
        pnpm_user = NpmClient(work / ("pnpm-age-%s" % age), registry, token=user.token)
        added = pnpm_user.pnpm_install(APP, minimum_release_age=age).ok()
        assert installed_version(added.cwd, APP) == "1.0.0", added.describe()
        check_pnpm_lock(added.cwd, digests)
        check_requires(reader, added.cwd, APP)
        done("pnpm add %s (minimumReleaseAge %s): pnpm-lock.yaml's integrity, the tree loads" % (
            APP, "0" if age == 0 else "pnpm's default"))

    user.dist_tag_add(SCOPED_LIB + "@1.1.0", "stable").ok()
    listed = user.dist_tag_ls(SCOPED_LIB).ok().stdout
    assert "stable: 1.1.0" in listed, listed
    user.dist_tag_rm(SCOPED_LIB, "stable").ok()
    listed = user.dist_tag_ls(SCOPED_LIB).ok().stdout
    assert "stable" not in listed and "latest: 1.0.0" in listed, listed
    done("npm dist-tag add, ls, rm")

    user.deprecate(APP + "@1.0.0", "probe-app 1.0.0 is deprecated by the tests").ok()
    deprecated = user.view(APP + "@1.0.0", "deprecated").json()
    assert deprecated == "probe-app 1.0.0 is deprecated by the tests", deprecated
    done("npm deprecate: npm view shows the message")

    refused = user.publish(lib).failed("cannot publish over")
    forced = user.publish(lib, force=True).failed(*republish_codes)
    done("re-publish of %s: npm refuses it itself; with --force the registry does (%s)" % (
        lib.spec, ", ".join(code for code in republish_codes if code in forced.output)))
    del refused

    user.unpublish(SCOPED_LIB + "@1.1.0").ok()
    viewed = user.view(SCOPED_LIB).json()
    assert viewed["versions"] == ["1.0.0"], viewed["versions"]
    assert "next" not in viewed["dist-tags"], viewed["dist-tags"]
    done("npm unpublish %s@1.1.0: the version and its tag are gone" % SCOPED_LIB)

    audited = reader.install(APP, audit=True).ok()
    assert installed_version(audited.cwd, APP) == "1.0.0"
    done("npm install with audit on")


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description="The npm client harness's scenario against Verdaccio (default) "
                                                 "or any registry.")
    parser.add_argument("--registry", help="a registry URL ending in / (default: start Verdaccio)")
    parser.add_argument("--token", help="an API token for --registry")
    parser.add_argument("--username", help="log in as this user on --registry (with --password)")
    parser.add_argument("--password")
    parser.add_argument("--record", action="store_true", help="print the requests each step made")
    parser.add_argument("--record-json", type=Path, metavar="FILE",
                        help="with --record: write every exchange, headers and bodies, to FILE (JSON lines)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="npm-clients-"))
    try:
        with contextlib.ExitStack() as stack:
            if args.registry:
                registry = args.registry
                credentials = Credentials(token=args.token, username=args.username, password=args.password)
            else:
                registry = stack.enter_context(Verdaccio(work / "verdaccio")).registry
                credentials = Credentials(username="probe-user", password="probe user's password", adduser=True)
            recorder = stack.enter_context(WireRecorder(registry)) if args.record else None
            say: Callable[[str], None] = print
            if recorder is not None and args.record_json:
                say = _recording_to(args.record_json, recorder)
            run_scenario(recorder.url if recorder else registry, credentials, work, say=say, recorder=recorder)
    except AssertionError as failure:
        print("FAILED: %s" % failure, file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print("work directory kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("all steps passed against %s" % (args.registry or "Verdaccio"))
    return 0


def _recording_to(path: Path, recorder: WireRecorder) -> Callable[[str], None]:
    """A ``say`` that also writes each exchange, whole, to ``path`` as a JSON line under the step it served."""
    out = open(path, "w", encoding="utf-8")

    def say(line: str) -> None:
        print(line)
        if line.startswith("ok "):
            for exchange in recorder.exchanges:
                out.write(json.dumps(dict(exchange.__dict__, step=line[5:])) + "\n")
            out.flush()
    return say


if __name__ == "__main__":
    sys.exit(main())
