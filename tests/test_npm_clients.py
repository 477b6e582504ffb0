"""The npm client harness (tests/npm_clients.py) on its own, without a registry: the packages and publish
documents it makes are ones npm reads as it would its own, the clients it runs see only the configuration it
writes, and its pty answers prompts in order. The whole harness is proven against Verdaccio by
`python -m tests.npm_clients` (not run here: it takes a minute); the npm pack's tests drive it against Depot."""
import base64
import hashlib
import io
import json
import tarfile

import pytest

from tests.npm_clients import (DEAD_PROXY, PNPM, VERDACCIO, NpmClient, _run_in_pty, escaped_name,
                               integrity, make_package, npm_tarball, publish_document, tarball_name)
from tests.pypi_clients import ROOT

pytestmark = pytest.mark.clients

REGISTRY = "http://127.0.0.1:9/npm/acme/"  # nothing listens there: no test here sends it a request


def test_the_install_script_brings_the_pinned_npm_tools():
    script = (ROOT / "scripts" / "install.sh").read_text()
    assert "cd tests/npm && npm ci" in script
    lock = json.loads((ROOT / "tests" / "npm" / "package-lock.json").read_text())["packages"]
    assert lock["node_modules/pnpm"]["version"] == "12.4.2"
    assert lock["node_modules/verdaccio"]["version"] == "6.8.0"
    assert lock["node_modules/node-fetch"]["version"] == "2.7.0"  # the override Verdaccio needs to install
    assert PNPM.exists() and VERDACCIO.exists(), "run `bash scripts/install.sh` (npm ci in tests/npm)"


def test_a_tarball_is_the_same_each_time_and_packed_as_npm_packs():
    data = npm_tarball("@probe/lib", "1.2.3", dependencies={"left-pad": "^1.0.0"})
    assert data == npm_tarball("@probe/lib", "1.2.3", dependencies={"left-pad": "^1.0.0"})
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        assert archive.getnames() == ["package/package.json", "package/index.js"]
        manifest = json.load(archive.extractfile("package/package.json"))
    assert (manifest["name"], manifest["version"], manifest["dependencies"]) == ("@probe/lib", "1.2.3",
                                                                                 {"left-pad": "^1.0.0"})
    big = npm_tarball("@probe/lib", "2.0.0", payload_size=3 << 20)
    assert len(big) > 3 << 20  # the payload does not compress


def test_a_publish_document_is_shaped_as_libnpmpublish_shapes_it():
    data = npm_tarball("@probe/lib", "1.2.3")
    document = publish_document(REGISTRY, "@probe/lib", "1.2.3", data, tag="next")
    assert (document["_id"], document["name"], document["dist-tags"]) == ("@probe/lib", "@probe/lib",
                                                                         {"next": "1.2.3"})
    version = document["versions"]["1.2.3"]
    assert version["_id"] == "@probe/lib@1.2.3"
    assert version["dist"]["integrity"] == "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    assert version["dist"]["shasum"] == hashlib.sha1(data).hexdigest()
    attachment = document["_attachments"]["@probe/lib-1.2.3.tgz"]  # the full name, scope and all
    assert base64.b64decode(attachment["data"]) == data and attachment["length"] == len(data)
    assert escaped_name("@probe/lib") == "@probe%2flib" and tarball_name("@probe/lib", "1.2.3") == "lib-1.2.3.tgz"


def test_npm_packs_a_made_package_with_its_files(tmp_path):
    package = make_package(tmp_path, "@probe/app", "1.0.0", dependencies={"@probe/lib": "^1.0.0"},
                           files={"lib/extra.js": "module.exports = 1;\n"})
    client = NpmClient(tmp_path / "home", REGISTRY)
    packed = client.npm("pack", "--dry-run", "--json", cwd=package.path).json()[0]
    assert (packed["name"], packed["version"]) == ("@probe/app", "1.0.0")
    assert sorted(f["path"] for f in packed["files"]) == ["README.md", "index.js", "lib/extra.js", "package.json"]
    assert packed["integrity"].startswith("sha512-")


def test_the_clients_read_only_the_configuration_written_for_them(tmp_path):
    client = NpmClient(tmp_path / "home", REGISTRY, token="secret-token", extra_config={"fetch-retries": "0"})
    assert client.npmrc.read_text().splitlines() == [
        "registry=" + REGISTRY, "//127.0.0.1:9/npm/acme/:_authToken=secret-token", "fetch-retries=0"]
    assert client.saved_token() == "secret-token"
    config = client.npm("config", "list", "--json").json()
    assert config["registry"] == REGISTRY and config["fetch-retries"] == 0
    assert config["userconfig"] == str(client.npmrc) and config["cache"] == str(client.home / "npm-cache")
    assert (config["audit"], config["fund"], config["update-notifier"]) == (False, False, False)
    assert client.npm("config", "get", "audit", audit=True).ok().stdout.strip() == "true"
    env = client.env()
    assert env["HOME"] == str(client.home) and env["https_proxy"] == DEAD_PROXY and env["no_proxy"] == "127.0.0.1"
    assert not {"CI", "GITHUB_ACTIONS", "NODE_OPTIONS", "npm_config_registry"} & set(env)
    assert client.pnpm("--version").ok().stdout.strip() == "12.4.2"


def test_a_failure_shows_the_command_and_its_output(tmp_path):
    client = NpmClient(tmp_path / "home", REGISTRY)
    ran = client.npm("whoami")  # no credentials: npm fails before sending anything
    with pytest.raises(AssertionError) as failure:
        ran.ok()
    assert "`npm whoami`" in str(failure.value) and "ENEEDAUTH" in str(failure.value)
    assert ran.failed("ENEEDAUTH") is ran


def test_the_pty_answers_each_prompt_in_turn(tmp_path):
    script = ("const rl = require('readline').createInterface({input: process.stdin, output: process.stdout});"
              "rl.question('Username: ', u => rl.question('Password: ', p => {"
              "console.log('got ' + u + '/' + p + ' tty=' + process.stdin.isTTY); rl.close(); }));")
    client = NpmClient(tmp_path / "home", REGISTRY)
    ran = _run_in_pty(["node", "-e", script], tmp_path, client.env(),
                      [("Username:", "probe-user"), ("Password:", "its password")], timeout=60)
    assert ran.returncode == 0 and "got probe-user/its password tty=true" in ran.stdout, ran.describe()
