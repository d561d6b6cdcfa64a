"""canonical_email, table by table: the one form every identity comparison uses, and what it refuses."""

from __future__ import annotations

import pytest

from approvalbot.core.addresses import InvalidAddress, canonical_email, canonical_or_none
from approvalbot.core.errors import DomainError

SAME = [
    ("bob@example.com", "bob@example.com"),
    ("Bob@Example.COM", "bob@example.com"),
    ("bob@example.com.", "bob@example.com"),  # the DNS root dot
    ("  bob@example.com\n", "bob@example.com"),  # pasted
    ("\uff42\uff4f\uff42@example.com", "bob@example.com"),  # fullwidth letters fold to Bob
    ("bob@EXAMPLE.com.", "bob@example.com"),
    ("a.b+tag@sub.example.co.uk", "a.b+tag@sub.example.co.uk"),
    ("bob@b\u00fccher.de", "bob@xn--bcher-kva.de"),  # IDNA 2008 A-label
    ("bob@xn--bcher-kva.de", "bob@xn--bcher-kva.de"),  # already punycode: the same person
    ("bob@\u4f8b\u3048.jp", "bob@xn--r8jz45g.jp"),  # Han + Hiragana is one writing system
    ("bob@xn--80ak6aa92e.com", "bob@xn--80ak6aa92e.com"),  # all-Cyrillic label: one script
]


@pytest.mark.parametrize(("raw", "expected"), SAME, ids=[repr(r) for r, _ in SAME])
def test_canonical_forms(raw: str, expected: str) -> None:
    assert canonical_email(raw) == expected
    assert canonical_email(expected) == expected  # idempotent


REFUSED = [
    ("bob\u200b@example.com", "U+200B"),  # zero-width space
    ("bob\u200d@example.com", "U+200D"),  # zero-width joiner
    ("bob@example.com\u202e", "U+202E"),  # bidi override
    ("\u200fbob@example.com", "U+200F"),  # right-to-left mark
    ("bob\ufeff@example.com", "U+FEFF"),  # BOM
    ("bob\u0000@example.com", "NUL"),
    ("bob\u0007@example.com", "U+0007"),
    ("bob\u3164@example.com", "U+3164"),  # Hangul filler: a "letter" that renders as nothing
    ("bob\ufe0f@example.com", "U+FE0F"),  # variation selector
    ("bob @example.com", "whitespace"),
    ("bob\u00a0@example.com", "whitespace"),
    ('"bob"@example.com', "quoted"),
    ('"bob@evil"@example.com', "quoted"),
    ("bob@ex\u0430mple.com", "mixes scripts"),  # Cyrillic a in a Latin label
    ("bob@xn--exmple-4nf.com", "mixes scripts"),  # the same, as punycode
    ("bob@\u0440aypal.com", "mixes scripts"),
    ("b\u043eb@example.com", "mixes scripts"),  # Cyrillic o in the local part
    ("bob@g\u03bfogle.com", "mixes scripts"),  # Greek omicron
    ("bob", "exactly one @"),
    ("bob@alice@example.com", "exactly one @"),
    ("@example.com", "empty"),
    ("bob@", "two labels"),
    ("bob@localhost", "two labels"),
    ("bob@example..com", "IDNA"),
    ("bob@ex_ample.com", "IDNA"),
    ("bob@-example.com", "IDNA"),
    (".bob@example.com", "dot"),
    ("bob..smith@example.com", "dot"),
    ("bob<x>@example.com", "contains"),
    ("x" * 65 + "@example.com", "longer"),
    ("bob@" + "a" * 250 + ".com", "IDNA"),
]


@pytest.mark.parametrize(("raw", "why"), REFUSED, ids=[repr(r)[:40] for r, _ in REFUSED])
def test_refused_with_a_reason(raw: str, why: str) -> None:
    with pytest.raises(InvalidAddress) as refused:
        canonical_email(raw)
    assert refused.value.code == "invalid_address"
    assert why in refused.value.message
    assert canonical_or_none(raw) is None


@pytest.mark.parametrize("value", [None, 42, b"bob@example.com", ["bob@example.com"]])
def test_only_strings(value: object) -> None:
    with pytest.raises(InvalidAddress):
        canonical_email(value)


def test_the_error_is_a_domain_error_and_a_value_error() -> None:
    """DomainError for the API's 422 `invalid_address`; ValueError so pydantic validators use it as is."""
    assert issubclass(InvalidAddress, DomainError) and issubclass(InvalidAddress, ValueError)
