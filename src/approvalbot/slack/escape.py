"""Showing untrusted text in Slack as data, never as markup.

Agents write resources, parameters, justifications and context; humans write
reasons. None of it may mention (`<!channel>`, `<@U...>`), link (`<http...|...>`)
or format (`*bold*`, `> quote`) in our messages. Slack decodes only three HTML
entities, so escaping `&`, `<` and `>` turns every `<...>` control sequence into
visible text. In mrkdwn, formatting characters are additionally fenced with
zero-width spaces so they cannot pair up, and line-leading quotes are broken.
Wherever the layout allows, untrusted text goes into `plain_text` objects,
which Slack never formats; escaping is applied there too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

ZWSP = "\u200b"
_FORMATTING = re.compile(r"([*_~`|])")
_LINE_QUOTE = re.compile(r"(?m)^(\s*)(&gt;)")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
USER_ID_RE = re.compile(r"^[UW][A-Z0-9]{2,30}$")


def escape(text: str) -> str:
    """Slack's own rule: only these three characters are entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, saying how much was cut."""
    text = CONTROL.sub("", text)
    if len(text) <= limit:
        return text
    note = f"... (+{len(text) - limit} chars)"
    return text[: max(limit - len(note), 1)] + note


def _fit(text: str, limit: int, render: Callable[[str], str]) -> str:
    """Clip the raw text so that its rendered (escaped) form fits in `limit`."""
    budget = limit
    while True:
        out = render(clip(text, budget))
        if len(out) <= limit or budget <= 20:
            return out[:limit]
        budget = max(int(budget * limit / len(out)) - 1, 20)


def plain(text: str | None, limit: int = 2000, empty: str = "-") -> str:
    """For a plain_text object: escaped, clipped, never empty (Slack rejects empty text)."""
    if text is None or not str(text).strip():
        return empty
    return _fit(str(text), limit, escape)


def _neutralise(text: str) -> str:
    out = _FORMATTING.sub(ZWSP + r"\1" + ZWSP, escape(text))
    return _LINE_QUOTE.sub(r"\1" + ZWSP + r"\2", out)


def mrkdwn(text: str | None, limit: int = 2000, empty: str = "-") -> str:
    """For untrusted text inside a mrkdwn object: no mention, link or formatting survives."""
    if text is None or not str(text).strip():
        return empty
    return _fit(str(text), limit, _neutralise)


def code(value: object, limit: int = 80) -> str:
    """An identifier-like value (error code, step) as inline code; other characters are dropped."""
    text = re.sub(r"[^A-Za-z0-9_.:\-]", "", str(value))[:limit]
    return f"`{text}`" if text else "`?`"


def mention(user_id: str | None) -> str | None:
    """A user mention, only for ids Slack itself gave us (checked, never from agent text)."""
    if user_id and USER_ID_RE.match(user_id):
        return f"<@{user_id}>"
    return None


def slack_date(epoch: float, fallback: str) -> str:
    """Slack renders this in each reader's time zone; we build it, so it is safe."""
    return f"<!date^{int(epoch)}^{{date_short_pretty}} {{time}}|{escape(fallback)}>"


def fold_value(value: Any, limit: int = 300) -> str:
    """One parameter value on one readable line, long values folded."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return clip(" ".join(text.split()) if "\n" in text or "\r" in text else text, limit)


def fold_params(params: dict[str, Any], limit: int = 2800, max_keys: int = 30) -> str:
    """`key = value` lines for a plain_text block; long values and long lists folded."""
    if not params:
        return "(none)"
    lines = []
    for i, key in enumerate(sorted(params)):
        if i == max_keys:
            lines.append(f"... and {len(params) - max_keys} more parameters")
            break
        lines.append(f"{fold_value(str(key), 80)} = {fold_value(params[key])}")
    return clip("\n".join(lines), limit)
