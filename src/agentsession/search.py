"""Full-text search, the parts every store shares: words, documents, snippets.

A query and a document are read the same way everywhere: their *words* are runs of
letters and digits (``_`` and every other character separate them), casefolded. A
query's words are its *terms*; a document matches when, for every term, it has a word
that starts with the term (``deploy`` finds ``deployment``). Quotes, ``*``, ``-``,
``OR``, SQL and the like in a query are text, never syntax: they add no term or a
plain word. The SQL stores index ``index_text(document)`` (the words, space
separated), so the database's own tokenizer sees the same words; the memory, Redis
and DynamoDB stores scan with ``occurrences``.

A task's *document* is its user message and the text of its message bubbles (every
string in the bubbles' JSON, except the values of keys that name rather than say:
``type``, ``role``, ``id``, ``*_id``/``*Id``, ``url``, ``src``, ``href``, ``mime``,
``mimeType``), at most ``MAX_DOCUMENT`` characters of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

from agentsession.errors import InvalidInput

__all__ = [
    "MAX_DOCUMENT",
    "MAX_QUERY_LENGTH",
    "MAX_TERMS",
    "MAX_TERM_LENGTH",
    "SNIPPET_LENGTH",
    "document",
    "index_text",
    "occurrences",
    "parse_query",
    "snippet",
    "words",
]

#: The longest query ``search`` takes, in characters.
MAX_QUERY_LENGTH: Final = 256
#: At most this many terms of a query are used (the first ones).
MAX_TERMS: Final = 8
#: Longer terms are cut to this many characters (a prefix of a word still matches it).
MAX_TERM_LENGTH: Final = 64
#: How much of a task is searchable: its first characters of document.
MAX_DOCUMENT: Final = 65_536
#: About how many characters of text a snippet shows around its first match.
SNIPPET_LENGTH: Final = 160

_WORD = re.compile(r"[^\W_]+")
_NAMING_KEYS = frozenset({"type", "role", "id", "url", "src", "href", "mime", "mimetype"})


def words(text: str) -> list[str]:
    """The casefolded words of ``text``, in order."""
    return [match.group().casefold() for match in _WORD.finditer(text)]


def parse_query(text: object) -> tuple[str, ...]:
    """The terms of a query as a user typed it; ``InvalidInput("query")`` when it is not
    a string, is too long, or has no word to search for."""
    if not isinstance(text, str):
        raise InvalidInput("query", f"must be a string, not {type(text).__name__}")
    if len(text) > MAX_QUERY_LENGTH:
        raise InvalidInput("query", f"is over {MAX_QUERY_LENGTH} characters")
    if "\x00" in text:
        raise InvalidInput("query", "must not contain NUL characters")
    terms: list[str] = []
    for word in words(text):
        term = word[:MAX_TERM_LENGTH]
        if term not in terms:
            terms.append(term)
    if not terms:
        raise InvalidInput("query", "has no words to search for (letters or digits)")
    return tuple(terms[:MAX_TERMS])


def _strings(value: Any, key: str | None = None) -> Iterator[str]:
    if isinstance(value, str):
        if key is None or not _naming(key):
            yield value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _strings(item, str(name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item, key)


def _naming(key: str) -> bool:
    lowered = key.casefold()
    return lowered in _NAMING_KEYS or lowered.endswith("_id") or key.endswith("Id")


def document(user_message: str | None, message_bubbles: Any) -> str:
    """A task's searchable text: its user message, then each string its bubbles say,
    one per line; cut at ``MAX_DOCUMENT`` characters."""
    parts = [] if user_message is None else [user_message]
    size = len(user_message or "")
    for text in _strings(message_bubbles):
        if size >= MAX_DOCUMENT:
            break
        parts.append(text)
        size += len(text) + 1
    return "\n".join(parts)[:MAX_DOCUMENT]


def index_text(text: str) -> str:
    """What a full-text index is given for ``text``: its words, space separated."""
    return " ".join(words(text[:MAX_DOCUMENT]))


def occurrences(terms: tuple[str, ...], text: str) -> int:
    """How many words of ``text`` start with a term; 0 unless every term has one."""
    found = dict.fromkeys(terms, 0)
    for word in words(text):
        for term in terms:
            if word.startswith(term):
                found[term] += 1
    if not all(found.values()):
        return 0
    return sum(found.values())


def snippet(text: str, terms: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
    """A short passage of ``text`` around its first match, as ``(text, matched)`` parts:
    the words that start with a term are parts of their own marked True.

    The passage starts at a word about a third of ``SNIPPET_LENGTH`` before the first
    match (with ``…`` where text was left out) and ends near ``SNIPPET_LENGTH``
    characters later; line breaks become spaces.
    """
    flat = " ".join(text.split())
    spans = [
        (m.start(), m.end())
        for m in _WORD.finditer(flat)
        if any(m.group().casefold().startswith(term) for term in terms)
    ]
    first = spans[0][0] if spans else 0
    start = max(0, first - SNIPPET_LENGTH // 3)
    if start:
        space = flat.find(" ", start - 1, first)
        start = space + 1 if space != -1 else start
    end = min(len(flat), start + SNIPPET_LENGTH)
    if end < len(flat):
        space = flat.rfind(" ", max(first, start), end)
        end = space if space > first else end
    parts: list[tuple[str, bool]] = []
    if start:
        parts.append(("…", False))
    at = start
    for begin, stop in spans:
        if begin < start or begin >= end:
            continue
        stop = min(stop, end)
        if begin > at:
            parts.append((flat[at:begin], False))
        parts.append((flat[begin:stop], True))
        at = stop
    if end > at:
        parts.append((flat[at:end], False))
    if end < len(flat):
        parts.append(("…", False))
    return _merged(parts)


def _merged(parts: list[tuple[str, bool]]) -> tuple[tuple[str, bool], ...]:
    out: list[tuple[str, bool]] = []
    for text, matched in parts:
        if out and not matched and not out[-1][1]:
            out[-1] = (out[-1][0] + text, False)
        elif text:
            out.append((text, matched))
    return tuple(out)
