"""The one canonical form of an email address, used for every identity comparison.

Owner, on_behalf_of, approvers, aliases and the `people` commands all pass through
`canonical_email`, so two spellings of one mailbox can never be two people and a
string that only *looks* like a known address is refused instead of trusted. An
attacker who controls a payload (an agent's `on_behalf_of`) must not be able to
name a person in a way that a human reads as Bob while the rules see someone else.

The canonical form is: NFKC-folded, lower case, domain as IDNA 2008 A-labels
(punycode, via the `idna` package with UTS #46 mapping), without a trailing dot.
Refused: control, format (zero-width, bidi marks), private-use, unassigned and
other invisible characters, whitespace anywhere inside, quoted local parts, and
labels that mix scripts (Latin with Cyrillic or Greek, say), which is how
look-alike domains are made.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

import idna

from approvalbot.core.errors import DomainError

__all__ = ["MAX_ADDRESS", "InvalidAddress", "canonical_email", "canonical_or_none"]

MAX_ADDRESS = 254
MAX_LOCAL = 64
_OUTER_SPACE = " \t\r\n"
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"}
# Characters that render as nothing (or as blank) although their category says "letter" or "mark".
_INVISIBLE = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0, *range(0x180B, 0x1810)}
_INVISIBLE_RANGES = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF))  # variation selectors
_LOCAL_SPECIALS = set('"()<>[]\\,;:@|`')
# Script mixes that real names use (UTS #39 "highly restrictive"); any other mix is a look-alike risk.
_ALLOWED_MIXES = (
    frozenset({"LATIN", "CJK", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "CJK", "BOPOMOFO"}),
    frozenset({"LATIN", "CJK", "HANGUL"}),
)
_SCRIPT_ALIASES = {"KATAKANA-HIRAGANA": "KATAKANA", "IDEOGRAPHIC": "CJK"}


class InvalidAddress(DomainError, ValueError):
    """Not an address this service accepts; the message says which rule it broke (never echoing it)."""

    code = "invalid_address"


def _refuse(reason: str) -> InvalidAddress:
    return InvalidAddress(f"not an acceptable email address: {reason}")


def _invisible(cp: int) -> bool:
    return cp in _INVISIBLE or any(lo <= cp <= hi for lo, hi in _INVISIBLE_RANGES)


def _check_characters(value: str) -> None:
    for ch in value:
        cp = ord(ch)
        category = unicodedata.category(ch)
        if cp == 0:
            raise _refuse("it contains a NUL character")
        if category in {"Zs", "Zl", "Zp"} or ch.isspace():
            raise _refuse(f"it contains whitespace (U+{cp:04X})")
        if category in _REFUSED_CATEGORIES or _invisible(cp):
            what = unicodedata.name(ch, "an unassigned or invisible character")
            raise _refuse(f"it contains U+{cp:04X} ({what}), a control, format or invisible character")


def _script(ch: str) -> str | None:
    """The script of a letter by its Unicode name's first word; None for digits, marks and punctuation."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    if not name:
        return "UNKNOWN"
    if name.startswith("CJK "):
        return "CJK"
    first = name.split(" ", 1)[0]
    return _SCRIPT_ALIASES.get(first, first)


def _check_single_script(text: str, where: str) -> None:
    scripts = {s for s in map(_script, text) if s is not None}
    if len(scripts) <= 1 or any(scripts <= mix for mix in _ALLOWED_MIXES):
        return
    raise _refuse(f"the {where} mixes scripts ({', '.join(sorted(scripts))}), as look-alike addresses do")


def _canonical_local(local: str) -> str:
    if not local:
        raise _refuse("the part before @ is empty")
    if '"' in local:
        raise _refuse("quoted local parts are not accepted")
    bad = sorted(set(local) & _LOCAL_SPECIALS)
    if bad:
        raise _refuse(f"the part before @ contains {''.join(bad)!r}")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise _refuse("the part before @ has a leading, trailing or doubled dot")
    if len(local.encode()) > MAX_LOCAL:
        raise _refuse(f"the part before @ is longer than {MAX_LOCAL} bytes")
    _check_single_script(local, "part before @")
    return local.lower()


def _canonical_domain(domain: str) -> str:
    if domain.endswith("."):
        domain = domain[:-1]  # the DNS root: "example.com." is example.com
    if not domain or "." not in domain:
        raise _refuse("the domain needs at least two labels")
    try:
        ascii_form = idna.encode(domain, uts46=True, std3_rules=True, transitional=False).decode("ascii")
        unicode_form = idna.decode(ascii_form)
    except (idna.IDNAError, UnicodeError):
        raise _refuse("the domain is not a valid (IDNA 2008) domain name") from None
    for label in unicode_form.split("."):
        _check_single_script(label, f"domain label {label.encode('ascii', 'backslashreplace').decode()!r}")
    return ascii_form.lower()


def canonical_email(value: object) -> str:
    """The canonical form of an address, or InvalidAddress (code `invalid_address`) saying why not.

    Surrounding spaces and newlines are dropped (a pasted address); anything else
    that is not visibly part of the address is refused rather than removed, so
    what a person reads on a card is exactly what the rules compared.
    """
    if not isinstance(value, str):
        raise _refuse("it is not a string")
    value = value.strip(_OUTER_SPACE)
    if len(value) > MAX_ADDRESS * 2:
        raise _refuse(f"it is longer than {MAX_ADDRESS} characters")
    address, refusal = _canonical(value)
    if address is None:
        raise InvalidAddress(refusal)
    return address


@lru_cache(maxsize=4096)
def _canonical(value: str) -> tuple[str | None, str]:
    """(address, "") or (None, the refusal's message), remembered: the IDNA and script checks cost
    about 70 us an address, and the rules compare the same few addresses on every decision and on
    every row of an approver's list. A pure function of the string, so remembering changes nothing."""
    try:
        return _canonical_uncached(value), ""
    except InvalidAddress as refused:
        return None, str(refused)


def _canonical_uncached(value: str) -> str:
    _check_characters(value)
    value = unicodedata.normalize("NFKC", value)
    _check_characters(value)  # NFKC can compose to new code points; check what we keep
    if value.count("@") != 1:
        if value.startswith('"') or '"' in value:
            raise _refuse("quoted local parts are not accepted")
        raise _refuse("it must contain exactly one @")
    local, domain = value.split("@")
    address = f"{_canonical_local(local)}@{_canonical_domain(domain)}"
    if len(address) > MAX_ADDRESS:
        raise _refuse(f"it is longer than {MAX_ADDRESS} characters")
    return address


def canonical_or_none(value: object) -> str | None:
    """For lookups of addresses from outside (a chat profile): unacceptable means unknown."""
    try:
        return canonical_email(value)
    except InvalidAddress:
        return None
