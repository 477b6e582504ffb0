"""What makes a directory a Depot data dir, and whether a running server holds it: for the commands that work on
one (gc, add / routes add --data-dir, db upgrade, admin ...).

Only `serve` makes a data dir, on its first start; every other command refuses a directory that is not one rather
than create an empty data dir where a path was mistyped. A data dir is a directory holding the state store
(`state/`, with RocksDB's `CURRENT` file), which a server's first start writes before anything else is served. A
running server holds the state store's lock for as long as it runs (RocksDB admits one process), and that lock
is how a command learns the data dir is in use.
"""
import contextlib
import os

from app.repository.service import open_data_dir
from app.stores.interfaces import StoreLocked
from app.stores.registry import holds_stores, lease

EXIT_CODE = 2  # what a command returns when its data dir is refused


class DataDirError(Exception):
    """A command cannot work on the data dir it was given; the message is one line saying why and what to do."""


def is_data_dir(path):
    return holds_stores(path)


def require(path):
    """``path`` made private to its owner (as open_data_dir does), if it is a Depot data dir; else DataDirError."""
    if not is_data_dir(path):
        why = "there is no such directory" if not os.path.exists(path) else "it holds no Depot state store"
        raise DataDirError("%s is not a Depot data dir (%s); `python -m app serve --data-dir %s` makes one"
                           % (path, why, path))
    return open_data_dir(path)


def in_use(path, instead):
    return DataDirError("data dir %s is in use by a running server: %s" % (path, instead))


@contextlib.contextmanager
def exclusive(path, instead):
    """Hold the data dir's state store while a command changes the data dir, so that no server starts meanwhile;
    DataDirError (naming ``instead``, what to do while a server runs) when a running server holds it."""
    private = require(path)
    try:
        held = lease(private)
    except StoreLocked:
        raise in_use(path, instead) from None
    try:
        yield private
    finally:
        held.close()
