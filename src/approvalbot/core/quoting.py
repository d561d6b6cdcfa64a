"""Multi-line text that people and agents write (reasons, justifications), shown as a quoted block.

Chat threads, the `/approval` listing and the CSV export show one record per
line. A reason with line breaks could otherwise start a line of its own that
reads like a record ("#13 a1b2c3 Approved by alice"). The rule everywhere: text
on one line is shown as it is; text with line breaks keeps them only inside a
quoted block, where every line starts with the quote marker, so no line of it
can pass for a line of ours.
"""

from __future__ import annotations

import re

__all__ = ["QUOTE", "is_multiline", "quoted", "text_lines"]

QUOTE = "> "
# Everything a renderer might break a line at: CR/LF, vertical tab, form feed, the file/group/record
# separators, NEL and the Unicode line and paragraph separators.
_BREAK = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def text_lines(text: str) -> list[str]:
    return _BREAK.split(text)


def is_multiline(text: str) -> bool:
    return _BREAK.search(text) is not None


def quoted(text: str, marker: str = QUOTE) -> str:
    """Every line prefixed with `marker`, joined with plain newlines."""
    return "\n".join(marker + line for line in text_lines(text))
