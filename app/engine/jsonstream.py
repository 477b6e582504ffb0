"""JSON bodies whose declared string members stream into a blob store (parse.json with `stream`).

A body such as an npm publish carries a file as one base64 string member of a JSON object. The body is read a
chunk at a time and parsed by ijson's push parser (yajl, its C backend); a small scanner beside it knows only
where strings begin and end (quotes and backslashes, found with bytes.find). When a string is about to begin,
the parser has been fed everything before it, so its latest events say where in the document the string sits:
if that place matches a declared member pattern, the string's text is not fed to the parser but decoded as it
arrives (base64, or the text itself) into a blob store's staging area, and the parser is fed ``null`` in its
place. The parser thus checks the whole document's syntax, and sees (and the request holds) the body without
the streamed members, which is then decoded with ``json.loads`` as a plain parse.json body would be.

Member patterns are dot-separated steps: an object key, ``*`` (any one key) or ``[]`` after a step (any one item
of an array: ``files[].data``, ``[].data`` for a top-level array); a backslash takes the next character as part
of a key (``a\\.b`` is the key "a.b"). What the patterns declare is compiled at load (``StreamSpec``).
"""
from __future__ import annotations

import binascii
import codecs
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import ijson

from app.engine.body import parse_json
from app.engine.staged import StagedUpload
from app.errors import DepotError, bad_request, too_large
from app.stores.interfaces import JsonValue, Readable, StagedBlob

# The C backend by name: the scanner relies on it reporting a key as soon as the key's closing quote is read (a
# missing C extension fails here, at start, rather than running a slower parser that may report later)
YAJL = ijson.get_backend("yajl2_c")
READ_CHUNK = 256 * 1024  # bytes read from the request at a time
DECODINGS = ("base64", "none")
DEFAULT_MAX_MEMBERS = 1
SUBSTITUTE = b"null"  # what the parser (and the kept body) read in place of a streamed member


class _Wildcard:
    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


ANY_KEY = _Wildcard("*")
ANY_ITEM = _Wildcard("[]")
Step = Union[str, _Wildcard]
Pattern = tuple[Step, ...]
PathStep = Union[str, int]
State = tuple[Pattern, int]  # a pattern, and how many of its steps the path so far has matched


def invalid_json(message: str, field: Optional[str] = None) -> DepotError:
    return DepotError("INVALID_JSON", 400, message, field)


def invalid_encoding(message: str, field: Optional[str] = None) -> DepotError:
    return DepotError("INVALID_ENCODING", 400, message, field)


def field_name(path: list[PathStep]) -> str:
    """A member's place as errors name it: its keys and item indexes joined with dots (as SCHEMA_VALIDATION)."""
    return ".".join(str(step) for step in path)


# --- what a route declares --------------------------------------------------------------------------------------

_SEGMENT = re.compile(r"(\*|(?:[^.\[\]*\\]|\\.)+)?((?:\[\])*)(\.|\Z)", re.S)
_ESCAPE = re.compile(r"\\(.)", re.S)


def parse_pattern(text: Any) -> Pattern:
    """``_attachments.*.data`` -> ("_attachments", ANY_KEY, "data"); ValueError saying what is wrong."""
    if not isinstance(text, str) or not text:
        raise ValueError("a member pattern is a non-empty string")
    steps: list[Step] = []
    pos = number = 0
    while True:
        number += 1
        match = _SEGMENT.match(text, pos)
        if match is None or not (match.group(1) or match.group(2)) or (match.group(3) and match.end() == len(text)):
            raise ValueError("%r: step %d is malformed (steps are object keys, * for any key, or [] after a step "
                             "for any array item, separated by dots; a backslash escapes . * [ ] or \\ in a key)"
                             % (text, number + 1 if match is not None and match.group(1) else number))
        key, items = match.group(1), len(match.group(2)) // 2
        if key is None and number > 1:
            raise ValueError("%r: [] follows a step, as in files[] (only a top-level array's pattern starts "
                             "with [])" % text)
        if key is not None:
            steps.append(ANY_KEY if key == "*" else _ESCAPE.sub(r"\1", key))
        steps.extend([ANY_ITEM] * items)
        if not match.group(3):
            return tuple(steps)
        pos = match.end()


