"""Depot: a declarative package repository server. ``create_app`` is the Flask application factory."""


def create_app(data_dir, schema=None, schema_path=None, sync=True, announce=print, read_only=False,
               load_schema=False, cpu_clock=None, trusted_proxies=None):
    """Build the WSGI app for ``data_dir``, serving its active schema; a new data dir starts with ``schema`` (a
    dict) or the schema file at ``schema_path`` (default: the project's schema.json), and ``load_schema`` makes
    that schema the active one when it differs. ``read_only``: a replica, refusing route steps that change the
    repository (replication still applies); ``cpu_clock``: what the per-request CPU budget reads instead of the
    thread's CPU time (app.engine.budget); ``trusted_proxies``: the addresses and networks whose X-Forwarded-*
    headers are believed (text; None: $DEPOT_TRUSTED_PROXIES). Raises SchemaLoadError when the schema cannot be
    served, ValueError when trusted_proxies names something that is not an address or network,
    app.stores.interfaces.CacheServerError when $DEPOT_CACHE_URL is no Redis URL or its Redis does not answer."""
    from app.http.app import create_app as build
    from app.http.forwarding import trusted_proxies as proxies
    from app.repository.service import Service
    proxies(trusted_proxies)  # refused before the data dir is opened
    return build(Service(data_dir, schema=schema, schema_path=schema_path, sync=sync, announce=announce,
                         read_only=read_only, load_schema=load_schema, cpu_clock=cpu_clock), trusted_proxies)
