"""The s3 blob store kind beyond the shared contract (tests/test_store_contract.py runs that for it): a blob of
several parts, an upload in flight as garbage collection sees it, a spec's problems reported at load, and
downloads of an s3 blob through the app (the Flask test client) and through the real server (waitress), with
Range and conditional requests. Everything runs on a real SeaweedFS S3 gateway (tests/s3_server.py)."""
import copy
import hashlib
import io
import json
import threading

import pytest
import requests

from app.engine.compiler import compile_schema
from app.engine.definitions import BlobStoreDef, UploadSessionsDef
from app.errors import DepotError
from app.stores.registry import Stores
from app.stores.s3 import PART_SIZE, S3BlobStore, connect
from app.stores.s3_sessions import S3UploadSessions
from tests.conftest import ADMIN_PASSWORD, GatedBody, ServerProcess, join_all, with_blob_kind
from tests.test_archives import METADATA, WHEEL, extract_route, sdist, wheel
from tests.test_ops import with_routes
from tests.test_store_contract import sha, stores  # noqa: F401 - stores is a fixture these tests use
from tests.test_streaming import traced_peak

BLOB = "/v1/acme/hello/1.0.0/linux-amd64/blob"
layout = BlobStoreDef("paged", {"kind": "s3"}).layout
LARGE = bytes(range(256)) * (PART_SIZE // 256 + 4096)  # one part and 1 MiB more: a multipart upload of two parts




@pytest.fixture
def bucket(stores, s3_server):
    return stores.blob_store(BlobStoreDef("primary", dict(s3_server.spec(), kind="s3")))




# --- the store --------------------------------------------------------------------------------------------------

def test_a_blob_larger_than_a_part_is_staged_in_parts_and_read_across_them(bucket):
    staged = bucket.stage(io.BytesIO(LARGE), also=("sha512",))
    assert (staged.digest, staged.size) == (sha(LARGE), len(LARGE))
    assert staged.digests["sha512"] == hashlib.sha512(LARGE).hexdigest()
    bucket.commit(staged)
    assert list(bucket.digests()) == [sha(LARGE)] and list(bucket.uploads()) == []
    start, end = PART_SIZE - 10, PART_SIZE + 10
    with bucket.open(sha(LARGE), start, end) as reader:
        assert reader.read() == LARGE[start:end]
    with bucket.locate(sha(LARGE)).open() as reader:
        assert hashlib.sha256(b"".join(iter(lambda: reader.read(1 << 20), b""))).hexdigest() == sha(LARGE)[7:]


class Generated(io.RawIOBase):
    """``size`` bytes made as they are read: a body that is never whole in memory."""

    def __init__(self, size):
        super().__init__()
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        count = min(len(buffer), self.left)
        buffer[:count] = bytes([self.left % 251]) * count
        self.left -= count
        return count


def test_the_bucket_is_listed_a_page_at_a_time(s3_server):
    client = connect(s3_server.endpoint_url, "us-east-1")
    listings = []
    client.meta.events.register("before-parameter-build.s3.ListObjectsV2",
                                lambda params, **_: listings.append(dict(params)))  # each request's parameters
    store = S3BlobStore("paged", client, s3_server.bucket, s3_server.new_prefix(), layout, page_size=2)
    for n in range(5):
        store.commit(store.stage(io.BytesIO(b"blob %d" % n)))
    assert sorted(store.digests()) == sorted(sha(b"blob %d" % n) for n in range(5))
    assert len(listings) == 3 and all(listing["MaxKeys"] == 2 for listing in listings)  # 2 + 2 + 1


def test_staging_holds_about_a_part_in_memory_whatever_the_size(bucket):
    size = 5 * PART_SIZE + 12345
    staged, peak = traced_peak(lambda: bucket.stage(io.BufferedReader(Generated(size))))
    (upload,) = bucket.uploads()
    assert staged.size == size and bucket.upload_stat(upload).size == size
    assert peak < 2 * PART_SIZE, peak  # a part and a chunk being read: not the 40 MiB
    bucket.discard(staged)


def test_an_upload_in_flight_is_listed_with_its_bytes_and_kept_from_collection(bucket):
    reading, release = threading.Event(), threading.Event()
    outcome = []
    writer = threading.Thread(target=lambda: outcome.append(
        bucket.stage(GatedBody(LARGE, reading, release, after=PART_SIZE))))
    writer.start()
    try:
        assert reading.wait(60)  # the first part is sent, the rest is not
        (upload,) = bucket.uploads()
        assert bucket.upload_stat(upload).size == PART_SIZE
        with bucket.guard.lock:
            assert bucket.guard.temp_in_use(upload)
    finally:
        release.set()
        writer.join(60)
    (staged,) = outcome
    assert list(bucket.uploads()) == [upload] and bucket.upload_stat(upload).size == len(LARGE)
    bucket.discard(staged)
    assert list(bucket.uploads()) == [] and bucket.upload_stat(upload) is None


def test_an_upload_cut_short_or_over_the_limit_leaves_nothing(stores, s3_server):
    class Broken(io.BytesIO):
        def read(self, size=-1):
            if self.tell() >= PART_SIZE:  # once the first part is sent
                raise OSError("the client went away")
            return super().read(size)
    bounded = stores.blob_store(BlobStoreDef("bounded", dict(s3_server.spec(), kind="s3",
                                                             limits={"max_blob_bytes": PART_SIZE + 4096})))
    with pytest.raises(OSError):
        bounded.stage(Broken(LARGE))
    with pytest.raises(DepotError) as refused:
        bounded.stage(io.BytesIO(LARGE))
    assert refused.value.code == "BLOB_TOO_LARGE"
    assert list(bounded.uploads()) == [] and list(bounded.digests()) == []


def test_health_names_the_bucket_to_admins_and_fails_without_it(stores, s3_server, bucket):
    assert bucket.health() == {"kind": "s3", "ok": True}
    assert bucket.health(detail=True)["bucket"] == s3_server.bucket
    missing = stores.blob_store(BlobStoreDef("missing", dict(s3_server.spec(), kind="s3", bucket="no-such-bucket")))
    assert missing.health()["ok"] is False and not missing.exists(sha(b"anything"))


def test_the_problems_of_a_blob_store_spec_are_reported_at_load_by_their_place(reference_schema):
    schema = copy.deepcopy(reference_schema)
    schema["storage"]["blob_stores"]["primary"].update(kind="s3", prefix="../up", endpoint_url="s3.example:9000")
    schema["storage"]["blob_stores"]["files"] = {"kind": "filesystem", "bucket": "depot"}
    compiled, report = compile_schema(schema, "test")
    assert compiled is None
    assert {finding.place for finding in report.errors} == {
        "storage.blob_stores.primary.bucket", "storage.blob_stores.primary.prefix",
        "storage.blob_stores.primary.endpoint_url", "storage.blob_stores.primary.root",
        "storage.blob_stores.files.bucket"}


def test_a_valid_s3_spec_loads_without_findings(reference_schema, request):
    compiled, report = compile_schema(with_blob_kind(reference_schema, "s3", request), "test")
    assert compiled is not None and not [f for f in report.findings if "blob_stores" in f.place], report.to_text()


# --- upload sessions ------------------------------------------------------------------------------------------

def test_two_processes_appending_at_one_offset_admit_one(tmp_path, s3_server):
    """Two servers' views of one session (no lock in common): S3's conditional write admits one chunk."""
    spec = dict(s3_server.spec(), kind="s3")
    opened = [Stores(str(tmp_path / name)) for name in ("one", "two")]
    try:
        views = [stores.upload_sessions(UploadSessionsDef("uploads", {"blob_store": "primary"}),
                                        BlobStoreDef("primary", spec)) for stores in opened]
        appending_at_once(views)
    finally:
        for stores in opened:
            stores.close()


def appending_at_once(views):
    session = views[0].start()
    outcomes, errors = [], []

    def append(view, byte):
        try:
            outcomes.append(view.append(session, io.BytesIO(byte * 4096), 0))
        except DepotError as exc:
            outcomes.append(exc.status)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=append, args=(view, byte)) for view, byte in zip(views, (b"a", b"b"))]
    for thread in threads:
        thread.start()
    join_all(threads, errors, "an append")
    assert sorted(outcomes) == [416, 4096]
    staged = views[1].finish(session)
    with staged.open() as reader:
        content = reader.read()
    assert len(content) == 4096 and len(set(content)) == 1
    assert views[0].size(session) is None