def _overlap(a: Step, b: Step) -> bool:
    """Whether one path step can match both ``a`` and ``b``."""
    if a is ANY_ITEM or b is ANY_ITEM:
        return a is b
    return a is ANY_KEY or b is ANY_KEY or a == b


@dataclass(frozen=True)
class StreamSpec:
    """The members a route streams, compiled at load. When every pattern ends with an object key, a string can
    be a member's value only after a string that may be its key: one of those keys as written (``last_keys``)
    or written with an escape and at most ``key_span`` bytes long. ``skip`` then passes, without the parser's
    word, the text and strings after any other string up to the next string that may be such a key. A pattern
    ending with * or [] makes any string a possible value (``skip`` is None): the parser is asked at each."""
    members: tuple[str, ...]  # the patterns as the route writes them
    patterns: tuple[Pattern, ...]
    decode: str
    max_members: int
    last_keys: frozenset[bytes]
    key_span: int
    skip: Optional[re.Pattern[bytes]]

    @classmethod
    def compile(cls, members: Any, decode: str, max_members: int) -> StreamSpec:
        """ValueError(message, index of the offending pattern or None)."""
        if not isinstance(members, list) or not members:
            raise ValueError("members must be a non-empty list of patterns", None)
        patterns: list[Pattern] = []
        for index, text in enumerate(members):
            try:
                pattern = parse_pattern(text)
            except ValueError as exc:
                raise ValueError(str(exc), index) from None
            for earlier, other in enumerate(patterns):
                shorter, longer = sorted((other, pattern), key=len)
                if all(_overlap(a, b) for a, b in zip(shorter, longer)):
                    what = "matches the same members as" if len(shorter) == len(longer) else "overlaps"
                    raise ValueError("%r %s %r (members[%d]): a streamed member cannot hold another"
                                     % (text, what, members[earlier], earlier), index)
            patterns.append(pattern)
        last = [p[-1] for p in patterns]
        keys = frozenset(step.encode() for step in last if isinstance(step, str))
        span = 6 * max((len(key) for key in keys), default=0)  # \uXXXX: six bytes for each byte of a key at most
        skip = None if len(keys) < len(last) or not keys else re.compile(
            rb'(?:[^"]++|"(?!(?:%s)")[^"\\]*+"|"(?=[^"]{%d})[^"\\]*+(?:\\.[^"\\]*+)*+")*+'
            % (b"|".join(re.escape(key) for key in sorted(keys)), span + 1), re.S)
        return cls(tuple(members), tuple(patterns), decode, max_members, keys, span, skip)

    def may_be_key(self, raw: bytes) -> bool:
        """Whether a string written ``raw`` can be the key of a member (the parser has the last word)."""
        return raw in self.last_keys or b"\\" in raw


def _complete(states: tuple[State, ...]) -> bool:
    return any(i == len(p) for p, i in states)


class _Moves:
    """Where the pattern states at a container lead its children: by key (a key no pattern names leads where *
    does) and for an array's items."""
    __slots__ = ("by_key", "any_key", "item")

    def __init__(self, states: tuple[State, ...]) -> None:
        alive = [(p, i) for p, i in states if i < len(p)]
        self.any_key = tuple((p, i + 1) for p, i in alive if p[i] is ANY_KEY)
        self.item = tuple((p, i + 1) for p, i in alive if p[i] is ANY_ITEM)
        self.by_key: dict[str, tuple[State, ...]] = {}
        for p, i in alive:
            step = p[i]
            if isinstance(step, str):
                self.by_key[step] = self.by_key.get(step, ()) + ((p, i + 1),)
        for key in self.by_key:
            self.by_key[key] += self.any_key


