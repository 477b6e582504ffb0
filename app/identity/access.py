"""Namespace permissions: who may read, write, delete in or administer which namespaces.

Grants give a permission on namespace patterns (``acme``, ``acme-*``, ``*``) to a user, a group of users, or
anonymous callers; they live in SQL beside the users. The model:

- permissions are ordered ``read < write < delete < admin``: a grant of one includes those before it;
- an installation without any grant behaves as before grants existed: the global scopes decide;
- once any grant exists, a route that names a namespace (a policy's ``require.namespace``, or
  ``auth.require_scopes`` with ``namespace``) needs a grant covering that namespace, and the global scopes
  only cap it: a principal holding only ``read`` gets at most read, one holding ``write`` whatever its grants
  say; the global ``admin`` scope is the server's administrator and passes every check;
- a namespace's anonymous grants hold for every caller, signed in or not; anonymous callers get at most read.

Every request asks the same question, so the grants are held in memory as a snapshot, compiled once; a change
made through this process drops it at once (the next request sees it), and a change made by another process
(the admin CLI) is picked up within ``SNAPSHOT_SECONDS``. Every change also bumps one counter row in the same
transaction (``access_generation``), so that the periodic look costs one small read, and the grants are read
again only when the counter moved.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, update

from app.errors import DepotError, bad_request
from app.identity.auth import credentials_required
from app.identity.permissions import NONE, PERMISSIONS, RANK
from models import AccessGeneration, Group, GroupMember, NamespaceGrant, User, iso

SNAPSHOT_SECONDS = 5.0
PATTERN = re.compile(r"^[a-z0-9*][a-z0-9._*-]{0,159}$")
GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ANONYMOUS = "anonymous"


def permission_rank(name: str, field_name: str = "permission") -> int:
    if name not in RANK:
        raise bad_request("INVALID_REQUEST", "permission is one of %s" % ", ".join(PERMISSIONS), field_name)
    return RANK[name]


def compile_pattern(pattern: str):
    """A namespace pattern as a matcher: ``*`` stands for any run of characters, nothing else is special."""
    return re.compile("^%s$" % ".*".join(re.escape(part) for part in pattern.split("*"))).match


def require_resource(principal, name: str, permission: str) -> None:
    """Raise 403 unless an access token ``principal`` was issued ``permission`` on resource ``name``; principals
    that are not restricted to resources pass."""
    resources = principal.get("resources") if principal is not None else None
    if resources is not None and RANK.get(resources.get(name, ""), NONE) < RANK[permission]:
        refusal = DepotError("FORBIDDEN", 403, "this token does not carry %s permission on %s" % (permission, name),
                             "scope")
        refusal.rechallenge = True
        raise refusal


def resources_rank(resources, namespace: str) -> int:
    """The most an access token's ``resources`` (name -> permission) give in ``namespace``."""
    return max((RANK[permission] for name, permission in resources.items()
                if name == namespace or name.startswith(namespace + "/")), default=NONE)


def scopes_rank(scopes) -> int:
    """What the global scopes allow anywhere while no grant exists: admin everything, write up to deleting
    (the default schema's delete routes ask for write), read reading."""
    if "admin" in scopes:
        return RANK["admin"]
    return RANK["delete"] if "write" in scopes else RANK["read"] if "read" in scopes else NONE


def scope_cap(scopes) -> int:
    """The most a principal's global scopes let its grants give (see the module's docstring)."""
    if "admin" in scopes or "write" in scopes:
        return RANK["admin"]
    return RANK["read"] if "read" in scopes else NONE


