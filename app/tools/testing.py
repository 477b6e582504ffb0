"""A Depot over a data dir, driven in-process: its service, Flask app and test client, and users with tokens.

The compliance validator (`python -m app validate`), the test suite and the benchmarks all run Depot this way, so
starting one, issuing tokens and restarting over the same data dir mean the same thing everywhere.
"""
import copy

from app.errors import DepotError


class ManualClock:
    """A CPU clock for the per-request budget (app.engine.budget) that stands still unless ``advance`` moves it: frozen,
    no request ever exceeds its budget; advanced by a test, a request spends exactly what the test says."""

    def __init__(self, ns=0):
        self.ns = ns

    def __call__(self):
        return self.ns

    def advance(self, ns):
        self.ns += ns


class LocalDepot:
    def __init__(self, data_dir, schema=None, schema_path=None, sync=True, read_only=False, cpu_clock=None,
                 trusted_proxies=None):
        """``schema`` (a document) or ``schema_path`` seeds an empty data dir, as `serve --schema` does; with
        neither, the project's schema.json. ``sync=False`` skips fsync (only for filling a benchmark's store).
        ``read_only``: a replica, as `serve --read-only`. ``cpu_clock``: what the CPU budget reads instead of
        the thread's CPU time (a ManualClock: requests are charged only what it is advanced by).
        ``trusted_proxies``: as `serve --trusted-proxies` (None: $DEPOT_TRUSTED_PROXIES)."""
        from app.http.app import create_app
        from app.repository.service import Service
        self.data_dir, self.schema, self.schema_path = data_dir, schema, schema_path
        self.sync, self.read_only, self.cpu_clock = sync, read_only, cpu_clock
        self.trusted_proxies = trusted_proxies
        self.service = Service(data_dir, schema=copy.deepcopy(schema), schema_path=schema_path, sync=sync,
                               announce=lambda *_: None, read_only=read_only, cpu_clock=cpu_clock)
        self.app = create_app(self.service, trusted_proxies)
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
        self.__init__(self.data_dir, self.schema, schema_path=self.schema_path, sync=self.sync,
                      read_only=self.read_only, cpu_clock=self.cpu_clock, trusted_proxies=self.trusted_proxies)
        return self

    def close(self):
        self.service.close()