# --- where the parser is ----------------------------------------------------------------------------------------

class _Frame:
    """An open object or array: where its children lead, the states at its current child and that child's key
    (or index)."""
    __slots__ = ("is_array", "moves", "child", "key")

    def __init__(self, is_array: bool, moves: _Moves) -> None:
        self.is_array = is_array
        self.moves = moves
        self.child = moves.item if is_array else ()
        self.key: PathStep = -1 if is_array else ""


class _Structure:
    """Follows the parser's events: the open containers, the current key or index of each, and which places are
    members. A member that is not a string is refused here; the null fed in a streamed one's place is expected."""

    def __init__(self, spec: StreamSpec, max_depth: int) -> None:
        self.frames: list[_Frame] = []
        self.root: tuple[State, ...] = tuple((p, 0) for p in spec.patterns)
        self.max_depth = max_depth
        self.after_key = False
        self.substitute = False  # the null fed for a streamed member is the next value
        self.moves: dict[tuple[State, ...], _Moves] = {}  # worked out once per set of states

    def take(self, events: list[tuple[str, Any]]) -> None:
        """Follow ``events`` (and empty the list). Where no pattern can match (most of a document), an event
        costs a comparison or two: keys and indexes are followed only where a pattern is alive."""
        frames = self.frames
        after_key = self.after_key
        for event, value in events:
            if event == "map_key":
                top = frames[-1]
                moves = top.moves
                if moves.by_key or moves.any_key:
                    top.key = value
                    top.child = moves.by_key.get(value, moves.any_key)
                after_key = True
                continue
            after_key = False
            if event == "end_map" or event == "end_array":
                frames.pop()
                continue
            states = frames[-1].child if frames else self.root
            if states:
                self._value(event, states)
            if event == "start_map" or event == "start_array":
                if len(frames) == self.max_depth:
                    raise invalid_json("request body nests deeper than %d levels" % self.max_depth)
                known = self.moves.get(states)
                if known is None:
                    known = self.moves[states] = _Moves(states)
                frames.append(_Frame(event == "start_array", known))
        self.after_key = after_key
        del events[:]

    def _value(self, event: str, states: tuple[State, ...]) -> None:
        """A value begins where a pattern is alive: count it in its array; at a member, it must be our null."""
        if self.frames and self.frames[-1].is_array:
            top = self.frames[-1]
            top.key = int(top.key) + 1
        if not _complete(states):
            return
        field = field_name(self.path())
        if event == "string":  # the scanner hands every member's string over before the parser sees it
            raise DepotError("STREAM_MISSED", 500, "member %s reached the parser" % field)
        if not (self.substitute and event == "null"):
            raise bad_request("STREAMED_MEMBER_NOT_STRING", "member %s is streamed, so it must be a string, not %s"
                              % (field, _kind(event)), field)
        self.substitute = False

    def at_member(self) -> bool:
        """Whether a string beginning now (the parser has read all before it) is a member's value."""
        frames = self.frames
        if not frames:
            return _complete(self.root)
        top = frames[-1]
        return (top.is_array or self.after_key) and _complete(top.child)

    def path(self) -> list[PathStep]:
        return [frame.key for frame in self.frames]


def _kind(event: str) -> str:
    return {"start_map": "an object", "start_array": "an array", "null": "null", "boolean": "a boolean",
            "number": "a number", "string": "a string"}.get(event, event)


# --- decoding a member's text -----------------------------------------------------------------------------------

