"""blob.extract: one member of a stored archive into the blob store (a wheel's METADATA for PEP 658, an sdist's
PKG-INFO), over real stores and the Flask test client; hostile archives (zip bombs, lying directories, tar
header bombs) are refused within their bounds."""
import copy
import gzip
import hashlib
import io
import struct
import tarfile
import zipfile

import pytest

from app.engine.compiler import compile_schema
from tests.test_multipart import error, file_parts, form, post, stored
from tests.test_ops import route, step, with_routes
from tests.test_streaming import traced_peak

MiB = 1024 * 1024
METADATA = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Python: >=3.8\n\nA demo package.\n"


def extract_route(route_id="extract", **extract):
    args = dict(store="primary", member="*.dist-info/METADATA", out="metadata", text_out="text",
                digests=["sha512"], **{"from": "$blob"})
    args.update(extract)
    return route(
        route_id, "PUT", "/" + route_id,
        step("txn.begin"),
        step("blob.put", store="primary", out="digest", out_blob="blob", **{"from": "request.body"}),
        step("blob.verify_digest", digest="$digest"),
        step("blob.extract", **args),
        step("txn.commit"),
        step("respond.json", body={"archive": "$digest", "digest": "$metadata.digest?", "size": "$metadata.size?",
                                   "sha512": "$metadata.digests.sha512?", "text": "$text"}))


@pytest.fixture
def depot(make_depot, project_schema):
    return make_depot(with_routes(project_schema, extract_route()))


def wheel(members, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buffer.getvalue()


def sdist(members, mode="w:gz", **tar_options):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode, **tar_options) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


WHEEL = [("demo/__init__.py", b"print('hi')\n" * 100), ("demo-1.0.dist-info/WHEEL", b"Wheel-Version: 1.0\n"),
         ("demo-1.0.dist-info/METADATA", METADATA), ("demo-1.0.dist-info/RECORD", b"")]


def put(depot, data, path="/extract"):
    return depot.client.put(path, data=data, headers=depot.headers())


def test_a_wheels_metadata_is_stored_as_its_own_blob(depot):
    response = put(depot, wheel(WHEEL))
    assert response.status_code == 200, response.data
    sha256 = hashlib.sha256(METADATA).hexdigest()
    assert response.get_json()["digest"] == "sha256:" + sha256
    assert response.get_json()["size"] == len(METADATA)
    assert response.get_json()["sha512"] == hashlib.sha512(METADATA).hexdigest()
    assert response.get_json()["text"] == METADATA.decode()
    blob = stored(depot, METADATA)
    assert blob is not None and open(blob.path, "rb").read() == METADATA
    assert depot.temp_files() == []


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                         zipfile.ZIP_LZMA])
def test_every_zip_compression_reads(depot, compression):
    response = put(depot, wheel(WHEEL, compression))
    assert response.status_code == 200 and response.get_json()["text"] == METADATA.decode()


def test_the_pattern_matches_segment_by_segment(depot):
    vendored = [("demo/_vendor/other-2.0.dist-info/METADATA", b"not this one")] + WHEEL
    assert put(depot, wheel(vendored)).get_json()["text"] == METADATA.decode()
    only_vendored = [("demo/_vendor/other-2.0.dist-info/METADATA", b"not this one")]
    assert put(depot, wheel(only_vendored)).get_json() == {
        "archive": "sha256:" + hashlib.sha256(wheel(only_vendored)).hexdigest(), "digest": None, "size": None,
        "sha512": None, "text": None}


def test_two_matching_members_of_a_zip_are_ambiguous(depot):
    twice = WHEEL + [("other-1.0.dist-info/METADATA", b"Name: other\n")]
    err = error(put(depot, wheel(twice)), 400)
    assert err["code"] == "ARCHIVE_MEMBER_AMBIGUOUS" and "other-1.0.dist-info/METADATA" in err["message"]
    assert depot.temp_files() == []


def test_a_required_member_that_is_absent_is_400(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, extract_route(required=True)))
    err = error(put(depot, wheel([("demo/__init__.py", b"")])), 400)
    assert err["code"] == "ARCHIVE_MEMBER_NOT_FOUND" and "*.dist-info/METADATA" in err["message"]
    assert depot.temp_files() == [] and stored(depot, wheel([("demo/__init__.py", b"")])) is None


