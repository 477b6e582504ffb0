"""Digests: Depot's own form ("sha256:<hex>"), the algorithms it computes, and the ones clients declare for an
upload (RFC 9530 Content-Digest, ?digest=, a route's declared digest in any usual form). Every blob store and
the HTTP layer read them alike."""
import base64
import binascii
import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional

from app.errors import bad_request
from app.stores.interfaces import Readable

DIGEST_PREFIX = "sha256:"
CHUNK = 1024 * 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Algorithm:
    """A digest algorithm Depot computes: ``name`` is how routes and templates name it ($blob.digests.sha1),
    ``size`` its digest's bytes, ``http_name`` its RFC 9530 name when a Content-Digest header may carry it."""
    name: str
    size: int
    new: Callable[[], Any]  # -> a hashlib object
    http_name: Optional[str] = None


ALGORITHMS = {algorithm.name: algorithm for algorithm in (
    Algorithm("sha256", 32, hashlib.sha256, "sha-256"),
    Algorithm("sha512", 64, hashlib.sha512, "sha-512"),
    Algorithm("sha384", 48, hashlib.sha384),
    Algorithm("sha1", 20, functools.partial(hashlib.sha1, usedforsecurity=False)),
    Algorithm("md5", 16, functools.partial(hashlib.md5, usedforsecurity=False)),
    Algorithm("blake2b_256", 32, functools.partial(hashlib.blake2b, digest_size=32)))}
# the Content-Digest algorithms (RFC 9530 names) Depot computes while a request body streams in
CONTENT_DIGEST = {algorithm.http_name: algorithm for algorithm in ALGORITHMS.values() if algorithm.http_name}
# every usual spelling of a name, once case, "-" and "_" are ignored: SHA-256, sha256, blake2b-256, blake2b_256
_SPELLINGS = {name.replace("_", ""): algorithm for name, algorithm in ALGORITHMS.items()}


def algorithm_named(name: str) -> Optional[Algorithm]:
    """The algorithm ``name`` spells (case, "-" and "_" ignored), or None."""
    return _SPELLINGS.get(name.lower().replace("-", "").replace("_", "")) if isinstance(name, str) else None


def algorithm_names(names: Iterable[str]) -> list[str]:
    """Depot's names of the algorithms ``names`` spell; ValueError naming the first it does not know."""
    found = []
    for name in names:
        algorithm = algorithm_named(name)
        if algorithm is None:
            raise ValueError("unknown digest algorithm %r; Depot computes: %s" % (name, ", ".join(ALGORITHMS)))
        found.append(algorithm.name)
    return found


class Hashers:
    """Digests of one stream of bytes in the ALGORITHMS ``names`` names, computed in one pass."""

    def __init__(self, names: Iterable[str]) -> None:
        self._hashers = {name: ALGORITHMS[name].new() for name in names}

    def update(self, chunk: bytes) -> None:
        for hasher in self._hashers.values():
            hasher.update(chunk)

    def hexdigests(self) -> dict[str, str]:
        return {name: hasher.hexdigest() for name, hasher in self._hashers.items()}


def hash_stream(stream: Readable, names: Iterable[str]) -> dict[str, str]:
    """The digests (name -> hex) of everything ``stream`` holds, computed in one pass."""
    hashers = Hashers(names)
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return hashers.hexdigests()
        hashers.update(chunk)


def base64_digests(hexdigests: Mapping[str, str]) -> dict[str, str]:
    """The same digests in base64 (what SRI integrity strings and Content-Digest carry)."""
    return {name: base64.b64encode(bytes.fromhex(value)).decode("ascii") for name, value in hexdigests.items()}


def split_digest(digest: str) -> str:
    """'sha256:<hex>' or '<hex>' -> hex, or raise 400 INVALID_DIGEST."""
    if not isinstance(digest, str):
        raise bad_request("INVALID_DIGEST", "digest must be a string", "digest")
    hexpart = digest[len(DIGEST_PREFIX):] if digest.startswith(DIGEST_PREFIX) else digest
    if _SHA256_HEX.fullmatch(hexpart) is None:  # one C call: every blob reference passes here
        raise bad_request("INVALID_DIGEST", "digest must be sha256:<64 lowercase hex>", "digest")
    return hexpart


@dataclass(frozen=True)
class DeclaredDigest:
    """A digest a client declares for its upload: ``source`` names where it said so in errors (the
    Content-Digest header, the digest query parameter, or the field a route names: ``where`` says which kind),
    the algorithm (Depot's name) and the digest in hex."""
    source: str
    algorithm: str
    hexdigest: str
    where: str = "field"  # "header", "query" or "field"

    def describe(self) -> str:
        if self.where == "query":
            return "?digest=%s:%s" % (self.algorithm, self.hexdigest)
        if self.where == "header":
            return "Content-Digest %s %s" % (ALGORITHMS[self.algorithm].http_name, self.hexdigest)
        return "%s %s %s" % (self.source, self.algorithm, self.hexdigest)


def declared_digests(headers: Mapping[str, str], query: Mapping[str, str]) -> tuple[DeclaredDigest, ...]:
    """Every digest a client declares for its upload: each Content-Digest (RFC 9530) member whose algorithm
    Depot computes while streaming (CONTENT_DIGEST), then ?digest=sha256:<hex> (or sha512:<hex>). A Content-Digest naming only
    algorithms it does not is 400 UNSUPPORTED_DIGEST_ALGORITHM; a malformed one, 400 INVALID_DIGEST. -> a tuple
    of DeclaredDigest."""
    declared = []
    header = headers.get("Content-Digest")
    if header:
        declared.extend(_content_digests(header))
    value = query.get("digest")
    if value:
        declared.append(_query_digest(value))
    return tuple(declared)


