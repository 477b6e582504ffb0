"""A request's external base URL, and which peers may say what it is (X-Forwarded-*).

Behind a reverse proxy the URL a client used (https://pkgs.example.com/depot) is not the one Depot was reached
at (http://10.0.0.5:5000). The proxy says what it was in X-Forwarded-Proto, -Host, -Port and -Prefix; but any
client can send those headers too, so Depot believes them only from a direct peer (the socket's address,
REMOTE_ADDR) listed in the trusted proxies (``DEPOT_TRUSTED_PROXIES`` / ``serve --trusted-proxies``: addresses
and CIDR networks; none by default). Trust follows the address, not a count of hops (Werkzeug's ProxyFix trusts
the last N values whoever sent them): a request that reaches Depot without passing the proxy, or a proxy that
passes a client's own X-Forwarded-* through, cannot choose the URL unless its address is listed.

Of each header the last value is used (the one the trusted peer added, when a chain of proxies appended theirs),
and each is checked: a value that is not a scheme, a host, a port or a path prefix is ``400
INVALID_FORWARDED_HEADER`` naming the header, and a Host header that is not a host is ``400 INVALID_HOST``:
the base URL is written into answers (and may be cached), so nothing else may reach it.
"""
from __future__ import annotations

import ipaddress
import os
import re
from typing import Callable, Mapping, Optional, Sequence, Union
from urllib.parse import quote

from app.errors import DepotError

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
ENVIRONMENT = "DEPOT_TRUSTED_PROXIES"
_HOST = re.compile(r"\A(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?\Z")
_PORT = re.compile(r"\A[0-9]{1,5}\Z")
_PREFIX = re.compile(r"\A(?:/[A-Za-z0-9._~%+@:=,;!*-]+)*/?\Z")  # path segments, none empty: never "//host"
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def parse_trusted_proxies(text: Optional[str]) -> tuple[Network, ...]:
    """``"10.0.0.1, 192.168.0.0/16 ::1"`` -> networks; ValueError naming an entry that is not an address or a
    network (a network with host bits set, such as 10.0.0.1/8, is refused rather than guessed at)."""
    networks = []
    for entry in re.split(r"[\s,]+", (text or "").strip()):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as exc:
            raise ValueError("trusted proxy %r is not an IP address or network: %s" % (entry, exc)) from None
    return tuple(networks)


def trusted_proxies(setting: Optional[str]) -> tuple[Network, ...]:
    """The trusted proxies a setting names (text, as parse_trusted_proxies reads it; None: $DEPOT_TRUSTED_PROXIES)."""
    return parse_trusted_proxies(os.environ.get(ENVIRONMENT, "") if setting is None else setting)


def is_trusted(peer: Optional[str], trusted: Sequence[Network]) -> bool:
    """Whether the direct peer's address is one of ``trusted`` (an IPv4 address seen as IPv6-mapped counts as
    itself)."""
    if not trusted or not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def base_url(environ: Mapping[str, str], trusted: Sequence[Network]) -> str:
    """scheme://host[:port] and the path prefix the app is served under (no trailing slash), from the WSGI
    environ: from the trusted peer's X-Forwarded-* where it sent them, from the request itself otherwise."""
    scheme = environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST") or "%s:%s" % (environ.get("SERVER_NAME", ""), environ.get("SERVER_PORT", ""))
    if not _HOST.match(host):
        raise DepotError("INVALID_HOST", 400, "the Host header is not a host[:port]", "Host")
    port, prefix = None, ""
    if is_trusted(environ.get("REMOTE_ADDR"), trusted):
        scheme = _forwarded(environ, "X-Forwarded-Proto", _is_scheme, "http or https") or scheme
        host = _forwarded(environ, "X-Forwarded-Host", _HOST.match, "a host[:port]") or host
        port = _forwarded(environ, "X-Forwarded-Port", _is_port, "a port number")
        prefix = (_forwarded(environ, "X-Forwarded-Prefix", _PREFIX.match, "a URL path") or "").rstrip("/")
    scheme = scheme.lower()
    match = _HOST.match(host)
    assert match is not None  # checked above, or by _forwarded
    name = host[:match.start("port") - 1] if match.group("port") else host
    port = port or match.group("port")  # a forwarded port replaces the host's
    netloc = name if port in (None, _DEFAULT_PORTS.get(scheme)) else "%s:%s" % (name, port)
    return "%s://%s%s%s" % (scheme, netloc.lower(), prefix, quote(environ.get("SCRIPT_NAME", "").rstrip("/")))


def _is_scheme(value: str) -> bool:
    return value.lower() in _DEFAULT_PORTS


def _is_port(value: str) -> bool:
    return bool(_PORT.match(value)) and 0 < int(value) < 65536


def _forwarded(environ: Mapping[str, str], header: str, valid: Callable[[str], object], what: str) -> Optional[str]:
    """The last value of a forwarded header (None when it was not sent); 400 when it is not ``valid``."""
    raw = environ.get("HTTP_" + header.upper().replace("-", "_"))
    if raw is None:
        return None
    value = raw.rsplit(",", 1)[-1].strip()
    if not valid(value):
        raise DepotError("INVALID_FORWARDED_HEADER", 400, "%s must be %s" % (header, what), header)
    return value
