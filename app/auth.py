"""Passwords (bcrypt), JWTs (pyjwt, HS256 pinned) and principals.

A principal is ``{"sub": username, "scopes": frozenset}``. Tokens carry sub, scopes, iat, exp, iss, aud and jti;
verification requires every one of them and allows CLOCK_SKEW_SECONDS of skew.
"""
import os
import secrets
import uuid
from datetime import datetime, timedelta, timezone

import bcrypt
import jwt
from sqlalchemy import select

from app.errors import DepotError
from models import User, utcnow

ALGORITHM = "HS256"
ISSUER = "depot"
AUDIENCE = "depot"
CLOCK_SKEW_SECONDS = 30
TOKEN_TTL_SECONDS = 3600
REQUIRED_CLAIMS = ["sub", "scopes", "iat", "exp", "iss", "aud", "jti"]


def bcrypt_rounds():
    """DEPOT_BCRYPT_ROUNDS (default 12); the test suite lowers it to keep bcrypt from dominating its time."""
    return int(os.environ.get("DEPOT_BCRYPT_ROUNDS", "12"))


def hash_password(password):
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(bcrypt_rounds())).decode()


def check_password(password, hashed):
    return bcrypt.checkpw(password.encode("utf-8"), hashed.encode())


def load_or_create_secret(data_dir):
    """DEPOT_SECRET_KEY, or a key generated once and kept (mode 0600) in the data dir."""
    env = os.environ.get("DEPOT_SECRET_KEY")
    if env:
        return env
    path = os.path.join(data_dir, "secret.key")
    if not os.path.exists(path):
        _write_private(path, secrets.token_urlsafe(48))
    with open(path) as handle:
        return handle.read().strip()


def _write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


class Auth:
    def __init__(self, secret, sessions, ttl_seconds=TOKEN_TTL_SECONDS):
        self.secret = secret
        self.sessions = sessions
        self.ttl = ttl_seconds
        # compared against when the user does not exist, so unknown users cost the same time as wrong passwords
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))

    def issue(self, username, scopes):
        now = datetime.now(timezone.utc)
        claims = {"sub": username, "scopes": sorted(scopes), "iat": now, "exp": now + timedelta(seconds=self.ttl),
                  "iss": ISSUER, "aud": AUDIENCE, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM), claims["exp"]

    def verify(self, token):
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                                leeway=CLOCK_SKEW_SECONDS, options={"require": REQUIRED_CLAIMS})
        except jwt.ExpiredSignatureError:
            raise DepotError("TOKEN_EXPIRED", 401, "the token has expired", headers={"WWW-Authenticate": "Bearer"})
        except jwt.InvalidTokenError:
            raise DepotError("INVALID_TOKEN", 401, "the token is not valid", headers={"WWW-Authenticate": "Bearer"})
        if not isinstance(claims["scopes"], list):
            raise DepotError("INVALID_TOKEN", 401, "the token is not valid")
        return {"sub": claims["sub"], "scopes": frozenset(claims["scopes"])}

    def authenticate(self, request):
        """The principal a request's bearer token names, or None when it carries none."""
        header = request.headers.get("Authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise DepotError("INVALID_TOKEN", 401, "expected 'Authorization: Bearer <token>'",
                             headers={"WWW-Authenticate": "Bearer"})
        return self.verify(token.strip())

    def login(self, username, password):
        with self.sessions() as session:
            user = session.scalar(select(User).where(User.username == username))
            hashed = user.password_hash if user is not None else self._dummy_hash
            valid = check_password(password, hashed) and user is not None and user.status == "active"
            if not valid:
                raise DepotError("INVALID_CREDENTIALS", 401, "unknown user or wrong password")
            user.last_login_at = utcnow()
            session.commit()
            return self.issue(user.username, user.scopes)

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
                _write_private(os.path.join(data_dir, "admin.password"), password)
            session.add(User(username="admin", password_hash=hash_password(password),
                             scopes=["read", "write", "admin"]))
            session.commit()
        if generated:
            announce("Created user 'admin' with password: %s (also in %s)"
                     % (password, os.path.join(data_dir, "admin.password")))
        return password
