"""What a condition over an index row reads: index key filters (`where`) and query filters."""
from typing import Any, Optional

from app.stores.interfaces import JsonValue


class RowContext:
    """What a condition over an index row reads: the row as the field namespace, and nothing else (or, for a
    query's filter, the request's variables too)."""
    __slots__ = ("fields", "vars")
    principal = None
    event = None

    def __init__(self, row: dict[str, JsonValue], variables: Optional[dict[str, Any]] = None) -> None:
        self.fields = row
        self.vars = variables if variables is not None else {}
