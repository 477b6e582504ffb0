"""Errors are values: a stable code, an HTTP status, a message and optionally the offending field.

One mapping (``DepotError.envelope``) turns any of them into the JSON body every error response uses:
``{"error": {"code", "message"[, "field"]}}``.
"""


class DepotError(Exception):
    # a refusal other credentials could pass (a token lacking a scope): its route's challenge goes with it, as with
    # a 401, so a client asks its token endpoint for a token that carries the scope
    rechallenge = False

    def __init__(self, code, status, message, field=None, headers=None, details=None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.details = details
        self.body = None  # the answer in a route's own error format (its error_body), when it declares one

    def envelope(self):
        body = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


def bad_request(code, message, field=None):
    return DepotError(code, 400, message, field)


def not_found(message="Not found", code="NOT_FOUND"):
    return DepotError(code, 404, message)


def conflict(message, code="CONFLICT"):
    return DepotError(code, 409, message)


def unknown_session(session_id):
    """An upload session that is not there (finished, cancelled, expired, or never started)."""
    return DepotError("UPLOAD_UNKNOWN", 404, "no upload session %r (it was finished, cancelled or expired)"
                      % str(session_id)[:64])


def too_large(message, code="PAYLOAD_TOO_LARGE", field=None):
    return DepotError(code, 413, message, field)


class SchemaLoadError(Exception):
    """Raised when a schema cannot be served; carries the check report."""

    def __init__(self, report):
        super().__init__(report.to_text())
        self.report = report