class _Base64:
    """Standard base64, padded; ``\\/`` (an escaped slash) is taken for ``/``, any other escape is refused."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.carry = b""  # the characters of an incomplete group of four
        self.backslash = False  # the piece before ended with the first half of an escape
        self.padded = False

    def feed(self, raw: bytes) -> bytes:
        if self.backslash or b"\\" in raw:
            raw = self._unescape(raw)
        data = self.carry + raw if self.carry else raw
        usable = len(data) - len(data) % 4
        self.carry = data[usable:]
        if not usable:
            return b""
        if self.padded:
            raise self._error("data after its padding")
        try:
            decoded = binascii.a2b_base64(data[:usable], strict_mode=True)
        except binascii.Error as exc:
            raise self._error(str(exc)) from None
        self.padded = data[usable - 1] == 0x3D  # "="
        return decoded

    def finish(self) -> bytes:
        if self.carry or self.backslash:
            raise self._error("its length is not a multiple of 4 (padded base64 is expected)")
        return b""

    def _unescape(self, raw: bytes) -> bytes:
        if self.backslash:
            raw = b"\\" + raw
        self.backslash = raw.endswith(b"\\") and not raw.endswith(b"\\\\")
        if self.backslash:
            raw = raw[:-1]
        pieces = raw.split(b"\\/")
        if any(b"\\" in piece for piece in pieces):
            raise self._error("it holds a JSON escape other than \\/")
        return b"/".join(pieces)

    def _error(self, what: str) -> DepotError:
        return invalid_encoding("member %s is not valid base64: %s" % (self.field, what), self.field)


class _Text:
    """The string's own text (its JSON escapes decoded), as UTF-8."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.pending = ""  # an escape cut short by the end of a piece
        self.high = ""  # a high surrogate whose low half may begin the next piece

    def feed(self, raw: bytes) -> bytes:
        try:
            text = self.pending + self.utf8.decode(raw)
        except UnicodeDecodeError as exc:
            raise invalid_json("member %s is not UTF-8: %s" % (self.field, exc.reason), self.field) from None
        cut = _incomplete_escape(text)
        text, self.pending = text[:cut], text[cut:]
        try:
            value: str = self.high + json.loads('"%s"' % text)
        except ValueError as exc:
            raise invalid_json("member %s is not a valid JSON string: %s" % (self.field, exc), self.field) from None
        self.high = ""
        if value and "\ud800" <= value[-1] <= "\udbff":
            value, self.high = value[:-1], value[-1]
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            # a pair split between pieces joins here; a lone surrogate has no UTF-8
            try:
                return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le").encode("utf-8")
            except UnicodeError:
                raise invalid_encoding("member %s holds a lone surrogate escape" % self.field, self.field) from None

    def finish(self) -> bytes:
        if self.pending or self.high:
            what = "an incomplete escape" if self.pending else "a lone surrogate escape"
            raise invalid_json("member %s ends with %s" % (self.field, what), self.field)
        try:
            self.utf8.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise invalid_json("member %s is not UTF-8: %s" % (self.field, exc.reason), self.field) from None
        return b""


def _incomplete_escape(text: str) -> int:
    """Where an escape that the end of ``text`` cuts short begins (len(text) when none is). ``text`` begins
    outside an escape; every escape is at most six characters, so only the last backslash run can be cut."""
    last = text.rfind("\\", max(0, len(text) - 6))
    if last < 0:
        return len(text)
    run = last
    while run > 0 and text[run - 1] == "\\":
        run -= 1
    if (last - run) % 2:  # the last backslash escapes the one before it
        return len(text)
    rest = len(text) - last
    complete = rest >= 6 if text[last + 1:last + 2] == "u" else rest >= 2
    return len(text) if complete else last


# a string's text from where it goes on, up to its closing quote, or to a backslash ending the buffer (possessive:
# the regex engine keeps no backtracking state, whatever the number of escapes)
_STRING_TEXT = re.compile(rb'[^"\\]*+(?:\\.[^"\\]*+)*+', re.S)


