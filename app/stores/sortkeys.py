"""Order-preserving byte encodings for index keys.

Every encoding is prefix-free, so a tuple of them concatenates into one byte string that sorts exactly like
the tuple, and inverting every byte (``descending``) reverses the order exactly.
Semver precedence follows semver.org section 11: numeric identifiers compare as numbers, numeric < alphanumeric,
a pre-release sorts before its release, a shorter identifier list sorts first, build metadata is ignored.
PEP 440 order is the one the `packaging` library gives its Version (epoch, release without trailing zeros, then
pre-, post- and dev-release, then the local label); the ``opaque`` ordering is plain text order.
"""
from typing import Any, Callable, Optional

import semver
from packaging.version import InvalidVersion, Version

_STR_END = b"\x00\x01"


def encode_str(value: str) -> bytes:
    """Strings: NUL escaped as NUL 0xFF, terminated by NUL 0x01."""
    return value.encode("utf-8").replace(b"\x00", b"\x00\xff") + _STR_END


def encode_uint(value: int) -> bytes:
    """Non-negative integers of any size: their length, then big-endian bytes. A length under 255 is one byte;
    a longer one (a number of 614 digits or more, which a version may hold) is 0xFF and then the length itself
    encoded, so it sorts after every shorter one."""
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    if len(raw) < 255:
        return bytes([len(raw)]) + raw
    return b"\xff" + encode_uint(len(raw)) + raw


def encode_int(value: int) -> bytes:
    if value >= 0:
        return b"\x02" + encode_uint(value)
    return b"\x01" + descending(encode_uint(-value))


def parse_semver(text: Any) -> Optional[semver.Version]:
    """The parsed version, or None when ``text`` is not a semantic version."""
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        return None


def encode_semver(version: semver.Version) -> bytes:
    key = [encode_uint(version.major), encode_uint(version.minor), encode_uint(version.patch)]
    if version.prerelease is None:
        key.append(b"\x02")
        return b"".join(key)
    key.append(b"\x01")
    for ident in version.prerelease.split("."):
        if ident.isdigit():
            key.append(b"\x01" + encode_uint(int(ident)))
        else:
            key.append(b"\x02" + ident.encode("ascii") + b"\x00")
    key.append(b"\x00")
    return b"".join(key)


def parse_pep440(text: Any) -> Optional[Version]:
    """The parsed version, or None when ``text`` is not a PEP 440 version. packaging also ignores whitespace
    around one, Unicode spaces included; here a version is the version alone, so "1.0" and "\u20031.0" can never
    be two versions that sort as one."""
    if not isinstance(text, str) or not text.isascii() or text != text.strip():
        return None
    try:
        return Version(text)
    except (InvalidVersion, TypeError):
        return None


# a pre-release's letter, ranked; a dev release of the final version (1.0.dev1, no pre- or post-release) sorts
# before every pre-release of it, and the final version (no pre-release) after them
_PRE_RANK = {"a": b"\x01", "b": b"\x02", "rc": b"\x03"}
_DEV_OF_FINAL, _NO_PRE = b"\x00", b"\x04"


def encode_pep440(version: Version) -> bytes:
    """packaging's order: epoch; release, trailing zeros dropped (1.0 == 1), a shorter one first; pre-release
    (dev-of-final < a < b < rc < none); post-release (none first); dev release (none last); local label (none
    first; then segment by segment, a text segment before a number, a shorter label first)."""
    release = list(version.release)
    while release and release[-1] == 0:
        release.pop()
    key = [encode_uint(version.epoch)]
    key.extend(b"\x02" + encode_uint(n) for n in release)
    key.append(b"\x01")
    pre, post, dev = version.pre, version.post, version.dev
    if pre is not None:
        key.append(_PRE_RANK[pre[0]] + encode_uint(pre[1]))
    else:
        key.append(_DEV_OF_FINAL if post is None and dev is not None else _NO_PRE)
    key.append(b"\x01" if post is None else b"\x02" + encode_uint(post))
    key.append(b"\x02" if dev is None else b"\x01" + encode_uint(dev))
    if version.local is None:
        key.append(b"\x01")
        return b"".join(key)
    key.append(b"\x02")
    for segment in version.local.split("."):  # normalized: lower-case letters and digits, "." between segments
        key.append(b"\x02" + encode_uint(int(segment)) if segment.isdigit()
                   else b"\x01" + segment.encode("ascii") + b"\x00")
    key.append(b"\x00")
    return b"".join(key)


# ordering name -> (parse, encode the parsed version); any other ordering (opaque) sorts versions as text
ORDERINGS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], bytes]]] = {
    "semver": (parse_semver, encode_semver),
    "pep440": (parse_pep440, encode_pep440),
}


def encode_version(text: str, ordering: str = "semver") -> bytes:
    """Versions the ordering cannot parse sort before every one it can, as text among themselves; the opaque
    ordering (any name ORDERINGS lacks) sorts every version as text."""
    scheme = ORDERINGS.get(ordering)
    if scheme is not None:
        parsed = scheme[0](text)
        if parsed is not None:
            return b"\x02" + scheme[1](parsed)
    return b"\x01" + encode_str(text)


def encode_value(value: Any) -> bytes:
    if value.__class__ is str:  # the common case first
        return value.encode("utf-8").replace(b"\x00", b"\x00\xff") + _STR_END
    if isinstance(value, bool):
        return b"\x02" if value else b"\x01"
    if isinstance(value, int):
        return encode_int(value)
    if value is None:
        return b"\x00"
    return encode_str(str(value))


def descending(encoded: bytes) -> bytes:
    return bytes(255 - b for b in encoded)
