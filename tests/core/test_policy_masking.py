"""Tests for the policy's masking keys: `sensitive`, `detect` and `reveal`, and how they are frozen."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import approvalbot
from approvalbot.core.models import AppliedPolicy, Detect
from approvalbot.core.policy import Policy, PolicyError

ALL_PII = ["email", "card", "iban", "phone"]


def load(text: str) -> Policy:
    return Policy.from_yaml(textwrap.dedent(text))


def applied(text: str, action: str = "x.y") -> AppliedPolicy:
    return load(text).evaluate(action, None, "bot", {})


def test_without_masking_keys_every_detector_is_on_and_reveals_are_allowed() -> None:
    got = applied(
        """
        rules:
          - {name: r, effect: require_approval, approvers: ["*"]}
        """
    )
    assert got.sensitive == [] and got.reveal is True
    assert got.detect == Detect(secrets=True, pii=ALL_PII)


def test_rule_settings_combine_with_defaults() -> None:
    policy = load(
        """
        defaults:
          sensitive: [api_key, "context.*token*"]
          detect: {secrets: true, pii: [email, card]}
          reveal: false
        rules:
          - name: keys
            match: {action: "kms.*"}
            effect: require_approval
            approvers: [security]
            sensitive: ["credentials.*", api_key]
            detect: {pii: []}
            reveal: true
          - {name: other, effect: require_approval, approvers: ["*"]}
        """
    )
    keys = policy.evaluate("kms.key.rotate", None, "bot", {})
    assert keys.sensitive == ["api_key", "context.*token*", "credentials.*"]  # defaults first, no duplicates
    assert keys.detect == Detect(secrets=True, pii=[])  # `secrets` from defaults, `pii` from the rule
    assert keys.reveal is True
    other = policy.evaluate("x.y", None, "bot", {})
    assert other.sensitive == ["api_key", "context.*token*"]
    assert other.detect == Detect(secrets=True, pii=["email", "card"]) and other.reveal is False


def test_allow_deny_and_no_match_keep_the_masking_settings() -> None:
    policy = load(
        """
        defaults:
          sensitive: [password]
          detect: {secrets: false}
        rules:
          - {name: a, match: {action: "a.*"}, effect: allow, sensitive: [token]}
          - {name: d, match: {action: "d.*"}, effect: deny, detect: {pii: [iban]}}
        """
    )
    allow = policy.evaluate("a.b", None, "bot", {})
    assert allow.sensitive == ["password", "token"] and allow.detect == Detect(secrets=False, pii=ALL_PII)
    deny = policy.evaluate("d.b", None, "bot", {})
    assert deny.detect == Detect(secrets=False, pii=["iban"])
    none = policy.evaluate("z.z", None, "bot", {})
    assert none.rule == "(no matching rule)" and none.sensitive == ["password"]


def test_requests_stored_before_masking_still_load() -> None:
    old = {"rule": "r", "effect": "require_approval", "approvers": ["*"], "min_approvals": 1}
    got = AppliedPolicy.model_validate(old)
    assert got.sensitive == [] and got.detect == Detect() and got.reveal is True
    assert AppliedPolicy.model_validate_json(got.model_dump_json()) == got


ERRORS = [
    (
        """
        rules:
          - name: r
            effect: require_approval
            approvers: ["*"]
            detect:
              pii: [email, ssn]
        """,
        "line 7: rules[0].detect.pii[1]: unknown detector 'ssn'; known: email, card, iban, phone",
    ),
    (
        """
        defaults:
          detect: {secret: true}
        rules:
          - {name: r, effect: allow}
        """,
        "line 3: defaults.detect.secret: Extra inputs are not permitted",
    ),
    (
        """
        defaults:
          detect: {secrets: "yes"}
        rules:
          - {name: r, effect: allow}
        """,
        "line 3: defaults.detect.secrets: Input should be a valid boolean",
    ),
    (
        """
        rules:
          - {name: r, effect: allow, reveal: false}
        """,
        "line 3: rules[0].reveal: reveal has no effect on a rule with effect allow",
    ),
    (
        """
        rules:
          - name: r
            effect: allow
            sensitive: [credentials., ok]
        """,
        "line 5: rules[0].sensitive[0]: invalid sensitive path 'credentials.'",
    ),
    (
        """
        rules:
          - name: r
            effect: allow
            sensitive: [context]
        """,
        "line 5: rules[0].sensitive[0]: use 'context.<key glob>' for context values",
    ),
    (
        """
        defaults:
          sensitive: api_key
        rules:
          - {name: r, effect: allow}
        """,
        "line 3: defaults.sensitive: Input should be a valid list",
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_masking_keys_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as exc:
        load(text)
    assert message in str(exc.value)


def test_the_example_policy_uses_the_masking_keys() -> None:
    policy = Policy.load(Path(approvalbot.__file__).parent / "policy.example.yaml")
    assert policy.defaults.sensitive
    assert any(rule.reveal is False for rule in policy.rules)
