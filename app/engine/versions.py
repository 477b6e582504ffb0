"""Versioning schemes: what a version is under each, and which are pre-releases.

An entity's `versioning.scheme` (else `entities.versioning.scheme`, else `semver`) names one of ``SCHEMES``:
validate.entity refuses a version the scheme cannot parse, `is_prerelease` asks the scheme, and the index keys
that sort by `version` use the byte encoding of the scheme's ordering (app/stores/sortkeys.py), so the first row
of a `version:desc` key is the highest version, found with one seek.
"""
from dataclasses import dataclass
from typing import Any, Callable, Optional

from app.stores import sortkeys
from app.stores.interfaces import JsonValue


@dataclass(frozen=True)
class VersionScheme:
    name: str
    expected: str  # what a version is, as INVALID_VERSION says it: "version 'x' is not <expected>"
    order: str  # how versions sort (the docs)
    prerelease: str  # which versions are pre-releases (the docs)
    parse: Callable[[str], Optional[Any]]  # the parsed version, or None when the text is none
    prerelease_of: Callable[[Any], bool]  # a parsed version -> whether it is a pre-release

    def is_prerelease(self, value: JsonValue) -> bool:
        """Whether ``value`` is a version of this scheme with a pre-release part (False for anything else)."""
        parsed = self.parse(value) if isinstance(value, str) else None
        return parsed is not None and self.prerelease_of(parsed)


SCHEMES: dict[str, VersionScheme] = {scheme.name: scheme for scheme in (
    VersionScheme(
        "semver", "a semantic version (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD])",
        "semver precedence (semver.org section 11): `1.10.0 > 1.9.0`, `1.0.0-rc.10 > 1.0.0-rc.9`, a pre-release "
        "before its release, build metadata ignored",
        "a pre-release part: `1.0.0-rc.1`",
        sortkeys.parse_semver, lambda parsed: parsed.prerelease is not None),
    VersionScheme(
        "pep440", "a PEP 440 version ([N!]N(.N)*[{a,b,rc}N][.postN][.devN][+LOCAL], ASCII, no surrounding spaces)",
        "PEP 440, exactly as the `packaging` library orders versions: epoch (`1!1.0 > 2.0`), release with "
        "trailing zeros ignored (`1.0 == 1.0.0`), `1.0.dev1 < 1.0a1 < 1.0b1 < 1.0rc1 < 1.0 < 1.0+local < "
        "1.0.post1`, a dev release before its base (`1.0.post1.dev1 < 1.0.post1`)",
        "an a, b, rc or dev part: `2.0rc1`, `1.0.dev3` (not `1.0.post1`)",
        sortkeys.parse_pep440, lambda parsed: parsed.is_prerelease),
    VersionScheme(
        "opaque", "a version (any string the field's constraints accept)",
        "plain text order (by Unicode code point): `1.10 < 1.9 < beta`. Publication order is a sort on the "
        "rows' publish time (`created_at:desc`), not on `version`",
        "none", lambda text: text, lambda parsed: False),
)}
DEFAULT_SCHEME = SCHEMES["semver"]
