"""Writing responses: the JSON answer and error envelope, and a ResponseSpec written out (JSON, a body streamed as
it is produced, or a blob streamed from its store with Range/ETag/HEAD and conditional requests). Both the compiled
routes (app.http.app) and the management API (app.http.management) answer through here, so neither imports the
other."""
import re
from datetime import datetime, timezone
from urllib.parse import quote

from flask import Response, request
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.datastructures import Headers
from werkzeug.http import http_date, quote_etag, unquote_etag
from werkzeug.utils import get_content_type
from werkzeug.wsgi import wrap_file

from app.errors import DepotError
from app.stores.codec import dumps, iter_json

def json_response(payload, status=200, headers=None, content_type="application/json"):
    return Response(dumps(payload), status=status, headers=headers, content_type=content_type)


def error_response(error):
    body = error.body if error.body is not None else error.envelope()
    return json_response(body, error.status, error.headers or None)


def write_response(spec, on_close=None):
    """The response a ResponseSpec describes; ``on_close`` runs once it has been sent (or abandoned)."""
    if spec.blob is not None:
        response = _blob_response(spec, on_close)
    elif spec.stream is not None:
        response = _closing(_stream_response(spec), on_close)
    elif spec.streamed:  # a listing read as it is written: in pieces, never whole in memory
        response = _closing(Response(iter_json(spec.json), status=spec.status, headers=spec.headers,
                                     content_type=spec.content_type or "application/json"), on_close)
    else:  # json_response and _closing, inline: this is every JSON answer's path
        response = Response(dumps(spec.json), status=spec.status, headers=spec.headers,
                            content_type=spec.content_type or "application/json")
        if on_close is not None:
            response.call_on_close(on_close)
    if spec.vary:
        response.vary.update(spec.vary)
    if spec.blob is None and spec.status == 200 and spec.headers and response.headers.get("ETag"):
        _conditional(response)
    return response


def _conditional(response):
    """A JSON or streamed answer whose step declared an ETag header: the tag is quoted when the template left it
    bare, and a GET or HEAD whose If-None-Match names it is answered 304 with no body (the body, not yet
    produced, is never rendered)."""
    tag = response.headers["ETag"]
    if not (tag.startswith('"') or tag.startswith('W/"')):
        response.headers["ETag"] = '"%s"' % tag.replace('"', "")
    tag, _ = unquote_etag(response.headers["ETag"])
    if request.method in ("GET", "HEAD") and request.if_none_match.contains_weak(tag):  # RFC 9110: weak comparison
        unsent, response.response = response.response, []
        getattr(unsent, "close", lambda: None)()
        response.status_code = 304
        response.headers.pop("Content-Length", None)


def _stream_response(spec):
    """A body produced as it is sent (a rendered page): its length when known in advance, else sent chunked. The
    server iterates it in the request's thread, so its next chunk is rendered only once the last one is taken."""
    headers = {k: v for k, v in (spec.headers or {}).items() if k.lower() not in ("content-length", "content-type")}
    response = Response(spec.stream, status=spec.status, headers=headers, content_type=spec.content_type)
    if spec.stream.length is not None:
        response.content_length = spec.stream.length
    if spec.content_type is None and spec.stream.length == 0:  # no body, so no type (respond.empty)
        del response.headers["Content-Type"]
    return response


def _closing(response, on_close):
    if on_close is not None:
        response.call_on_close(on_close)
    return response


def _blob_response(spec, on_close):
    """A blob streamed from its store as an attachment: HEAD, ETag and If-None-Match, Last-Modified and
    If-Modified-Since (304), one Range (206, or 416) honoured. A range is served by opening the blob at the range
    (a file store answers with the file sought there), never by an iterator over it, so the server's own file
    sending (which needs no worker thread, however slow the reader) serves ranges too."""
    blob = spec.blob
    given = spec.headers or {}
    status = _stat(blob)
    size = blob.size if blob.size is not None else status.size
    etag = given.get("ETag") or given.get("Etag")
    etag = etag.strip('"') if etag else blob.digest
    filename = spec.filename or (blob.digest or "").replace(":", "-")
    headers = _download_headers(given, size, etag, blob.digest, filename,
                                spec.last_modified or datetime.fromtimestamp(status.modified, timezone.utc))
    environ = request.environ
    plain = environ["REQUEST_METHOD"] in ("GET", "HEAD") and environ.keys().isdisjoint(_CONDITIONAL)
    if plain:  # what werkzeug's make_conditional adds to a plain GET or HEAD, without its parsing
        headers.append(("Accept-Ranges", "bytes"))
        if not any(name.lower() == "date" for name, _ in headers):
            headers.append(("Date", http_date()))
    # one Headers built whole: each werkzeug header assignment scans every header before it
    response = Response(status=spec.status, headers=Headers(headers))
    try:
        if not plain:
            response.make_conditional(_ranged_environ(environ, size), accept_ranges=True, complete_length=size)
    except RequestedRangeNotSatisfiable:
        return _closing(error_response(DepotError("RANGE_NOT_SATISFIABLE", 416, "the requested range is not "
                                                  "satisfiable", headers={"Content-Range": "bytes */%d" % size})),
                        on_close)
    if request.method == "HEAD" or response.status_code in (304, 412):
        response.response = []
        return _closing(response, on_close)
    ranged = response.status_code == 206
    try:
        handle = blob.open(response.content_range.start if ranged else 0,
                           response.content_range.stop if ranged else None, on_close)
    except FileNotFoundError:
        raise DepotError("BLOB_NOT_FOUND", 404, "the blob's bytes are missing from the store")
    response.response = wrap_file(request.environ, handle)
    response.direct_passthrough = True
    return response