def test_a_member_larger_than_max_text_bytes_binds_no_text(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, extract_route(max_text_bytes=10)))
    answer = put(depot, wheel(WHEEL)).get_json()
    assert answer["size"] == len(METADATA) and answer["text"] is None


@pytest.mark.parametrize("mode,member", [("w:gz", "demo-1.0/PKG-INFO"), ("w:bz2", "demo-1.0/PKG-INFO"),
                                         ("w:xz", "./demo-1.0/PKG-INFO"), ("w", "demo-1.0/PKG-INFO")])
def test_an_sdists_pkg_info_is_found_in_a_tar_compressed_or_not(make_depot, project_schema, mode, member):
    depot = make_depot(with_routes(project_schema, extract_route(member="*/PKG-INFO")))
    archive = sdist([("demo-1.0/setup.py", b"x" * 5000), (member, METADATA), ("demo-1.0/demo/PKG-INFO", b"no")],
                    mode)
    response = put(depot, archive)
    assert response.status_code == 200, response.data
    assert response.get_json()["text"] == METADATA.decode()


def test_the_format_can_be_pinned(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, extract_route(format="tar.gz", member="*/PKG-INFO")))
    assert error(put(depot, wheel(WHEEL)), 400)["code"] == "INVALID_ARCHIVE"
    assert error(put(depot, sdist([("a/PKG-INFO", METADATA)], "w:bz2")), 400)["code"] == "INVALID_ARCHIVE"
    assert put(depot, sdist([("a/PKG-INFO", METADATA)])).get_json()["text"] == METADATA.decode()


@pytest.mark.parametrize("data", [b"", b"not an archive at all", b"PK\x03\x04 truncated zip",
                                  gzip.compress(b"gzip, but no tar inside" * 100)],
                         ids=["empty", "text", "truncated-zip", "gzip-not-tar"])
def test_what_is_not_an_archive_is_400_invalid_archive(depot, data):
    err = error(put(depot, data), 400)
    assert err["code"] == "INVALID_ARCHIVE", err
    assert depot.temp_files() == []


def test_a_corrupt_member_is_400_and_nothing_is_kept(depot):
    data = bytearray(wheel([("demo-1.0.dist-info/METADATA", METADATA * 50)], zipfile.ZIP_STORED))
    at = data.index(b"A demo package")
    data[at:at + 6] = b"X demo"  # the stored bytes no longer match the CRC
    err = error(put(depot, bytes(data)), 400)
    assert err["code"] == "INVALID_ARCHIVE" and "corrupt" in err["message"]
    assert depot.temp_files() == [] and stored(depot, bytes(data)) is None


# --- hostile archives: every cost bounded before it is paid ---------------------------------------------------

def test_a_zip_bomb_stops_at_max_member_bytes(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, extract_route(max_member_bytes=MiB)))
    bomb = wheel([("demo-1.0.dist-info/METADATA", bytes(32 * MiB))])  # about 32 KiB compressed
    assert len(bomb) < MiB
    response, peak = traced_peak(lambda: put(depot, bomb))
    err = error(response, 413)
    assert err["code"] == "ARCHIVE_MEMBER_TOO_LARGE" and peak < 8 * MiB


def test_a_member_larger_than_its_declared_size_is_never_inflated_beyond_it(make_depot, project_schema):
    """A local header and directory entry that understate the member: zipfile stops at the declared size and the
    CRC then fails; nothing past max_member_bytes is ever produced."""
    depot = make_depot(with_routes(project_schema, extract_route(max_member_bytes=MiB)))
    data = bytearray(wheel([("demo-1.0.dist-info/METADATA", bytes(8 * MiB))]))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # the uncompressed size fields
        at = data.index(signature)
        data[at + offset:at + offset + 4] = struct.pack("<L", 1000)
    err = error(put(depot, bytes(data)), 400)
    assert err["code"] == "INVALID_ARCHIVE"


def test_a_zip_with_more_entries_than_max_entries_is_refused_before_it_is_listed(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, extract_route(max_entries=50)))
    many = wheel([("f%d" % i, b"") for i in range(60)] + WHEEL)
    assert error(put(depot, many), 400)["code"] == "INVALID_ARCHIVE"
    assert put(depot, wheel([("f%d" % i, b"") for i in range(40)] + WHEEL)).status_code == 200


