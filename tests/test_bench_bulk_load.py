"""bench/bulk_load.py fills a data dir with what publishing through the route would have made: the same listings,
search, `latest`, metadata and event log as a data dir whose artifacts were each published through the route, and
the state store's stored options are Depot's own afterwards."""
import glob
import os

import pytest

from app.tools.testing import LocalDepot
from bench import bulk_load

PACKAGES, VERSIONS = 75, 60  # more than a page of each (50), and versions whose string order is not semver's
VOLATILE = ("created_at", "created_by", "updated_at", "at", "by", "event_id", "seq")


def stable(value):
    """``value`` without timestamps, authors and event identities (the loader's copies share its template's)."""
    if isinstance(value, dict):
        return {key: stable(item) for key, item in value.items() if key not in VOLATILE}
    if isinstance(value, list):
        return [stable(item) for item in value]
    return value


def answers(depot):
    client = depot.client
    headers = {"Authorization": "Bearer " + depot.token(["read", "admin"], "reader")}

    def get(path):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 200, (path, answer.get_json())
        return stable(answer.get_json())

    def pages(path, total):
        return [get("%s?page=%d" % (path, page)) for page in range(1, -(-total // 50) + 1)]
    return {"packages": pages("/v1/bulk", PACKAGES), "versions": pages("/v1/bulk/many/versions", VERSIONS),
            "namespaces": get("/v1"), "search": get("/v1/search?q=many"), "search pkg": get("/v1/search?q=pkg-00004"),
            "latest": get("/v1/bulk/many/latest"), "plain latest": get("/v1/bulk/pkg-000042/latest"),
            "metadata": get("/v1/bulk/many/%s/any" % bulk_load.many_versions(VERSIONS)[17]),
            "events": [stable(logged.record) for logged in depot.service.engine.event_log.read_after(0)]}


@pytest.fixture
def published(tmp_path, monkeypatch):
    """A data dir where every artifact the loader makes was published through the route, one by one."""
    monkeypatch.setenv("DEPOT_ADMIN_PASSWORD", bulk_load.PASSWORD)
    depot = LocalDepot(str(tmp_path / "published"), sync=False)
    headers = {"Authorization": "Bearer " + depot.token(["read", "write"], "publisher")}
    paths = ["/v1/bulk/%s/1.0.0/any/blob" % name for name in bulk_load.package_names(PACKAGES - 1)]
    paths += ["/v1/bulk/%s/%s/any/blob" % (bulk_load.MANY, v) for v in bulk_load.many_versions(VERSIONS)]
    for path in paths:
        answer = depot.client.put(path, data=b"x", headers=headers)
        assert answer.status_code == 201, answer.get_json()
    yield depot
    depot.close()


def test_the_loader_makes_what_publishing_makes(tmp_path, published, monkeypatch):
    monkeypatch.setenv("DEPOT_ADMIN_PASSWORD", bulk_load.PASSWORD)
    data_dir = str(tmp_path / "loaded")
    bulk_load.load(data_dir, "bulk", PACKAGES, VERSIONS)
    loaded = LocalDepot(data_dir, sync=False)
    try:
        found, wanted = answers(loaded), answers(published)
        assert found["packages"][0]["total"] == PACKAGES and found["versions"][0]["total"] == VERSIONS
        assert found["latest"]["version"] == bulk_load.many_versions(VERSIONS)[-1]
        assert found == wanted
        ids = [logged.record["event_id"] for logged in loaded.service.engine.event_log.read_after(0)]
        assert len(ids) == len(set(ids)) == PACKAGES - 1 + VERSIONS  # every copy its own event
    finally:
        loaded.close()
    latest_options = sorted(glob.glob(os.path.join(data_dir, "state", "OPTIONS-*")))[-1]
    with open(latest_options) as handle:
        assert "cache_index_and_filter_blocks=true" in handle.read()  # Depot's own options, stored back
