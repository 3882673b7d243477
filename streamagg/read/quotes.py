"""A file that ends inside a quoted field: the probe that tells, and where the quote opened."""

from __future__ import annotations

# Appended to every file's bytes before they are parsed. Outside a quoted field the line end
# closes the last record and the quote opens a one-field record of its own: the probe record,
# dropped again. Inside one (a quote opened and never closed) the quote closes that field and no
# probe record appears, so the parser itself says whether the file ended inside quotes.
EOF_PROBE = b'\n"'
EOF_PROBE_TEXT = EOF_PROBE.decode()
# The reason of a row whose quoted field runs to the end of the file; the locator adds the line.
UNTERMINATED = "unterminated quote"


def is_probe(text: str | None) -> bool:
    """Whether a record's raw text is the probe's record alone."""
    return text == '"'


def strip_probe(text: str | None) -> str | None:
    """A record's raw text as the file holds it, without the probe that closed its quote."""
    if text is not None and text.endswith(EOF_PROBE_TEXT):
        return text[:-len(EOF_PROBE_TEXT)]
    return text


def opening_quote(record: str) -> int | None:
    """Offset in a record's text of the quote that opens a field never closed, or None.

    RFC 4180 as pyarrow and Python's csv module read it: a quote opens a field only at its start;
    inside, a doubled quote is one quote; after the closing quote the field goes on unquoted.
    """
    pos, end = 0, len(record)
    while pos < end:
        if record[pos] == '"':  # a quoted field starts here
            opened = pos
            pos += 1
            while True:
                close = record.find('"', pos)
                if close < 0:
                    return opened
                if record.startswith('""', close):
                    pos = close + 2
                    continue
                pos = close + 1
                break
        # The (rest of the) field runs to the next separator or line end.
        stops = [i for i in (record.find(",", pos), record.find("\n", pos),
                             record.find("\r", pos)) if i >= 0]
        if not stops:
            return None
        pos = min(stops) + 1
    return None


def unterminated_reason(record: str, first_line: int) -> str:
    """The reason for a row whose quote is never closed, naming the line the quote opened on."""
    opened = opening_quote(record)
    if opened is None:
        return UNTERMINATED
    return f"{UNTERMINATED} opened on line {first_line + record.count(chr(10), 0, opened)}"
