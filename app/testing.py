"""A Depot over a data dir, driven in-process: its service, Flask app and test client, and users with tokens.

The compliance validator (`python -m app validate`), the test suite and the benchmarks all run Depot this way, so
starting one, issuing tokens and restarting over the same data dir mean the same thing everywhere.
"""
import copy

from app.errors import DepotError


class LocalDepot:
    def __init__(self, data_dir, schema=None, schema_path=None, sync=True, read_only=False):
        """``schema`` (a document) or ``schema_path`` seeds an empty data dir, as `serve --schema` does; with
        neither, the project's schema.json. ``sync=False`` skips fsync (only for filling a benchmark's store).
        ``read_only``: a replica, as `serve --read-only`."""
        from app.http import create_app
        from app.service import Service
        self.data_dir, self.schema, self.schema_path = data_dir, schema, schema_path
        self.sync, self.read_only = sync, read_only
        self.service = Service(data_dir, schema=copy.deepcopy(schema), schema_path=schema_path, sync=sync,
                               announce=lambda *_: None, read_only=read_only)
        self.app = create_app(self.service)
        self.client = self.app.test_client()

    def ensure_user(self, sub, scopes):
        """A user ``sub`` holding at least ``scopes`` (tokens are checked against their user's state)."""
        identity = self.service.identity
        try:
            held = set(identity.get_user(sub)["scopes"])
        except DepotError:
            identity.create_user(sub, "password-of-" + sub, sorted(scopes))
            return
        if not set(scopes) <= held:
            identity.update_user(sub, scopes=sorted(held | set(scopes)))

    def token(self, scopes=("read", "write"), sub="tester"):
        """A login token (JWT) for ``sub`` carrying ``scopes``; the user is created or widened first."""
        self.ensure_user(sub, scopes)
        return self.service.identity.issue(sub, scopes)[0]

    def restart(self):
        """Close and start again over the same data dir (what a server restart keeps, this keeps)."""
        self.close()
        self.__init__(self.data_dir, self.schema, self.schema_path, self.sync, self.read_only)
        return self

    def close(self):
        self.service.close()