@dataclass
class Snapshot:
    """Every grant, compiled: (matcher, rank) lists per user name, per group, and for anonymous callers."""
    taken: float                                   # when it was last found current (Access.clock)
    generation: int = 0                            # the access_generation it was read at
    grants: int = 0                                # how many grants exist: with none, the scopes decide
    users: dict = field(default_factory=dict)      # username -> [(matcher, rank)]
    anonymous: list = field(default_factory=list)  # [(matcher, rank)]
    memo: dict = field(default_factory=dict)       # (username, namespace) -> rank

    @property
    def active(self) -> bool:
        return self.grants > 0

    def granted(self, username: str | None, namespace: str) -> int:
        key = (username, namespace)
        rank = self.memo.get(key)
        if rank is None:
            rules = self.anonymous + (self.users.get(username, []) if username else [])
            rank = max((r for match, r in rules if match(namespace)), default=NONE)
            if len(self.memo) > 100_000:  # bounded whatever the callers and namespaces
                self.memo.clear()
            self.memo[key] = rank
        return rank


class ScopesOnly:
    """An engine without a grant store (a schema check, a compliance run): the global scopes decide."""
    active = False

    @staticmethod
    def may_read(principal, namespace):
        if principal is not None and "resources" in principal:
            return resources_rank(principal["resources"], namespace) >= RANK["read"]
        return True

    @staticmethod
    def effective_rank(principal, namespace):
        return scopes_rank(principal["scopes"]) if principal is not None else NONE


SCOPES_ONLY = ScopesOnly()