# the request headers that can make a download partial (206), not modified (304) or failed (412, 416)
_CONDITIONAL = ("HTTP_RANGE", "HTTP_IF_RANGE", "HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE",
                "HTTP_IF_UNMODIFIED_SINCE")
_SET_HERE = ("content-length", "etag", "content-type", "x-depot-digest", "last-modified")


def _download_headers(given, size, etag, digest, filename, modified):
    """A download's headers: the step's own (its Content-Type, with a charset for text; Content-Disposition
    unless it gives one), then the length, ETag, digest and Last-Modified of the blob."""
    headers = [(name, value) for name, value in given.items() if name.lower() not in _SET_HERE]
    headers.append(("Content-Type", get_content_type(given.get("Content-Type", "application/octet-stream"),
                                                     "utf-8")))
    headers.append(("Content-Length", str(size)))
    if etag:
        headers.append(("ETag", quote_etag(etag)))
    if digest:
        headers.append(("X-Depot-Digest", digest))
    headers.append(("Last-Modified", http_date(modified)))
    if filename and not any(name.lower() == "content-disposition" for name in given):
        headers.append(("Content-Disposition", attachment(filename)))
    return headers


def _stat(blob):
    try:
        return blob.stat()
    except FileNotFoundError:
        raise DepotError("BLOB_NOT_FOUND", 404, "the blob's bytes are missing from the store")


def attachment(filename):
    """Content-Disposition for a download named ``filename`` (RFC 6266). Control characters and path separators
    never belong in a file name: they become "_". The name is sent quoted, with anything but printable ASCII (and
    quotes) replaced too; when that changed it, the name follows in RFC 5987's UTF-8 encoding, which clients
    prefer."""
    name = _NOT_IN_NAMES.sub("_", filename)
    fallback = _UNQUOTABLE.sub("_", name)
    value = 'attachment; filename="%s"' % fallback
    if fallback != name:
        value += "; filename*=UTF-8''%s" % quote(name, safe=_ATTR_CHARS)
    return value


_NOT_IN_NAMES = re.compile(r"[\x00-\x1f\x7f/\\]")
_UNQUOTABLE = re.compile(r'[^\x20-\x7e]|"')
_ATTR_CHARS = "!#$&+-.^_`|~"  # RFC 5987 attr-char besides letters and digits
_BYTE_RANGE = re.compile(r"^(\d*)-(\d*)$")


def _ranged_environ(environ, size):
    """The environ werkzeug answers the request by, its Range header read as Depot reads it (see _range_to_serve)."""
    header = environ.get("HTTP_RANGE")
    if header is None:
        return environ
    wanted = _range_to_serve(header, size)
    if wanted == header:
        return environ
    environ = dict(environ)
    if wanted is None:
        del environ["HTTP_RANGE"]
    else:
        environ["HTTP_RANGE"] = wanted
    return environ


def _range_to_serve(header, size):
    """The Range header werkzeug is to see: None to send the whole body (a unit other than bytes, or several
    ranges of which one at least is satisfiable: 200 rather than multipart/byteranges), one past the end when no
    range is satisfiable (416; `bytes=-0` asks for nothing), else the header as it came (werkzeug serves one
    range, and refuses a malformed header with 416)."""
    unit, equals, specs = header.partition("=")
    if equals and unit.strip().lower() != "bytes":
        return None
    parts = [part.strip() for part in specs.split(",") if part.strip()]
    satisfiable = 0
    for part in parts:
        match = _BYTE_RANGE.match(part)
        if match is None or match.group(1) == match.group(2) == "":
            return header
        first, last = match.groups()
        if first and last and int(last) < int(first):
            return header
        satisfiable += int(first) < size if first else int(last) > 0
    if not satisfiable:
        return "bytes=%d-" % size
    return header if len(parts) == 1 else None
