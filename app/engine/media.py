"""Media types: what a response says it is (Content-Type), and which of a route's offers a request accepts.

A schema names media types in `respond.*` `content_type` arguments and in `http.negotiate` offers; each is parsed
at load (RFC 9110 section 8.3.1: type "/" subtype, then `; name=value` parameters), so a malformed one is a load
error at its place. Negotiation reads the request's Accept with werkzeug's parser (q-values, wildcards, several
Accept headers joined into one) and picks among the offers in the route's order of preference.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Sequence

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from app.engine.expr import Node
from app.errors import DepotError

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t\x20-\x7e\x80-\xff])*"'
_PARAMETER = re.compile(r"[ \t]*;[ \t]*(?:(%s)=(%s|%s))?" % (_TOKEN, _TOKEN, _QUOTED))
_ESSENCE = re.compile(r"(%s)/(%s)" % (_TOKEN, _TOKEN))
UTF8 = ("utf-8", "utf8")


class MediaTypeError(ValueError):
    pass


@dataclass(frozen=True)
class ContentType:
    """A response's media type: ``header`` as the schema wrote it, ``essence`` its type/subtype lower-cased."""
    header: str
    essence: str
    charset: str | None

    @property
    def json(self) -> bool:
        """JSON text: application/json, or any type with the +json structured syntax suffix (RFC 6839)."""
        subtype = self.essence.partition("/")[2]
        return subtype == "json" or subtype.endswith("+json")

    @property
    def markup(self) -> bool:
        """HTML or XML, where text substituted into a page must be escaped."""
        subtype = self.essence.partition("/")[2]
        return subtype in ("html", "xml") or subtype.endswith(("+html", "+xml"))

    @property
    def text_header(self) -> str:
        """The header for text Depot encodes: UTF-8, said so when the schema did not."""
        return self.header if self.charset is not None else self.header + "; charset=utf-8"


@functools.lru_cache(maxsize=256)  # a dynamic content type takes few values (a route's offers): parsed once each
def content_type(text: str) -> ContentType:
    """Parse a response's media type; MediaTypeError says what is wrong with it. A response names a concrete type
    (no `*` range), and Depot writes text as UTF-8, so a charset, when given, is UTF-8."""
    match = _ESSENCE.match(text)
    if match is None:
        raise MediaTypeError("%r is not a media type (type/subtype, then optional ; name=value parameters)" % text)
    if "*" in (match.group(1), match.group(2)):
        raise MediaTypeError("%r is a media range; a response names a concrete media type" % text)
    charset = None
    end = match.end()
    while end < len(text):
        parameter = _PARAMETER.match(text, end)
        if parameter is None or parameter.end() == end:
            raise MediaTypeError("%r is not a media type: malformed parameters at offset %d" % (text, end))
        if parameter.group(1) is not None and parameter.group(1).lower() == "charset":
            charset = parameter.group(2).strip('"').lower()
        end = parameter.end()
    if charset is not None and charset not in UTF8:
        raise MediaTypeError("%r: Depot writes text as UTF-8, so a charset parameter can only be utf-8" % text)
    return ContentType(text, "%s/%s" % (match.group(1).lower(), match.group(2).lower()), charset)


@dataclass(frozen=True)
class ResponseType:
    """A respond step's content type as bound at load: ``fixed`` when the schema wrote a constant (checked then),
    else ``node``, a string template rendered and checked per request. ``json``: the answer is JSON, so its type
    must be a JSON one."""
    node: Node
    fixed: ContentType | None
    json: bool

    @staticmethod
    def check(parsed: ContentType, json: bool) -> ContentType:
        if json and not parsed.json:
            raise MediaTypeError("%r is no JSON media type (application/json, or a type with the +json suffix), "
                                 "and this answer is JSON" % parsed.header)
        return parsed

    def resolve(self, ctx: Any) -> ContentType:
        if self.fixed is not None:
            return self.fixed
        value = self.node.render(ctx)
        try:
            if not isinstance(value, str):
                raise MediaTypeError("it rendered as %s, not a string" % type(value).__name__)
            return self.check(content_type(value), self.json)
        except MediaTypeError as exc:
            raise DepotError("INVALID_CONTENT_TYPE", 500, "the response's content type is invalid: %s" % exc) \
                from None


def negotiate(accept: str | None, offers: Sequence[str]) -> str | None:
    """The offer the Accept header value prefers (highest q-value, then the most specific match, then the
    earliest offer); the first offer when there is no Accept (or it is blank); None when no offer is acceptable."""
    if accept is None or not accept.strip():
        return offers[0]
    chosen: str | None = parse_accept_header(accept, MIMEAccept).best_match(offers)
    return chosen
