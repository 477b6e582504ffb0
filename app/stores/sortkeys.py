"""Order-preserving byte encodings for index keys.

Every encoding is prefix-free, so a tuple of them concatenates into one byte string that sorts exactly like
the tuple, and inverting every byte (``descending``) reverses the order exactly.
Semver precedence follows semver.org section 11: numeric identifiers compare as numbers, numeric < alphanumeric,
a pre-release sorts before its release, a shorter identifier list sorts first, build metadata is ignored.
"""
from typing import Any, Optional

import semver

_STR_END = b"\x00\x01"


def encode_str(value: str) -> bytes:
    """Strings: NUL escaped as NUL 0xFF, terminated by NUL 0x01."""
    return value.encode("utf-8").replace(b"\x00", b"\x00\xff") + _STR_END


def encode_uint(value: int) -> bytes:
    """Non-negative integers of any size: length byte, then big-endian bytes."""
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return bytes([len(raw)]) + raw


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


def encode_version(text: str, ordering: str = "semver") -> bytes:
    """Versions that are not semver sort before every semver one, lexically among themselves."""
    if ordering == "semver":
        parsed = parse_semver(text)
        if parsed is not None:
            return b"\x02" + encode_semver(parsed)
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
