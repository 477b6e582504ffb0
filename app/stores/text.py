"""Text search semantics, shared by every state backend (pure: no store, no keys).

An index that declares ``text: {"fields": [...]}`` makes those row fields searchable. A field's value is indexed as
its strings: a string as itself, a list by its string items, an object (labels) by its keys and its string
values; anything else is not text. Each string is lowercased, and a field's strings together are bounded to
MAX_FIELD_CHARS characters (the first ones, in the row's order): text past that is not searchable.

A query is split on whitespace into terms, lowercased (at most MAX_TERMS terms, MAX_QUERY_CHARS characters). A row
matches when every term matches one of the declared fields: a term of SHORT_TERM characters or more when it is a
substring of one of the field's strings; a shorter term when it starts one of the field's strings or one of its
words (a word: a run of letters and digits), so short terms are prefix searches.

Tokens are what a store keeps postings for: the distinct trigrams of each string, and "start" tokens (marked by
START) for the first 1 and 2 characters of each string and of each of its words. A term's tokens (``term_tokens``)
are ones every matching row has, so intersecting their postings yields every match (and maybe a few rows more:
``matches`` decides).
"""
import re
from typing import Any, Iterable, Sequence

MAX_FIELD_CHARS = 2000  # characters of a field's text that are indexed
MAX_QUERY_CHARS = 200
MAX_TERMS = 10
SHORT_TERM = 3  # terms shorter than this are prefix searches
MAX_TERM_TOKENS = 8  # trigrams of a long term looked up (spread over it); the rest is checked by `matches`
START = "\x01"  # marks a start token (text never holds it: control characters are spaces here)

_WORD = re.compile(r"[^\W_]+")
_CONTROL = re.compile(r"[\x00-\x1f]")


class QueryError(ValueError):
    """A query the semantics refuse (empty, too long, too many terms)."""


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        yield from (item for item in value if isinstance(item, str))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            if isinstance(item, str):
                yield item


def field_texts(row: dict[str, Any], field: str) -> list[str]:
    """The lowercased strings of one field of ``row``, bounded together to MAX_FIELD_CHARS characters."""
    texts, left = [], MAX_FIELD_CHARS
    for string in _strings(row.get(field)):
        if left <= 0:
            break
        text = _CONTROL.sub(" ", string[:left].lower())[:left]
        texts.append(text)
        left -= len(text)
    return texts


def row_texts(row: dict[str, Any], fields: Sequence[str]) -> list[list[str]]:
    return [field_texts(row, field) for field in fields]


def tokens(row: dict[str, Any], fields: Sequence[str]) -> set[str]:
    """Every token of the row's declared fields."""
    found: set[str] = set()
    for texts in row_texts(row, fields):
        for text in texts:
            found.update(text[i:i + 3] for i in range(len(text) - 2))
            for start in [0] + [m.start() for m in _WORD.finditer(text)]:
                found.add(START + text[start:start + 1])
                if start + 1 < len(text):
                    found.add(START + text[start:start + 2])
    found.discard(START)
    return found


def terms(query: Any) -> list[str]:
    """The query's distinct terms, lowercased, in order; QueryError when there is none or it is too long."""
    if not isinstance(query, str) or not query.strip():
        raise QueryError("q must name at least one term")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError("q is longer than %d characters" % MAX_QUERY_CHARS)
    found = list(dict.fromkeys(_CONTROL.sub(" ", query.lower()).split()))
    if not found:
        raise QueryError("q must name at least one term")
    if len(found) > MAX_TERMS:
        raise QueryError("q has more than %d terms" % MAX_TERMS)
    return found


def term_tokens(term: str) -> list[str]:
    """Tokens every row matching ``term`` has (at most MAX_TERM_TOKENS; at least one)."""
    if len(term) < SHORT_TERM:
        return [START + term]
    grams = list(dict.fromkeys(term[i:i + 3] for i in range(len(term) - 2)))
    if len(grams) > MAX_TERM_TOKENS:
        step = (len(grams) - 1) / (MAX_TERM_TOKENS - 1)
        grams = list(dict.fromkeys(grams[round(i * step)] for i in range(MAX_TERM_TOKENS)))
    return grams


def query_tokens(query_terms: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(token for term in query_terms for token in term_tokens(term)))


def _term_matches(term: str, texts: list[str]) -> bool:
    if len(term) >= SHORT_TERM:
        return any(term in text for text in texts)
    return any(text.startswith(term) or any(text.startswith(term, m.start()) for m in _WORD.finditer(text))
               for text in texts)


def matches(row: dict[str, Any], fields: Sequence[str], query_terms: Sequence[str]) -> bool:
    """Whether ``row`` matches every term in one of ``fields`` (the semantics above)."""
    texts = row_texts(row, fields)
    return all(any(_term_matches(term, field) for field in texts) for term in query_terms)
