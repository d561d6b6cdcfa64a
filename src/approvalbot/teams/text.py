"""Text that came from agents or people, made safe to show in Teams, and command parsing.

Agent text is data. Cards put it only in `TextRun`s, which the Adaptive Card schema
defines as plain text (no markdown), and never next to mention entities (cards we
build have no `msteams.entities`, so no `<at>` can become a mention). On top of that
`inert` rewrites the characters that would start markup (`<`, `>`) or a template
expression (`{{`), so the text stays inert even in a client that mis-parses it.
`escape_markdown` is for the rare place where a markdown-rendering field must show
such text (plain chat replies).
"""

from __future__ import annotations

import html
import re
import unicodedata

# Look-alike replacements: the reader sees the same characters, no renderer sees markup.
_INERT = str.maketrans(
    {
        "<": "\uff1c",
        ">": "\uff1e",
        "\u202e": None,
        "\u202d": None,
        "\u2066": None,
        "\u2067": None,
        "\u2068": None,
        "\u2069": None,
    }
)
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>])")
_TAG = re.compile(r"<[^>]{0,200}>")
_SPACE = re.compile(r"\s+")


def inert(value: object, limit: int = 1000) -> str:
    """A printable, length-bounded, markup-free rendering of any value."""
    text = value if isinstance(value, str) else str(value)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co"))
    text = text.translate(_INERT).replace("{{", "{\u200b{")
    if len(text) > limit:
        text = text[: max(limit - 1, 0)] + "\u2026"
    return text


def escape_markdown(value: object, limit: int = 1000) -> str:
    """For markdown-rendering fields: backslash-escape every markdown character, after `inert`."""
    return _MARKDOWN.sub(r"\\\1", inert(value, limit))


def command_text(raw: str | None) -> str:
    """The words a user typed to the bot: @mentions (`<at>…</at>`), tags and entities removed."""
    if not raw:
        return ""
    text = re.sub(r"<at>.*?</at>", " ", raw, flags=re.IGNORECASE | re.DOTALL)
    text = _TAG.sub(" ", text)
    text = html.unescape(text).replace("\u00a0", " ")
    return _SPACE.sub(" ", text).strip()


def parse_command(raw: str | None) -> tuple[str, list[str]]:
    """("pending", []), ("approval", ["req_…"]), ("help", []) or ("unknown", [...])."""
    words = command_text(raw).split(" ")
    words = [w for w in words if w]
    if not words:
        return "help", []
    verb = words[0].lower().lstrip("/")
    if verb in ("pending", "queue"):
        return "pending", words[1:]
    if verb in ("approval", "request", "show"):
        return "approval", words[1:]
    if verb in ("help", "?"):
        return "help", []
    return "unknown", words
