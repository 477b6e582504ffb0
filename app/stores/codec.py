"""JSON as Depot writes it: compact, and blob handles (anything with ``to_json``) by reference; a Stream (a list
too long to hold) either read into a list (``dumps``) or written item by item (``iter_json``)."""
import json
from typing import Any, Callable, Iterator, Optional

CHUNK_BYTES = 64 * 1024  # iter_json hands out pieces of about this size


def _encode_special(value: Any) -> Any:
    to_json = getattr(value, "to_json", None)
    if to_json is None:
        raise TypeError("%s is not JSON serialisable" % type(value).__name__)
    return to_json()


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_encode_special)


def dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode("utf-8")


class Stream:
    """A JSON array whose items (plain JSON values) are produced as it is iterated, each iteration anew: a listing
    too long to hold in memory (app.engine.rows.RowStream). ``iter_json`` writes it item by item in bounded
    memory; ``dumps``, and anything else that encodes it whole, reads it into a list first."""

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError

    def to_json(self) -> list[Any]:
        return list(self)


def iter_json(value: Any) -> Iterator[bytes]:
    """``dumps(value)`` in pieces of about CHUNK_BYTES, each Stream in it read as the pieces are taken, so a
    response body listing any number of rows takes bounded memory."""
    buffer = bytearray()
    for piece in _pieces(value):
        buffer += piece
        if len(buffer) >= CHUNK_BYTES:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _pieces(value: Any) -> Iterator[bytes]:
    if isinstance(value, Stream):
        yield b"["
        separator = b""
        for item in value:
            yield separator + dumps(item)
            separator = b","
        yield b"]"
    elif isinstance(value, dict):
        separator = b"{"
        for key, item in value.items():
            yield separator + dumps(str(key)) + b":"
            separator = b","
            yield from _pieces(item)
        yield b"}" if value else b"{}"
    elif isinstance(value, (list, tuple)):
        separator = b"["
        for item in value:
            yield separator
            separator = b","
            yield from _pieces(item)
        yield b"]" if value else b"[]"
    else:
        yield dumps(value)


def loads(raw: bytes, resolve_blob: Optional[Callable[[dict[str, Any]], Any]] = None) -> Any:
    """Decode JSON; with ``resolve_blob``, blob handles stored by reference come back as handles."""
    if resolve_blob is None:
        return json.loads(raw)

    def hook(obj: dict[str, Any]) -> Any:
        if len(obj) == 1 and "$blob" in obj:
            return resolve_blob(obj["$blob"])
        return obj
    return json.loads(raw, object_hook=hook)
