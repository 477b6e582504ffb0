"""The npm pack (packs/npm.json) against the real npm and pnpm, unmodified, on a real server process: the whole
scenario of tests/npm_clients.py (login, whoami, publish of a scoped library and an unscoped app depending on it,
npm and pnpm installs with their lockfiles' integrity, view, dist-tag add/ls/rm, deprecate, a refused
re-publish, unpublish, an audited install), then an install through a reverse proxy whose X-Forwarded-* headers
Depot trusts: the tarball URLs name the proxy."""
import pytest

from tests.conftest import ServerProcess
from tests.pypi_clients import DepotAccounts
from tests.npm_clients import (APP, SCOPED_LIB, Credentials, NpmClient, WireRecorder, check_npm_lock,
                               installed_version, make_package, run_scenario)

pytestmark = pytest.mark.clients

PASSWORD = "npm clients test password"
USER, USER_PASSWORD = "npmuser", "npm user password 42"


@pytest.fixture(scope="module")
def depot(tmp_path_factory):
    directory = tmp_path_factory.mktemp("npm-clients")
    server = ServerProcess(directory / "data", env={"DEPOT_ADMIN_PASSWORD": PASSWORD},
                           args=("--trusted-proxies", "127.0.0.1"))
    try:
        DepotAccounts(server.url, PASSWORD).post("/admin/users", {"username": USER, "password": USER_PASSWORD,
                                                                  "scopes": ["read", "write", "admin"]})
        yield server
    finally:
        server.stop()


def test_npm_and_pnpm_work_against_the_pack_unmodified(depot, tmp_path):
    run_scenario(depot.url + "/npm/acme/", Credentials(username=USER, password=USER_PASSWORD), tmp_path,
                 say=lambda line: None)


def test_installs_through_a_trusted_reverse_proxy_get_its_tarball_urls(depot, tmp_path):
    direct = depot.url + "/npm/proxied/"
    publisher = NpmClient(tmp_path / "publisher", direct)
    publisher.login(USER, USER_PASSWORD).ok()
    publisher.publish(make_package(tmp_path / "packages", SCOPED_LIB, "3.0.0")).ok()
    publisher.publish(make_package(tmp_path / "packages", APP, "3.0.0", dependencies={SCOPED_LIB: "^3.0.0"})).ok()
    with WireRecorder(direct, forwarded=True) as proxy:
        reader = NpmClient(tmp_path / "reader", proxy.url, token=publisher.token)
        installed = reader.install(APP).ok()
        assert installed_version(installed.cwd, SCOPED_LIB) == "3.0.0"
        digests = {name: ("3.0.0", reader.view(name + "@3.0.0", "dist.integrity").json()) for name in (APP, SCOPED_LIB)}
        check_npm_lock(installed.cwd, digests, proxy.url)  # resolved URLs on the proxy's host and port
        tarballs = [e for e in proxy.take() if "/-/" in e.path and e.method == "GET"]
        assert len(tarballs) == 2 and all(e.status == 200 for e in tarballs), [e.line() for e in tarballs]
