"""The real-client harness (tests/pypi_clients.py) proven against a reference index, pypiserver: the files it
builds are ones twine uploads and pip and uv install, and each client runs isolated from this machine's
configuration, talking only to the index it is given. test_pypi_pack.py drives the same clients against Depot."""
import base64
import hashlib
import zipfile
from email.parser import BytesParser
from urllib.parse import urljoin

import pytest
import requests

from tests.pypi_clients import (Dist, PypiServer, build_sdist, build_wheel, installed, legacy_upload, pip_download,
                                pip_install, simple_anchors, twine_upload, uv_pip_install)

pytestmark = pytest.mark.clients


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """app 1.0 needs lib>=1.0,<2; lib has 1.0, 1.5 and 2.0; app has an sdist too."""
    out = tmp_path_factory.mktemp("dist")
    return {
        "app": build_wheel(out, "Probe_App", "1.0", requires=["probe-lib>=1.0,<2"], requires_python=">=3.8"),
        "app-sdist": build_sdist(out, "Probe_App", "1.0", requires=["probe-lib>=1.0,<2"], requires_python=">=3.8"),
        "lib-1.0": build_wheel(out, "probe-lib", "1.0"),
        "lib-1.5": build_wheel(out, "probe-lib", "1.5"),
        "lib-2.0": build_wheel(out, "probe-lib", "2.0"),
    }


@pytest.fixture(scope="module")
def index(tmp_path_factory, dists):
    """pypiserver with every file of ``dists`` uploaded by twine."""
    with PypiServer(tmp_path_factory.mktemp("pypiserver") / "packages") as server:
        uploaded = twine_upload(server.url, dists.values(), password="unused")
        assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
        yield server


def test_the_builders_make_the_same_valid_files_every_time(tmp_path, dists):
    wheel = dists["app"]
    again = build_wheel(tmp_path, "Probe_App", "1.0", requires=["probe-lib>=1.0,<2"], requires_python=">=3.8")
    assert (again.filename, again.sha256, again.size) == (wheel.filename, wheel.sha256, wheel.size)
    assert wheel.filename == "probe_app-1.0-py3-none-any.whl" and wheel.project == "probe-app"
    with zipfile.ZipFile(wheel.path) as archive:
        assert archive.read("probe_app-1.0.dist-info/METADATA") == wheel.metadata
        record = archive.read("probe_app-1.0.dist-info/RECORD").decode().splitlines()
        for line in record:
            path, digest, size = line.rsplit(",", 2)
            if digest:  # every file but RECORD itself is listed with its hash and size
                data = archive.read(path)
                assert (digest, int(size)) == (record_digest(data), len(data))
    metadata = BytesParser().parsebytes(wheel.metadata)
    assert (metadata["Name"], metadata["Version"], metadata["Requires-Python"]) == ("Probe_App", "1.0", ">=3.8")
    assert metadata.get_all("Requires-Dist") == ["probe-lib>=1.0,<2"]
    sdist = dists["app-sdist"]
    assert sdist.filename == "probe_app-1.0.tar.gz"
    assert build_sdist(tmp_path, "Probe_App", "1.0", requires=["probe-lib>=1.0,<2"],
                       requires_python=">=3.8").sha256 == sdist.sha256


def record_digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_a_payload_makes_distinct_files_of_the_asked_size(tmp_path):
    small, large = build_wheel(tmp_path, "sized", "1.0"), build_wheel(tmp_path / "b", "sized", "1.0",
                                                                      payload_size=3 << 20)
    assert large.size > 3 << 20 > small.size and large.sha256 != small.sha256
    other = build_wheel(tmp_path, "sized", "1.1", payload_size=3 << 20)
    with zipfile.ZipFile(large.path) as one, zipfile.ZipFile(other.path) as two:
        assert one.read("sized/payload.bin") != two.read("sized/payload.bin")


def test_the_simple_page_lists_what_twine_uploaded(index, dists):
    page = requests.get(index.simple + "probe-app/", timeout=30)
    assert page.status_code == 200
    anchors = simple_anchors(page.text).anchors
    assert sorted(a["text"] for a in anchors) == sorted([dists["app"].filename, dists["app-sdist"].filename])
    for anchor in anchors:
        dist = next(d for d in dists.values() if d.filename == anchor["text"])
        assert anchor["href"].endswith("#sha256=" + dist.sha256)
        assert requests.get(urljoin(page.url, anchor["href"]), timeout=30).content == dist.path.read_bytes()


def test_pip_installs_a_project_and_resolves_its_dependency(index, tmp_path):
    result = pip_install(index.simple, ["Probe.App"], tmp_path / "target")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed(tmp_path / "target") == {"probe-app": "1.0", "probe-lib": "1.5"}
    assert (tmp_path / "target" / "probe_app" / "__init__.py").read_text() == "__version__ = '1.0'\n"


def test_pip_downloads_only_files_whose_hashes_match(index, dists, tmp_path):
    result = pip_download(index.simple, [dists["app"], dists["lib-1.5"]], tmp_path / "ok")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == [dists["app"].filename, dists["lib-1.5"].filename]
    wrong = Dist(**dict(vars(dists["lib-1.5"]), sha256="0" * 64))
    refused = pip_download(index.simple, [dists["app"], wrong], tmp_path / "refused")
    assert refused.returncode != 0 and "DO NOT MATCH THE HASHES" in refused.stderr, refused.stderr


def test_uv_installs_a_project_and_resolves_its_dependency(index, tmp_path):
    result = uv_pip_install(index.simple, ["probe-app"], tmp_path / "target")
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed(tmp_path / "target") == {"probe-app": "1.0", "probe-lib": "1.5"}


def test_clients_look_nowhere_but_the_index_given(index, tmp_path):
    """A project the index lacks is not found elsewhere (PyPI, this machine's pip.conf indexes, a cache)."""
    for run in (pip_install, uv_pip_install):
        result = run(index.simple, ["requests"], tmp_path / run.__name__)
        assert result.returncode != 0, result.stdout
        assert installed(tmp_path / run.__name__) == {}


def test_twine_reports_a_refused_upload(index, dists):
    again = twine_upload(index.url, [dists["lib-1.0"]], password="unused")
    assert again.returncode != 0 and "400" in again.stdout + again.stderr  # pypiserver: "already exists", 400


def test_legacy_upload_streams_the_form_twine_sends(index, tmp_path):
    wheel = build_wheel(tmp_path, "form-probe", "1.0", requires=["probe-lib"], payload_size=3 << 20)
    assert legacy_upload(index.url, wheel, password="unused").status_code == 200
    page = requests.get(index.simple + "form-probe/", timeout=30)
    assert [a["text"] for a in simple_anchors(page.text).anchors] == [wheel.filename]
    stored = requests.get(urljoin(page.url, simple_anchors(page.text).anchors[0]["href"]), timeout=30).content
    assert hashlib.sha256(stored).hexdigest() == wheel.sha256
    # pypiserver answers 409 for a file it has (400 when the User-Agent names twine)
    assert legacy_upload(index.url, wheel, password="unused").status_code == 409
