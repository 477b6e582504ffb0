"""Request bodies, however they are framed, for the engine and Depot's own views alike (nothing here knows Flask).

A body is read through ``RequestBody``: past its limit it is a 413; if it ends before its declared
Content-Length, or its transport fails (a chunked body without its last chunk, a connection closed or timed out
mid-body), it is a 400 BODY_INCOMPLETE, so a half-sent body is never taken for a whole one and nothing read from
it is stored. JSON bodies are parsed by ``parse_json``: malformed, or nested deeper than a bound, is a 400.
"""
import json
import logging
from typing import Optional

from app.errors import DepotError, bad_request, too_large
from app.stores.interfaces import JsonValue, Readable

log = logging.getLogger("depot")
MAX_JSON_DEPTH = 64  # default of ops.limits.max_json_depth; Depot's own views use it too


def body_incomplete(message: str) -> DepotError:
    return DepotError("BODY_INCOMPLETE", 400, message)


class RequestBody:
    """The request body as a stream: ``read(n)`` returns b"" only once the whole body has been read."""

    def __init__(self, stream: Readable, limit: int, declared_length: Optional[int] = None) -> None:
        self.stream = stream
        self.limit = limit
        self.declared_length = declared_length
        self.seen = 0

    def read(self, size: Optional[int] = -1) -> bytes:
        wanted = size if size is not None and size >= 0 else self.limit + 1
        try:
            chunk = self.stream.read(wanted)
        except DepotError:
            raise
        except Exception as exc:  # the server's reader failed: whatever its type, the body is broken
            log.info("request body unreadable: %r", exc)
            raise body_incomplete("the request body ended early or was malformed (%s)" % type(exc).__name__)
        self.seen += len(chunk)
        if self.seen > self.limit:
            raise too_large("request body exceeds max_request_body_bytes (%d)" % self.limit)
        if not chunk and wanted and self.declared_length is not None and self.seen < self.declared_length:
            raise body_incomplete("the request body ended after %d of the %d bytes its Content-Length declares"
                                  % (self.seen, self.declared_length))
        return chunk



def read_all(stream: Readable, limit: int, code: str = "JSON_TOO_LARGE") -> bytes:
    """The whole of ``stream`` (anything with read(n)), at most ``limit`` bytes (413 ``code`` beyond)."""
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(1024 * 1024, limit + 1 - size))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            raise too_large("the JSON body exceeds %d bytes" % limit, code)


def parse_json(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> JsonValue:
    """Decode a JSON body; 400 INVALID_JSON when it is not JSON or nests deeper than ``max_depth``."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise bad_request("INVALID_JSON", "request body nests deeper than %d levels" % max_depth) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request("INVALID_JSON", "request body is not valid JSON: %s" % exc) from None
    if _deeper_than(value, max_depth):
        raise bad_request("INVALID_JSON", "request body nests deeper than %d levels" % max_depth)
    return value


def _deeper_than(value: JsonValue, limit: int) -> bool:
    """Whether containers nest more than ``limit`` deep (iteratively: the check itself must not recurse)."""
    pending: list[tuple[JsonValue, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
