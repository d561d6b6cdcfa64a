"""Tests for approvalbot.core.masking: detectors (with their known misses), policy paths, fingerprints.

Pure: no Redis. Every detector case is a row `(text, kind or None)`: the kind the text must be
masked as, or None where it must stay readable.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from approvalbot.core.machine import forget_params
from approvalbot.core.masking import ensure_masked, fingerprint, is_masked, mask_request, mask_text, raw_values
from approvalbot.core.models import WITHHELD, Detect, Status
from tests.core.factories import request

KEY = b"test-fingerprint-key"
AWS = "AKIAIOSFODNN7EXAMPLE"
GITHUB = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5"
SLACK = "xoxb-123456789012-1234567890123-abcdefghijklmnop"
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq\nq2Fz9w==\n-----END RSA PRIVATE KEY-----"
RANDOM = "q8Zr2LmX9vT4pK7wN1yB6cF3hJ5dS0gA"  # 32 base64-ish characters, entropy well above 4.5


def masked_kinds(text: str, **detect: Any) -> list[str | None]:
    out = mask_request(params={"v": text}, detect=Detect(**detect), key=KEY)
    return [item.kind for item in out.items]


# --- detectors ---------------------------------------------------------------------------------

SECRETS = [
    (f"rotate {AWS} now", "aws key"),
    ('aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"', "aws key"),
    (GITHUB, "github token"),
    (SLACK, "slack token"),
    ("https://hooks.slack.com/services/T000AAAA/B000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX", "slack token"),
    (f"Authorization: Bearer {JWT}", "jwt"),
    (PEM, "private key"),
    ("key: -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA (cut off", "private key"),
    ("postgres://app:Sup3rS3cret@db.internal:5432/app", "password in url"),
    ("sk_live_" + "51HCyQ2KZ8vJ3mN4pQ7rT9wX", "stripe key"),
    (f"token={RANDOM}", "high-entropy string"),
    # negatives: what reviewers need to read
    ("da39a3ee5e6b4b0d3255bfef95601890afd80709", None),  # a git SHA (hex never counts as high entropy)
    ("550e8400-e29b-41d4-a716-446655440000", None),  # a UUID
    ("analytics/customers_eu/churn_2024_q3/part-00001", None),  # a path
    ("projects/my-project/locations/europe-west1/services", None),
    ("arn:aws:iam::123456789012:role/DeployBotRole", None),
    ("password: reset requested by the user", None),  # the keyword plugin is not used on free text
    ("eyJhbGciOi.not-a-jwt", None),  # JWT-shaped but not valid base64 JSON
    ("https://ci.example.com/run/77", None),
]

PII = [
    ("contact bob@example.com today", "email"),
    ("Bob.Smith+orders@Sub.Example.CO.UK", "email"),
    ("josé@exämple.de", "email"),  # non-ASCII addresses are addresses too
    ("card 4111 1111 1111 1111 exp 12/27", "card"),
    ("4111-1111-1111-1111", "card"),
    ("5500000000000004", "card"),
    ("amex 378282246310005", "card"),
    ("4111 1111 1111 1111 2025", "card"),  # a card followed by another number
    ("IBAN DE89 3704 0044 0532 0130 00 please", "iban"),
    ("GB82WEST12345698765432", "iban"),
    ("FR1420041010050500013M02606", "iban"),
    ("call +49 151 12345678", "phone"),
    ("+1 (415) 555-2671", "phone"),
    ("+442071838750", "phone"),
    ("(415) 555-2671", "phone"),
    ("415.555.2671", "phone"),
    ("030 1234567", "phone"),
    ("0151-12345678", "phone"),
    ("06 12 34 56 78", "phone"),
    # negatives
    ("user@localhost", None),  # no top-level domain
    ("4111 1111 1111 1112", None),  # Luhn-invalid
    ("0000000000000000", None),  # Luhn-valid, one repeated digit
    ("1700000000000", None),  # a millisecond timestamp (13 digits, starts with 1)
    ("1700000000", None),  # a Unix timestamp
    ("GB82WEST12345698765431", None),  # mod-97 invalid
    ("XX89370400440532013000", None),  # not a country
    ("2024-01-15T12:30:45.123456Z", None),
    ("2025-01-01T12:00:00+01:00", None),
    ("15/01/2024 10:00", None),
    ("01/15/2024 1030", None),
    ("01-02-2024 12:00", None),
    ("10.0.0.1", None),
    ("order 0012345678", None),  # a zero-padded id
    ("12345678901", None),  # digits without + or trunk 0
    ("version 1.2.3, build 4567890", None),
    ("amount 1,234,567.89", None),
    ("550e8400-e29b-41d4-a716-446655440000", None),
    ("da39a3ee5e6b4b0d3255bfef95601890afd80709", None),
]

# Known misses and false alarms, kept as tests so a change in either direction is noticed.
KNOWN_LIMITS = [
    ("DE89 3704 0044 0532 0130 01", "card", "an invalid IBAN in groups of four can hold a Luhn-valid card"),
    ("0612345678", "phone", "a zero-padded 10-digit id is read as a national phone number"),
    ("4000000000000002", "card", "any Luhn-valid 13-19 digit number starting 2-6 is read as a card"),
    ("1234567", None, "a phone number without + or trunk 0 (a local 7-digit number) is missed"),
    ("de89370400440532013000", None, "a lower-case IBAN is missed"),
    ("my password is hunter2", None, "a password in prose is missed (no pattern, low entropy)"),
    ("a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6", None, "a hex-only API key is missed (like a digest)"),
]


@pytest.mark.parametrize(("text", "kind"), SECRETS)
def test_secret_detectors(text: str, kind: str | None) -> None:
    assert masked_kinds(text) == ([kind] if kind else [])
    assert masked_kinds(text, secrets=False, pii=[]) == []


@pytest.mark.parametrize(("text", "kind"), PII)
def test_pii_detectors(text: str, kind: str | None) -> None:
    assert masked_kinds(text, secrets=False) == ([kind] if kind else [])


@pytest.mark.parametrize(("text", "kind", "why"), KNOWN_LIMITS)
def test_known_limits(text: str, kind: str | None, why: str) -> None:
    assert masked_kinds(text) == ([kind] if kind else []), why


@pytest.mark.parametrize("kind", ["email", "card", "iban", "phone"])
def test_each_pii_detector_can_be_switched_off(kind: str) -> None:
    samples = {"email": "bob@example.com", "card": "4111111111111111", "iban": "GB82WEST12345698765432"}
    text = samples.get(kind, "+49 151 12345678")
    others = [k for k in ("email", "card", "iban", "phone") if k != kind]
    assert masked_kinds(text, secrets=False, pii=[kind]) == [kind]
    assert masked_kinds(text, secrets=False, pii=others) == []


def test_only_the_matching_part_of_free_text_is_masked() -> None:
    out = mask_request(params={}, justification=f"rotate {AWS} now", key=KEY)
    assert out.justification == f"rotate [secret · aws key · 20 chars · {fingerprint(KEY, AWS)}] now"
    assert out.items[0].path == "justification" and not out.items[0].whole


def test_resource_and_context_values_are_scanned() -> None:
    out = mask_request(
        params={},
        context={"requested_by": "bob@example.com", "run_url": "https://ci.example.com/run/77"},
        resource="s3://exports/alice@example.com/report.csv",
        key=KEY,
    )
    assert out.context["run_url"] == "https://ci.example.com/run/77"
    assert out.context["requested_by"].startswith("[personal · email · 15 chars · ")
    assert out.resource is not None and out.resource.startswith("s3://exports/[personal · email")
    assert out.paths == ["context.requested_by", "resource"]


def test_a_pem_block_is_masked_from_begin_to_end() -> None:
    out = mask_text(f"install this:\n{PEM}\nthen restart", key=KEY)
    assert out.startswith("install this:\n[secret · private key · ") and out.endswith("]\nthen restart")
    assert "MIIE" not in out


def test_overlapping_finds_become_one_mask() -> None:
    # The basic-auth password is also the local part of something that looks like an address.
    out = mask_text("https://admin:s3cr3tpass@db.example.com/x", key=KEY)
    assert out.startswith("https://admin:[secret · password in url · ") and out.endswith("]/x")
    assert "s3cr3tpass" not in out and "db.example.com" not in out


def test_integers_that_are_card_numbers_are_masked() -> None:
    out = mask_request(params={"card": 4111111111111111, "ts": 1700000000000, "n": 4111111111111112}, key=KEY)
    assert out.params["card"].startswith("[personal · card · 16 chars · ")
    assert out.params["ts"] == 1700000000000 and out.params["n"] == 4111111111111112
    off = mask_request(params={"card": 4111111111111111}, detect=Detect(pii=[]), key=KEY)
    assert off.params["card"] == 4111111111111111


def test_dictionary_keys_are_not_scanned() -> None:
    out = mask_request(params={"bob@example.com": 1}, key=KEY)
    assert out.params == {"bob@example.com": 1} and out.items == ()


def test_credential_named_fields_are_masked_whole() -> None:
    params = {"password": "hunter2", "db_pass": 1234, "api_key": "x1", "nested": {"client_secret": "abc"}}
    params |= {"max_tokens": 500, "password_reset": False, "secret_ref": ""}
    out = mask_request(params=params, key=KEY)
    assert out.params["password"] == f"[secret · credential field · 7 chars · {fingerprint(KEY, 'hunter2')}]"
    assert out.params["db_pass"].startswith("[secret · credential field · 4 chars")
    assert out.params["nested"]["client_secret"].startswith("[secret · credential field")
    # tokens counts, booleans and empty strings stay
    assert out.params["max_tokens"] == 500 and out.params["password_reset"] is False
    assert out.params["secret_ref"] == ""
    assert mask_request(params={"password": "hunter2"}, detect=Detect(secrets=False), key=KEY).items == ()


# --- policy paths ------------------------------------------------------------------------------

PARAMS: dict[str, Any] = {
    "api_key": "k-123",
    "credentials": {"user": "svc", "pass_phrase": "open sesame"},
    "auth_token": "t",
    "servers": [{"host": "a", "ssh": {"key": "K1"}}, {"host": "b", "ssh": {"key": "K2"}}],
    "limits": {"max": 3},
    "rows": 10,
}

PATHS = [
    (["api_key"], ["params.api_key"]),
    (["API_KEY"], ["params.api_key"]),  # case-insensitive
    (["credentials"], ["params.credentials"]),  # the whole object
    (["credentials.*"], ["params.credentials.user", "params.credentials.pass_phrase"]),
    (["*token*"], ["params.auth_token"]),
    (["servers.*.ssh.key"], ["params.servers.0.ssh.key", "params.servers.1.ssh.key"]),
    (["servers.1"], ["params.servers.1"]),
    (["servers"], ["params.servers"]),  # the whole list
    (["limits.max", "rows"], ["params.limits.max", "params.rows"]),
    (["nothing.here"], []),
    (["key"], []),  # not top-level: paths are anchored at the params
]


@pytest.mark.parametrize(("sensitive", "paths"), PATHS)
def test_sensitive_paths(sensitive: list[str], paths: list[str]) -> None:
    off = Detect(secrets=False, pii=[])
    out = mask_request(params=PARAMS, sensitive=sensitive, detect=off, key=KEY)
    assert out.paths == paths
    for item in out.items:
        assert item.category == "sensitive" and item.kind is None and item.whole


def test_objects_and_numbers_are_masked_as_their_json() -> None:
    out = mask_request(params=PARAMS, sensitive=["credentials", "rows"], detect=Detect(secrets=False), key=KEY)
    text = json.dumps({"user": "svc", "pass_phrase": "open sesame"}, sort_keys=True, separators=(",", ":"))
    assert out.params["credentials"] == f"[sensitive · {len(text)} chars · {fingerprint(KEY, text)}]"
    assert out.params["rows"] == f"[sensitive · 2 chars · {fingerprint(KEY, '10')}]"


def test_context_paths() -> None:
    context = {"ci_token": "abc", "ticket": "OPS-1", "run": "77"}
    out = mask_request(params={"context": {"x": 1}}, context=context, sensitive=["context.*token*"], key=KEY)
    assert out.paths == ["context.ci_token"]
    assert out.params == {"context": {"x": 1}}  # a param named context is not the context
    param = mask_request(params={"context": {"x": 1}}, sensitive=["*context.x"], key=KEY)
    assert param.paths == ["params.context.x"]
    every = mask_request(params={}, context=context, sensitive=["context.*"], key=KEY)
    assert every.paths == ["context.ci_token", "context.ticket", "context.run"]


def test_inputs_are_not_modified() -> None:
    params = json.loads(json.dumps(PARAMS))
    mask_request(params=params, sensitive=["servers.*.ssh.key", "credentials"], key=KEY)
    assert params == PARAMS


# --- fingerprints, reveal ------------------------------------------------------------------------


def test_fingerprint_is_stable_per_key_and_differs_between_keys() -> None:
    assert fingerprint(KEY, AWS) == fingerprint(KEY, AWS)
    assert fingerprint(KEY, AWS) != fingerprint(b"another key", AWS)
    a = mask_request(params={"x": f"id {AWS}"}, key=KEY).items[0]
    b = mask_request(params={"y": [AWS]}, key=KEY).items[0]
    assert a.fingerprint == b.fingerprint
    assert mask_request(params={"x": AWS}, key=b"k2").items[0].fingerprint != a.fingerprint


def test_two_spellings_of_one_value_share_a_fingerprint() -> None:
    def fp(text: str) -> str:
        return mask_request(params={"v": text}, key=KEY).items[0].fingerprint

    assert fp("Bob@Example.COM") == fp("bob@example.com")
    assert fp("4111 1111 1111 1111") == fp("4111-1111-1111-1111") == fp("4111111111111111")
    assert fp("DE89 3704 0044 0532 0130 00") == fp("DE89370400440532013000")


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        mask_request(params={}, key=b"")


def test_masking_a_masked_request_changes_nothing() -> None:
    params = {"note": f"{AWS} bob@example.com +49 151 12345678", "api_key": "x"}
    once = mask_request(params=params, sensitive=["api_key"], key=KEY)
    twice = mask_request(params=once.params, sensitive=[], key=KEY)
    assert twice.params == once.params and twice.items == ()
    assert is_masked(once.params["note"]) and not is_masked("plain text")


def test_raw_values_return_exact_values_at_masked_paths_only() -> None:
    params = {"api_key": "k-1", "a.b": {"c": "bob@example.com"}, "rows": 3}
    out = mask_request(params=params, justification=f"use {AWS}", sensitive=["api_key"], key=KEY)
    assert out.paths == ["params.api_key", "params.a.b.c", "justification"]
    got = raw_values(out, out.paths, params=params, justification=f"use {AWS}")
    assert got == {"params.api_key": "k-1", "params.a.b.c": "bob@example.com", "justification": f"use {AWS}"}
    with pytest.raises(KeyError):
        raw_values(out, ["params.rows"], params=params)


# --- no leaks, by property -------------------------------------------------------------------------

PLANTED = [
    AWS,
    GITHUB,
    SLACK,
    JWT,
    RANDOM,
    "bob.smith@example.com",
    "4111 1111 1111 1111",
    "378282246310005",
    "DE89370400440532013000",
    "+49 151 12345678",
    "(415) 555-2671",
]
_plain = st.text(st.sampled_from("abc xyz-_/:,.()"), max_size=12)
_planted = st.sampled_from([*PLANTED, PEM])
PEM_BODY = "MIIEowIBAAKCAQEA7bq"
_leaf = st.one_of(
    st.integers(-1000, 1000),
    st.booleans(),
    st.none(),
    _plain,
    st.builds(lambda a, s, b: f"{a} {s} {b}", _plain, _planted, _plain),
)
_json = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["a", "b", "cfg", "items", "x"]), inner, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    params=st.dictionaries(st.sampled_from(["p", "q", "body", "list", "note"]), _json, max_size=5),
    context=st.dictionaries(st.sampled_from(["run", "who", "ref"]), st.one_of(_plain, _planted), max_size=3),
    justification=st.one_of(st.none(), st.builds(lambda s: f"because {s}, ok", _planted)),
    resource=st.one_of(st.none(), st.builds(lambda s: f"s3://bucket/{s}/x", _planted)),
)
def test_no_planted_value_survives(
    params: dict[str, Any], context: dict[str, str], justification: str | None, resource: str | None
) -> None:
    out = mask_request(params=params, context=context, justification=justification, resource=resource, key=KEY)
    dumped = json.dumps([out.params, out.context, out.justification, out.resource], ensure_ascii=False)
    dumped += json.dumps([[i.path, i.kind, i.length, i.fingerprint] for i in out.items])
    for value in [*PLANTED, PEM_BODY]:
        assert value not in dumped


# --- the reader's copy of a stored request ------------------------------------------------------


def _stored(**changes: Any) -> Any:
    return request().model_copy(
        update={
            "params": {"key_id": AWS, "db": {"password": "hunter2-correct-horse"}, "rows": 3},
            "context": {"reporter": "jane@example.org"},
            "justification": f"rotate {AWS}",
            "resource": f"vault://kv/{GITHUB}",
            **changes,
        }
    )


def test_shown_leaves_out_the_grant_and_the_receipt() -> None:
    stored = ensure_masked(_stored(grant="eyJ.grant.sig", receipt="eyJ.receipt.sig"), KEY)
    shown = stored.shown()
    assert (shown.grant, shown.receipt) == (None, None)
    assert (stored.grant, stored.receipt) == ("eyJ.grant.sig", "eyJ.receipt.sig")  # the agent's copy keeps them
    assert is_masked(shown.resource or "") and shown.params["rows"] == 3


def test_a_request_stored_before_masking_is_withheld_or_masked_never_shown() -> None:
    old = _stored()
    assert old.masked is None
    withheld = old.shown()  # a reader without the masking key
    assert withheld.params == {"key_id": WITHHELD, "db": WITHHELD, "rows": WITHHELD}
    assert (withheld.context, withheld.justification, withheld.resource) == ({"reporter": WITHHELD}, WITHHELD, WITHHELD)

    upgraded = ensure_masked(old, KEY)  # what the service's reads and the one-time upgrade give it
    assert upgraded.masked is not None and ensure_masked(upgraded, KEY) is upgraded
    assert upgraded.masked == ensure_masked(old, KEY).masked  # deterministic: the same paths every read
    text = upgraded.shown().model_dump_json()
    assert not [s for s in (AWS, GITHUB, "hunter2-correct-horse", "jane@example.org") if s in text]
    assert {i.path for i in upgraded.masked.items} >= {"params.key_id", "params.db.password", "resource"}
    assert upgraded.params == old.params  # the exact values stay for the agent


def test_retention_of_a_request_without_a_view_keeps_no_free_form_value() -> None:
    forgotten = forget_params(_stored(status=Status.APPROVED)).request
    text = forgotten.model_dump_json()
    assert forgotten.params_deleted and not [s for s in (AWS, GITHUB, "hunter2") if s in text]
