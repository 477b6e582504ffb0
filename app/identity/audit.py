"""The audit log: who did what to what, with which outcome, from where. Written to SQL, read by /admin/audit.

Identity and administration events (logins, tokens, users, grants, schema changes) are written before their
request answers. The writes through the schema's routes (every publish, tag, upload chunk) are many and already
recorded durably by the repository itself (a document's `published_by`, the event log), so their audit rows are
written off the request path: queued, then committed in batches by one writer thread (one transaction, one fsync,
for every row waiting). A reader of the log (``query``) first waits for what is queued; a crash can lose the rows
of the last moments' route writes, never the writes themselves.
"""
import logging
import queue
import threading
from datetime import datetime

from sqlalchemy import func, select

from app.errors import bad_request
from models import AuditEvent, iso, utcnow

log = logging.getLogger("depot")
BATCH_ROWS = 500  # rows one commit takes at most
QUEUED_ROWS = 10_000  # rows waiting at most: a writer that falls behind slows the requests adding to it


class Audit:
    def __init__(self, sessions):
        self.sessions = sessions
        self._queue: queue.Queue = queue.Queue(QUEUED_ROWS)
        self._writer = None
        self._writer_lock = threading.Lock()

    def record(self, actor, action, target, outcome, client=None, detail=None):
        """Write one row now. ``client``: {"ip", "user_agent", "request_id", "token_id"} of the request, when there
        is one; the id of the API token that acted (None for a login session) goes into ``detail`` as token_id."""
        with self.sessions() as session:
            session.add(_row(actor, action, target, outcome, client, detail))
            session.commit()

    def record_later(self, actor, action, target, outcome, client=None, detail=None):
        """Queue one row for the writer thread (see the module's docstring): the request does not wait for it."""
        self._start_writer()
        self._queue.put(_row(actor, action, target, outcome, client, detail))

    def flush(self):
        """Wait until every queued row is committed."""
        if self._writer is not None:
            self._queue.join()

    def close(self):
        """Commit what is queued and stop the writer."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None

    def _start_writer(self):
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_batches, name="depot-audit", daemon=True)
                    self._writer.start()

    def _write_batches(self):
        while True:
            batch = [self._queue.get()]  # waits for the first row; takes whatever else is waiting with it
            while len(batch) < BATCH_ROWS:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [row for row in batch if row is not None]
            try:
                if rows:
                    with self.sessions() as session:
                        session.add_all(rows)
                        session.commit()
            except Exception:  # noqa: BLE001 - the writer must outlive a failed batch; the error is logged
                log.exception("could not write %d audit row(s)", len(rows))
            finally:
                for _ in batch:
                    self._queue.task_done()
            if len(rows) < len(batch):  # close() asked: everything before it is written
                return

    def query(self, actor=None, action=None, since=None, offset=0, limit=50):
        """Newest first; returns (rows, total). Rows queued before the call are in it."""
        self.flush()
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


def _row(actor, action, target, outcome, client, detail):
    client = client or {}
    if client.get("token_id"):
        detail = dict(detail or {}, token_id=client["token_id"])
    return AuditEvent(at=utcnow(), actor=_fit(actor or "anonymous", 128), action=action,
                      target=_fit(target or "", 512),
                      outcome=str(outcome), client_ip=client.get("ip"),
                      user_agent=_fit(client.get("user_agent") or "", 256) or None,
                      request_id=client.get("request_id"), detail=detail)


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