def test_a_zip_whose_end_record_understates_its_directory_is_counted_not_trusted(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, extract_route(max_entries=50)))
    data = bytearray(wheel([("f%d" % i, b"") for i in range(60)] + WHEEL))
    end = data.rindex(b"PK\x05\x06")
    data[end + 8:end + 12] = struct.pack("<HH", 1, 1)  # "one entry", while the directory holds 64
    err = error(put(depot, bytes(data)), 400)
    assert err["code"] == "INVALID_ARCHIVE" and "max_entries" in err["message"]


def test_a_tar_with_more_headers_than_max_entries_is_refused(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, extract_route(member="*/PKG-INFO", max_entries=100)))
    archive = sdist([("d/f%d" % i, b"") for i in range(150)] + [("d/PKG-INFO", METADATA)])
    err = error(put(depot, archive), 400)
    assert err["code"] == "INVALID_ARCHIVE" and "max_entries" in err["message"]


def test_a_tar_member_beyond_max_scan_bytes_is_refused_without_inflating_the_way_there(make_depot,
                                                                                          project_schema):
    depot = make_depot(with_routes(project_schema, extract_route(member="*/PKG-INFO", max_scan_bytes=MiB)))
    archive = sdist([("d/filler", bytes(32 * MiB)), ("d/PKG-INFO", METADATA)])  # 32 MiB of zeros, gzipped
    response, peak = traced_peak(lambda: put(depot, archive))
    err = error(response, 400)
    assert err["code"] == "INVALID_ARCHIVE" and "max_scan_bytes" in err["message"] and peak < 8 * MiB


def test_a_tar_header_asking_for_megabytes_is_refused_not_allocated(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, extract_route(member="*/PKG-INFO")))
    archive = sdist([("d/PKG-INFO", METADATA)], format=tarfile.PAX_FORMAT,
                    pax_headers={"comment": "c" * (2 * MiB)})
    err = error(put(depot, archive), 400)
    assert err["code"] == "INVALID_ARCHIVE" and "header" in err["message"]


# --- from a form's file, straight after the upload --------------------------------------------------------------

def test_the_metadata_of_an_uploaded_wheel_is_extracted_from_the_staged_form_file(make_depot, project_schema):
    depot = make_depot(with_routes(project_schema, route(
        "upload", "POST", "/upload",
        step("parse.multipart", fields={"name": {}}, file="content", store="primary", out="upload"),
        step("txn.begin"),
        step("blob.put", store="primary", out="digest", **{"from": "$upload"}),
        step("blob.verify_digest", digest="$digest"),
        step("blob.extract", store="primary", member="*.dist-info/METADATA", out="metadata", required=True,
             format="zip", **{"from": "$upload"}),
        step("txn.commit"),
        step("respond.json", status=201, body={"file": "$digest", "metadata": "$metadata.digest"}))))
    data = wheel(WHEEL)
    response = post(depot, "/upload", form([("name", "demo")], file_parts("content", "demo-1.0-py3-none-any.whl",
                                                                          data)))
    assert response.status_code == 201, response.data
    assert response.get_json() == {"file": "sha256:" + hashlib.sha256(data).hexdigest(),
                                   "metadata": "sha256:" + hashlib.sha256(METADATA).hexdigest()}
    assert stored(depot, data) is not None and stored(depot, METADATA) is not None
    assert depot.temp_files() == []


# --- the checker ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,arg,words", [
    (dict(member="../METADATA"), "member", "relative path pattern"),
    (dict(member="/abs/METADATA"), "member", "relative path pattern"),
    (dict(member="a//b"), "member", "relative path pattern"),
    (dict(format="rar"), "format", "expected one of"),
    (dict(max_member_bytes=0), "max_member_bytes", "at least 1"),
    (dict(max_text_bytes=2 * MiB, max_member_bytes=MiB), "max_text_bytes", "exceeds max_member_bytes"),
    (dict(digests=["crc32"]), "digests", "unknown digest algorithm"),
    (dict(store="elsewhere"), "store", "unknown blob store"),
])
def test_blob_extract_misuse_is_refused_at_load(project_schema, changes, arg, words):
    doc = with_routes(project_schema, extract_route(**changes))
    compiled, report = compile_schema(copy.deepcopy(doc), "test")
    place = "api.routes[%d].pipeline[3].args.%s" % (len(doc["api"]["routes"]) - 1, arg)
    assert any(f.place == place and words in f.message for f in report.errors), report.to_text()

