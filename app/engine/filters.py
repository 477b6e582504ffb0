"""Template filters: the closed registry of ``{ref|name}`` and ``{ref|name:argument}`` transformations.

A filter is one small function from a value to a value, declared here with its documentation, whether it takes
an argument and the errors it may raise, so the template parser (app/engine/expr.py), the checker, OPERATIONS.md
and the OpenAPI document all read the same declaration. A chain is resolved against this registry when the
schema is loaded: an unknown filter, or an argument given to a filter that takes none (or missing from one that
needs it), is a load error naming the place and the filter.

Filters run on the value a reference resolved to, after any slice. An absent value (an optional reference that
is not bound, or null) passes through every filter unchanged except ``default``, so ``{name?|lower}`` is still
absent when ``name`` is. Text filters read a non-string value as interpolation writes it (numbers as digits,
booleans as true/false, objects and lists as compact JSON). A filter's output is never parsed as a template.
"""
from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import string
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence
from urllib.parse import quote


class FilterError(ValueError):
    """A filter chain the registry cannot build (an unknown filter, a wrong argument): a load error."""


@dataclass(frozen=True)
class FilterDecl:
    """One filter: ``apply(value, argument)`` (argument None for filters that take none)."""
    name: str
    doc: str
    apply: Callable[[Any, Optional[str]], Any]
    argument: Optional[str] = None  # what the argument is, for filters that take one (None: it takes none)
    example: str = ""
    errors: tuple[str, ...] = ()  # "<status> <CODE>" a request may meet when the filter cannot take its input
    keeps_absent: bool = True  # an absent value passes through (False: the filter turns absence into a value)
    gives: Optional[dict[str, Any]] = None  # the JSON Schema of what it gives (None: text)


FILTERS: dict[str, FilterDecl] = {}
INVALID_INPUT = "400 INVALID_FILTER_INPUT"