def test_a_session_of_several_pieces_finishes_whole_and_idle_ones_expire(bucket):
    sessions = S3UploadSessions("uploads", bucket, 3600, None)
    session, idle = sessions.start(), sessions.start()
    assert sessions.append(session, io.BytesIO(LARGE[:PART_SIZE + 10])) == PART_SIZE + 10  # two pieces
    assert sessions.append(session, io.BytesIO(LARGE[PART_SIZE + 10:]), PART_SIZE + 10) == len(LARGE)
    sessions.append(idle, io.BytesIO(b"abandoned"))
    staged = sessions.finish(session)
    assert (staged.digest, staged.size) == (sha(LARGE), len(LARGE))
    bucket.commit(staged)
    assert bucket.exists(sha(LARGE)) and sessions.size(session) is None
    past_their_time = S3UploadSessions("uploads", bucket, -1, None)  # the same sessions, their TTL run out
    assert sessions.size(idle) == 9 and past_their_time.size(idle) is None
    assert past_their_time.expire() == (1, len(b"abandoned")) and sessions.size(idle) is None
    assert sessions.abort(idle) is False


# --- through the app ----------------------------------------------------------------------------------------

def test_a_blob_published_to_s3_downloads_whole_by_range_and_conditionally(make_depot, reference_schema, request):
    depot = make_depot(with_blob_kind(reference_schema, "s3", request))
    published = depot.publish("acme", "hello", "1.0.0", "linux-amd64", LARGE)
    assert published.status_code == 201 and published.get_json()["digest"] == sha(LARGE), published.data
    assert depot.blob_files() == []  # nothing of it in the data dir
    read = depot.headers(["read"])
    whole = depot.client.get(BLOB, headers=read)
    assert whole.status_code == 200 and whole.get_data() == LARGE and whole.headers["ETag"] == '"%s"' % sha(LARGE)
    start, end = PART_SIZE - 100, PART_SIZE + 99
    ranged = depot.client.get(BLOB, headers=dict(read, Range="bytes=%d-%d" % (start, end)))
    assert ranged.status_code == 206 and ranged.get_data() == LARGE[start:end + 1]
    assert ranged.headers["Content-Range"] == "bytes %d-%d/%d" % (start, end, len(LARGE))
    unchanged = depot.client.get(BLOB, headers=dict(read, **{"If-None-Match": whole.headers["ETag"]}))
    assert unchanged.status_code == 304 and unchanged.get_data() == b""
    since = depot.client.get(BLOB, headers=dict(read, **{"If-Modified-Since": whole.headers["Last-Modified"]}))
    assert since.status_code == 304
    beyond = depot.client.get(BLOB, headers=dict(read, Range="bytes=%d-" % len(LARGE)))
    assert beyond.status_code == 416