def _string_end(buf: bytes, start: int, escaped: bool) -> tuple[int, bool]:
    """The closing quote of a string whose text goes on at ``start`` (``escaped``: the character there is
    escaped): (its index or -1, whether the end of ``buf`` leaves the next character escaped)."""
    pos = start + 1 if escaped else start
    if pos > len(buf):  # the escaped character is still to come
        return -1, True
    quote = buf.find(b'"', pos)  # (memchr: a string without escapes, a base64 one, passes at memory speed)
    backslash = buf.find(b"\\", pos, len(buf) if quote < 0 else quote)
    if backslash < 0:
        return quote, False
    end = _STRING_TEXT.match(buf, backslash).end()  # type: ignore[union-attr]  # (it matches the empty string)
    if end == len(buf):
        return -1, False
    if buf[end] == 0x5C:  # a backslash, the buffer's last byte
        return -1, True
    return end, False


# --- reading a body ---------------------------------------------------------------------------------------------

class JsonMember(StagedUpload):
    """A streamed member, staged in a blob store: $attachments[0].digest, .size, .digests.<alg>,
    .digests_base64.<alg>, and .path, the keys (and array indexes) leading to it in the body."""

    template_attrs = StagedUpload.template_attrs + ("path",)
    __slots__ = ("path",)

    def __init__(self, staged: StagedBlob, path: list[PathStep]) -> None:
        super().__init__(staged)
        self.path = path


Stage = Callable[[Readable, list[PathStep]], Any]  # (the member's decoded bytes, its path) -> its staged handle


class _MemberText:
    """A streamed member's decoded bytes, read from the body as the store asks for them."""

    def __init__(self, reader: JsonStreamReader, decoder: Union[_Base64, _Text]) -> None:
        self.reader = reader
        self.decoder = decoder
        self.pending = b""
        self.done = False

    def read(self, size: int = -1) -> bytes:
        while not self.pending and not self.done:
            raw = self.reader.member_piece()
            self.pending = self.decoder.finish() if raw is None else self.decoder.feed(raw)
            self.done = raw is None
        if 0 <= size < len(self.pending):
            chunk, self.pending = self.pending[:size], self.pending[size:]
            return chunk
        chunk, self.pending = self.pending, b""
        return chunk


