"""The audit log: who did what to what, with which outcome, from where. Written to SQL, read by /admin/audit."""
from datetime import datetime

from sqlalchemy import func, select

from app.errors import bad_request
from models import AuditEvent, iso


class Audit:
    def __init__(self, sessions):
        self.sessions = sessions

    def record(self, actor, action, target, outcome, client=None, detail=None):
        """``client``: {"ip", "user_agent", "request_id", "token_id"} of the request, when there is one; the id of
        the API token that acted (None for a login session) goes into ``detail`` as token_id."""
        client = client or {}
        if client.get("token_id"):
            detail = dict(detail or {}, token_id=client["token_id"])
        with self.sessions() as session:
            session.add(AuditEvent(actor=_fit(actor or "anonymous", 128), action=action, target=_fit(target or "", 512),
                                   outcome=str(outcome), client_ip=client.get("ip"),
                                   user_agent=_fit(client.get("user_agent") or "", 256) or None,
                                   request_id=client.get("request_id"), detail=detail))
            session.commit()

    def query(self, actor=None, action=None, since=None, offset=0, limit=50):
        """Newest first; returns (rows, total)."""
        conditions = []
        if actor:
            conditions.append(AuditEvent.actor == actor)
        if action:
            conditions.append(AuditEvent.action == action)
        if since:
            try:
                moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
            except ValueError:
                raise bad_request("INVALID_QUERY", "since is an ISO 8601 time", "since")
            conditions.append(AuditEvent.at >= moment)
        with self.sessions() as session:
            rows = session.scalars(select(AuditEvent).where(*conditions)
                                   .order_by(AuditEvent.id.desc()).offset(offset).limit(limit)).all()
            total = session.scalar(select(func.count()).select_from(AuditEvent).where(*conditions))
            return [_view(r) for r in rows], total


def api_token_id(principal):
    """The id of the API token a principal authenticated with; None for a login session, or nobody."""
    return principal["token_id"] if principal is not None and principal["kind"] == "api_token" else None


def _fit(text, limit):
    """``text`` as its column holds it on every database: PostgreSQL refuses NUL characters and strings longer
    than the column, and an actor or target may be whatever a client sent (a login's username)."""
    return text.replace("\x00", "\ufffd")[:limit]


def _view(row):
    return {"id": row.id, "at": iso(row.at), "actor": row.actor,
            "action": row.action, "target": row.target, "outcome": row.outcome, "client_ip": row.client_ip,
            "user_agent": row.user_agent, "request_id": row.request_id, "detail": row.detail}