def _query_digest(value: str) -> DeclaredDigest:
    """?digest=sha256:<hex> or sha512:<hex> (what OCI clients send), lower-case hex."""
    if value.startswith("sha512:"):
        hexpart = value[len("sha512:"):]
        if len(hexpart) != 128 or any(c not in "0123456789abcdef" for c in hexpart):
            raise bad_request("INVALID_DIGEST", "digest must be sha512:<128 lowercase hex>", "digest")
        return DeclaredDigest("digest", "sha512", hexpart, "query")
    return DeclaredDigest("digest", "sha256", split_digest(value), "query")


_DIGEST_MEMBER = re.compile(r"^([a-z][a-z0-9_.*-]*)=:([A-Za-z0-9+/=]*):(?:;.*)?$")


def _content_digests(header: str) -> list[DeclaredDigest]:
    known: list[DeclaredDigest] = []
    unknown: list[str] = []
    for member in filter(None, (part.strip() for part in header.split(","))):
        match = _DIGEST_MEMBER.match(member)
        if match is None:
            raise bad_request("INVALID_DIGEST", "Content-Digest members are <algorithm>=:<base64>:, not %r"
                              % member[:80], "Content-Digest")
        name, encoded = match.groups()
        algorithm = CONTENT_DIGEST.get(name)
        if algorithm is None:
            unknown.append(name)
            continue
        raw = _base64(encoded)
        if raw is None or len(raw) != algorithm.size:
            raise bad_request("INVALID_DIGEST", "Content-Digest %s value is not %d bytes of base64"
                              % (name, algorithm.size), "Content-Digest")
        known.append(DeclaredDigest("Content-Digest", algorithm.name, raw.hex(), "header"))
    if not known and unknown:
        raise bad_request("UNSUPPORTED_DIGEST_ALGORITHM", "Content-Digest names only algorithms Depot does not "
                          "compute (%s); it computes %s" % (", ".join(unknown), ", ".join(CONTENT_DIGEST)),
                          "Content-Digest")
    return known


def _base64(encoded: str) -> Optional[bytes]:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None


# --- digests a route declares (blob.verify_digest's expected) ---------------------------------------------------

_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_PREFIXED_HEX = re.compile(r"^([A-Za-z0-9_-]+?)[:=]([0-9A-Fa-f]+)$")  # sha256:<hex> (multihash-ish), sha256=<hex>
_MEMBER = re.compile(r"^([A-Za-z0-9_-]+)=:([A-Za-z0-9+/]*=*):$")  # one RFC 9530 member, sha-256=:<base64>:
_SRI = re.compile(r"^([A-Za-z0-9]+(?:[-_][0-9]+)?)-([A-Za-z0-9+/]+=*)(?:\?\S*)?$")  # sha512-<base64>[?options]


def parse_declared(text: str, default: str, field: str) -> list[DeclaredDigest]:
    """A digest as a route receives one, in any usual form: bare hex (in the algorithm ``default`` names),
    ``<alg>:<hex>``, ``<alg>=<hex>``, RFC 9530 ``<alg>=:<base64>:``, or SRI ``<alg>-<base64>`` (several,
    space-separated: each is checked). Algorithm names are spelt any usual way (sha-256, SHA256, blake2b-256).
    400 INVALID_DIGEST naming ``field`` for anything else, UNSUPPORTED_DIGEST_ALGORITHM for an algorithm Depot
    does not compute."""
    if not isinstance(text, str) or not text.strip():
        raise bad_request("INVALID_DIGEST", "%s must be a digest string" % field, field)
    text = text.strip()
    if _HEX.match(text):
        return [_declared(field, default, text, "hex")]
    for pattern, encoding in ((_MEMBER, "base64"), (_PREFIXED_HEX, "hex")):
        match = pattern.match(text)
        if match is not None:
            return [_declared(field, match.group(1), match.group(2), encoding)]
    tokens = text.split()
    matches = [_SRI.match(token) for token in tokens]
    if all(matches):
        return [_declared(field, match.group(1), match.group(2), "base64") for match in matches if match]
    raise bad_request("INVALID_DIGEST", "%s is not a digest (<hex>, <alg>:<hex>, <alg>=<hex>, <alg>=:<base64>: or "
                      "<alg>-<base64>): %r" % (field, text[:100]), field)


def _declared(field: str, name: str, value: str, encoding: str) -> DeclaredDigest:
    algorithm = algorithm_named(name)
    if algorithm is None:
        raise bad_request("UNSUPPORTED_DIGEST_ALGORITHM", "%s names digest algorithm %r; Depot computes %s"
                          % (field, name, ", ".join(ALGORITHMS)), field)
    raw = bytes.fromhex(value) if encoding == "hex" and len(value) % 2 == 0 else _base64(value) \
        if encoding == "base64" else None
    if raw is None or len(raw) != algorithm.size:
        raise bad_request("INVALID_DIGEST", "%s is not a %s digest (%d bytes, as %s)"
                          % (field, algorithm.name, algorithm.size, encoding), field)
    return DeclaredDigest(field, algorithm.name, raw.hex())
