"""Digests: Depot's own form ("sha256:<hex>") and the ones clients declare for an upload (RFC 9530 Content-Digest,
?digest=). Every blob store and the HTTP layer read them alike."""
import base64
import binascii
import re
from dataclasses import dataclass
from typing import Mapping

from app.errors import DepotError, bad_request

DIGEST_PREFIX = "sha256:"
# the Content-Digest algorithms (RFC 9530 names) Depot computes: their hashlib names and digest sizes
DIGEST_ALGORITHMS = {"sha-256": ("sha256", 32), "sha-512": ("sha512", 64)}
_DIGEST_MEMBER = re.compile(r"^([a-z][a-z0-9_.*-]*)=:([A-Za-z0-9+/=]*):(?:;.*)?$")


def split_digest(digest: str) -> str:
    """'sha256:<hex>' or '<hex>' -> hex, or raise 400 INVALID_DIGEST."""
    if not isinstance(digest, str):
        raise bad_request("INVALID_DIGEST", "digest must be a string", "digest")
    hexpart = digest[len(DIGEST_PREFIX):] if digest.startswith(DIGEST_PREFIX) else digest
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise bad_request("INVALID_DIGEST", "digest must be sha256:<64 lowercase hex>", "digest")
    return hexpart


def digest_mismatch(expected: str, actual: str) -> DepotError:
    return DepotError("DIGEST_MISMATCH", 400, "declared digest %s does not match the uploaded bytes (%s)"
                      % (expected, actual), "digest")


@dataclass(frozen=True)
class DeclaredDigest:
    """A digest a client declares for its upload: where it said so (the Content-Digest header or the digest
    query parameter), the algorithm (RFC 9530 name) and the digest in hex."""
    source: str
    algorithm: str
    hexdigest: str

    def describe(self) -> str:
        if self.source == "digest":
            return "?digest=sha256:%s" % self.hexdigest
        return "Content-Digest %s %s" % (self.algorithm, self.hexdigest)


def declared_digests(headers: Mapping[str, str], query: Mapping[str, str]) -> tuple[DeclaredDigest, ...]:
    """Every digest a client declares for its upload: each Content-Digest (RFC 9530) member whose algorithm
    Depot knows, then ?digest=sha256:<hex>. A Content-Digest naming only algorithms Depot does not know is 400
    UNSUPPORTED_DIGEST_ALGORITHM; a malformed one, 400 INVALID_DIGEST. -> a tuple of DeclaredDigest."""
    declared = []
    header = headers.get("Content-Digest")
    if header:
        declared.extend(_content_digests(header))
    value = query.get("digest")
    if value:
        declared.append(DeclaredDigest("digest", "sha-256", split_digest(value)))
    return tuple(declared)


def _content_digests(header: str) -> list[DeclaredDigest]:
    known: list[DeclaredDigest] = []
    unknown: list[str] = []
    for member in filter(None, (part.strip() for part in header.split(","))):
        match = _DIGEST_MEMBER.match(member)
        if match is None:
            raise bad_request("INVALID_DIGEST", "Content-Digest members are <algorithm>=:<base64>:, not %r"
                              % member[:80], "Content-Digest")
        algorithm, encoded = match.groups()
        if algorithm not in DIGEST_ALGORITHMS:
            unknown.append(algorithm)
            continue
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != DIGEST_ALGORITHMS[algorithm][1]:
            raise bad_request("INVALID_DIGEST", "Content-Digest %s value is not %d bytes of base64"
                              % (algorithm, DIGEST_ALGORITHMS[algorithm][1]), "Content-Digest")
        known.append(DeclaredDigest("Content-Digest", algorithm, raw.hex()))
    if not known and unknown:
        raise bad_request("UNSUPPORTED_DIGEST_ALGORITHM", "Content-Digest names only algorithms Depot does not "
                          "compute (%s); it computes %s" % (", ".join(unknown), ", ".join(DIGEST_ALGORITHMS)),
                          "Content-Digest")
    return known
