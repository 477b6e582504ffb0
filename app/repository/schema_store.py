"""Schema versions in SQL: the full document, its sha256, who stored it and when, which one is active.

A document is stored as written, keys in their order: a route's response objects answer in the order the schema
gives them, and that order must survive a restart or a swap. Its sha256 is app.engine.compiler.schema_digest (over the
canonical form), the digest /health and /openapi.json show too.
"""
import json

from sqlalchemy import func, select, update

from app.engine.compiler import schema_digest
from app.errors import not_found
from models import SchemaVersion, iso


MAX_VERSION = 2**31 - 1  # versions are SQL integers


class SchemaStore:
    def __init__(self, sessions):
        self.sessions = sessions

    def active(self):
        with self.sessions() as session:
            return session.scalar(select(SchemaVersion).where(SchemaVersion.active.is_(True)))

    def add(self, doc, by, comment=""):
        """Store ``doc`` as a new version and make it the active one, in one transaction."""
        text = json.dumps(doc, separators=(",", ":"))
        with self.sessions() as session:
            number = (session.scalar(select(func.max(SchemaVersion.version))) or 0) + 1
            session.execute(update(SchemaVersion).where(SchemaVersion.active.is_(True)).values(active=False))
            row = SchemaVersion(version=number, document=text, sha256=schema_digest(doc),
                                created_by=by, comment=comment[:256], active=True)
            session.add(row)
            session.commit()
            return row

    def get(self, version):
        with self.sessions() as session:
            # a version past what an SQL integer holds is no version (not a driver's overflow error)
            row = session.get(SchemaVersion, version) if 0 < version <= MAX_VERSION else None
            if row is None:
                raise not_found("no schema version %s" % version, "SCHEMA_VERSION_NOT_FOUND")
            return row

    def list(self, offset, limit):
        with self.sessions() as session:
            rows = session.scalars(select(SchemaVersion).order_by(SchemaVersion.version.desc())
                                   .offset(offset).limit(limit)).all()
            total = session.scalar(select(func.count()).select_from(SchemaVersion))
            return rows, total


def version_view(row, with_document=False):
    view = {"version": row.version, "sha256": row.sha256, "created_by": row.created_by,
            "created_at": iso(row.created_at), "comment": row.comment,
            "active": row.active}
    if with_document:
        view["schema"] = json.loads(row.document)
    return view
