"""The PyPI route pack (packs/pypi.json) against the real clients: twine uploads to /pypi/{namespace}/legacy/, pip
and uv install from /pypi/{namespace}/simple/ (PEP 503 HTML and PEP 691 JSON, PEP 592 yanks, PEP 658 metadata,
PEP 700 sizes and versions), unmodified, on a real server process; the pages are checked over plain HTTP too.

One server serves the module; each test uses projects of its own, so none sees another's files. The callers:
``uploader`` (read, write), ``reader`` (read), ``admin``, and anonymous callers, granted read on ``PUBLIC`` only.
"""
import hashlib
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from tests.conftest import ServerProcess
from tests.pypi_clients import (PIP_ACCEPT, SIMPLE_HTML, SIMPLE_JSON, TOKEN_USER, DepotAccounts, build_sdist,
                                build_wheel, installed, legacy_upload, normalize, pip_download, pip_install,
                                schema_with_the_pack, simple_anchors, twine_upload, uv_pip_install,
                                write_requirements)

pytestmark = pytest.mark.clients

PASSWORD = "pypi pack test password"
NAMESPACE = "acme"  # needs credentials
PUBLIC = "open"  # anonymous callers may read it
GRANTS = (("user:uploader", "*", "write"), ("user:reader", "*", "read"), ("anonymous", PUBLIC, "read"))


class PypiDepot:
    """The server, its callers' tokens, and the pack's URLs."""

    def __init__(self, url, accounts):
        self.url, self.accounts = url, accounts

    def simple(self, namespace=NAMESPACE, project=None):
        return "%s/pypi/%s/simple/%s" % (self.url, namespace, project + "/" if project else "")

    def legacy(self, namespace=NAMESPACE):
        return "%s/pypi/%s/legacy/" % (self.url, namespace)

    def auth(self, who="reader"):
        """Basic credentials as pip, uv and twine send them: ``__token__`` and an API token."""
        return (TOKEN_USER, self.accounts[who])

    def get(self, url, who="reader", accept="*/*", **kw):
        """GET as ``who`` (None: anonymously) with ``accept`` (None: no Accept header at all)."""
        return requests.get(url, auth=self.auth(who) if who else None, headers={"Accept": accept}, timeout=60, **kw)

    def upload(self, *dists, namespace=NAMESPACE, who="uploader"):
        """twine uploads ``dists``; the test fails unless it succeeds."""
        result = twine_upload(self.legacy(namespace), dists, password=self.accounts[who])
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def yank(self, project, version, reason, namespace=NAMESPACE, who="admin"):
        """Yank ``version`` (PEP 592): the pack's admin route, ``POST /pypi/{ns}/yank/{project}/{version}``."""
        return requests.post("%s/pypi/%s/yank/%s/%s" % (self.url, namespace, project, version),
                             json={"reason": reason}, auth=self.auth(who), timeout=60)

    def page_json(self, project, namespace=NAMESPACE, who="reader"):
        page = self.get(self.simple(namespace, project), who, accept=SIMPLE_JSON)
        assert page.status_code == 200, page.text
        assert page.headers["Content-Type"].split(";")[0] == SIMPLE_JSON
        return page.json()

    def page_html(self, project, namespace=NAMESPACE, who="reader"):
        page = self.get(self.simple(namespace, project), who, accept="text/html")
        assert page.status_code == 200, page.text
        assert page.headers["Content-Type"].split(";")[0] == "text/html"
        return page


