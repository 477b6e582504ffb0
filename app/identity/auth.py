"""Identities: usernames, passwords (bcrypt), login tokens (JWT, HS256 pinned), API tokens, principals, and the
state checks that make a disabled or deleted user, a changed password or a revoked token fail at once.

A principal is ``{"sub", "scopes": frozenset, "kind": "jwt" | "api_token" | "password" | "anonymous", "token_id"}``.
A request names it with ``Authorization: Bearer <login JWT or API token>`` or ``Authorization: Basic`` (RFC 7617)
over ``__token__:<the same>``, ``<username>:<that user's API token>`` or ``<username>:<password>`` (kind
``password``: bcrypt-checked, rate limited by the caller's PasswordChecks, its success cached briefly).
Login tokens carry sub, scopes, ver (the user's token version), iat, exp, iss, aud and jti; verification requires
every one of them and allows CLOCK_SKEW_SECONDS of skew. Each request's token is then checked against the
user's state in SQL, through a small cache that this process invalidates whenever it changes that state.
STATE_CACHE_SECONDS bounds how late another process's change is seen, unless the processes share a Generation
(DEPOT_CACHE_URL: app/stores/rediscache.py): each change bumps it, each request reads it once, and whatever was
cached before a bump is read again, so another process's change is seen at once.
"""
import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import bcrypt
import jwt
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from app.errors import DepotError, bad_request, not_found
from app.identity.permissions import RANK
from models import ApiToken, RevokedJwt, User, as_utc, iso, utcnow

ALGORITHM = "HS256"
ISSUER = "depot"
AUDIENCE = "depot"
CLOCK_SKEW_SECONDS = 30
REQUIRED_CLAIMS = ["sub", "scopes", "ver", "iat", "exp", "iss", "aud", "jti"]
API_TOKEN_PREFIX = "dpt_"
STATE_CACHE_SECONDS = 5.0
LAST_USED_RESOLUTION = timedelta(seconds=60)
DAY = 86400
DEFAULTS = {"token_ttl_seconds": 3600, "min_password_length": 12, "api_token_default_ttl_seconds": 30 * DAY,
            "api_token_max_ttl_seconds": 365 * DAY, "scopes": ("admin", "read", "write")}
STATUSES = ("active", "disabled")
# marks a hash of the pre-hashed password; an unmarked hash is plain bcrypt, as written before pre-hashing
PREHASHED = "bcrypt-sha256$"
BCRYPT_MAX_BYTES = 72
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
USERNAME_RULE = "1 to 64 ASCII letters, digits, '.', '-' or '_', starting with a letter or digit"
DEFAULT_TTL = object()  # create_token's expires_in when the request names none
# Basic credentials whose username is this carry a bearer credential as their password, as pip and twine send an
# API token; no account can have this name (a username starts with a letter or digit)
TOKEN_USERNAME = "__token__"
# how long a password checked for Basic credentials stays verified: every request of a client sending its password
# would otherwise cost a bcrypt check (and one of its few login attempts); the user's token version is compared on
# every use, so a password change or a disabled account ends it at once
PASSWORD_CACHE_SECONDS = 60.0
PASSWORD_CHECK_STRIPES = 64  # concurrent requests with the same new credentials wait for one check, not one each
CREDENTIALS_RULE = "expected 'Authorization: Bearer <token>' or 'Authorization: Basic <base64 of user:password>'"


def bcrypt_rounds():
    """DEPOT_BCRYPT_ROUNDS (default 12); the test suite lowers it to keep bcrypt from dominating its time."""
    return int(os.environ.get("DEPOT_BCRYPT_ROUNDS", "12"))


def _prehash(password):
    """bcrypt reads at most 72 bytes, so any passphrase is first digested to 44: base64 of its SHA-256 (base64,
    because a raw digest may hold a NUL byte, where bcrypt would stop reading)."""
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


def hash_password(password):
    return PREHASHED + bcrypt.hashpw(_prehash(password), bcrypt.gensalt(bcrypt_rounds())).decode()


def check_password(password, hashed):
    """Verifies both kinds of stored hash: pre-hashed (marked) and plain bcrypt from before pre-hashing."""
    if hashed.startswith(PREHASHED):
        return bcrypt.checkpw(_prehash(password), hashed[len(PREHASHED):].encode())
    # a plain bcrypt hash only ever held the first 72 bytes (older bcrypt cut longer passwords silently)
    return bcrypt.checkpw(password.encode("utf-8")[:BCRYPT_MAX_BYTES], hashed.encode())