def text(value: Any) -> str:
    """A value as interpolation writes it into a string: strings as they are, numbers and booleans as JSON
    spells them, objects and lists as compact JSON with sorted keys."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


# Case changes touch ASCII letters only: Unicode case mapping folds look-alikes into ASCII (the Kelvin sign K
# lower-cases to "k", U+017F long s upper-cases to "S"), so a value that a constraint or another key would keep
# apart could meet an ASCII one once mapped. Entity normalize rules (app/engine/definitions.py) use the same two.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


# Entity normalizers run on every request. Text that is all ASCII (the usual case: str.isascii reads a flag) is
# case-mapped by str.lower and str.upper, which change A-Z (a-z) only there and cost a tenth of translate's table
# look-ups; other text goes through the tables.
def ascii_lower(value: str) -> str:
    return value.lower() if value.isascii() else value.translate(_ASCII_LOWER)


def ascii_upper(value: str) -> str:
    return value.upper() if value.isascii() else value.translate(_ASCII_UPPER)


def _filter(name: str, doc: str, argument: Optional[str] = None, example: str = "", errors: Sequence[str] = (),
            keeps_absent: bool = True, gives: Optional[dict[str, Any]] = None
            ) -> Callable[[Callable[[Any, Optional[str]], Any]], Callable[[Any, Optional[str]], Any]]:
    def register(fn: Callable[[Any, Optional[str]], Any]) -> Callable[[Any, Optional[str]], Any]:
        FILTERS[name] = FilterDecl(name, doc, fn, argument, example, tuple(errors), keeps_absent, gives)
        return fn
    return register


@_filter("lower", "ASCII letters in lower case (other characters unchanged)", example="{name|lower}")
def _lower(value: Any, _: Optional[str]) -> str:
    return ascii_lower(text(value))


@_filter("upper", "ASCII letters in upper case (other characters unchanged)", example="{name|upper}")
def _upper(value: Any, _: Optional[str]) -> str:
    return ascii_upper(text(value))


_PEP503_RUN = re.compile(r"[-_.]+")


@_filter("pep503", "a Python project name normalized as PEP 503 says: each run of `-`, `_` and `.` becomes "
         "one `-`, ASCII letters lower case (`Foo_Bar.baz` -> `foo-bar-baz`)", example="{project|pep503}")
def _pep503(value: Any, _: Optional[str]) -> str:
    return ascii_lower(_PEP503_RUN.sub("-", text(value)))


@_filter("replace", "each occurrence of a text replaced by another: the argument is `old:new` (split at its first "
         "`:`; without one, `old` is removed). With pep503 it spells a wheel's or sdist's file name prefix "
         "(PEP 427: runs of `-_.` as one `_`)", argument="`old:new`, the text to replace and its replacement",
         example="{name|pep503|replace:-:_}")
def _replace(value: Any, argument: Optional[str]) -> str:
    old, _, new = (argument or "").partition(":")
    return text(value).replace(old, new) if old else text(value)


@_filter("urlquote", "percent-encoded for one URL path segment or query value: every byte of its UTF-8 but "
         "`A-Z a-z 0-9 - . _ ~` is encoded, `/` too (`a/b c` -> `a%2Fb%20c`); injective, so it also makes a "
         "storage key segment of a value holding `/`", example="{filename|urlquote}")
def _urlquote(value: Any, _: Optional[str]) -> str:
    return quote(text(value), safe="")


@_filter("urlquote_path", "percent-encoded for a URL path: as `urlquote`, but `/` is kept, so a value made of "
         "segments (`library/ubuntu`) stays one path of several segments", example="{$repo|urlquote_path}")
def _urlquote_path(value: Any, _: Optional[str]) -> str:
    return quote(text(value), safe="/")


_HEX = re.compile(r"\A(?:[0-9a-fA-F]{2})*\Z")
_BASE64 = re.compile(r"\A[A-Za-z0-9+/]*={0,2}\Z")


@_filter("hex_to_base64", "hexadecimal text (a digest as `sha256:<hex>` stores it, after a slice) as the "
         "standard base64 of the same bytes, padded: what Content-Digest and Subresource Integrity (`sha512-...`) "
         "carry", example="sha-256=:{$blob.digest:7:64|hex_to_base64}:", errors=(INVALID_INPUT,))
def _hex_to_base64(value: Any, _: Optional[str]) -> str:
    digits = text(value)
    if not _HEX.match(digits):
        raise ValueError("not hexadecimal text of whole bytes")
    return base64.b64encode(bytes.fromhex(digits)).decode("ascii")


@_filter("base64_to_hex", "standard base64 (padded) as lower-case hexadecimal text of the same bytes: a digest a "
         "client sent base64-encoded, made comparable with a stored one", example="{$body.integrity:7:88|base64_to_hex}",
         errors=(INVALID_INPUT,))
def _base64_to_hex(value: Any, _: Optional[str]) -> str:
    encoded = text(value)
    if len(encoded) % 4 or not _BASE64.match(encoded):
        raise ValueError("not standard padded base64")
    try:
        return base64.b64decode(encoded, validate=True).hex()
    except binascii.Error:
        raise ValueError("not standard padded base64") from None


@_filter("default", "the argument (text) when the value is absent (an unbound reference, or null); the value "
         "otherwise. A reference with a default is never unbound, so the checker treats it as optional",
         argument="the text used when the value is absent (may be empty)", example="{channel|default:stable}",
         keeps_absent=False)
def _default(value: Any, argument: Optional[str]) -> Any:
    return argument if value is None else value


# Data filters: they take a value apart rather than spell it, for documents a client sends whole (an npm publish
# names its one version as the only key of `versions`). They keep the value's type, so a template that is exactly
# such a reference renders to a list or an object, not to text.

def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("%s takes an object" % name)
    return value


@_filter("keys", "an object's member names, as a list in the object's order (`400 INVALID_FILTER_INPUT` for "
         "anything but an object)", example="{$body.versions|keys|first}", errors=(INVALID_INPUT,),
         gives={"type": "array", "items": {"type": "string"}})
def _keys(value: Any, _: Optional[str]) -> list[str]:
    return list(_object(value, "keys"))


@_filter("values", "an object's member values, as a list in the object's order (`400 INVALID_FILTER_INPUT` for "
         "anything but an object)", example="{$body.versions|values|first}", errors=(INVALID_INPUT,),
         gives={"type": "array"})
def _values(value: Any, _: Optional[str]) -> list[Any]:
    return list(_object(value, "values").values())


@_filter("get", "an object's member by name; absent when the object has none (`400 INVALID_FILTER_INPUT` for "
         "anything but an object). It reads names a reference's path cannot spell (`dist-tags`)",
         argument="the member's name", example="{$body|get:dist-tags|keys|first}", errors=(INVALID_INPUT,), gives={})
def _get(value: Any, argument: Optional[str]) -> Any:
    return _object(value, "get").get(argument or "")


@_filter("basename", "the text after the last `/` (all of it when there is none): a scoped npm name's own part, a "
         "file name at the end of a path", example="{package|basename}-{version}.tgz")
def _basename(value: Any, _: Optional[str]) -> str:
    return text(value).rpartition("/")[2]


@_filter("first", "a list's first item; absent when the list is empty (`400 INVALID_FILTER_INPUT` for anything "
         "but a list)", example="{$body.versions|keys|first}", errors=(INVALID_INPUT,), gives={})
def _first(value: Any, _: Optional[str]) -> Any:
    if not isinstance(value, list):
        raise ValueError("first takes a list")
    return value[0] if value else None


@_filter("last", "a list's last item; absent when the list is empty (`400 INVALID_FILTER_INPUT` for anything but "
         "a list)", example="{$rows|last|get:tag}", errors=(INVALID_INPUT,), gives={})
def _last(value: Any, _: Optional[str]) -> Any:
    if not isinstance(value, list):
        raise ValueError("last takes a list")
    return value[-1] if value else None


@_filter("pick", "an object with only the named members it has, in the argument's order: a document's public "
         "subset (`400 INVALID_FILTER_INPUT` for anything but an object)",
         argument="member names, separated by commas", example="{$manifest|pick:name,version,dependencies,dist}",
         errors=(INVALID_INPUT,), gives={"type": "object"})
def _pick(value: Any, argument: Optional[str]) -> dict[str, Any]:
    source = _object(value, "pick")
    return {name: source[name] for name in (argument or "").split(",") if name in source}


@_filter("split", "text split at each occurrence of the argument, as a list (`a/b/c` with `/`: `[\"a\", \"b\", "
         "\"c\"]`); with first, an OCI repository name's namespace",
         argument="the separator", example="{from|split:/|first}", gives={"type": "array"})
def _split(value: Any, argument: Optional[str]) -> list[str]:
    return text(value).split(argument or " ")


@_filter("pluck", "the named member of each object in a list, in the list's order; an item without it (or not an "
         "object) is left out: the digests of a manifest's layers (`400 INVALID_FILTER_INPUT` for anything but a "
         "list)", argument="the member's name", example="{$manifest.layers|pluck:digest}", errors=(INVALID_INPUT,),
         gives={"type": "array"})
def _pluck(value: Any, argument: Optional[str]) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError("pluck takes a list")
    return [item[argument] for item in value if isinstance(item, dict) and argument in item]


@_filter("map", "a value looked up in a table written in the argument: `from=to` pairs separated by commas; a value "
         "the table lacks passes through unchanged, unless a `*=to` pair gives what every other value becomes. It "
         "turns Depot's error codes into a protocol's in an error body",
         argument="from=to pairs, separated by commas (`*=to`: any other value)",
         example="{error.code|map:BLOB_NOT_FOUND=BLOB_UNKNOWN,UPLOAD_UNKNOWN=BLOB_UPLOAD_UNKNOWN}")
def _map(value: Any, argument: Optional[str]) -> Any:
    table = _table(argument or "")
    key = text(value)
    return table.get(key, table.get("*", value))


@functools.lru_cache(maxsize=256)
def _table(argument: str) -> dict[str, str]:
    pairs = [pair.partition("=") for pair in argument.split(",") if pair]
    return {source: target for source, _, target in pairs}


Filter = Callable[[Any], Any]  # one filter with its argument bound: value -> value


def compile_filter(name: str, argument: Optional[str]) -> tuple[FilterDecl, Filter]:
    """The declaration of filter ``name`` and its function with ``argument`` bound; FilterError when the
    registry has no such filter, or the argument is missing or unwanted."""
    decl = FILTERS.get(name)
    if decl is None:
        raise FilterError("unknown filter %r; expected one of: %s" % (name, ", ".join(sorted(FILTERS))))
    if decl.argument is None and argument is not None:
        raise FilterError("filter %r takes no argument (':%s')" % (name, argument))
    if decl.argument is not None and argument is None:
        raise FilterError("filter %r needs an argument: %s (write %s:...)" % (name, decl.argument, name))
    apply = decl.apply
    if decl.keeps_absent:
        def run(value: Any) -> Any:
            return None if value is None else apply(value, argument)
    else:
        def run(value: Any) -> Any:
            return apply(value, argument)
    return decl, run
