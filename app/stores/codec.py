"""JSON as Depot writes it: compact, and blob handles (anything with ``to_json``) by reference."""
import json
from typing import Any, Callable, Optional


def _encode_special(value: Any) -> Any:
    to_json = getattr(value, "to_json", None)
    if to_json is None:
        raise TypeError("%s is not JSON serialisable" % type(value).__name__)
    return to_json()


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_encode_special)


def dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode("utf-8")


def loads(raw: bytes, resolve_blob: Optional[Callable[[dict[str, Any]], Any]] = None) -> Any:
    """Decode JSON; with ``resolve_blob``, blob handles stored by reference come back as handles."""
    if resolve_blob is None:
        return json.loads(raw)

    def hook(obj: dict[str, Any]) -> Any:
        if len(obj) == 1 and "$blob" in obj:
            return resolve_blob(obj["$blob"])
        return obj
    return json.loads(raw, object_hook=hook)