class Access:
    """The grants of one installation: the checks routes make, and their management."""

    def __init__(self, sessions, clock=time.monotonic):
        self.sessions = sessions
        self.clock = clock
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None

    # --- checks ------------------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.snapshot().active

    def snapshot(self) -> Snapshot:
        current = self._snapshot
        if current is None:
            current = self._snapshot = self._load()
        elif self.clock() - current.taken > SNAPSHOT_SECONDS:
            current = self._refresh(current)
        return current

    def _refresh(self, current: Snapshot) -> Snapshot:
        """The snapshot is due for a look: keep it if the change counter has not moved, else read again."""
        with self.sessions() as session:
            generation = _generation(session)
        if generation == current.generation:
            current.taken = self.clock()
            return current
        current = self._snapshot = self._load()
        return current

    def changed(self):
        """A grant, group or membership changed: the next check reads them again."""
        self._snapshot = None

    def rank(self, principal, namespace: str) -> int:
        """The permission ``principal`` (None: an anonymous caller) holds on ``namespace``, as a rank. An access
        token holds what it was issued for there: the most of its resources in the namespace (a resource's name
        starts with its namespace's), as its user could when it was issued."""
        if principal is not None and "resources" in principal:
            return resources_rank(principal["resources"], namespace)
        if principal is not None and "admin" in principal["scopes"]:
            return RANK["admin"]
        named = principal is not None and principal["kind"] != "anonymous"
        granted = self.snapshot().granted(principal["sub"] if named else None, namespace)
        return min(granted, scope_cap(principal["scopes"]) if named else RANK["read"])

    def may_read(self, principal, namespace: str) -> bool:
        return self.rank(principal, namespace) >= RANK["read"]

    def effective_rank(self, principal, namespace: str) -> int:
        """What ``principal`` may do in ``namespace`` now: by its grants once any exist, else by its scopes."""
        if self.active or (principal is not None and "resources" in principal):
            return self.rank(principal, namespace)
        return scopes_rank(principal["scopes"]) if principal is not None else NONE

    def require(self, principal, namespace: str, permission: str):
        """Raise unless ``principal`` holds ``permission`` on ``namespace``: 403 naming the namespace, or 401
        for a caller without credentials (credentials could help)."""
        if self.rank(principal, namespace) >= RANK[permission]:
            return
        if principal is None or principal["kind"] == "anonymous":
            refusal = credentials_required("%s permission on namespace %r" % (permission, namespace))
            refusal.field = "namespace"
            raise refusal
        raise DepotError("FORBIDDEN", 403, "%s permission on namespace %r is required" % (permission, namespace),
                         "namespace")

    def _load(self) -> Snapshot:
        snapshot = Snapshot(taken=self.clock())
        with self.sessions() as session:
            snapshot.generation = _generation(session)
            members = {}
            for group_id, username in session.execute(
                    select(GroupMember.group_id, User.username).join(User, User.id == GroupMember.user_id)):
                members.setdefault(group_id, []).append(username)
            rows = session.execute(select(NamespaceGrant, User.username).outerjoin(
                User, User.id == NamespaceGrant.user_id)).all()
        snapshot.grants = len(rows)
        for grant, username in rows:
            rule = (compile_pattern(grant.pattern), RANK[grant.permission])
            if grant.user_id is not None:
                snapshot.users.setdefault(username, []).append(rule)
            elif grant.group_id is not None:
                for member in members.get(grant.group_id, []):
                    snapshot.users.setdefault(member, []).append(rule)
            else:
                snapshot.anonymous.append(rule)
        return snapshot

    # --- management --------------------------------------------------------------------------------------

    def grant(self, subject: str, pattern: str, permission: str, by: str):
        """Give ``permission`` on ``pattern`` to ``subject`` (``user:NAME``, ``group:NAME`` or ``anonymous``).
        A grant to the same subject and pattern is replaced. Returns (view, created)."""
        permission_rank(permission)
        if not isinstance(pattern, str) or not PATTERN.match(pattern):
            raise bad_request("INVALID_REQUEST", "namespace is a namespace or a pattern of lower-case letters, "
                              "digits, '.', '_', '-' and '*'", "namespace")
        if subject == ANONYMOUS and permission != "read":
            raise bad_request("INVALID_REQUEST", "anonymous callers can be granted read only", "permission")
        with self._lock, self.sessions() as session:
            user_id, group_id = self._subject_ids(session, subject)
            existing = session.scalars(select(NamespaceGrant).where(
                NamespaceGrant.user_id.is_(None) if user_id is None else NamespaceGrant.user_id == user_id,
                NamespaceGrant.group_id.is_(None) if group_id is None else NamespaceGrant.group_id == group_id,
                NamespaceGrant.pattern == pattern)).first()
            created = existing is None
            if created:
                existing = NamespaceGrant(user_id=user_id, group_id=group_id, pattern=pattern, created_by=by)
                session.add(existing)
            existing.permission = permission
            _bump(session)
            session.commit()
            view = self._view(session, existing)
        self.changed()
        return view, created

    def revoke(self, grant_id: int):
        with self._lock, self.sessions() as session:
            grant = session.get(NamespaceGrant, grant_id)
            if grant is None:
                raise DepotError("GRANT_NOT_FOUND", 404, "no grant %s" % grant_id, "id")
            view = self._view(session, grant)
            session.delete(grant)
            _bump(session)
            session.commit()
        self.changed()
        return view

    def list_grants(self, offset=0, limit=50, subject=None):
        with self.sessions() as session:
            conditions = []
            if subject is not None:
                user_id, group_id = self._subject_ids(session, subject)
                conditions = [NamespaceGrant.user_id.is_(None) if user_id is None else NamespaceGrant.user_id == user_id,
                              NamespaceGrant.group_id.is_(None) if group_id is None else
                              NamespaceGrant.group_id == group_id]
            rows = session.scalars(select(NamespaceGrant).where(*conditions).order_by(NamespaceGrant.id)
                                   .offset(offset).limit(limit)).all()
            total = session.scalar(select(func.count()).select_from(NamespaceGrant).where(*conditions))
            return [self._view(session, row) for row in rows], total

    def create_group(self, name: str):
        if not isinstance(name, str) or not GROUP_NAME.match(name):
            raise bad_request("INVALID_REQUEST", "a group name is 1 to 128 letters, digits, '.', '_' or '-'", "name")
        with self._lock, self.sessions() as session:
            if session.scalars(select(Group).where(Group.name == name)).first() is not None:
                raise DepotError("GROUP_EXISTS", 409, "group %r exists" % name, "name")
            group = Group(name=name)
            session.add(group)
            session.commit()
            return self._group_view(session, group)

    def delete_group(self, name: str):
        """Remove a group with its memberships and its grants."""
        with self._lock, self.sessions() as session:
            group = self._group(session, name)
            view = self._group_view(session, group)
            session.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
            session.execute(delete(NamespaceGrant).where(NamespaceGrant.group_id == group.id))
            session.delete(group)
            _bump(session)
            session.commit()
        self.changed()
        return view

    def get_group(self, name: str):
        with self.sessions() as session:
            return self._group_view(session, self._group(session, name))

    def list_groups(self, offset=0, limit=50):
        with self.sessions() as session:
            rows = session.scalars(select(Group).order_by(Group.name).offset(offset).limit(limit)).all()
            total = session.scalar(select(func.count()).select_from(Group))
            return [self._group_view(session, row) for row in rows], total

    def set_member(self, group_name: str, username: str, member: bool):
        """Add ``username`` to a group (``member``) or take it out. Returns (group view, changed)."""
        with self._lock, self.sessions() as session:
            group, user = self._group(session, group_name), self._user(session, username)
            row = session.get(GroupMember, (group.id, user.id))
            changed = (row is None) == member
            if changed and member:
                session.add(GroupMember(group_id=group.id, user_id=user.id))
            elif changed:
                session.delete(row)
            _bump(session)
            session.commit()
            view = self._group_view(session, group)
        self.changed()
        return view, changed

    def forget_user(self, session, user_id: int):
        """Within the session deleting a user: its grants and memberships go with it."""
        session.execute(delete(NamespaceGrant).where(NamespaceGrant.user_id == user_id))
        session.execute(delete(GroupMember).where(GroupMember.user_id == user_id))
        _bump(session)
        self.changed()

    # --- helpers -----------------------------------------------------------------------------------------

    def _subject_ids(self, session, subject):
        """(user id, group id) of ``user:NAME``, ``group:NAME`` or ``anonymous`` (both None)."""
        kind, _, name = subject.partition(":") if isinstance(subject, str) else ("", "", "")
        if subject == ANONYMOUS:
            return None, None
        if kind == "user" and name:
            return self._user(session, name).id, None
        if kind == "group" and name:
            return None, self._group(session, name).id
        raise bad_request("INVALID_REQUEST", "subject is user:NAME, group:NAME or anonymous", "subject")

    @staticmethod
    def _user(session, username):
        from app.identity.auth import username_key  # the one rule for usernames
        user = session.scalars(select(User).where(User.username_key == username_key(username))).first()
        if user is None:
            raise DepotError("USER_NOT_FOUND", 404, "no user %r" % username, "username")
        return user

    @staticmethod
    def _group(session, name):
        group = session.scalars(select(Group).where(Group.name == name)).first()
        if group is None:
            raise DepotError("GROUP_NOT_FOUND", 404, "no group %r" % name, "group")
        return group

    @staticmethod
    def _view(session, grant):
        if grant.user_id is not None:
            subject = "user:" + session.get(User, grant.user_id).username
        elif grant.group_id is not None:
            subject = "group:" + session.get(Group, grant.group_id).name
        else:
            subject = ANONYMOUS
        return {"id": grant.id, "subject": subject, "namespace": grant.pattern, "permission": grant.permission,
                "created_by": grant.created_by, "created_at": iso(grant.created_at)}

    @staticmethod
    def _group_view(session, group):
        members = session.scalars(select(User.username).join(GroupMember, GroupMember.user_id == User.id)
                                  .where(GroupMember.group_id == group.id).order_by(User.username)).all()
        return {"name": group.name, "members": list(members), "created_at": iso(group.created_at)}


def _generation(session) -> int:
    return session.scalar(select(AccessGeneration.value).where(AccessGeneration.id == 1)) or 0


def _bump(session) -> None:
    """Count a change of grants, groups or memberships, in the transaction making it."""
    bumped = session.execute(update(AccessGeneration).where(AccessGeneration.id == 1)
                             .values(value=AccessGeneration.value + 1))
    if bumped.rowcount == 0:  # a database made without the migrations' first row
        session.add(AccessGeneration(id=1, value=1))
