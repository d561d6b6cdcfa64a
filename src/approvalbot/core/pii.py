"""Personal-data detectors: e-mail addresses, phone numbers, payment cards and IBANs in text.

Each detector errs on the side of what a reviewer must still be able to read: commit SHAs, UUIDs,
timestamps, dates, ids and amounts must stay visible, so every numeric detector has a validity
check (Luhn, mod-97) or a shape it insists on (a leading `+` or trunk `0` for phones). The price
is a known set of misses, listed in docs/data-protection.md; the policy's `sensitive:` paths are
the guarantee, detectors are the safety net.

Each match comes with a normalised form for fingerprints, so two spellings of one value (an
address in capitals, a card with or without spaces) get the same fingerprint.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from typing import NamedTuple

from approvalbot.core.addresses import MAX_LOCAL
from approvalbot.core.models import PiiKind

__all__ = ["DETECTORS", "PiiMatch", "card_number", "find_pii", "iban_valid", "luhn_valid"]


class PiiMatch(NamedTuple):
    start: int
    end: int
    kind: PiiKind
    normal: str  # what the fingerprint is taken of


# --- e-mail -------------------------------------------------------------------------------------

# Wider than canonical_email accepts on purpose: an address the identity rules would refuse
# (mixed scripts, say) is still somebody's address and must be masked. Narrower in one way: the
# URL delimiters / = ? & # (legal but rare in a local part) end it, so `s3://x/bob@example.com`
# and `?email=bob@example.com` mask only the address.
_EMAIL = re.compile(
    r"[\w.!$%'*+^{}~-]{1," + str(MAX_LOCAL) + r"}@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}(?![\w-])"
)


def _emails(text: str) -> Iterator[PiiMatch]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        value = m.group()
        # Not canonical_email: its IDNA check costs ~0.1 ms an address, most of a request's masking.
        yield PiiMatch(m.start(), m.end(), "email", unicodedata.normalize("NFKC", value).lower())


# --- payment cards ------------------------------------------------------------------------------

# Runs of digits joined by single spaces or dashes, not glued to words, decimals or other numbers
# (a path or a sentence may hold one: "s3://x/4111 1111 1111 1111/", "... 4111111111111111.").
_DIGIT_RUN = re.compile(r"(?<![\w+])(?<!\d[.,-])\d+(?:[ -]\d+)*(?!\w|[.,-]\d)")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_number(digits: str) -> bool:
    """13-19 digits, a major-network first digit (2-6), valid Luhn, not one digit repeated.

    Issuer prefixes 1 (UATP), 7-9 and 0 are not cards here: ids and millisecond timestamps
    (17...) start with them far more often than a card does.
    """
    return (
        13 <= len(digits) <= 19
        and digits[0] in "23456"
        and len(set(digits)) > 1
        and digits.isdigit()
        and luhn_valid(digits)
    )


def _cards(text: str) -> Iterator[PiiMatch]:
    for m in _DIGIT_RUN.finditer(text):
        # A run may hold a card and something next to it ("4111 1111 1111 1111 2025"): try the
        # whole run, then every window of its space-separated groups, longest first.
        groups = [(g.start(), g.end()) for g in re.finditer(r"\d+(?:-\d+)*", m.group())]
        windows = sorted(
            ((i, j) for i in range(len(groups)) for j in range(i + 1, len(groups) + 1)),
            key=lambda w: w[0] - w[1],
        )
        for i, j in windows:
            start, end = m.start() + groups[i][0], m.start() + groups[j - 1][1]
            digits = re.sub(r"\D", "", text[start:end])
            if card_number(digits):
                yield PiiMatch(start, end, "card", digits)
                break


# --- IBAN ---------------------------------------------------------------------------------------

# ISO 13616 lengths per country; a country not listed is not an IBAN here.
_IBAN_LENGTHS = {
    **dict.fromkeys(["NO"], 15),
    **dict.fromkeys(["BE"], 16),
    **dict.fromkeys(["DK", "FI", "FO", "GL", "NL"], 18),
    **dict.fromkeys(["MK", "SI"], 19),
    **dict.fromkeys(["AT", "BA", "EE", "KZ", "LT", "LU", "XK"], 20),
    **dict.fromkeys(["CH", "HR", "LI", "LV"], 21),
    **dict.fromkeys(["BG", "BH", "CR", "DE", "GB", "GE", "IE", "ME", "RS", "VA"], 22),
    **dict.fromkeys(["AE", "GI", "IL", "IQ", "TL"], 23),
    **dict.fromkeys(["AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"], 24),
    **dict.fromkeys(["PT", "ST"], 25),
    **dict.fromkeys(["IS", "TR"], 26),
    **dict.fromkeys(["FR", "GR", "IT", "MC", "MR", "SM"], 27),
    **dict.fromkeys(["AL", "AZ", "BY", "CY", "DO", "GT", "HU", "LB", "PL", "SV"], 28),
    **dict.fromkeys(["BR", "EG", "PS", "QA", "UA"], 29),
    **dict.fromkeys(["JO", "KW", "MU"], 30),
    **dict.fromkeys(["MT", "SC"], 31),
    **dict.fromkeys(["LC"], 32),
}
# Printed (groups of four) or electronic form, upper case as the standard writes it.
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2})\d{2}(?: ?[A-Z0-9]){11,30}")


def iban_valid(iban: str) -> bool:
    """Known country, its length, and the ISO 7064 mod-97 check (remainder 1)."""
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _ibans(text: str) -> Iterator[PiiMatch]:
    for m in _IBAN_START.finditer(text):
        length = _IBAN_LENGTHS.get(m.group(1))
        if length is None:
            continue
        # Take exactly the country's number of characters, so a following word is never eaten.
        chars, end = [], m.start()
        for end in range(m.start(), m.end()):
            if text[end] != " ":
                chars.append(text[end])
            if len(chars) == length:
                break
        end += 1
        if len(chars) == length and not (end < len(text) and text[end].isalnum()) and iban_valid("".join(chars)):
            yield PiiMatch(m.start(), end, "iban", "".join(chars))


# --- phone numbers ------------------------------------------------------------------------------

# International: a leading + and 8-15 digits (E.164's maximum) in groups.
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .\-/]?\(?\d{1,5}\)?){2,7}(?!\w|[.\-/]\d)")
# North American: area code and exchange, separators required: (415) 555-2671, 415-555-2671, 415.555.2671.
_PHONE_NANP = re.compile(r"(?<![\w+.\-])(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[.\- ])\d{3}[.\- ]\d{4}(?!\w|[.\-]\d)")
# National with a trunk 0 (Europe and most of the world): 030 1234567, 0151-12345678, 06 12 34 56 78.
_PHONE_TRUNK = re.compile(r"(?<![\w+.\-])0[1-9]\d{0,4}(?:[ /\-]?\d{2,8}){1,4}(?!\w|[.\-/]\d)")
# 01/15/2024, 01-02-2024: a date with a trunk-0-like start is not a phone number.
_DATE = re.compile(r"\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}")
_PHONE_DIGITS = ((_PHONE_INTL, 8, 15), (_PHONE_NANP, 10, 10), (_PHONE_TRUNK, 9, 12))


def _phones(text: str) -> Iterator[PiiMatch]:
    for pattern, low, high in _PHONE_DIGITS:
        for m in pattern.finditer(text):
            digits = re.sub(r"\D", "", m.group())
            if low <= len(digits) <= high and not _DATE.search(m.group()):
                yield PiiMatch(m.start(), m.end(), "phone", ("+" if m.group()[0] == "+" else "") + digits)


DETECTORS: dict[PiiKind, Callable[[str], Iterator[PiiMatch]]] = {
    "email": _emails,
    "card": _cards,
    "iban": _ibans,
    "phone": _phones,
}
_NEEDS_DIGITS = frozenset({"card", "iban", "phone"})
_EIGHT_DIGITS = re.compile(r"(?:\D*\d){8}")  # every numeric detector needs at least 8 digits


def find_pii(text: str, kinds: tuple[PiiKind, ...]) -> list[PiiMatch]:
    """Every match of the enabled detectors in `text` (spans may overlap; the caller merges)."""
    many_digits = _EIGHT_DIGITS.match(text) is not None
    found: list[PiiMatch] = []
    for kind in kinds:
        if kind in _NEEDS_DIGITS and not many_digits:
            continue
        found.extend(DETECTORS[kind](text))
    return found