class JsonStreamReader:
    """One body: ``read()`` -> (the body without its streamed members, their staged handles in document order)."""

    def __init__(self, stream: Readable, spec: StreamSpec, stage: Stage, max_bytes: int, max_depth: int,
                 chunk: int = READ_CHUNK) -> None:
        self.stream = stream
        self.spec = spec
        self.stage = stage
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.chunk = chunk
        self.events = ijson.sendable_list()
        self.parser = YAJL.basic_parse_coro(self.events)
        self.structure = _Structure(spec, max_depth)
        self.kept: list[bytes] = []  # the body as the parser read it: what json.loads decodes at the end
        self.kept_bytes = 0
        self.held: list[bytes] = []  # kept, not yet parsed: a string the chunk's end cut short
        self.handles: list[Any] = []
        self.buf = b""
        self.pos = self.fed = 0  # where the scanner is in buf; what of buf the parser has read
        self.in_string = self.escaped = False
        self.string_start = 0  # where the open string's text began in buf (-1: in an earlier chunk)
        self.consult = spec.skip is None  # whether the string beginning next may be a member's value
        self.member_ended = True
        self.member_field = ""

    def read(self) -> tuple[JsonValue, list[Any]]:
        while self._fill():
            self._scan()
            if self.in_string:
                self._hold(self.buf[self.fed:])
            else:
                self._feed(self.buf[self.fed:])
        self._feed(b"")
        try:
            self.parser.close()
        except ijson.JSONError as exc:
            raise self._syntax_error(exc) from None
        return parse_json(b"".join(self.kept), self.max_depth), self.handles

    def _fill(self) -> bool:
        """Read the next chunk; False at the body's end."""
        self.buf = self.stream.read(self.chunk)
        self.pos = self.fed = 0
        return bool(self.buf)

    def _scan(self) -> None:
        """Move through buf string by string; at each string that may be a member's value, ask the parser. While
        the string before cannot be a member's key, the spec's ``skip`` passes strings in bulk."""
        buf, pos, spec = self.buf, self.pos, self.spec
        skip = spec.skip
        while True:
            if self.in_string:
                end, self.escaped = _string_end(buf, pos, self.escaped)
                if end < 0:
                    self.string_start = -1
                    return
                start = self.string_start
                self.consult = skip is None or start < 0 or (
                    end - start <= spec.key_span and spec.may_be_key(buf[start:end]))
                self.in_string, pos = False, end + 1
            if not self.consult and skip is not None:
                passed = skip.match(buf, pos).end()  # type: ignore[union-attr]  # (it matches the empty string)
                pos = passed
            quote = buf.find(b'"', pos)
            if quote < 0:
                return
            if self.consult:
                self._feed(buf[self.fed:quote])
                self.fed = quote
                if self.structure.at_member():
                    self._divert(quote)
                    buf, pos = self.buf, self.pos
                    self.consult = skip is None
                    continue
            self.in_string, self.escaped, self.string_start, pos = True, False, quote + 1, quote + 1

    def _divert(self, quote: int) -> None:
        """The string opening at ``quote`` is a member: the parser reads null, its text goes to the store."""
        structure = self.structure
        structure.substitute = True
        self._feed(SUBSTITUTE)
        path = structure.path()
        field = field_name(path)
        if len(self.handles) == self.spec.max_members:
            raise bad_request("TOO_MANY_STREAMED_MEMBERS", "member %s is one more streamed member than the %d "
                              "this route takes (stream.max_members)" % (field, self.spec.max_members), field)
        decoder = _Base64(field) if self.spec.decode == "base64" else _Text(field)
        self.pos, self.escaped, self.member_ended = quote + 1, False, False
        self.member_field = field
        handle = self.stage(_MemberText(self, decoder), path)
        self.handles.append(handle)
        if not self.member_ended:  # the store stopped reading before the end (it cannot: it reads to b"")
            raise DepotError("STREAM_INCOMPLETE", 500, "member %s was not read to its end" % field)

    def member_piece(self) -> Optional[bytes]:
        """The next raw piece of the member's text; None once its closing quote is passed."""
        if self.member_ended:
            return None
        if self.pos >= len(self.buf) and not self._fill():
            raise invalid_json("the body ends inside member %s" % self.member_field, self.member_field)
        end, self.escaped = _string_end(self.buf, self.pos, self.escaped)
        if end < 0:
            piece, self.pos = self.buf[self.pos:], len(self.buf)
            return piece
        piece = self.buf[self.pos:end]
        self.pos = self.fed = end + 1
        self.member_ended = True
        return piece if piece else None

    def _keep(self, data: bytes) -> None:
        self.kept_bytes += len(data)
        if self.kept_bytes > self.max_bytes:
            raise too_large("the JSON body, streamed members aside, exceeds max_json_bytes (%d)" % self.max_bytes,
                            "JSON_TOO_LARGE")
        self.kept.append(data)

    def _hold(self, data: bytes) -> None:
        """Keep ``data`` but let the parser read it later: yajl lexes a string that a send cuts short again
        from its start at the next send, so a long string goes to it whole."""
        self._keep(data)
        self.held.append(data)

    def _feed(self, data: bytes) -> None:
        """Keep ``data`` and let the parser read it (after what is held)."""
        if data:
            self._keep(data)
        if self.held:
            self.held.append(data)
            data = b"".join(self.held)
            self.held = []
        if not data:
            return
        try:
            self.parser.send(data)
        except ijson.JSONError as exc:
            raise self._syntax_error(exc) from None
        if self.events:
            self.structure.take(self.events)

    def _syntax_error(self, exc: Exception) -> DepotError:
        message = exc.args[0] if exc.args else exc
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        first = str(message).strip().splitlines()[0] if str(message).strip() else "malformed"
        if self.kept_bytes == 0 or not b"".join(self.kept).strip():
            return invalid_json("request body is empty; expected JSON")
        return invalid_json("request body is not valid JSON: %s" % first)
