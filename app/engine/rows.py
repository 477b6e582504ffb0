"""Index rows as the engine reads them: what a condition over a row reads (index key filters, query filters), and
a listing of every row of a key read as it is written out (RowStream)."""
from typing import Any, Callable, Iterator, Optional, Sequence

from app.stores.codec import Stream
from app.stores.interfaces import Cursor, IndexKeyDef, IndexStore, JsonValue, Row


class RowContext:
    """What a condition over an index row reads: the row as the field namespace, and nothing else (or, for a
    query's filter, the request's variables too)."""
    __slots__ = ("fields", "vars")
    principal = None
    event = None
    request = None

    def __init__(self, row: dict[str, JsonValue], variables: Optional[dict[str, Any]] = None) -> None:
        self.fields = row
        self.vars = variables if variables is not None else {}


class RowStream(Stream):
    """Every row of an index key whose leading fields equal ``values`` (after the cursor ``after``, if given) that
    ``keep`` accepts, in the key's order: what index.query binds with `all`. Rows are read BATCH at a time, each
    batch from just after the last row of the one before (keyset), so memory stays bounded however many rows
    there are and no store iterator is held between batches. Each iteration reads the store anew; one sees every
    row present throughout it once, and a row added meanwhile once or not at all."""
    BATCH = 500
    __slots__ = ("indexes", "key", "values", "after", "keep")

    def __init__(self, indexes: IndexStore, key: IndexKeyDef, values: Sequence[JsonValue], after: Optional[Cursor],
                 keep: Optional[Callable[[Row], bool]]) -> None:
        self.indexes, self.key, self.values, self.after, self.keep = indexes, key, values, after, keep

    def __iter__(self) -> Iterator[Row]:
        after = self.after
        while True:
            batch = list(self.indexes.rows(self.key, self.values, after=after, limit=self.BATCH))
            yield from (batch if self.keep is None else filter(self.keep, batch))
            if len(batch) < self.BATCH:
                return
            after = self.indexes.cursor(self.key, batch[-1])
