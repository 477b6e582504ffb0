"""multipart/form-data bodies, read while they stream in (parse.multipart).

The body is decoded by werkzeug's sans-I/O ``MultipartDecoder`` fed one chunk at a time, so memory stays bounded
whatever the body's size: text fields are read up to their declared limits, undeclared parts are skipped
without being kept, and the one declared file part streams straight into a blob store (``stage``), hashed as it
is written. Its fields may come before or after it: the staged file is bound as a ``FormFile``, which blob.put
(``from: $upload``) then promotes without copying it again. What a route declares of a form (``FormSpec``) is
compiled at load; a form that does not meet it is a 400 naming the form field.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Event, Field, File, MultipartDecoder, NeedData

from app.engine.definitions import typed_value
from app.errors import DepotError, bad_request
from app.engine.staged import StagedUpload
from app.stores.interfaces import Readable, StagedBlob

READ_CHUNK = 256 * 1024  # bytes read from the request at a time
# the most the decoder holds: a part's header block (or the preamble) it cannot yet decide on, and the chunk
# just read; a longer header block is refused
MAX_BUFFERED = 2 * READ_CHUNK
DEFAULT_FIELD_BYTES = 64 * 1024
DEFAULT_FORM_BYTES = 1024 * 1024
DEFAULT_MAX_PARTS = 1000
DEFAULT_MAX_ITEMS = 1000
_FIELD_TYPES = ("string", "integer", "boolean")
_PYTHON_TYPES = {"string": str, "integer": int, "boolean": bool}
_SPEC_KEYS = {"form", "type", "required", "default", "minimum", "maximum", "max_bytes", "repeated", "max_items"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def invalid_multipart(message: str, field: Optional[str] = None) -> DepotError:
    return DepotError("INVALID_MULTIPART", 400, message, field)


def boundary_of(content_type: Optional[str]) -> bytes:
    """The boundary a multipart/form-data Content-Type names; 400 INVALID_MULTIPART (field Content-Type)
    for any other type or a missing or malformed boundary."""
    mimetype, options = parse_options_header(content_type or "")
    boundary = options.get("boundary", "")
    if mimetype != "multipart/form-data":
        raise invalid_multipart("the body must be multipart/form-data, not %r" % (mimetype or "(none)"),
                                "Content-Type")
    if not 0 < len(boundary) <= 70 or not boundary.isascii() or not boundary.isprintable():
        raise invalid_multipart("multipart/form-data needs a boundary of 1 to 70 ASCII characters", "Content-Type")
    return boundary.encode("ascii")


# --- the parts of a body, as they stream in --------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    name: Optional[str]  # the form name (Content-Disposition's name); None when it names none
    filename: Optional[str]  # None for a plain field
    content_type: Optional[str]


class MultipartReader:
    """The parts of one multipart body, in order: ``next_part`` moves to the next (skipping what is left of the
    current one), ``read(n)`` reads the current part's bytes (b"" at its end). Malformed framing, a body cut
    short, more than ``max_parts`` parts or a part header block the decoder would have to hold beyond
    MAX_BUFFERED: 400 INVALID_MULTIPART."""

    def __init__(self, stream: Readable, boundary: bytes, max_parts: int = DEFAULT_MAX_PARTS,
                 chunk: int = READ_CHUNK) -> None:
        self._stream = stream
        self._chunk = chunk
        # the decoder buffers only what it cannot yet decide on: a header block, or a boundary's first bytes
        self._decoder = MultipartDecoder(boundary, max_form_memory_size=MAX_BUFFERED)
        self._max_parts = max_parts
        self._parts = 0
        self._more = False  # the current part has bytes not yet decoded
        self._pending = b""  # decoded bytes of the current part not yet read
        self._ended = False

    def next_part(self) -> Optional[Part]:
        """The next part, or None once the closing boundary has been read."""
        while self.read(self._chunk):
            pass
        while not self._ended:
            event = self._event()
            if isinstance(event, (Field, File)):
                self._parts += 1
                if self._parts > self._max_parts:
                    raise invalid_multipart("the form has more than %d parts" % self._max_parts)
                self._more = True
                return Part(event.name, event.filename if isinstance(event, File) else None,
                            event.headers.get("Content-Type"))
            self._ended = isinstance(event, Epilogue)  # otherwise the preamble, which says nothing
        return None

    def read(self, size: int = -1) -> bytes:
        while not self._pending and self._more:
            event = self._event()
            if not isinstance(event, Data):  # the decoder yields a part's data until its end
                raise invalid_multipart("malformed multipart body")
            self._more = event.more_data
            self._pending = event.data
        if 0 <= size < len(self._pending):
            chunk, self._pending = self._pending[:size], self._pending[size:]
            return chunk
        chunk, self._pending = self._pending, b""
        return chunk

    def _event(self) -> Event:
        """The decoder's next event, feeding it from the stream as it needs."""
        decoder = self._decoder
        while True:
            try:
                event = decoder.next_event()
                if not isinstance(event, NeedData):
                    return event
                chunk = self._stream.read(self._chunk)  # DepotError (body limits, a broken body) passes through
                decoder.receive_data(chunk or None)
            except RequestEntityTooLarge:
                raise invalid_multipart("a part's headers (or the preamble) exceed %d bytes" % MAX_BUFFERED) \
                    from None
            except (ValueError, AttributeError, IndexError) as exc:  # what the decoder raises on malformed input
                message = "the body ends before the closing boundary" if decoder.complete else "malformed"
                raise invalid_multipart("multipart body: %s (%s)" % (message, type(exc).__name__)) from None


