"""Credential detection: the one adapter between the masking core and Yelp's `detect-secrets`.

Only this module names `detect_secrets`, so replacing the library means rewriting this file and
nothing else. It answers one question, `find_secrets(text)`: where in this string are
credentials, and of what kind.

How the library is used, and why:

* Plugin instances are built once, at import. We call only `analyze_string` (regex plugins) and
  `calculate_shannon_entropy`, which read nothing but the instance's constant patterns. We never
  call `analyze_line`/`scan_line`: those consult the library's process-wide settings (and may try
  to *verify* a secret over the network), and the high-entropy plugins swap their regex in place
  there, which is not thread-safe. So no global state is read or written here.
* Only plugins whose patterns carry a distinctive prefix or structure are enabled (AWS, GitHub,
  GitLab, Slack, Stripe, OpenAI, JWT, ...). The keyword plugin is not used on free text: it is
  written for source code and reads "password: reset tomorrow" as a password. Its keyword list is
  used instead to recognise credential-like *parameter names* (`credential_key`).
* High entropy: base64-ish runs of 20+ characters above detect-secrets' default limit (4.5 bits).
  Hex-only strings are never flagged (a hex string cannot exceed 4 bits per character), on
  purpose: commit SHAs, digests and UUIDs are what reviewers need to read. A secret that is pure
  hex is therefore missed unless the policy marks its field `sensitive`.
* The library imports `requests` at import time (for its optional verification feature, which we
  never call). It performs no I/O on import and none through the calls above.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import NamedTuple

from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.keyword import DENYLIST as _CREDENTIAL_WORDS
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

__all__ = ["Found", "credential_key", "find_secrets"]


class Found(NamedTuple):
    """A detected value: its span in the scanned text and a short human kind ("aws key")."""

    start: int
    end: int
    kind: str


# Kind shown on the mask, per plugin. Ordered: when two overlap, the earlier one names the span.
_REGEX_PLUGINS: tuple[tuple[RegexBasedDetector, str], ...] = (
    (AWSKeyDetector(), "aws key"),  # its second pattern captures the secret after `aws...key = `
    (GitHubTokenDetector(), "github token"),
    (GitLabTokenDetector(), "gitlab token"),
    (SlackDetector(), "slack token"),
    (StripeDetector(), "stripe key"),
    (OpenAIDetector(), "openai key"),
    (PypiTokenDetector(), "pypi token"),
    (SendGridDetector(), "sendgrid key"),
    (TwilioKeyDetector(), "twilio key"),
    (AzureStorageKeyDetector(), "azure storage key"),
    (SquareOAuthDetector(), "square secret"),
    (MailchimpDetector(), "mailchimp key"),
    (DiscordBotTokenDetector(), "discord token"),
    (TelegramBotTokenDetector(), "telegram token"),
    (JwtTokenDetector(), "jwt"),
    (BasicAuthDetector(), "password in url"),  # captures only the password: the host stays readable
)
_JWT = _REGEX_PLUGINS[-2][0]
assert isinstance(_JWT, JwtTokenDetector)
_PRIVATE_KEY = PrivateKeyDetector()
_ENTROPY = Base64HighEntropyString()  # default limit 4.5 bits per character
_ENTROPY_MIN_LENGTH = 20
_JWT_TAIL = re.compile(r"[A-Za-z0-9\-_.+/=]*")
_GROUP_MIN = 4  # a shorter group is a prefix alternative (ghp|gho|...), not the secret
_ENTROPY_MIN_DISTINCT = int(2**_ENTROPY.entropy_limit)
_ENTROPY_RUN = re.compile(r"[A-Za-z0-9+/=_\-]{" + str(_ENTROPY_MIN_LENGTH) + ",}")


def _prefilter() -> re.Pattern[str]:
    """All plugin patterns as one alternation: one C-level scan decides if any plugin can match.

    Most strings in a request contain no credential; this keeps them at one regex search
    instead of one per plugin. The plugins themselves still decide what matches.
    """
    parts = []
    for plugin, _ in (*_REGEX_PLUGINS, (_PRIVATE_KEY, "")):
        for pattern in plugin.denylist:
            flags = "(?i:" if pattern.flags & re.IGNORECASE else "(?:"
            parts.append(flags + pattern.pattern + ")")
    return re.compile("|".join(parts))


_ANY_PLUGIN = _prefilter()
# A PEM block from its BEGIN line to its END line (or to the end of the text when it is cut off).
_PEM_BLOCK = re.compile(r"(?:-----)?BEGIN [A-Z0-9 ]*PRIVATE KEY[^\n]*.*?(?:-----END [A-Z0-9 ]*-----|\Z)", re.DOTALL)
_PUTTY_KEY = re.compile(r"PuTTY-User-Key-File-2.*", re.DOTALL)
_CREDENTIAL_NAME = re.compile("|".join(_CREDENTIAL_WORDS), re.IGNORECASE)


@lru_cache(maxsize=4096)  # names, never values: requests from one agent repeat the same few keys
def credential_key(name: str) -> bool:
    """Whether a parameter name says its value is a credential (`password`, `db_pass`, `api_key`).

    Uses detect-secrets' keyword list, matched anywhere in the name, case-insensitively. It
    has no `token` (too many `max_tokens`); tokens are left to the pattern detectors.
    """
    return _CREDENTIAL_NAME.search(name) is not None


def _spans(plugin: RegexBasedDetector, text: str) -> Iterator[tuple[int, int]]:
    """Where the plugin's patterns match, as `analyze_string` would report them, with positions.

    `analyze_string` yields only the text of a match, and for a pattern with a group only the
    group (GitHub's yields "ghp"), so the spans are taken from the plugin's own patterns here:
    a group's span when it is the secret (AWS secret keys, basic-auth passwords), else the match.
    """
    for pattern in plugin.denylist:
        for m in pattern.finditer(text):
            group = m.group(1) if m.lastindex else None
            start, end = m.span(1) if group and len(group) >= _GROUP_MIN else m.span()
            if plugin is _JWT:
                if not JwtTokenDetector.is_formally_valid(text[start:end]):
                    continue
                # Its pattern ends lazily, before the signature; the signature is part of the token.
                end = _JWT_TAIL.match(text, end).end()  # type: ignore[union-attr]  # matches the empty string
            yield start, end


def find_secrets(text: str) -> list[Found]:
    """Every credential found in `text`, as spans (possibly overlapping; the caller merges)."""
    found: list[Found] = []
    if _ANY_PLUGIN.search(text):
        for plugin, kind in _REGEX_PLUGINS:
            found.extend(Found(a, b, kind) for a, b in _spans(plugin, text))
        if any(True for _ in _PRIVATE_KEY.analyze_string(text)):
            blocks = [Found(m.start(), m.end(), "private key") for m in _PEM_BLOCK.finditer(text)]
            blocks += [Found(m.start(), m.end(), "private key") for m in _PUTTY_KEY.finditer(text)]
            found.extend(blocks or [Found(0, len(text), "private key")])  # a header we can't delimit: all of it
    for m in _ENTROPY_RUN.finditer(text):
        token = m.group()
        # Entropy is at most log2(distinct characters): fewer than 2**limit can't pass, and the
        # library's per-charset loop is the costliest step of masking, so skip it when it can't.
        if (
            len(set(token)) > _ENTROPY_MIN_DISTINCT
            and _ENTROPY.calculate_shannon_entropy(token) > _ENTROPY.entropy_limit
        ):
            found.append(Found(m.start(), m.end(), "high-entropy string"))
    return found