def username_key(username):
    """The form in which usernames are unique and looked up: case-insensitive ('Admin' names 'admin')."""
    return username.lower()


def check_username(username):
    """A new account's name: plain ASCII, so no two names can look alike or hide control characters."""
    if not isinstance(username, str) or USERNAME_PATTERN.fullmatch(username) is None:
        raise bad_request("INVALID_USERNAME", "a username is %s" % USERNAME_RULE, "username")


def new_token_version():
    """A new account's first token version: random, so a login token of a deleted namesake never matches."""
    return secrets.randbelow(2 ** 30) + 1


def is_active_admin(user):
    return user.status == "active" and "admin" in user.scopes


def holds(scopes, wanted):
    """Whether ``scopes`` grant every scope in ``wanted`` ('admin' grants all)."""
    return "admin" in scopes or (scopes if isinstance(scopes, frozenset) else set(scopes)).issuperset(wanted)


def require(principal, scopes, what="this route"):
    """Raise unless ``principal`` holds ``scopes``: 401 when nobody (or only the anonymous principal) is
    calling, since credentials would help; 403 when an authenticated caller lacks a scope."""
    if principal is not None and holds(principal["scopes"], scopes):
        return
    if principal is None or principal["kind"] == "anonymous":
        raise credentials_required()
    missing = sorted(set(scopes) - principal["scopes"])
    raise DepotError("FORBIDDEN", 403, "%s requires scope(s): %s" % (what, ", ".join(missing)))


def load_or_create_secret(data_dir):
    """DEPOT_SECRET_KEY, or a key generated once and kept (mode 0600) in the data dir."""
    env = os.environ.get("DEPOT_SECRET_KEY")
    if env:
        return env
    path = os.path.join(data_dir, "secret.key")
    if not os.path.exists(path):
        write_private(path, secrets.token_urlsafe(48))
    with open(path) as handle:
        return handle.read().strip()


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


def _unauthorized(code, message):
    return DepotError(code, 401, message, headers={"WWW-Authenticate": "Bearer"})


def credentials_required(what="this request"):
    """401 for a caller without credentials (or only the anonymous principal): credentials could help."""
    return _unauthorized("UNAUTHENTICATED", "%s needs credentials: a bearer token, or Basic credentials (a username "
                         "and its password or API token)" % what)


def _malformed(why):
    return DepotError("MALFORMED_CREDENTIALS", 401, "malformed Basic credentials (%s); %s" % (why, CREDENTIALS_RULE),
                      "Authorization", headers={"WWW-Authenticate": "Bearer"})