def test_the_real_server_streams_an_s3_blob_and_its_ranges(tmp_path, reference_schema, request):
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(with_blob_kind(reference_schema, "s3", request)))
    server = ServerProcess(tmp_path / "data", args=("--schema", str(schema_file)))
    try:
        token = requests.post(server.url + "/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD},
                              timeout=30).json()["token"]
        auth = {"Authorization": "Bearer " + token}
        put = requests.put(server.url + BLOB, data=LARGE, headers=auth, timeout=60)
        assert put.status_code == 201, put.text
        whole = requests.get(server.url + BLOB, headers=auth, timeout=60)
        assert whole.status_code == 200 and whole.content == LARGE
        ranged = requests.get(server.url + BLOB, headers=dict(auth, Range="bytes=-5"), timeout=60)
        assert ranged.status_code == 206 and ranged.content == LARGE[-5:]
        health = requests.get(server.url + "/health", headers=auth, timeout=30).json()
        assert health["stores"]["blob:primary"]["ok"] is True, health
    finally:
        server.stop()


@pytest.mark.parametrize("archive", [wheel(WHEEL), sdist([("demo-1.0/setup.py", b"x" * 5000),
                                                          ("demo-1.0/PKG-INFO", METADATA)])], ids=["zip", "tar.gz"])
def test_a_member_of_an_archive_in_s3_is_extracted_by_ranged_reads(make_depot, project_schema, request, archive):
    """blob.extract seeks in the archive (zip reads its directory at the end first): an s3 object's reader does
    not seek, so the archive is read again from each position sought."""
    route = extract_route(member="*/METADATA" if archive.startswith(b"PK") else "*/PKG-INFO")
    depot = make_depot(with_routes(with_blob_kind(project_schema, "s3", request), route))
    response = depot.client.put("/extract", data=archive, headers=depot.headers())
    assert response.status_code == 200, response.data
    assert response.get_json()["text"] == METADATA.decode() and response.get_json()["digest"] == sha(METADATA)


def test_depot_blob_url_places_the_schemas_filesystem_stores_in_a_bucket(make_depot, reference_schema, s3_server,
                                                                          monkeypatch):
    """DEPOT_BLOB_URL moves every filesystem blob store of the schema into a bucket, configuration only: each
    store's objects under the URL's prefix and the store's root, nothing in the data dir."""
    prefix = s3_server.new_prefix().rstrip("/")
    monkeypatch.setenv("DEPOT_BLOB_URL", "s3://%s/%s?endpoint_url=%s&region=us-east-1"
                       % (s3_server.bucket, prefix, s3_server.endpoint_url))
    depot = make_depot(reference_schema)
    body = b"placed by the deployment's URL"
    published = depot.publish("acme", "hello", "1.0.0", "linux-amd64", body)
    assert published.status_code == 201, published.data
    assert depot.blob_files() == []
    fetched = depot.client.get(BLOB, headers=depot.headers(["read"]))
    assert fetched.status_code == 200 and fetched.get_data() == body
    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix + "/")
    keys = [entry["Key"] for entry in listed.get("Contents", [])]
    root = reference_schema["storage"]["blob_stores"]["primary"].get("root", "primary").strip("/")
    assert [key for key in keys if key.endswith(sha(body)[len("sha256:"):])] and \
        all(key.startswith("%s/%s/" % (prefix, root)) for key in keys), keys


@pytest.mark.parametrize("url", ["s3://b/x?foo=1", "http://example.com/bucket", "s3://Not_A_Bucket"])
def test_a_malformed_depot_blob_url_stops_the_start_naming_it(tmp_path, monkeypatch, capsys, url):
    from app.tools.cli import main

    monkeypatch.setenv("DEPOT_BLOB_URL", url)
    monkeypatch.setenv("DEPOT_ADMIN_PASSWORD", ADMIN_PASSWORD)
    assert main(["serve", "--data-dir", str(tmp_path / "data"), "--port", "0"]) == 2
    assert "DEPOT_BLOB_URL=%s" % url in capsys.readouterr().err