# --- what a route declares of a form ---------------------------------------------------------------------------

@dataclass(frozen=True)
class FieldSpec:
    """One declared text field: bound as ``field``, sent under the form name ``form``."""
    field: str
    form: str
    spec: Mapping[str, Any]  # type, minimum, maximum: what typed_value reads
    required: bool
    default: Any
    max_bytes: int
    repeated: bool
    max_items: int

    @classmethod
    def compile(cls, field: str, spec: Any, max_form_bytes: int) -> FieldSpec:
        """ValueError saying what is wrong with ``spec``."""
        if not _NAME.match(field):
            raise ValueError("field name %r is not a name a template can read ([A-Za-z_][A-Za-z0-9_]*)" % field)
        if not isinstance(spec, dict):
            raise ValueError("field %s: expected an object of %s" % (field, ", ".join(sorted(_SPEC_KEYS))))
        unknown = sorted(set(spec) - _SPEC_KEYS)
        if unknown:
            raise ValueError("field %s: unknown key(s) %s; expected: %s"
                             % (field, ", ".join(unknown), ", ".join(sorted(_SPEC_KEYS))))
        form = spec.get("form", field)
        kind = spec.get("type", "string")
        if not isinstance(form, str) or not form:
            raise ValueError("field %s: form must be a non-empty string" % field)
        if kind not in _FIELD_TYPES:
            raise ValueError("field %s: type must be one of %s" % (field, ", ".join(_FIELD_TYPES)))
        max_bytes = _positive(spec, "max_bytes", min(DEFAULT_FIELD_BYTES, max_form_bytes), field)
        if max_bytes > max_form_bytes:
            raise ValueError("field %s: max_bytes exceeds max_form_bytes (%d)" % (field, max_form_bytes))
        for key in ("required", "repeated"):
            if not isinstance(spec.get(key, False), bool):
                raise ValueError("field %s: %s must be true or false" % (field, key))
        for key in ("minimum", "maximum"):
            if key in spec and (kind != "integer" or not _is_int(spec[key])):
                raise ValueError("field %s: %s needs type integer and an integer" % (field, key))
        default = spec.get("default")
        if default is not None and not _of_type(default, kind, spec.get("repeated", False)):
            shape = "a list of values" if spec.get("repeated") else "a value"
            raise ValueError("field %s: default must be %s of type %s" % (field, shape, kind))
        return cls(field, form, {k: spec[k] for k in ("type", "minimum", "maximum") if k in spec},
                   spec.get("required", False), default, max_bytes, spec.get("repeated", False),
                   _positive(spec, "max_items", DEFAULT_MAX_ITEMS, field))

    def value(self, raw: bytes) -> Any:
        """One value of the field, typed and bounded; 400 INVALID_FORM_FIELD naming its form name."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("INVALID_FORM_FIELD", "form field %r is not UTF-8" % self.form, self.form) from None
        return typed_value(text, self.form, self.spec, "INVALID_FORM_FIELD", "form field")

    def absent(self) -> Any:
        if self.required:
            raise bad_request("FORM_FIELD_MISSING", "form field %r is required" % self.form, self.form)
        return self.default if self.default is not None or not self.repeated else []


def _of_type(value: Any, kind: str, repeated: bool) -> bool:
    if repeated:
        return isinstance(value, list) and all(_of_type(item, kind, False) for item in value)
    return isinstance(value, bool) if kind == "boolean" else \
        isinstance(value, _PYTHON_TYPES[kind]) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(spec: Mapping[str, Any], key: str, default: int, field: str) -> int:
    value = spec.get(key, default)
    if not _is_int(value) or value < 1:
        raise ValueError("field %s: %s must be a positive integer" % (field, key))
    result: int = value
    return result


@dataclass(frozen=True)
class FormSpec:
    """A form as a route declares it: its text fields by form name, the form name of its file part (None:
    none), and the bounds on the whole (text bytes of the declared fields, number of parts)."""
    fields: dict[str, FieldSpec]
    file: Optional[str]
    max_form_bytes: int
    max_parts: int

    @classmethod
    def compile(cls, fields: Mapping[str, Any], file: Optional[str], max_form_bytes: int,
                max_parts: int) -> FormSpec:
        """ValueError saying what is wrong."""
        by_form: dict[str, FieldSpec] = {}
        for name, spec in fields.items():
            compiled = FieldSpec.compile(name, spec, max_form_bytes)
            if compiled.form in by_form:
                raise ValueError("fields %s and %s read the same form field %r"
                                 % (by_form[compiled.form].field, name, compiled.form))
            by_form[compiled.form] = compiled
        if file is not None and file in by_form:
            raise ValueError("form field %r is declared both as a text field and as the file" % file)
        return cls(by_form, file, max_form_bytes, max_parts)


# --- the staged file part ---------------------------------------------------------------------------------------

class FormFile(StagedUpload):
    """A form's file part, staged in a blob store (hashed while it streamed in), with the name and type the
    client gave it: $upload.filename, .content_type, .size, .digest, .digests.<alg> (hex), .digests_base64.<alg>.
    blob.put ``from`` it takes the staged bytes over (``take``); otherwise they are discarded when the request
    ends."""

    template_attrs = ("filename", "content_type") + StagedUpload.template_attrs
    __slots__ = ("filename", "content_type")

    def __init__(self, staged: StagedBlob, filename: Optional[str], content_type: Optional[str]) -> None:
        super().__init__(staged)
        self.filename = filename
        self.content_type = content_type


# --- reading a form ---------------------------------------------------------------------------------------------

Stage = Callable[[Readable, Part], FormFile]  # (the file part's bytes, the part) -> the staged file


def read_form(reader: MultipartReader, form: FormSpec, stage: Stage) -> tuple[dict[str, Any], Optional[FormFile]]:
    """Read the whole body: -> (field name -> value of every declared field, the staged file part or None).
    400 FORM_FIELD_MISSING, FORM_FIELD_TOO_LARGE or INVALID_FORM_FIELD naming the form field."""
    raw: dict[str, list[bytes]] = {}
    budget = form.max_form_bytes
    upload: Optional[FormFile] = None
    while (part := reader.next_part()) is not None:
        if part.name is not None and part.name == form.file:
            if upload is not None:
                raise bad_request("INVALID_FORM_FIELD", "the file %r is given more than once" % form.file, form.file)
            upload = stage(reader, part)
            continue
        spec = form.fields.get(part.name or "")
        if spec is None:
            continue  # a part the route does not read: skipped, never kept
        values = raw.setdefault(spec.form, [])
        if values and not spec.repeated:
            raise bad_request("INVALID_FORM_FIELD", "form field %r is given more than once" % spec.form, spec.form)
        if len(values) == spec.max_items:
            raise bad_request("INVALID_FORM_FIELD", "form field %r is given more than %d times"
                              % (spec.form, spec.max_items), spec.form)
        value = _read_bounded(reader, min(spec.max_bytes, budget), spec, form)
        budget -= len(value)
        values.append(value)
    if form.file is not None and upload is None:
        raise bad_request("FORM_FIELD_MISSING", "the form has no file %r" % form.file, form.file)
    bound = {}
    for spec in form.fields.values():
        given = raw.get(spec.form)
        if not given:
            bound[spec.field] = spec.absent()
        else:
            bound[spec.field] = [spec.value(v) for v in given] if spec.repeated else spec.value(given[0])
    return bound, upload


def _read_bounded(reader: MultipartReader, limit: int, spec: FieldSpec, form: FormSpec) -> bytes:
    parts: list[bytes] = []
    size = 0
    while chunk := reader.read(limit + 1 - size):
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            whole = "its max_bytes (%d)" % spec.max_bytes if limit == spec.max_bytes else \
                "what is left of the form's max_form_bytes (%d)" % form.max_form_bytes
            raise bad_request("FORM_FIELD_TOO_LARGE", "form field %r exceeds %s" % (spec.form, whole), spec.form)
    return b"".join(parts)