def parse_basic(credentials):
    """(username, password) of the token68 of 'Authorization: Basic' (RFC 7617): base64 of 'user-id:password'.
    The text is UTF-8 or, where it is not, ISO-8859-1 (what Python's requests, under pip and twine, sends a
    non-ASCII password in). 401 MALFORMED_CREDENTIALS for anything else."""
    try:
        raw = base64.b64decode(credentials, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("not base64")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("iso-8859-1")
    username, colon, password = text.partition(":")
    if not colon or not username:
        raise _malformed("no 'username:' before the password")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise _malformed("control characters")
    return username, password


class PasswordChecks:
    """What the server does around a password check that Basic credentials make (app/repository/service.py: the
    login rate limits before it, an audit record of a failure after). This default does neither."""

    def before(self, username, request):
        """Raise (429) instead of checking another password of ``username`` now."""

    def failed(self, username, request):
        """The password given for ``username`` was wrong (or the account is disabled or missing)."""


NO_CHECKS = PasswordChecks()


def user_view(user):
    return {"username": user.username, "scopes": sorted(user.scopes), "status": user.status,
            "created_at": iso(user.created_at), "last_login_at": iso(user.last_login_at)}


def account_state(view):
    """The part of a user's view an admin changes, as the audit log records it before and after a change."""
    return {"scopes": view["scopes"], "status": view["status"]}


def token_view(token, owner):
    return {"id": token.id, "name": token.name, "owner": owner, "scopes": sorted(token.scopes),
            "created_at": iso(token.created_at), "expires_at": iso(token.expires_at),
            "last_used_at": iso(token.last_used_at), "revoked": token.revoked_at is not None}


_now = time.time  # the wall clock tokens' expiry is read by (a test moves it)


class LocalGeneration:
    """The Generation (app.stores.interfaces) of a process that shares none: it never moves, so cached state lasts
    its time-to-live (this process drops what it changes itself)."""

    def current(self):
        return 0

    def bump(self):
        pass


def _no_epoch():
    return 0


class _TtlCache:
    """A small dict whose entries expire; cleared entry by entry when this process changes the state. An entry is
    also stale once ``epoch()`` has moved past the epoch it was put with: the one its reading began in."""

    def __init__(self, ttl=STATE_CACHE_SECONDS, limit=10000, epoch=_no_epoch):
        self.ttl, self.limit, self.epoch = ttl, limit, epoch
        self.entries = {}

    def get(self, key):
        entry = self.entries.get(key)
        if entry is None or entry[1] < time.monotonic() or entry[2] != self.epoch():
            return None
        return entry[0]

    def put(self, key, value, epoch=None):
        """``epoch``: the epoch when the state ``value`` holds was read (default: now)."""
        if len(self.entries) >= self.limit:
            self.entries.clear()
        self.entries[key] = (value, time.monotonic() + self.ttl, self.epoch() if epoch is None else epoch)

    def drop(self, key):
        self.entries.pop(key, None)

    def clear(self):
        self.entries.clear()


def _user_exists(username):
    return DepotError("USER_EXISTS", 409, "user %r already exists (usernames are case-insensitive)" % username,
                      "username")


def _last_admin(username):
    return DepotError("LAST_ADMIN", 409, "%r is the only active admin; make another admin first, so that someone "
                      "can still manage the installation" % username)


class Identity:
    def __init__(self, secret, sessions, settings=None, generation=None):
        """``generation``: the Generation shared with the other processes over the same accounts (default: none,
        LocalGeneration)."""
        self.secret = secret
        self.sessions = sessions
        self.configure(settings or {})
        self.generation = generation if generation is not None else LocalGeneration()
        # how often the shared generation was seen to change: what cached account state is valid for
        self._seen_generation, self._epoch = self.generation.current(), 0
        self._epoch_lock = threading.Lock()
        epoch = self._current_epoch
        self._users = _TtlCache(epoch=epoch)  # username -> (status, token_version, scopes)
        self._revoked = _TtlCache(epoch=epoch)  # jti -> bool
        self._api = _TtlCache(epoch=epoch)  # secret sha256 -> token state
        self._signed = _TtlCache()  # a JWT this installation signed -> its checked claims (_signed_claims)
        # HMAC of Basic username and password -> verified
        self._passwords = _TtlCache(PASSWORD_CACHE_SECONDS, epoch=epoch)
        self._cache_key = secrets.token_bytes(32)
        self._password_locks = [threading.Lock() for _ in range(PASSWORD_CHECK_STRIPES)]
        self._last_used_lock = threading.Lock()
        # held while an account changes, so two admins demoting each other at once cannot both succeed
        self._accounts_lock = threading.Lock()
        # compared against when the user does not exist, so unknown users cost the same time as wrong passwords
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))

    def _current_epoch(self):
        return self._epoch

    def _observe_generation(self):
        """Read the shared generation (with Redis, one GET) before trusting cached state: when it moved, another
        process (or this one) changed credentials, and a new epoch begins, in which nothing cached before is used.
        The epoch only ever grows, however the reads of concurrent requests interleave."""
        current = self.generation.current()
        if current != self._seen_generation:
            with self._epoch_lock:
                if current != self._seen_generation:
                    self._seen_generation = current
                    self._epoch += 1

    def configure(self, settings):
        """The active schema's settings; what it leaves out is the default, not the previous schema's value."""
        self.settings = dict(DEFAULTS, **{k: v for k, v in settings.items() if k in DEFAULTS})

    # --- login tokens ---------------------------------------------------------------------------------

    def issue(self, username, scopes, version=None):
        """A login token; ``version`` defaults to the user's current token version."""
        if version is None:
            version = self._user_state(username)[1]
        now = datetime.now(timezone.utc)
        exp = now + timedelta(seconds=self.settings["token_ttl_seconds"])
        claims = {"sub": username, "scopes": sorted(scopes), "ver": version, "iat": now, "exp": exp, "iss": ISSUER,
                  "aud": AUDIENCE, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM), exp

    def issue_access(self, username, scopes, resources, ttl_seconds):
        """An access token (a registry token endpoint's): a login token of ``username`` restricted to
        ``resources`` (name -> permission), whatever its ``scopes`` would allow elsewhere, for ``ttl_seconds``.
        It manages no API tokens (it is no login session), and ends with the account's token version as a
        login token does."""
        version = self._user_state(username)[1]
        now = datetime.now(timezone.utc)
        exp = now + timedelta(seconds=ttl_seconds)
        claims = {"sub": username, "scopes": sorted(scopes), "ver": version, "iat": now, "exp": exp, "iss": ISSUER,
                  "aud": AUDIENCE, "jti": uuid.uuid4().hex, "res": dict(resources)}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM), exp

    def login(self, username, password):
        """A login token for ``username`` (case-insensitive; the token names the account's own spelling)."""
        with self.sessions() as session:
            user = self._check_credentials(session, username, password)
            user.last_login_at = utcnow()
            session.commit()
            return self.issue(user.username, user.scopes, user.token_version)

    def verify_password(self, username, password):
        """{"sub", "scopes"} of the active account ``username`` names when ``password`` is its password (a login:
        its time is recorded); 401 INVALID_CREDENTIALS otherwise."""
        with self.sessions() as session:
            user = self._check_credentials(session, username, password)
            user.last_login_at = utcnow()
            session.commit()
            return {"sub": user.username, "scopes": frozenset(user.scopes)}

    def _check_credentials(self, session, username, password):
        """The active account ``username`` names, if ``password`` is its password; else 401 INVALID_CREDENTIALS,
        the same for an unknown user, a wrong password and a disabled account (and as slow)."""
        user = self._find_user(session, username)
        hashed = user.password_hash if user is not None else self._dummy_hash
        valid = check_password(password, hashed) and user is not None and user.status == "active"
        if not valid:
            raise _unauthorized("INVALID_CREDENTIALS", "unknown user, wrong password or disabled account")
        return user

    def _signed_claims(self, token):
        """The claims of a token signed by this installation and not expired. A token's signature and claims
        are checked once (about 60 us) and its claims kept: later it is only checked for expiry again, as
        pyjwt would (the other time claims only grow more valid); state checks follow on every request."""
        claims = self._signed.get(token)
        if claims is not None:
            if claims["exp"] <= _now() - CLOCK_SKEW_SECONDS:
                raise _unauthorized("TOKEN_EXPIRED", "the token has expired")
            return claims
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                                leeway=CLOCK_SKEW_SECONDS, options={"require": REQUIRED_CLAIMS})
        except jwt.ExpiredSignatureError:
            raise _unauthorized("TOKEN_EXPIRED", "the token has expired")
        except jwt.InvalidTokenError:
            raise _unauthorized("INVALID_TOKEN", "the token is not valid")
        if not isinstance(claims["scopes"], list) or not isinstance(claims["ver"], int) or \
                not isinstance(claims["exp"], (int, float)):
            raise _unauthorized("INVALID_TOKEN", "the token is not valid")
        self._signed.put(token, claims)
        return claims

    def _verify_jwt(self, token):
        claims = self._signed_claims(token)
        status, version, scopes = self._user_state(claims["sub"])
        if status != "active" or version != claims["ver"]:
            raise _unauthorized("TOKEN_REVOKED", "the token is no longer valid (account disabled or password "
                                "changed)")
        if self._is_revoked(claims["jti"]):
            raise _unauthorized("TOKEN_REVOKED", "the token has been revoked")
        granted = frozenset(claims["scopes"]) if "admin" in scopes else frozenset(claims["scopes"]) & scopes
        principal = {"sub": claims["sub"], "scopes": granted, "kind": "jwt", "token_id": claims["jti"],
                     "exp": claims["exp"]}
        if "res" in claims:  # an access token: its resources and their permissions are all it may reach
            resources = claims["res"]
            if not isinstance(resources, dict) or not all(isinstance(k, str) and v in RANK
                                                          for k, v in resources.items()):
                raise _unauthorized("INVALID_TOKEN", "the token is not valid")
            principal.update(kind="access_token", resources=resources)
        return principal

    def _user_state(self, username):
        state = self._users.get(username)
        if state is None:
            epoch = self._epoch
            with self.sessions() as session:
                user = session.scalar(select(User).where(User.username == username))
                state = ("missing", 0, frozenset()) if user is None else \
                    (user.status, user.token_version, frozenset(user.scopes))
            self._users.put(username, state, epoch)
        return state

    def _is_revoked(self, jti):
        revoked = self._revoked.get(jti)
        if revoked is None:
            epoch = self._epoch
            with self.sessions() as session:
                revoked = session.get(RevokedJwt, jti) is not None
            self._revoked.put(jti, revoked, epoch)
        return revoked

    # --- requests -------------------------------------------------------------------------------------

    def authenticate(self, request, checks=NO_CHECKS):
        """The principal a request's credentials (Bearer or Basic) name, or None when it carries none. ``checks``
        rate-limits and records the password checks Basic credentials make."""
        header = request.headers.get("Authorization")
        if not header:
            return None
        self._observe_generation()
        scheme, _, credentials = header.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "basic":
            return self._verify_basic(credentials, request, checks)
        if scheme.lower() != "bearer" or not credentials:
            raise _unauthorized("INVALID_TOKEN", CREDENTIALS_RULE)
        return self._verify_bearer(credentials)

    def _verify_bearer(self, token):
        if token.startswith(API_TOKEN_PREFIX):
            return self._verify_api_token(token)
        return self._verify_jwt(token)

    def _verify_basic(self, credentials, request, checks):
        """``__token__:<bearer credential>``; ``<username>:<an API token of that user>``; ``<username>:<password>``.
        A secret of the API token form that names no token is taken as a password (a password may look so)."""
        username, secret = parse_basic(credentials)
        if username == TOKEN_USERNAME:
            return self._verify_bearer(secret)
        if secret.startswith(API_TOKEN_PREFIX):
            try:
                principal = self._verify_api_token(secret)
            except DepotError as error:
                if error.code != "INVALID_TOKEN":  # a real token, revoked or expired: say so
                    raise
            else:
                if username_key(principal["sub"]) != username_key(username):
                    raise _unauthorized("INVALID_CREDENTIALS", "the API token does not belong to %r" % username)
                return principal
        return self._verify_password(username, secret, request, checks)

    def _verify_password(self, username, password, request, checks):
        """The principal of a username and password: checked with bcrypt once, then taken from a cache (keyed by
        an HMAC of both under a key of this process, so it holds nothing a password could be recovered from)
        for PASSWORD_CACHE_SECONDS, while the account's token version is unchanged and it is active."""
        key = hmac.new(self._cache_key, ("%s\x00%s" % (username, password)).encode("utf-8"), "sha256").digest()
        verified = self._current(self._passwords.get(key))
        if verified is None:
            with self._password_locks[key[0] % PASSWORD_CHECK_STRIPES]:  # one check for concurrent requests
                verified = self._current(self._passwords.get(key))
                if verified is None:
                    epoch = self._epoch
                    verified = self._check_password_once(username, password, request, checks)
                    self._passwords.put(key, verified, epoch)
        name, _, scopes = verified
        return {"sub": name, "scopes": scopes, "kind": "password", "token_id": None}

    def _current(self, verified):
        """A cached verification (username, token version, scopes) while the account is active and its token
        version unchanged, with the account's current scopes; None otherwise."""
        if verified is None:
            return None
        status, version, scopes = self._user_state(verified[0])
        return (verified[0], version, scopes) if status == "active" and version == verified[1] else None

    def _check_password_once(self, username, password, request, checks):
        checks.before(username, request)
        try:
            with self.sessions() as session:
                user = self._check_credentials(session, username, password)
                user.last_login_at = utcnow()  # a login, once per PASSWORD_CACHE_SECONDS at most
                session.commit()
                return user.username, user.token_version, frozenset(user.scopes)
        except DepotError:
            checks.failed(username, request)
            raise

    def logout(self, principal):
        if principal["kind"] == "jwt":
            with self.sessions() as session:
                session.merge(RevokedJwt(jti=principal["token_id"],
                                         expires_at=datetime.fromtimestamp(principal["exp"], timezone.utc)))
                session.execute(delete(RevokedJwt).where(RevokedJwt.expires_at < utcnow() -
                                                         timedelta(seconds=CLOCK_SKEW_SECONDS)))
                session.commit()
            self._revoked.put(principal["token_id"], True)
            self.generation.bump()
        elif principal["kind"] == "api_token":
            self.revoke_token(principal["sub"], principal["token_id"])

    # --- users ----------------------------------------------------------------------------------------

    def check_password_rules(self, password, field="password"):
        if not isinstance(password, str):
            raise bad_request("INVALID_REQUEST", "%s is a string" % field, field)
        minimum = self.settings["min_password_length"]
        if len(password) < minimum:
            raise bad_request("WEAK_PASSWORD", "passwords have at least %d characters" % minimum, field)

    def check_scopes(self, scopes, code="INVALID_REQUEST"):
        """``scopes`` is a list of names the active schema declares in auth.scopes (for every caller)."""
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise bad_request(code, "scopes is a list of scope names", "scopes")
        unknown = sorted(set(scopes) - set(self.settings["scopes"]))
        if unknown:
            raise bad_request("UNKNOWN_SCOPE", "unknown scope(s) %s; the schema declares: %s"
                              % (", ".join(unknown), ", ".join(sorted(self.settings["scopes"]))), "scopes")

    @staticmethod
    def check_status(status):
        if status not in STATUSES:
            raise bad_request("INVALID_REQUEST", "status is active or disabled", "status")

    def change_password(self, username, current, new):
        """The caller's own password: ends their login tokens and revokes their API tokens."""
        if not isinstance(current, str):
            raise bad_request("INVALID_REQUEST", "current_password is a string", "current_password")
        self.check_password_rules(new, "new_password")
        with self.sessions() as session:
            user = session.scalar(select(User).where(User.username == username))
            if user is None or not check_password(current, user.password_hash):
                raise _unauthorized("INVALID_CREDENTIALS", "the current password is wrong")
            self._set_password(session, user, new)
            session.commit()
        self._forget(username)

    def reset_password(self, username, password):
        """An operator's reset (python -m app admin reset-password): a new password, every token of the account
        ended, and the account active again. Returns whether it had been disabled."""
        self.check_password_rules(password)
        with self.sessions() as session:
            user = self._user(session, username)
            was_disabled = user.status != "active"
            self._set_password(session, user, password)
            user.status = "active"
            session.commit()
        self._forget(user.username)
        return was_disabled

    def _set_password(self, session, user, password):
        """A new password ends every earlier credential: login tokens (token version) and API tokens (revoked),
        since whoever knew the old password may have made them."""
        user.password_hash = hash_password(password)
        user.token_version += 1
        self._revoke_api_tokens(session, user)

    @staticmethod
    def _revoke_api_tokens(session, user):
        session.execute(update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                        .values(revoked_at=utcnow()))

    def _forget(self, username):
        """Drop what this process cached about an account it just changed (and every API token's state, whose
        scopes are bounded by their owner's, and every password verified for Basic credentials), and bump the
        shared generation: every other process reads its state again on its next request."""
        self._users.drop(username)
        self._api.clear()
        self._passwords.clear()
        self.generation.bump()

    def create_user(self, username, password, scopes, status="active"):
        check_username(username)
        self.check_password_rules(password)
        self.check_scopes(scopes)
        self.check_status(status)
        with self.sessions() as session:
            if self._find_user(session, username) is not None:
                raise _user_exists(username)
            user = self._add_user(session, username, password, scopes, status)
            try:
                session.commit()
            except IntegrityError:  # created meanwhile by another request
                raise _user_exists(username)
        self._forget(username)
        return user_view(user)

    @staticmethod
    def _add_user(session, username, password, scopes, status="active"):
        user = User(username=username, username_key=username_key(username), password_hash=hash_password(password),
                    scopes=sorted(set(scopes)), status=status, token_version=new_token_version())
        session.add(user)
        return user

    def update_user(self, username, scopes=None, status=None, password=None):
        """Change what is not None. Refused (409 LAST_ADMIN) when it would leave no active admin. Returns the
        account's view after the change and what changed: {"before", "after"} of its scopes and status, and
        whether the password changed (never a hash)."""
        if scopes is not None:
            self.check_scopes(scopes)
        if status is not None:
            self.check_status(status)
        if password is not None:
            self.check_password_rules(password)
        with self._accounts_lock, self.sessions() as session:
            admins = self._active_admins(session)
            user = self._user(session, username)
            before = account_state(user_view(user))
            self._apply_changes(session, user, scopes, status, password)
            if admins == [user] and not is_active_admin(user):
                raise _last_admin(user.username)
            session.commit()
        self._forget(user.username)
        after = user_view(user)
        return after, {"before": before, "after": account_state(after), "password_changed": password is not None}

    def _apply_changes(self, session, user, scopes, status, password):
        if scopes is not None:
            user.scopes = sorted(set(scopes))
        if status is not None and status != user.status:
            user.status = status
            user.token_version += 1
            if status == "disabled":  # for good: re-enabling the account does not bring them back
                self._revoke_api_tokens(session, user)
        if password is not None:
            self._set_password(session, user, password)

    def delete_user(self, username, forget=None):
        """Remove an account and its API tokens (its audit records stay). 409 LAST_ADMIN for the last active
        admin. ``forget(session, user_id)``: removes, in the same transaction, what else belongs to the account
        (its namespace grants and group memberships)."""
        with self._accounts_lock, self.sessions() as session:
            admins = self._active_admins(session)
            user = self._user(session, username)
            if admins == [user]:
                raise _last_admin(user.username)
            session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
            if forget is not None:
                forget(session, user.id)
            session.delete(user)
            session.commit()
        self._forget(user.username)
        return user_view(user)

    @staticmethod
    def _active_admins(session):
        """The active admins, read first and with their rows locked until commit where the database locks rows
        (PostgreSQL), so that concurrent changes cannot each leave the other as the last admin."""
        users = session.scalars(select(User).where(User.status == "active").order_by(User.id)
                                .with_for_update()).all()
        return [user for user in users if "admin" in user.scopes]

    def get_user(self, username):
        with self.sessions() as session:
            return user_view(self._user(session, username))

    def list_users(self, offset, limit):
        with self.sessions() as session:
            users = session.scalars(select(User).order_by(User.username).offset(offset).limit(limit)).all()
            total = session.query(User).count()
            return [user_view(u) for u in users], total

    @staticmethod
    def _find_user(session, username):
        """The account ``username`` names: its exact spelling first (accounts made before usernames were
        case-insensitive may differ only in case), else case-insensitively. None when there is none."""
        if not isinstance(username, str) or "\x00" in username:  # PostgreSQL cannot even compare such a name
            return None
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            user = session.scalar(select(User).where(User.username_key == username_key(username)))
        return user

    def _user(self, session, username):
        user = self._find_user(session, username)
        if user is None:
            raise not_found("no user %r" % username, "USER_NOT_FOUND")
        return user

    def ensure_admin(self, data_dir, announce=print):
        """On first start create 'admin' (read, write, admin) with DEPOT_ADMIN_PASSWORD or a random password
        that is printed once and written to <data-dir>/admin.password (mode 0600)."""
        with self.sessions() as session:
            if session.scalar(select(User).limit(1)) is not None:
                return None
        password = os.environ.get("DEPOT_ADMIN_PASSWORD")
        generated = not password
        if generated:
            password = secrets.token_urlsafe(18)
            write_private(os.path.join(data_dir, "admin.password"), password)
        with self.sessions() as session:
            self._add_user(session, "admin", password, ["admin", "read", "write"])
            session.commit()
        if generated:
            announce("Created user 'admin' with password: %s (also in %s)"
                     % (password, os.path.join(data_dir, "admin.password")))
        return password

    # --- API tokens -----------------------------------------------------------------------------------

    def create_token(self, owner, name, scopes, expires_in=DEFAULT_TTL, caller_scopes=None):
        """Returns (token view, secret). The secret is shown once; only its SHA-256 is stored. Its scopes are
        declared ones held by the owner and, when given, by ``caller_scopes`` (the session asking)."""
        self._check_token_request(name, scopes)
        lifetime = self._token_lifetime(expires_in)
        if caller_scopes is not None and not holds(caller_scopes, scopes):
            raise DepotError("SCOPE_NOT_HELD", 403, "a token's scopes must be a subset of your own", "scopes")
        secret = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.sessions() as session:
            user = self._user(session, owner)
            if not holds(user.scopes, scopes):
                raise DepotError("SCOPE_NOT_HELD", 403, "a token's scopes must be a subset of its owner's (%s)"
                                 % ", ".join(sorted(user.scopes)), "scopes")
            token = ApiToken(id=uuid.uuid4().hex[:16], user_id=user.id, name=name, scopes=sorted(set(scopes)),
                             secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
                             expires_at=utcnow() + timedelta(seconds=lifetime))
            session.add(token)
            session.commit()
            return token_view(token, user.username), secret

    def _check_token_request(self, name, scopes):
        if not isinstance(name, str) or not 0 < len(name) <= 128:
            raise bad_request("INVALID_TOKEN_REQUEST", "name is a string of 1 to 128 characters", "name")
        if isinstance(scopes, list) and not scopes:
            raise bad_request("INVALID_TOKEN_REQUEST", "scopes is a non-empty list of scope names", "scopes")
        self.check_scopes(scopes, "INVALID_TOKEN_REQUEST")

    def _token_lifetime(self, expires_in):
        """Seconds until a new token expires: every token does, by auth.tokens.default_ttl_seconds when the
        request names no expires_in, and never later than auth.tokens.max_ttl_seconds."""
        if expires_in is DEFAULT_TTL:
            return self.settings["api_token_default_ttl_seconds"]
        maximum = self.settings["api_token_max_ttl_seconds"]
        if not isinstance(expires_in, int) or isinstance(expires_in, bool) or not 0 < expires_in <= maximum:
            raise bad_request("INVALID_TOKEN_REQUEST", "expires_in is a number of seconds from 1 to %d (omit it "
                              "for the default, %d)" % (maximum, self.settings["api_token_default_ttl_seconds"]),
                              "expires_in")
        return expires_in

    def list_tokens(self, owner, offset, limit):
        """A page of ``owner``'s tokens, oldest first: (views, total)."""
        with self.sessions() as session:
            user = self._user(session, owner)
            mine = ApiToken.user_id == user.id
            tokens = session.scalars(select(ApiToken).where(mine).order_by(ApiToken.created_at, ApiToken.id)
                                     .offset(offset).limit(limit)).all()
            total = session.scalar(select(func.count()).select_from(ApiToken).where(mine))
            return [token_view(t, user.username) for t in tokens], total

    def revoke_token(self, owner, token_id):
        with self.sessions() as session:
            user = self._user(session, owner)
            token = session.scalar(select(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user.id))
            if token is None:
                raise not_found("no token %r for user %r" % (token_id, owner), "TOKEN_NOT_FOUND")
            if token.revoked_at is None:
                token.revoked_at = utcnow()
                session.commit()
                self.generation.bump()
            self._api.drop(token.secret_sha256)
            return token_view(token, user.username)

    def _verify_api_token(self, secret):
        digest = hashlib.sha256(secret.encode()).hexdigest()
        state = self._api.get(digest)
        if state is None:
            epoch = self._epoch
            with self.sessions() as session:
                row = session.execute(select(ApiToken, User).join(User, ApiToken.user_id == User.id)
                                      .where(ApiToken.secret_sha256 == digest)).first()
                if row is None:
                    raise _unauthorized("INVALID_TOKEN", "the token is not valid")
                token, user = row
                state = {"id": token.id, "owner": user.username, "expires_at": as_utc(token.expires_at),
                         "revoked": token.revoked_at is not None, "active": user.status == "active",
                         "scopes": frozenset(token.scopes) if "admin" in user.scopes else
                         frozenset(token.scopes) & frozenset(user.scopes),
                         "last_used_at": as_utc(token.last_used_at)}
            self._api.put(digest, state, epoch)
        if state["revoked"] or not state["active"]:
            raise _unauthorized("TOKEN_REVOKED", "the token has been revoked or its owner disabled")
        now = utcnow()
        if state["expires_at"] <= now:
            raise _unauthorized("TOKEN_EXPIRED", "the token has expired")
        self._touch(state, now)
        return {"sub": state["owner"], "scopes": state["scopes"], "kind": "api_token", "token_id": state["id"]}

    def _touch(self, state, now):
        """Record last use, at most once a minute per token, so a busy CI token does not write every request."""
        last = state["last_used_at"]
        if last is not None and now - last < LAST_USED_RESOLUTION:
            return
        with self._last_used_lock:
            state["last_used_at"] = now
        with self.sessions() as session:
            token = session.get(ApiToken, state["id"])
            if token is not None:
                token.last_used_at = now
                session.commit()