@pytest.fixture(scope="module")
def depot(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pypi")
    server = ServerProcess(directory / "data", env={"DEPOT_ADMIN_PASSWORD": PASSWORD},
                           args=("--schema", str(schema_with_the_pack(directory))))
    try:
        yield PypiDepot(server.url, DepotAccounts(server.url, PASSWORD, grants=GRANTS))
    finally:
        server.stop()


def files_by_name(page):
    return {entry["filename"]: entry for entry in page["files"]}


def test_twine_uploads_a_wheel_and_an_sdist(depot, tmp_path):
    wheel = build_wheel(tmp_path, "Upload_Probe", "1.0", requires_python=">=3.8", summary="probe")
    sdist = build_sdist(tmp_path, "Upload_Probe", "1.0", requires_python=">=3.8", summary="probe")
    depot.upload(wheel, sdist)
    page = depot.page_json("upload-probe")
    assert page["name"] == "upload-probe" and page["versions"] == ["1.0"]
    files = files_by_name(page)
    assert sorted(files) == sorted([wheel.filename, sdist.filename])
    for dist in (wheel, sdist):
        entry = files[dist.filename]
        assert entry["hashes"]["sha256"] == dist.sha256 and entry["size"] == dist.size
        assert entry["requires-python"] == ">=3.8" and entry.get("yanked", False) is False
        assert entry["upload-time"].endswith("Z")
        download = depot.get(urljoin(depot.simple(project="upload-probe"), entry["url"]))
        assert download.status_code == 200 and download.content == dist.path.read_bytes()


def test_pip_installs_a_project_and_resolves_its_dependency(depot, tmp_path):
    app = build_wheel(tmp_path, "Dep_App", "1.0", requires=["dep-base>=1.0,<2"])
    base = build_wheel(tmp_path, "dep-base", "1.5")
    depot.upload(build_wheel(tmp_path, "dep-base", "1.0"), base, build_wheel(tmp_path, "dep-base", "2.0"), app)
    result = pip_install(depot.simple(), ["dep.app"], tmp_path / "target", password=depot.accounts["reader"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed(tmp_path / "target") == {"dep-app": "1.0", "dep-base": "1.5"}
    assert "dep_app-1.0-py3-none-any.whl.metadata" in result.stdout  # pip read the dependencies from PEP 658's file
    assert (tmp_path / "target" / "dep_app" / "__init__.py").read_text() == "__version__ = '1.0'\n"
    pinned = write_requirements(tmp_path / "pinned.txt", [app, base])  # hash-checking mode: every file's sha256
    checked = pip_install(depot.simple(), ["--require-hashes", "-r", str(pinned)], tmp_path / "checked",
                          password=depot.accounts["reader"])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert installed(tmp_path / "checked") == {"dep-app": "1.0", "dep-base": "1.5"}


def test_pip_downloads_with_required_hashes_and_refuses_a_mismatch(depot, tmp_path):
    app = build_wheel(tmp_path, "hash-app", "1.0", requires=["hash-lib"])
    lib = build_wheel(tmp_path, "hash-lib", "1.0")
    depot.upload(app, lib)
    result = pip_download(depot.simple(), [app, lib], tmp_path / "ok", password=depot.accounts["reader"])
    assert result.returncode == 0, result.stdout + result.stderr
    for dist in (app, lib):
        assert hashlib.sha256((tmp_path / "ok" / dist.filename).read_bytes()).hexdigest() == dist.sha256
    refused = pip_download(depot.simple(), [app, "hash-lib==1.0 --hash=sha256:" + "0" * 64], tmp_path / "refused",
                           password=depot.accounts["reader"])
    assert refused.returncode != 0 and "DO NOT MATCH THE HASHES" in refused.stderr, refused.stdout + refused.stderr


def test_uv_installs_from_the_same_index(depot, tmp_path):
    depot.upload(build_wheel(tmp_path, "uv-lib", "1.0"), build_wheel(tmp_path, "uv-lib", "2.0"),
                 build_wheel(tmp_path, "uv_app", "1.0", requires=["uv-lib<2"]))
    result = uv_pip_install(depot.simple(), ["uv-app"], tmp_path / "target", password=depot.accounts["reader"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed(tmp_path / "target") == {"uv-app": "1.0", "uv-lib": "1.0"}


def test_anonymous_callers_install_where_granted_and_are_challenged_elsewhere(depot, tmp_path):
    wheel = build_wheel(tmp_path, "anon-probe", "1.0")
    depot.upload(wheel, namespace=PUBLIC)
    depot.upload(wheel)
    for run in (pip_install, uv_pip_install):
        result = run(depot.simple(PUBLIC), ["anon-probe"], tmp_path / ("public-" + run.__name__))
        assert result.returncode == 0, result.stdout + result.stderr
        assert installed(tmp_path / ("public-" + run.__name__)) == {"anon-probe": "1.0"}
        refused = run(depot.simple(), ["anon-probe"], tmp_path / ("private-" + run.__name__))
        assert refused.returncode != 0, refused.stdout  # (pip, unable to prompt, says only that nothing was found)
        assert installed(tmp_path / ("private-" + run.__name__)) == {}
    for url in (depot.simple(), depot.simple(project="anon-probe")):
        challenged = depot.get(url, who=None)
        assert challenged.status_code == 401
        assert challenged.headers["WWW-Authenticate"].startswith("Basic"), challenged.headers
    wrong = requests.get(depot.simple(project="anon-probe"), auth=(TOKEN_USER, "dpt_not-a-token"), timeout=60)
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")


def test_uploads_need_write_access(depot, tmp_path):
    wheel = build_wheel(tmp_path, "write-probe", "1.0")
    anonymous = legacy_upload(depot.legacy(PUBLIC), wheel)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    reader = twine_upload(depot.legacy(), [wheel], password=depot.accounts["reader"])
    assert reader.returncode != 0 and "403" in reader.stdout + reader.stderr, reader.stdout + reader.stderr
    assert depot.get(depot.simple(project="write-probe")).status_code == 404


def test_an_upload_whose_declared_digest_differs_is_refused(depot, tmp_path):
    wheel = build_wheel(tmp_path, "digest-probe", "1.0")
    refused = legacy_upload(depot.legacy(), wheel, password=depot.accounts["uploader"], sha256_digest="0" * 64)
    assert refused.status_code == 400, refused.text
    assert depot.get(depot.simple(project="digest-probe")).status_code == 404
    assert legacy_upload(depot.legacy(), wheel, password=depot.accounts["uploader"]).status_code in (200, 201)


def test_a_yanked_version_is_skipped_unless_pinned(depot, tmp_path):
    depot.upload(build_wheel(tmp_path, "yank-probe", "1.0"), build_wheel(tmp_path, "yank-probe", "2.0"))
    assert depot.yank("yank-probe", "2.0", "broken", who="uploader").status_code == 403
    assert depot.yank("yank-probe", "2.0", "broken").status_code in (200, 204)
    files = files_by_name(depot.page_json("yank-probe"))
    assert files["yank_probe-2.0-py3-none-any.whl"]["yanked"] == "broken"
    assert files["yank_probe-1.0-py3-none-any.whl"].get("yanked", False) is False
    anchors = {a["text"]: a for a in simple_anchors(depot.page_html("yank-probe").text).anchors}
    assert anchors["yank_probe-2.0-py3-none-any.whl"]["data-yanked"] == "broken"
    assert "data-yanked" not in anchors["yank_probe-1.0-py3-none-any.whl"]
    token = depot.accounts["reader"]
    for run in (pip_install, uv_pip_install):
        latest = run(depot.simple(), ["yank-probe"], tmp_path / ("latest-" + run.__name__), password=token)
        assert latest.returncode == 0, latest.stdout + latest.stderr
        assert installed(tmp_path / ("latest-" + run.__name__)) == {"yank-probe": "1.0"}
        pinned = run(depot.simple(), ["yank-probe==2.0"], tmp_path / ("pinned-" + run.__name__), password=token)
        assert pinned.returncode == 0, pinned.stdout + pinned.stderr
        assert installed(tmp_path / ("pinned-" + run.__name__)) == {"yank-probe": "2.0"}
        assert "yanked" in (pinned.stdout + pinned.stderr).lower()  # both clients warn, naming the reason
        assert "broken" in pinned.stdout + pinned.stderr


def test_uploading_a_filename_again_is_a_conflict_that_twine_reports(depot, tmp_path):
    wheel = build_wheel(tmp_path, "dup-probe", "1.0")
    depot.upload(wheel)
    again = twine_upload(depot.legacy(), [wheel], password=depot.accounts["uploader"])
    assert again.returncode != 0 and "409" in again.stdout + again.stderr, again.stdout + again.stderr
    other = build_wheel(tmp_path / "other", "dup-probe", "1.0", summary="other bytes, same filename")
    assert other.filename == wheel.filename and other.sha256 != wheel.sha256
    conflict = legacy_upload(depot.legacy(), other, password=depot.accounts["uploader"])
    assert conflict.status_code == 409, conflict.text
    assert files_by_name(depot.page_json("dup-probe"))[wheel.filename]["hashes"]["sha256"] == wheel.sha256


def test_the_simple_page_negotiates_html_and_json(depot, tmp_path):
    depot.upload(build_wheel(tmp_path, "neg-probe", "1.0"))
    url = depot.simple(project="neg-probe")
    for accept, expected in ((None, "text/html"), ("*/*", "text/html"), ("text/html", "text/html"),
                             (SIMPLE_HTML, SIMPLE_HTML), (SIMPLE_JSON, SIMPLE_JSON), (PIP_ACCEPT, SIMPLE_JSON),
                             ("application/vnd.pypi.simple.latest+json", SIMPLE_JSON),
                             ("application/vnd.pypi.simple.latest+html", SIMPLE_HTML)):
        page = depot.get(url, accept=accept)
        assert page.status_code == 200, (accept, page.status_code)
        assert page.headers["Content-Type"].split(";")[0] == expected, (accept, page.headers["Content-Type"])
        assert "Accept" in page.headers.get("Vary", ""), page.headers
    unsupported = depot.get(url, accept="application/xml")
    assert unsupported.status_code == 406 or (unsupported.status_code == 200 and unsupported.headers[
        "Content-Type"].startswith("text/html"))  # PEP 691 allows either


def test_the_html_page_is_pep_503(depot, tmp_path):
    wheel = build_wheel(tmp_path, "Html_Probe", "1.0", requires_python=">=3.8,<4")
    sdist = build_sdist(tmp_path, "Html_Probe", "1.0", requires_python=">=3.8,<4")
    depot.upload(wheel, sdist)
    page = depot.page_html("html-probe")
    parsed = simple_anchors(page.text)
    assert parsed.meta.get("pypi:repository-version", "").startswith("1.")
    anchors = {a["text"]: a for a in parsed.anchors}
    assert sorted(anchors) == sorted([wheel.filename, sdist.filename])
    for dist in (wheel, sdist):
        anchor = anchors[dist.filename]
        assert anchor["href"].endswith("#sha256=" + dist.sha256)
        assert anchor["data-requires-python"] == ">=3.8,<4"
        assert depot.get(urljoin(page.url, anchor["href"])).content == dist.path.read_bytes()
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in page.text  # escaped, as PEP 503 says


def test_the_core_metadata_is_served_beside_the_wheel(depot, tmp_path):
    """PEP 658/714: ``<file URL>.metadata`` is the wheel's METADATA, announced with its hash on both pages."""
    wheel = build_wheel(tmp_path, "meta-probe", "1.0", requires=["dep-base"], requires_python=">=3.8")
    depot.upload(wheel)
    entry = files_by_name(depot.page_json("meta-probe"))[wheel.filename]
    assert entry["core-metadata"] == {"sha256": wheel.metadata_sha256}
    page = depot.page_html("meta-probe")
    anchor = simple_anchors(page.text).anchors[0]
    assert anchor["data-core-metadata"] == "sha256=" + wheel.metadata_sha256
    metadata = depot.get(urljoin(page.url, anchor["href"].split("#")[0] + ".metadata"))
    assert metadata.status_code == 200 and metadata.content == wheel.metadata
    assert depot.get(urljoin(page.url, entry["url"].split("#")[0] + ".metadata")).content == wheel.metadata


def test_requires_python_keeps_pip_on_a_version_this_python_can_run(depot, tmp_path):
    depot.upload(build_wheel(tmp_path, "rp-probe", "1.0", requires_python=">=3.8"),
                 build_wheel(tmp_path, "rp-probe", "2.0", requires_python=">=3.99"))
    result = pip_install(depot.simple(), ["rp-probe"], tmp_path / "target", password=depot.accounts["reader"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed(tmp_path / "target") == {"rp-probe": "1.0"}


def test_project_names_are_normalized_by_redirect(depot, tmp_path):
    depot.upload(build_wheel(tmp_path, "Norm_Probe", "1.0"))
    for spelling in ("Norm_Probe/", "norm.probe/", "NORM-probe/", "Norm_Probe"):
        moved = depot.get(depot.simple() + spelling, allow_redirects=False)
        assert moved.status_code in (301, 308), (spelling, moved.status_code)
        assert urlsplit(urljoin(moved.url, moved.headers["Location"])).path == "/pypi/%s/simple/norm-probe/" % (
            NAMESPACE)
    assert depot.page_json("norm-probe")["name"] == "norm-probe"
    # the normalized name without its slash is served as it is (Depot's URL map ignores a trailing slash)
    assert depot.get(depot.simple() + "norm-probe", accept=SIMPLE_JSON).json()["name"] == "norm-probe"


def test_the_project_list_and_unknown_projects(depot, tmp_path):
    depot.upload(build_wheel(tmp_path, "List_Probe", "1.0"))
    listing = depot.get(depot.simple(), accept=SIMPLE_JSON)
    assert listing.status_code == 200 and listing.headers["Content-Type"].split(";")[0] == SIMPLE_JSON
    assert "list-probe" in [normalize(project["name"]) for project in listing.json()["projects"]]
    html = depot.get(depot.simple(), accept="text/html")
    links = {normalize(a["text"]): a["href"] for a in simple_anchors(html.text).anchors}
    assert urlsplit(urljoin(html.url, links["list-probe"])).path == "/pypi/%s/simple/list-probe/" % NAMESPACE
    assert depot.get(depot.simple(project="no-such-probe")).status_code == 404
    assert depot.get(depot.simple("elsewhere", "list-probe")).status_code == 404  # namespaces are apart


def test_an_admin_deletes_a_file_and_both_page_formats_drop_it(depot, tmp_path):
    keep, gone = build_wheel(tmp_path, "del-probe", "1.0"), build_wheel(tmp_path, "del-probe", "2.0")
    depot.upload(keep, gone)
    url = "%s/pypi/%s/files/del-probe/%s" % (depot.url, NAMESPACE, gone.filename)
    refused = requests.delete(url, auth=depot.auth("uploader"), timeout=60)
    assert refused.status_code == 403, refused.text  # deleting needs the delete permission
    deleted = requests.delete(url, auth=depot.auth("admin"), timeout=60)
    assert deleted.status_code == 200, deleted.text
    assert sorted(files_by_name(depot.page_json("del-probe"))) == [keep.filename]
    anchors = [a["text"] for a in simple_anchors(depot.page_html("del-probe").text).anchors]
    assert anchors == [keep.filename]
    assert depot.get(url).status_code == 404 and depot.get(url + ".metadata").status_code == 404
    assert requests.delete(url, auth=depot.auth("admin"), timeout=60).status_code == 404


def response_cache_hits(depot):
    """The server's response cache hits so far (GET /metrics, as the admin)."""
    from prometheus_client.parser import text_string_to_metric_families

    scraped = requests.get(depot.url + "/metrics", auth=depot.auth("admin"), timeout=60)
    assert scraped.status_code == 200, scraped.text
    return sum(sample.value for family in text_string_to_metric_families(scraped.text) for sample in family.samples
               if sample.name == "depot_cache_lookups_total" and sample.labels == {"kind": "response",
                                                                                   "outcome": "hit"})


def test_the_project_page_is_kept_rendered_until_the_project_changes(depot, tmp_path):
    """Each format of a project page is rendered once per revision of the project (written by every upload, yank
    and delete, and replayed on replicas) and answered from the response cache until the next change."""
    first, second = build_wheel(tmp_path, "cache-probe", "1.0"), build_wheel(tmp_path, "cache-probe", "2.0")
    depot.upload(first)

    def both_formats():
        page = depot.page_json("cache-probe")
        return page, [a["text"] for a in simple_anchors(depot.page_html("cache-probe").text).anchors]

    rendered = both_formats()
    hits = response_cache_hits(depot)
    assert both_formats() == rendered and sorted(files_by_name(rendered[0])) == [first.filename]
    assert response_cache_hits(depot) == hits + 2  # the second reading of each format came from the cache
    depot.upload(second)
    page, anchors = both_formats()
    assert sorted(files_by_name(page)) == sorted(anchors) == sorted([first.filename, second.filename])
    assert depot.yank("cache-probe", "2.0", "cached no more").status_code in (200, 204)
    page, anchors = both_formats()
    assert files_by_name(page)[second.filename]["yanked"] == "cached no more"
    url = "%s/pypi/%s/files/cache-probe/%s" % (depot.url, NAMESPACE, second.filename)
    assert requests.delete(url, auth=depot.auth("admin"), timeout=60).status_code == 200
    page, anchors = both_formats()
    assert sorted(files_by_name(page)) == anchors == [first.filename]
