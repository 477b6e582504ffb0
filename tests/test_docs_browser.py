"""/docs in a real browser: a Depot server (`python -m app serve`) and headless Chromium (Debian's package, driven
by Playwright; `bash scripts/install.sh` installs both) show Swagger UI listing every operation of /openapi.json,
with everything the page loads served by Depot itself."""
import os
import subprocess
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import sync_playwright

from tests.conftest import ROOT, ServerProcess

CHROMIUM = "/usr/bin/chromium"
PUBLISH = ("PUT", "/v1/{namespace}/{name}/{version}/{variant}/blob")
FETCH_ID = "operations-public-fetch_artifact_blob"


@pytest.fixture
def server(tmp_path):
    running = ServerProcess(tmp_path / "data")
    yield running
    running.stop()


@pytest.fixture
def browser():
    assert os.path.exists(CHROMIUM), "%s is missing: `bash scripts/install.sh` installs it" % CHROMIUM
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


def test_docs_page_lists_every_operation_from_local_assets(server, browser):
    page = browser.new_page()
    fetched = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock-summary-path")
    shown = page.locator(".opblock-summary").evaluate_all(
        "blocks => blocks.map(b => [b.querySelector('.opblock-summary-method').innerText,"
        " b.querySelector('.opblock-summary-path').getAttribute('data-path')])")
    shown = {(method, path) for method, path in shown}
    assert PUBLISH in shown and ("POST", "/auth/login") in shown and ("GET", "/admin/users") in shown
    spec = requests.get(server.url + "/openapi.json", timeout=30).json()
    assert shown == {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert page.title() == "Depot API"
    origin = urlsplit(server.url).netloc
    assert fetched and {urlsplit(url).netloc for url in fetched} == {origin}, fetched


def test_an_operation_opens_with_its_statuses(server, browser):
    page = browser.new_page()
    page.goto(server.url + "/docs")
    page.locator("#%s .opblock-summary" % FETCH_ID).click()
    statuses = page.locator("#%s .responses-table .response-col_status" % FETCH_ID)
    statuses.first.wait_for()
    shown = {text.strip() for text in statuses.all_inner_texts()}
    assert {"200", "206", "304", "404", "416"} <= shown
    assert page.locator("#%s .parameters" % FETCH_ID).get_by_text("If-None-Match").count() >= 1


def test_the_install_script_is_how_tests_get_their_browser():
    """CI and the README install through scripts/install.sh, which brings Debian's chromium when it is missing."""
    script = (ROOT / "scripts" / "install.sh").read_text()
    assert "missing+=(chromium)" in script and 'apt-get install -y -qq "${missing[@]}"' in script
    assert "-r requirements.txt" in script
    assert "bash scripts/install.sh" in (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    setup = (ROOT / "README.md").read_text().split("## Set up and test", 1)[1].split("##", 1)[0]
    commands = [line.split("#")[0].strip() for line in setup.splitlines() if line.startswith("    ")]
    assert commands == ["bash scripts/install.sh", "bash scripts/test.sh"]
    for script in ("install.sh", "test.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], check=True)
