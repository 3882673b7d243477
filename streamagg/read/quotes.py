"""A file that ends inside a quoted field: the probe that tells, and where the quote opened."""

from __future__ import annotations

import re

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


# One field's quoted opening, whole (a doubled quote inside is one quote), the unquoted rest of a
# field up to a separator or a line end, and the rest of a quoted field left open on an earlier
# line. Possessive: no backtracking state, so a field of megabytes costs one pass, no memory.
_QUOTED = re.compile(r'"[^"]*+(?:""[^"]*+)*+"')
_UNQUOTED = re.compile(r"[^,\r\n]*+")
_IN_QUOTES = re.compile(r'[^"]*+(?:""[^"]*+)*+')


class FieldCounter:
    """Counts the fields of one record fed line by line, as the parsers split it, without
    making them: for records too wide to split into Python strings within the memory limit.

    Separators are counted in C (``str.count``); Python steps only over quoted fields, since
    a quote opens one only at a field's start (right after a separator).
    """

    def __init__(self, limit: int | None = None) -> None:
        self.fields = 1
        self.in_quotes = False
        self.ended = False
        self.limit = limit  # stop counting past this many fields: the caller refuses them

    @property
    def over(self) -> bool:
        return self.limit is not None and self.fields > self.limit

    def feed(self, line: str) -> None:
        """One more physical line of the record (its line end, if any, is its last character:
        a record ends at the end of a line outside quotes)."""
        pos, at_start = 0, self.fields == 1 and not self.in_quotes
        if self.in_quotes:
            pos = _IN_QUOTES.match(line).end()  # type: ignore[union-attr]  # always matches
            if pos == len(line):
                return  # the quoted field goes on, on the next line
            self.in_quotes, pos = False, pos + 1
        while True:
            if at_start and line.startswith('"', pos):
                quoted = _QUOTED.match(line, pos)
                if quoted is None:
                    self.in_quotes = True
                    return
                pos = quoted.end()
            opening = line.find(',"', pos)
            if opening < 0:
                self.fields += line.count(",", pos)
                break
            self.fields += line.count(",", pos, opening + 1)
            pos, at_start = opening + 1, True
            if self.over:
                return
        self.ended = True


def split_fields(record: str) -> list[str]:
    """The fields of one whole record (line end included), as csv.reader makes them.

    For records too long for csv.reader, which builds each field four bytes a character
    before it makes the string: here each field is sliced once.
    """
    fields = []
    pos, end = 0, len(record)
    while True:
        parts = []
        if record.startswith('"', pos):
            quoted = _QUOTED.match(record, pos)
            if quoted is None:  # open to the end of the file: the rest is the field
                fields.append(record[pos + 1:].replace('""', '"'))
                return fields
            parts.append(record[pos + 1:quoted.end() - 1].replace('""', '"'))
            pos = quoted.end()
        rest = _UNQUOTED.match(record, pos).end()  # type: ignore[union-attr]  # always matches
        parts.append(record[pos:rest])
        fields.append(parts[0] if len(parts) == 1 else "".join(parts))
        if rest == end or record[rest] != ",":
            return fields
        pos = rest + 1
